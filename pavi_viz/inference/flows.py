"""Conditional normalizing flows, from zuko.

One flow is shared by all the ground variables of a template variable: its context
(the ground variable's encoding and its parents' draws) individualises it.
"""

from __future__ import annotations

import zuko
from torch import nn

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
