"""The dashboard's components, each a ``pn.viewable.Viewer`` over one
:class:`~pavi_viz.ui.state.DashboardState`.

- :class:`ElboView` (:mod:`.elbo`): the ELBO against the step, streamed.
- :class:`PlateDiagram` (:mod:`.diagram`): the model's plate diagram; a click selects a variable.
- :class:`TrainingControls` (:mod:`.controls`): settings, Start / Pause / Resume / Stop, progress.
- :class:`Exports` (:mod:`.exports`): model JSON, posterior NetCDF, ELBO history CSV downloads.
"""

from pavi_viz.ui.views.controls import TrainingControls
from pavi_viz.ui.views.diagram import PlateDiagram
from pavi_viz.ui.views.elbo import ElboView
from pavi_viz.ui.views.exports import Exports

__all__ = ["ElboView", "Exports", "PlateDiagram", "TrainingControls"]
