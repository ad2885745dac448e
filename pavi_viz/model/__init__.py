"""The model layer: plate graphs, validation, JSON, log joint density and sampling.

Describe a model with :class:`Plate`, :class:`Variable` and :class:`Covariate`
inside a :class:`PlateModel`; every problem is reported as a :class:`ModelError`.
"""

from pavi_viz.model.compiled import CompiledModel
from pavi_viz.model.distributions import DISTRIBUTIONS
from pavi_viz.model.errors import ModelError
from pavi_viz.model.expressions import ExpressionError
from pavi_viz.model.plates import PlateBatch
from pavi_viz.model.spec import Covariate, Plate, PlateModel, Variable

__all__ = [
    "DISTRIBUTIONS",
    "CompiledModel",
    "Covariate",
    "ExpressionError",
    "ModelError",
    "Plate",
    "PlateBatch",
    "PlateModel",
    "Variable",
]
