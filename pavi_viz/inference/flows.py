"""Conditional normalizing flows, from zuko.

One flow is shared by all the ground variables of a template variable: its context
(the ground variable's encoding and its parents' draws) individualises it.
"""

from __future__ import annotations

import math

import torch
import zuko
from torch import Tensor, nn
from torch.distributions import Independent, Normal
from zuko.distributions import DiagNormal, NormalizingFlow
from zuko.flows.autoregressive import MaskedAutoregressiveTransform
from zuko.flows.gaussianization import ElementWiseTransform
from zuko.lazy import Flow, LazyComposedTransform, LazyInverse, UnconditionalDistribution
from zuko.transforms import MonotonicAffineTransform

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


def reset_to_identity(flow: nn.Module) -> None:
    """Draw a flow's weights afresh, with the last layer of each transform's network at
    zero: the flow then starts as its base Normal, whatever its context (the zero
    initialisation of Glow's couplings: Kingma & Dhariwal, 2018, "Glow: generative flow
    with invertible 1x1 convolutions"), and learns away from it.
    """
    # zuko's layers (its own Linear among them) each know how to draw their weights.
    for module in flow.modules():
        if module is not flow and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    for module in flow.modules():
        children = dict(module.named_children())
        if "hyper" in children:  # a transform's network, from its context to its parameters
            last = [layer for layer in children["hyper"].modules() if isinstance(getattr(layer, "weight", None), nn.Parameter)][-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        elif "phi" in children:  # a transform without context: its parameters themselves
            for parameter in children["phi"].parameters():
                nn.init.zeros_(parameter)


def gaussian_draw(
    loc: Tensor, scale: Tensor, generator: torch.Generator | None = None, spread: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Draws of independent Gaussians ``N(loc, scale)`` and their log densities.

    With ``spread > 1`` the draws come from a *defensive mixture* (Hesterberg, 1995,
    "Weighted average importance sampling and defensive mixture distributions",
    Technometrics 37): each index along the leading dim draws from ``N(loc, scale)``
    or from ``N(loc, spread * scale)`` with probability 1/2 (a coin of ``generator``'s,
    so that the mixtures of several calls are independent, as the product of their
    densities assumes), and the log densities are the equal mixture's. As an
    importance sampling proposal it keeps q's draws where q is right and reaches into
    the tails where q is too narrow; its weights are at most twice q's.

    Args:
        loc, scale: shape ``(n, *batch, k)``: one Gaussian per draw.
        generator: the source of the noise (``None``: torch's global generator).
        spread: the wider component's scale, as a multiple of ``scale`` (1: no mixture).

    Returns:
        the draws, shape ``(n, *batch, k)``, and their log densities summed over the
        last dim, shape ``(n, *batch)``.
    """
    eps = torch.randn(loc.shape, generator=generator, dtype=loc.dtype, device=loc.device)
    log_norm = -0.5 * math.log(2 * math.pi) * loc.shape[-1] - scale.log().sum(-1)
    if spread == 1.0:
        return loc + eps * scale, log_norm - 0.5 * (eps**2).sum(-1)
    n = loc.shape[0]
    wide = (torch.rand(n, generator=generator, device=eps.device) < 0.5).reshape(n, *[1] * (eps.dim() - 1))
    eps = torch.where(wide, eps * spread, eps)
    narrow_density = -0.5 * (eps**2).sum(-1)
    wide_density = -0.5 * ((eps / spread) ** 2).sum(-1) - loc.shape[-1] * math.log(spread)
    return loc + eps * scale, log_norm + torch.logaddexp(narrow_density, wide_density) - math.log(2)


def rsample_and_log_prob(
    flow: NormalizingFlow, generator: torch.Generator | None = None, spread: float = 1.0
) -> tuple[Tensor, Tensor]:
    """One reparametrized draw from ``flow`` and its log density, its noise from ``generator``.

    zuko's own ``flow.rsample_and_log_prob()`` draws the base noise from torch's global
    generator; this does the same computation (base draw ``z = loc + eps * scale``,
    pushed through the inverse transform, log density ``log p(z) - log |det J|``) with
    ``eps`` drawn from ``generator``, so that given the same noise both give the same
    draws, and the same densities up to rounding.
    With ``spread > 1`` the base draws are :func:`gaussian_draw`'s defensive mixture,
    and so are the draws' densities: both components share the flow's transform.

    Args:
        flow: a zuko normalizing flow over a Gaussian base (as :func:`make_flow`'s give),
            batch shape ``(n,)`` and event shape ``(features,)``.
        generator: the source of the noise, on the flow's device (``None``: torch's
            global generator).
        spread: see :func:`gaussian_draw` (1: the flow's own draws).

    Returns:
        the draws, shape ``(n, features)``, and their log densities, shape ``(n,)``.
    """
    base = flow.base
    normal = base.base_dist if isinstance(base, Independent) else base
    if not isinstance(normal, Normal):
        raise TypeError(f"the flow's base must be a Gaussian, not a {type(normal).__name__}")
    loc, scale = normal.loc, normal.scale
    z, log_base = gaussian_draw(loc, scale.expand(loc.shape), generator, spread)
    x, ladj = flow.transform.inv.call_and_ladj(z)
    if flow.reinterpreted:
        ladj = ladj.sum(tuple(range(-flow.reinterpreted, 0)))
    return x, log_base - ladj


def draw(flow: Flow, context: Tensor, generator: torch.Generator | None = None,
         spread: float = 1.0) -> tuple[Tensor, Tensor]:
    """One reparametrized draw per row of ``context`` from the conditional flow ``flow``
    (one of :func:`make_flow`'s), and its log density: the numbers of
    :func:`rsample_and_log_prob` of ``flow(context)``, without building the flow.

    zuko builds a transformation object for each layer at each call, and a distribution
    for the base; a training step of PAVI-E pays that Python work for every flow and
    layer. For an affine MAF (``"maf"``, ``fit``'s default) the draw is computed here in
    a few tensor operations a layer, as zuko's own layers compute it (Papamakarios et
    al., 2017, "Masked autoregressive flow for density estimation", drawn in the inverse
    orientation that :func:`make_flow` sets): the layer's network reads the draw so far
    and the context, and gives a shift ``b`` and a log scale ``a``, bounded as zuko
    bounds it (``MonotonicAffineTransform``), then ``u = u * exp(a) + b``. Any other
    flow takes zuko's path.

    Args:
        flow: a conditional flow of :func:`make_flow`'s over ``features`` coordinates.
        context: shape ``(n, context)``.
        generator, spread: see :func:`rsample_and_log_prob`.

    Returns:
        the draws, shape ``(n, features)``, and their log densities, shape ``(n,)``.
    """
    layers = _affine_layers(flow)
    if layers is None:
        return rsample_and_log_prob(flow(context), generator, spread)
    shape = (context.shape[0], flow.base.loc.shape[-1])
    u, log_base = gaussian_draw(flow.base.loc.expand(shape), flow.base.scale.expand(shape), generator, spread)
    ladj = torch.zeros((), dtype=u.dtype, device=u.device)
    for layer in layers:
        # Over one coordinate a layer is element-wise: it reads the context alone.
        inputs = context if isinstance(layer, ElementWiseTransform) else torch.cat((u, context), -1)
        shift, scale = layer.hyper(inputs).unflatten(-1, (-1, layer.total)).unbind(-1)
        log_scale = scale / (1 + abs(scale / _LOG_SLOPE))
        u = u * log_scale.exp() + shift
        ladj = ladj + log_scale.sum(-1)
    return u, log_base - ladj


#: The log of the least slope of zuko's affine layers (``MonotonicAffineTransform``'s
#: default, which ``MAF`` keeps): their log scale is bounded by its absolute value.
_LOG_SLOPE = math.log(1e-3)


def _affine_layers(flow: Flow) -> list[MaskedAutoregressiveTransform | ElementWiseTransform] | None:
    """The layers of an affine MAF of :func:`make_flow`'s, in the order a draw goes
    through them, over a diagonal Gaussian base; None for any other flow. Over one
    coordinate zuko's layers are element-wise, and read a context (without one they
    hold their shift and scale as parameters: zuko's path draws from those)."""
    drawing = flow.transform
    if not (isinstance(drawing, LazyInverse) and isinstance(drawing.transform, LazyComposedTransform)):
        return None
    layers = list(drawing.transform.transforms)
    affine = all(isinstance(layer, MaskedAutoregressiveTransform | ElementWiseTransform)
                 and layer.univariate is MonotonicAffineTransform and layer.shapes == ((), ())
                 and hasattr(layer, "hyper") for layer in layers)
    base = flow.base
    gaussian = isinstance(base, UnconditionalDistribution) and base.f is DiagNormal
    return layers if affine and gaussian else None
