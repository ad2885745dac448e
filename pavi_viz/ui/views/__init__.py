"""The dashboard's components, each a ``pn.viewable.Viewer`` over one
:class:`~pavi_viz.ui.state.DashboardState`.

- :class:`ElboView` (:mod:`.elbo`): the ELBO against the step, streamed.
- :class:`PlateDiagram` (:mod:`.diagram`): the model's plate diagram; a click selects a variable.
- :class:`TrainingControls` (:mod:`.controls`): settings, Start / Pause / Resume / Stop, progress.
- :class:`Exports` (:mod:`.exports`): model JSON, posterior NetCDF, ELBO history CSV downloads.
- :class:`GlobalMarginals`, :class:`ForestView`, :class:`DetailView` (:mod:`.marginals`):
  per-plate posterior marginals, linked through the state's selections.
- :class:`PredictiveCheck` (:mod:`.predictive`): observed data against posterior
  predictive draws for the selected plate element.
- :class:`PosteriorStamp` (:mod:`.stamp`): the step and run the posterior views show,
  and whether the fit looks settled.

Not a view: :class:`~pavi_viz.ui.views.steady_styles.SteadyStyles`, unseen in the
dashboard's page, keeps BokehJS from restyling the page when a plot repaints unchanged.
"""

from pavi_viz.ui.views.controls import TrainingControls
from pavi_viz.ui.views.diagram import PlateDiagram
from pavi_viz.ui.views.elbo import ElboView
from pavi_viz.ui.views.exports import Exports
from pavi_viz.ui.views.marginals import DetailView, ForestView, GlobalMarginals
from pavi_viz.ui.views.predictive import PredictiveCheck
from pavi_viz.ui.views.stamp import PosteriorStamp

__all__ = [
    "DetailView",
    "ElboView",
    "Exports",
    "ForestView",
    "GlobalMarginals",
    "PlateDiagram",
    "PosteriorStamp",
    "PredictiveCheck",
    "TrainingControls",
]
