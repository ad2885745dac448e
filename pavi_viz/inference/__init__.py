"""The inference layer: variational families, the ELBO, training and posteriors."""

from pavi_viz.inference.checkpoints import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from pavi_viz.inference.elbo import ElboEstimate, elbo
from pavi_viz.inference.families import FAMILIES, VariationalFamily, make_family
from pavi_viz.inference.posterior import Posterior, load_netcdf
from pavi_viz.inference.training import (
    DivergenceError,
    FitResult,
    History,
    StopTraining,
    TrainingState,
    fit,
)

__all__ = [
    "FAMILIES",
    "CheckpointError",
    "DivergenceError",
    "ElboEstimate",
    "FitResult",
    "History",
    "Posterior",
    "StopTraining",
    "TrainingState",
    "VariationalFamily",
    "elbo",
    "fit",
    "load_checkpoint",
    "load_netcdf",
    "make_family",
    "save_checkpoint",
]
