"""Rubin's eight schools: the classic small hierarchical model (centred form).

::

    mu ~ Normal(0, 5)               mean effect
    tau ~ HalfCauchy(5)             spread of the school effects
    theta[j] ~ Normal(mu, tau)      effect in school j
    y[j] ~ Normal(theta[j], sigma[j])   observed estimate, with known standard error sigma[j]
"""

from __future__ import annotations

from pavi_viz.examples._data import read_dataset
from pavi_viz.model import Covariate, Plate, PlateModel, Variable

DESCRIPTION = "Rubin's eight schools: coaching effects in 8 schools, partially pooled (real data)."


def build() -> PlateModel:
    """The eight-schools model with its data: ``y`` and ``sigma``, each of shape (8,)."""
    raw = read_dataset("eight_schools.json")
    return PlateModel(
        [Plate("school", raw["J"])],
        [
            Variable("mu", "Normal", loc=0.0, scale=5.0),
            Variable("tau", "HalfCauchy", scale=5.0),
            Variable("theta", "Normal", loc="mu", scale="tau", plates=["school"]),
            Variable("y", "Normal", loc="theta", scale="sigma", plates=["school"], observed=True),
        ],
        [Covariate("sigma", ["school"])],
        data={"y": raw["y"], "sigma": raw["sigma"]},
        name="eight_schools",
        description=DESCRIPTION,
    )
