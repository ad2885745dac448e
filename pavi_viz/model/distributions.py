"""The distributions a variable may follow, by name.

Each entry wraps a ``torch.distributions`` class with what the model layer needs
to know beyond torch itself: the names of its parameters, which of them are
required, and the number of event dimensions each parameter carries (a Dirichlet's
concentration is a vector per ground variable, a Normal's loc a scalar).
"""

from __future__ import annotations

import math

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints

D = torch.distributions


@dataclass(frozen=True)
class ParamInfo:
    """One parameter of a distribution.

    Attributes:
        name: the keyword the torch class takes.
        event_rank: how many trailing dimensions of its value belong to one ground
            variable (0 for a scalar such as a Normal's scale, 1 for a vector such as a
            Dirichlet's concentration).
        default: the value used when the parameter is left out; ``None`` when it is
            required (or one of an exclusive group).
        constraint: the set its values must lie in.
    """

    name: str
    event_rank: int = 0
    default: float | None = None
    constraint: constraints.Constraint = constraints.real


@dataclass(frozen=True)
class DistributionInfo:
    """A distribution family the model layer knows.

    Attributes:
        name: the name users write (``"Normal"``).
        factory: builds the torch distribution from keyword tensors.
        params: its parameters.
        one_of: groups of parameters of which exactly one must be given
            (``("probs", "logits")``).
        discrete: whether its values are discrete (such a variable can only be
            observed: reparameterized VI needs continuous latents).
        doc: a one-line description for menus and help texts.
        summarised_by_moments: whether, as a likelihood, it sees a group's values
            through the means of the values, of the covariates and of their pairwise
            products: its sufficient statistics in a linear model (Normal) or a GLM
            with its canonical link (Bernoulli, Binomial, Poisson); PAVI-E's encoder
            then pools a group's data with these fixed statistics rather than a network
            (:mod:`pavi_viz.inference.encoders`).
    """

    name: str
    factory: Callable[..., Distribution]
    params: tuple[ParamInfo, ...]
    one_of: tuple[tuple[str, ...], ...] = ()
    discrete: bool = False
    doc: str = ""
    summarised_by_moments: bool = False
    by_name: dict[str, ParamInfo] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {p.name: p for p in self.params})

    @property
    def support(self) -> constraints.Constraint | None:
        """The set its values lie in, when it does not depend on the parameters."""
        support = getattr(self.factory, "support", constraints.real)
        return None if constraints.is_dependent(support) else support

    @property
    def bounds(self) -> tuple[float, float]:
        """The least and the greatest value of each component of its support: ``-inf``
        and ``inf`` where unbounded or set by the parameters (``(0, inf)`` for a scale
        prior, ``(0, 1)`` for Beta). Where density plots stop and reflect."""
        support = self.support
        while isinstance(support, constraints.independent):
            support = support.base_constraint
        low, high = getattr(support, "lower_bound", None), getattr(support, "upper_bound", None)
        return (float(low) if isinstance(low, (int, float)) else -math.inf,
                float(high) if isinstance(high, (int, float)) else math.inf)

    @property
    def required(self) -> tuple[str, ...]:
        """Parameters that must be given, outside the exclusive groups."""
        grouped = {name for group in self.one_of for name in group}
        return tuple(p.name for p in self.params if p.default is None and p.name not in grouped)

    def build(self, params: dict[str, Tensor]) -> Distribution:
        """The torch distribution for the given parameter tensors (defaults filled in)."""
        full = {p.name: p.default for p in self.params if p.default is not None}
        full.update(params)
        return self.factory(**full, validate_args=False)


def _diag_normal(loc: Tensor, scale: Tensor, validate_args: bool = False) -> Distribution:
    loc, scale = torch.broadcast_tensors(loc, scale)
    return D.Independent(D.Normal(loc, scale, validate_args=validate_args), 1)


def _gaussian_mixture(
    weights: Tensor, locs: Tensor, scale: Tensor, validate_args: bool = False
) -> Distribution:
    # locs (..., L, D), scale broadcastable to it, weights (..., L): a mixture of L
    # diagonal Gaussians in D dimensions.
    locs, scale = torch.broadcast_tensors(locs, torch.as_tensor(scale, dtype=locs.dtype))
    components = D.Independent(D.Normal(locs, scale, validate_args=validate_args), 1)
    mixing = D.Categorical(probs=weights, validate_args=validate_args)
    return D.MixtureSameFamily(mixing, components, validate_args=validate_args)


_POS = constraints.positive
_PROB = constraints.unit_interval
_NONNEG_INT = constraints.nonnegative_integer


def _info(name: str, factory: Callable[..., Distribution], *params: ParamInfo, **kw) -> DistributionInfo:
    return DistributionInfo(name, factory, tuple(params), **kw)


DISTRIBUTIONS: dict[str, DistributionInfo] = {
    d.name: d
    for d in [
        _info("Normal", D.Normal, ParamInfo("loc"), ParamInfo("scale", constraint=_POS),
              summarised_by_moments=True, doc="Gaussian with mean loc and standard deviation scale"),
        _info("HalfNormal", D.HalfNormal, ParamInfo("scale", constraint=_POS),
              summarised_by_moments=True, doc="|x| of a centred Gaussian: a positive scale prior"),
        _info("LogNormal", D.LogNormal, ParamInfo("loc"), ParamInfo("scale", constraint=_POS),
              doc="exp of a Gaussian with mean loc and sd scale"),
        _info("HalfCauchy", D.HalfCauchy, ParamInfo("scale", constraint=_POS),
              doc="|x| of a centred Cauchy: a heavy-tailed positive scale prior"),
        _info("Cauchy", D.Cauchy, ParamInfo("loc"), ParamInfo("scale", constraint=_POS),
              doc="Cauchy with location loc and scale"),
        _info("StudentT", D.StudentT, ParamInfo("df", constraint=_POS),
              ParamInfo("loc", default=0.0), ParamInfo("scale", default=1.0, constraint=_POS),
              doc="Student's t with df degrees of freedom"),
        _info("Laplace", D.Laplace, ParamInfo("loc"), ParamInfo("scale", constraint=_POS),
              doc="double exponential with location loc and scale"),
        _info("Gamma", D.Gamma, ParamInfo("concentration", constraint=_POS),
              ParamInfo("rate", constraint=_POS), doc="Gamma with shape concentration and rate"),
        _info("Exponential", D.Exponential, ParamInfo("rate", constraint=_POS), summarised_by_moments=True,
              doc="exponential with the given rate"),
        _info("Beta", D.Beta, ParamInfo("concentration1", constraint=_POS),
              ParamInfo("concentration0", constraint=_POS),
              doc="Beta(concentration1, concentration0) on (0, 1)"),
        _info("Uniform", D.Uniform, ParamInfo("low"), ParamInfo("high"),
              doc="uniform on (low, high)"),
        _info("Bernoulli", D.Bernoulli, ParamInfo("probs", constraint=_PROB), ParamInfo("logits"),
              one_of=(("probs", "logits"),), discrete=True, summarised_by_moments=True,
              doc="0 or 1, with probability probs"),
        _info("Binomial", D.Binomial, ParamInfo("total_count", default=1.0, constraint=_NONNEG_INT),
              ParamInfo("probs", constraint=_PROB), ParamInfo("logits"),
              one_of=(("probs", "logits"),), discrete=True, summarised_by_moments=True,
              doc="successes among total_count trials"),
        _info("Poisson", D.Poisson, ParamInfo("rate", constraint=constraints.nonnegative),
              discrete=True, summarised_by_moments=True, doc="counts with mean rate"),
        _info("Categorical", D.Categorical, ParamInfo("probs", 1, constraint=constraints.simplex),
              ParamInfo("logits", 1), one_of=(("probs", "logits"),), discrete=True,
              doc="one of K categories, with probabilities probs"),
        _info("Dirichlet", D.Dirichlet, ParamInfo("concentration", 1, constraint=_POS),
              doc="probability vectors (weights summing to one)"),
        _info("DiagNormal", _diag_normal, ParamInfo("loc", 1), ParamInfo("scale", 1, constraint=_POS),
              summarised_by_moments=True, doc="multivariate Gaussian with a diagonal covariance"),
        _info("GaussianMixture", _gaussian_mixture, ParamInfo("weights", 1, constraint=constraints.simplex),
              ParamInfo("locs", 2), ParamInfo("scale", constraint=_POS),
              doc="mixture of L diagonal Gaussians: weights (L), locs (L, D)"),
    ]
}


def get(name: str) -> DistributionInfo:
    """The distribution called ``name`` (a ``KeyError`` lists the known names)."""
    try:
        return DISTRIBUTIONS[name]
    except KeyError:
        raise KeyError(f"unknown distribution {name!r}; known: {', '.join(DISTRIBUTIONS)}") from None
