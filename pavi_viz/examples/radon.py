"""Radon in Minnesota houses (Gelman & Hill 2006): 919 houses in 85 counties.

The ``house`` plate is ragged in ``county`` (1 to 116 houses per county). Priors are
those of the posterior database's Stan models, so fits compare with published NUTS
posteriors.

``radon`` (varying intercept and slope)::

    sigma_y, sigma_alpha, sigma_beta ~ HalfNormal(1);  mu_alpha, mu_beta ~ Normal(0, 10)
    alpha[j] ~ Normal(mu_alpha, sigma_alpha);  beta[j] ~ Normal(mu_beta, sigma_beta)
    log_radon[i] ~ Normal(alpha[county_i] + beta[county_i] * floor_i, sigma_y)

``radon_uranium`` (varying intercept, county uranium and floor slopes)::

    sigma_y, sigma_alpha ~ HalfNormal(1);  mu_alpha ~ Normal(0, 10);  beta ~ Normal(0, 10), 2 entries
    alpha[j] ~ Normal(mu_alpha, sigma_alpha)
    log_radon[i] ~ Normal(alpha[county_i] + beta[0] * log_uppm_i + beta[1] * floor_i, sigma_y)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pavi_viz.examples._data import read_dataset
from pavi_viz.model import Covariate, Plate, PlateModel, Variable

RADON_DESCRIPTION = (
    "Radon in 919 Minnesota houses in 85 counties: county intercepts and floor slopes (real data)."
)
RADON_URANIUM_DESCRIPTION = (
    "Radon in 919 Minnesota houses in 85 counties: county intercepts with uranium and floor "
    "effects (real data)."
)


def _houses() -> tuple[list[Plate], dict[str, Any]]:
    """The county and house plates, and the per-house data (each of shape (919,))."""
    raw = read_dataset("radon_mn.json")
    county = np.asarray(raw["county_idx"]) - 1  # the file counts counties from 1
    plates = [Plate("county", raw["J"]), Plate("house", raw["N"], nested_in="county", membership=county)]
    data = {"log_radon": raw["log_radon"], "floor": raw["floor_measure"], "log_uppm": raw["log_uppm"]}
    return plates, data


def build_radon() -> PlateModel:
    """Varying intercept and floor slope per county."""
    plates, data = _houses()
    return PlateModel(
        plates,
        [
            Variable("mu_alpha", "Normal", loc=0.0, scale=10.0),
            Variable("mu_beta", "Normal", loc=0.0, scale=10.0),
            Variable("sigma_alpha", "HalfNormal", scale=1.0),
            Variable("sigma_beta", "HalfNormal", scale=1.0),
            Variable("sigma_y", "HalfNormal", scale=1.0),
            Variable("alpha", "Normal", loc="mu_alpha", scale="sigma_alpha", plates=["county"]),
            Variable("beta", "Normal", loc="mu_beta", scale="sigma_beta", plates=["county"]),
            Variable("log_radon", "Normal", loc="alpha[county] + beta[county] * floor", scale="sigma_y",
                     plates=["house"], observed=True),
        ],
        [Covariate("floor", ["house"])],
        data={k: data[k] for k in ("log_radon", "floor")},
        name="radon",
        description=RADON_DESCRIPTION,
    )


def build_radon_uranium() -> PlateModel:
    """Varying intercept per county; population slopes for log uranium and floor."""
    plates, data = _houses()
    return PlateModel(
        plates,
        [
            Variable("mu_alpha", "Normal", loc=0.0, scale=10.0),
            Variable("sigma_alpha", "HalfNormal", scale=1.0),
            Variable("sigma_y", "HalfNormal", scale=1.0),
            Variable("beta", "Normal", loc=0.0, scale=10.0, event_shape=[2]),
            Variable("alpha", "Normal", loc="mu_alpha", scale="sigma_alpha", plates=["county"]),
            Variable("log_radon", "Normal", loc="alpha[county] + beta[0] * log_uppm + beta[1] * floor",
                     scale="sigma_y", plates=["house"], observed=True),
        ],
        [Covariate("floor", ["house"]), Covariate("log_uppm", ["house"])],
        data=data,
        name="radon_uranium",
        description=RADON_URANIUM_DESCRIPTION,
    )
