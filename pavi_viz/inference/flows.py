"""Conditional normalizing flows, from zuko.

One flow is shared by all the ground variables of a template variable: its context
(the ground variable's encoding and its parents' draws) individualises it.
"""

from __future__ import annotations

import torch
import zuko
from torch import Tensor, nn
from torch.distributions import Independent, Normal
from zuko.distributions import NormalizingFlow

#: Flow kinds users may choose, by name.
FLOWS = {
    "maf": zuko.flows.MAF,  # affine autoregressive: fast, unbounded shifts
    "nsf": zuko.flows.NSF,  # rational-quadratic splines: more flexible shapes
}


def make_flow(
    kind: str,
    features: int,
    context: int,
    transforms: int = 3,
    hidden: tuple[int, ...] = (64, 64),
) -> nn.Module:
    """A conditional flow over ``features`` real coordinates given ``context`` numbers.

    Calling the result on a context of shape ``(n, context)`` gives a distribution with
    batch shape ``(n,)`` and event shape ``(features,)``.
    """
    if kind not in FLOWS:
        raise ValueError(f"unknown flow {kind!r}; choose one of {', '.join(FLOWS)}")
    flow = FLOWS[kind](features, context, transforms=transforms, hidden_features=tuple(hidden))
    # Variational inference samples far more than it scores outside points: invert the
    # flow (the "inverse autoregressive" orientation) so that drawing takes one network
    # pass per layer instead of one per coordinate.
    flow.transform = flow.transform.inv
    return flow


def rsample_and_log_prob(
    flow: NormalizingFlow, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """One reparametrized draw from ``flow`` and its log density, its noise from ``generator``.

    zuko's own ``flow.rsample_and_log_prob()`` draws the base noise from torch's global
    generator; this does the same computation (base draw ``z = loc + eps * scale``,
    pushed through the inverse transform, log density ``log p(z) - log |det J|``) with
    ``eps`` drawn from ``generator``, so that given the same noise both agree exactly.

    Args:
        flow: a zuko normalizing flow over a Gaussian base (as :func:`make_flow`'s give),
            batch shape ``(n,)`` and event shape ``(features,)``.
        generator: the source of the noise, on the flow's device (``None``: torch's
            global generator).

    Returns:
        the draws, shape ``(n, features)``, and their log densities, shape ``(n,)``.
    """
    base = flow.base
    normal = base.base_dist if isinstance(base, Independent) else base
    if not isinstance(normal, Normal):
        raise TypeError(f"the flow's base must be a Gaussian, not a {type(normal).__name__}")
    loc, scale = normal.loc, normal.scale
    eps = torch.randn(loc.shape, generator=generator, dtype=loc.dtype, device=loc.device)
    z = loc + eps * scale
    x, ladj = flow.transform.inv.call_and_ladj(z)
    if flow.reinterpreted:
        ladj = ladj.sum(tuple(range(-flow.reinterpreted, 0)))
    return x, base.log_prob(z) - ladj
