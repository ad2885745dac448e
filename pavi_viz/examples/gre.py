"""Gaussian random effects (GRE), the running example of the PAVI and ADAVI papers.

Per dimension d of D::

    mu[d]          ~ Normal(0, mu_scale)                 population mean
    mu_g[g, d]     ~ Normal(mu[d], group_scale)          mean of group g
    x[g, n, d]     ~ Normal(mu_g[g, d], obs_scale)       point n of group g (observed)

Everything is Gaussian and linear, so the posterior is known in closed form
(:func:`analytic_posterior`): the example to check an inference method against.
"""

from __future__ import annotations

import torch
from torch.distributions import Normal

from pavi_viz.model import Plate, PlateModel, Variable

DESCRIPTION = (
    "Gaussian random effects: G groups of N points in D dimensions around group means, "
    "themselves drawn around a population mean (simulated, exact posterior known)."
)


def build(
    G: int = 20,
    N: int = 10,
    D: int = 2,
    mu_scale: float = 1.0,
    group_scale: float = 1.0,
    obs_scale: float = 1.0,
    seed: int = 0,
) -> PlateModel:
    """The GRE model with data ``x`` of shape (G, N, D) simulated from its prior.

    ``truth`` holds ``mu`` (D,) and ``mu_g`` (G, D).
    """
    model = PlateModel(
        [Plate("group", G), Plate("obs", N, nested_in="group")],
        [
            Variable("mu", "Normal", loc=0.0, scale=float(mu_scale), event_shape=[D]),
            Variable("mu_g", "Normal", loc="mu", scale=float(group_scale), plates=["group"], event_shape=[D]),
            Variable("x", "Normal", loc="mu_g", scale=float(obs_scale), plates=["group", "obs"],
                     event_shape=[D], observed=True),
        ],
        name="gre",
        description=DESCRIPTION,
    )
    return model.simulate(seed)


def _constant(model: PlateModel, variable: str, param: str, like: torch.Tensor) -> torch.Tensor:
    value = model.variable(variable).params[param]
    if isinstance(value, str):
        raise ValueError(f"the analytic GRE posterior needs a constant {param!r} for {variable!r}, got {value!r}")
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def analytic_posterior(model: PlateModel) -> dict[str, Normal]:
    """The exact marginal posteriors of ``mu`` and ``mu_g`` given the model's data ``x``.

    The constants (prior mean and the three scales) are read back from the model's
    variables, so the result is right for any options of :func:`build`.

    Returns:
        ``{"mu": Normal with batch shape (D,), "mu_g": Normal with batch shape (G, D)}``:
        independent Normal marginals per element (``mu_g``'s integrate over ``mu``).
    """
    x = model.data["x"]  # (G, N, D)
    G, N = x.shape[0], x.shape[1]
    m0 = _constant(model, "mu", "loc", x)
    s_mu = _constant(model, "mu", "scale", x)
    s_g = _constant(model, "mu_g", "scale", x)
    s_x = _constant(model, "x", "scale", x)

    xbar = x.mean(1)  # (G, D) group means
    # Integrating mu_g out, each group mean is xbar_g | mu ~ N(mu, v), independently.
    v = s_g**2 + s_x**2 / N
    var_mu = 1 / (1 / s_mu**2 + G / v)
    mean_mu = var_mu * (m0 / s_mu**2 + xbar.sum(0) / v)  # (D,)
    # mu_g | mu, x is Normal with precision p and a mean linear in mu; then average over mu | x.
    p = 1 / s_g**2 + N / s_x**2
    mean_g = (mean_mu / s_g**2 + N * xbar / s_x**2) / p  # (G, D)
    var_g = 1 / p + (1 / (s_g**2 * p)) ** 2 * var_mu
    return {
        "mu": Normal(mean_mu, var_mu.sqrt().expand_as(mean_mu)),
        "mu_g": Normal(mean_g, var_g.sqrt().expand_as(mean_g)),
    }
