"""The inference layer: variational families, the ELBO, training and posteriors.

Modules, from the leaves up: ``config`` (the settings of a fit, :class:`FitConfig`;
param alone), ``resolve`` (what the settings mean for one model), ``state`` (the
records of training), ``families`` and ``objective`` (the ELBO), ``checkpoints``, ``threads``,
``trainer`` (one step at a time), ``tensorboard`` (a run's curves for TensorBoard),
``training`` (:func:`fit`), ``posterior``, ``parallel_posterior`` (a data-parallel
run's posterior, drawn by all its processes).

The public names below are loaded on first access (PEP 562), so that
``from pavi_viz.inference.config import FitConfig`` (the command line's options)
does not import torch. (No submodule is named like a public name: importing it would
shadow the name, as a module ``elbo`` did the function ``elbo``.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pavi_viz._lazy import lazy_names

# public name -> the submodule that defines it
_PUBLIC: dict[str, str] = {
    "CheckpointError": "checkpoints",
    "load_checkpoint": "checkpoints",
    "save_checkpoint": "checkpoints",
    "FitConfig": "config",
    "ElboEstimate": "objective",
    "elbo": "objective",
    "FAMILIES": "families",
    "VariationalFamily": "families",
    "make_family": "families",
    "ImportanceCheck": "importance",
    "Correction": "posterior",
    "Posterior": "posterior",
    "load_netcdf": "posterior",
    "DivergenceError": "state",
    "History": "state",
    "StepRecord": "state",
    "TrainingState": "state",
    "Trainer": "trainer",
    "FitResult": "state",
    "StopTraining": "training",
    "fit": "training",
}

__all__ = sorted(_PUBLIC)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from pavi_viz.inference.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
    from pavi_viz.inference.config import FitConfig
    from pavi_viz.inference.objective import ElboEstimate, elbo
    from pavi_viz.inference.families import FAMILIES, VariationalFamily, make_family
    from pavi_viz.inference.importance import ImportanceCheck
    from pavi_viz.inference.posterior import Correction, Posterior, load_netcdf
    from pavi_viz.inference.state import DivergenceError, FitResult, History, StepRecord, TrainingState
    from pavi_viz.inference.trainer import Trainer
    from pavi_viz.inference.training import StopTraining, fit


__getattr__, __dir__ = lazy_names(__name__, _PUBLIC, globals())
