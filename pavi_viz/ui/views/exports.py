"""Downloads: the model file, the fitted posterior as NetCDF, the ELBO history as CSV.

Each button of :class:`Exports` builds its file when clicked (a
``pn.widgets.FileDownload`` callback, on the session's event loop):

- **Model (JSON)**: ``state.model.to_json()``, data included; always available.
- **Posterior (NetCDF)**: the current run's fitted posterior as ArviZ groups
  (:meth:`pavi_viz.inference.posterior.Posterior.to_netcdf`): :data:`POSTERIOR_DRAWS`
  joint draws in ``posterior``, with their ``log_likelihood`` and ``sample_stats``,
  :data:`PREDICTIVE_DRAWS` of them replicated in ``posterior_predictive``, and the
  ``observed_data`` and ``constant_data``. Read it back with
  ``pavi_viz.inference.load_netcdf`` (or ``xarray.open_datatree``);
  ``arviz_stats.loo`` takes it. Enabled once the run has ended (stopped, finished,
  or diverged with its last good state): while its thread trains, the family
  belongs to that thread. To export mid-run, Stop it (a checkpoint keeps its state)
  and Resume afterwards.
- **ELBO history (CSV)**: the run's points so far (step, elbo, smoothed_elbo,
  steps_per_second, elapsed, lr), read from the run's thread-safe hub; any time.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import panel as pn
from panel.viewable import Viewer

from pavi_viz.ui.state import DashboardState
from pavi_viz.ui.views.text import markdown

#: Posterior draws written to the NetCDF file (its posterior group)...
POSTERIOR_DRAWS = 1000
#: ... and how many of them are replicated in its posterior_predictive group.
PREDICTIVE_DRAWS = 100


class Exports(Viewer):
    """Download buttons for the model, the posterior and the ELBO history.

    Args:
        state: the dashboard's state (its model and current run).
    """

    def __init__(self, state: DashboardState, **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        self.model_json = pn.widgets.FileDownload(
            callback=self._model_json, filename="model.json", label="Model (JSON)",
        )
        self.posterior_netcdf = pn.widgets.FileDownload(
            callback=self._posterior_netcdf, filename="posterior.nc", label="Posterior (NetCDF)",
        )
        self.elbo_csv = pn.widgets.FileDownload(
            callback=self._elbo_csv, filename="elbo.csv", label="ELBO history (CSV)",
        )
        state.param.watch(self._refresh, ["model", "run", "run_name", "run_state"])
        self._refresh()
        self._layout = pn.Column(
            markdown("### Export", margin=(0, 10)),
            self.model_json,
            self.posterior_netcdf,
            self.elbo_csv,
            sizing_mode="stretch_width",
        )

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    def _refresh(self, *_: Any) -> None:
        name = self.state.model.name or "model"
        self.model_json.filename = f"{name}.json"
        self.posterior_netcdf.filename = f"{name}-posterior.nc"
        self.elbo_csv.filename = f"{name}-elbo.csv"
        self.posterior_netcdf.disabled = not self.state.fitted
        self.elbo_csv.disabled = not self.state.run_name

    # -- the files (built on click) -------------------------------------------------------
    def _model_json(self) -> io.StringIO:
        return io.StringIO(self.state.model.to_json())

    def _posterior_netcdf(self) -> io.BytesIO:
        posterior = self.state.posterior()
        if posterior is None:
            raise RuntimeError("no fitted posterior: stop the run (or let it finish) to export it")
        with tempfile.TemporaryDirectory(prefix="pavi_viz-export-") as folder:
            path = Path(folder) / "posterior.nc"
            posterior.to_netcdf(path, n=POSTERIOR_DRAWS, predictive=PREDICTIVE_DRAWS, seed=0)
            return io.BytesIO(path.read_bytes())

    def _elbo_csv(self) -> io.StringIO:
        return io.StringIO(pd.DataFrame(self.state.elbo_history()).to_csv(index=False))
