"""The evidence lower bound, estimated on a batch of plate elements."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pavi_viz.inference.families.base import Draw, VariationalFamily
from pavi_viz.model.compiled import CompiledModel
from pavi_viz.model.plates import Frame


@dataclass
class ElboEstimate:
    """A Monte Carlo estimate of the ELBO on one batch.

    Attributes:
        value: the estimate, averaged over particles (a scalar tensor with gradients).
        terms: each variable's share, averaged over particles: log p minus log q for a
            latent, log p for an observed variable (detached, for diagnostics).
        draw: the family's draws it was computed from (with their gradients).
    """

    value: Tensor
    terms: dict[str, Tensor]
    draw: Draw


def elbo(
    model: CompiledModel,
    family: VariationalFamily,
    frame: Frame,
    particles: int = 1,
    generator: torch.Generator | None = None,
) -> ElboEstimate:
    """Estimate E_q[log p(theta, x) - log q(theta)] on the batch ``frame``.

    Both the model's terms and the family's log densities are scaled by
    ``size / batch`` for every plate they sit in, so the estimate is unbiased for the
    full model's ELBO. The family's ``particles`` draws take their noise from
    ``generator`` (on the model's device; ``None``: torch's global generator).
    """
    draw = family.sample(frame, particles, generator=generator)
    log_p = model.log_joint_terms(draw.values, frame=frame)
    terms = {name: log_p[name] - draw.log_q.get(name, 0.0) for name in log_p}
    value = sum(terms.values()).mean()
    return ElboEstimate(value, {name: t.detach().mean() for name, t in terms.items()}, draw)
