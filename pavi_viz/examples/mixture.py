"""Gaussian mixture with random effects (the ADAVI paper's mixture example).

G groups of N points in D dimensions, each group a mixture of the same L components
whose means vary around population means::

    mu[l, d] ~ Normal(0, 2)                      population component means
    mu_g[g, l, d] ~ Normal(mu[l, d], 0.5)        group g's component means
    pi_g[g] ~ Dirichlet(1, ..., 1)               group g's mixture weights (L,)
    x[g, n] ~ sum_l pi_g[g, l] Normal(mu_g[g, l], 0.1 I)    observed, (D,)
"""

from __future__ import annotations

from pavi_viz.model import Plate, PlateModel, Variable

DESCRIPTION = (
    "Gaussian mixture with random effects: each group mixes L components whose means vary "
    "around population means (simulated)."
)


def build(G: int = 10, N: int = 30, L: int = 3, D: int = 2, seed: int = 0) -> PlateModel:
    """The mixture model with data ``x`` of shape (G, N, D) simulated from its prior.

    ``truth`` holds ``mu`` (L, D), ``mu_g`` (G, L, D) and ``pi_g`` (G, L).
    """
    model = PlateModel(
        [Plate("group", G), Plate("obs", N, nested_in="group")],
        [
            Variable("mu", "Normal", loc=0.0, scale=2.0, event_shape=[L, D]),
            Variable("mu_g", "Normal", loc="mu", scale=0.5, plates=["group"], event_shape=[L, D]),
            Variable("pi_g", "Dirichlet", concentration=[1.0] * L, plates=["group"], event_shape=[L]),
            Variable("x", "GaussianMixture", weights="pi_g", locs="mu_g", scale=0.1,
                     plates=["group", "obs"], event_shape=[D], observed=True),
        ],
        name="mixture",
        description=DESCRIPTION,
    )
    return model.simulate(seed)
