"""The shared base of the variational families: ancestral sampling with log densities.

Every family draws the latent variables of one batch block by block, parents first.
A *block* is a tuple of template variables drawn together, jointly, in
*unconstrained* space (the real line, or R^k); each draw is then mapped onto its
variable's support with ``torch.distributions.biject_to``. A family subclass says
which blocks it has (:attr:`VariationalFamily.blocks`: by default one variable a
block) and how to draw one block's batched ground variables in unconstrained space
(:meth:`VariationalFamily.draw_unconstrained`).

Random numbers: given a ``generator`` (a :class:`torch.Generator` on the model's
device), all the sampling noise comes from it, so that draws in concurrent threads
of one process are reproducible; without one, from torch's global generator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.distributions import Transform

from pavi_viz.model.compiled import CompiledModel, sum_over_plates
from pavi_viz.model.plates import Frame


class NonFiniteDraw(ArithmeticError):
    """The family drew a non-finite value (NaN or infinite) of a latent variable.

    Attributes:
        variable: the variable's name.
    """

    def __init__(self, variable: str) -> None:
        super().__init__(f"the family's draws of variable {variable!r} are not finite")
        self.variable = variable


@dataclass
class Draw:
    """Latent values of one batch, with their variational log densities.

    Attributes:
        values: each latent's constrained value, shape ``(particles, *batch_shape, *event_shape)``.
        unconstrained: the same draws on the real line, shape ``(particles, *batch_shape, k)``
            with ``k`` the size of the variable's unconstrained event.
        log_q: each latent's log q summed over the batch's ground variables and scaled
            by ``size / batch`` for the plates it sits in (as the model's log joint
            terms are), shape ``(particles,)``.
    """

    values: dict[str, Tensor]
    unconstrained: dict[str, Tensor]
    log_q: dict[str, Tensor]


class VariationalFamily(nn.Module):
    """A variational distribution over all the latent variables of a model.

    Args:
        model: the compiled model; the family's tensors live on its device.
    """

    #: The name users pass to ``fit(family=...)``.
    name: ClassVar[str] = ""

    def __init__(self, model: CompiledModel) -> None:
        super().__init__()
        self.model = model
        # The unconstrained event size of each latent: the support bijection may change
        # it (a Dirichlet over K weights has K - 1 free coordinates). The bijection may
        # depend on parents (a Uniform's bounds), so read it off one prior draw.
        batch = model.sample_batch({p.name: 1 for p in model.plates}, torch.Generator(model.device).manual_seed(0))
        frame = model.frame(batch)
        context = {**model.batch_data(frame), **model.sample_prior((1,), batch=batch, seed=0)}
        self.unconstrained_shapes: dict[str, tuple[int, ...]] = {}
        # Supports that do not depend on parameters have one bijection for every draw:
        # keep it rather than rebuild the distribution each step to read it off.
        self._fixed_transforms: dict[str, Transform] = {}
        for name in model.latent_names:
            transform = model.support_transform(name, context, frame, (1,))
            event = torch.Size(model.variables[name].event_shape)
            self.unconstrained_shapes[name] = tuple(transform.inverse_shape(event))
            if model.variables[name].info.support is not None:
                self._fixed_transforms[name] = transform
        #: The blocks of latent variables drawn jointly, in drawing order (parents
        #: before children); the variables of one block share their plates.
        self.blocks: list[tuple[str, ...]] = [(name,) for name in model.latent_names]

    def unconstrained_size(self, name: str) -> int:
        """The number of free coordinates of one ground variable of ``name``."""
        return math.prod(self.unconstrained_shapes[name])

    def parameter_count(self) -> int:
        """The number of learnable numbers in the family."""
        return sum(p.numel() for p in self.parameters())

    def refresh(self) -> None:
        """Recompute, before the next training draw, what the family derives from the
        whole data (the trainer calls it every ``refresh_every`` steps); nothing here."""

    @property
    def standardisable(self) -> bool:
        """Whether :meth:`standardise_globals` does anything (no: this family)."""
        return False

    def standardise_globals(self, generator: torch.Generator | None = None) -> None:
        """Start drawing the global latents in units of their current q (see
        :class:`~pavi_viz.inference.families.pavi.PlateAmortizedFamily`); nothing here."""

    def block_size(self, block: tuple[str, ...]) -> int:
        """The number of free coordinates of one ground draw of ``block``."""
        return sum(self.unconstrained_size(name) for name in block)

    def draw_unconstrained(
        self,
        block: tuple[str, ...],
        frame: Frame,
        particles: int,
        drawn: dict[str, Tensor],
        generator: torch.Generator | None = None,
        values: Mapping[str, Tensor] | None = None,
        spread: float = 1.0,
    ) -> tuple[Tensor, Tensor]:
        """Draw one block's batched ground variables jointly, in unconstrained space.

        Args:
            block: the names of the block's variables, which share their plates ``P``.
            frame: the batch.
            particles: the number of independent draws.
            drawn: the unconstrained draws of the latents drawn so far, shape
                ``(particles, *frame.batch_shape(its plates), k)`` each.
            generator: the source of all the noise, on the model's device (``None``:
                torch's global generator).
            values: the batch's data and the latents drawn so far, constrained (what
                :meth:`CompiledModel.distribution` reads); families that look at the
                block's prior given its parents' draws need them.
            spread: above 1, the block's draws and densities are those of a defensive
                mixture of q and a wider q (see :func:`~pavi_viz.inference.flows.gaussian_draw`:
                the first half of the particles from q, the rest from the wider one).

        Returns:
            the draws, the block's variables' coordinates concatenated in block order,
            shape ``(particles, *frame.batch_shape(P), block_size(block))``, and their
            joint log densities, shape ``(particles, *frame.batch_shape(P))``.
        """
        raise NotImplementedError

    def sample(
        self,
        frame: Frame,
        particles: int = 1,
        given: dict[str, Tensor] | None = None,
        generator: torch.Generator | None = None,
        spread: float = 1.0,
    ) -> Draw:
        """Draw every latent variable of the batch, parents first.

        Args:
            frame: the batch (``model.frame(batch)``).
            particles: the number of independent joint draws.
            given: constrained values to hold fixed instead of drawing (for instance
                the global variables, when a large posterior is drawn chunk by chunk),
                shape ``(particles, *batch_shape, *event_shape)`` each; their log q is
                not computed.
            generator: the source of all the sampling noise, a :class:`torch.Generator`
                on the model's device (``None``: torch's global generator). The same
                generator state gives the same draw.
            spread: above 1, the global latents (in no plate) are drawn from a
                defensive mixture: the first half of the particles from q, the rest
                with q's base noise spread by this factor, and ``log_q`` is the
                mixture's (an importance sampling proposal: :mod:`pavi_viz.inference.posterior`).
        """
        given = given or {}
        values: dict[str, Tensor] = dict(given)
        unconstrained: dict[str, Tensor] = {}
        log_q: dict[str, Tensor] = {}
        context = {**self.model.batch_data(frame), **values}
        checked: list[str] = []  # drawn latents whose finiteness is checked later, at once
        for block in self.blocks:
            held = [name for name in block if name in given]
            if held and len(held) < len(block):
                raise ValueError(f"the variables {', '.join(block)} are drawn jointly: give all of them or none")
            if not held:
                spread_here = spread if not self.model.plates_of(block[0]) else 1.0
                z, density = self.draw_unconstrained(
                    block, frame, particles, unconstrained, generator, context, spread=spread_here)
                pieces = z.split([self.unconstrained_size(name) for name in block], -1)
            plates = self.model.plates_of(block[0])
            for i, name in enumerate(block):
                var = self.model.variables[name]
                if name in self._fixed_transforms:
                    transform = self._fixed_transforms[name]
                else:
                    # This support depends on the draws so far: non-finite ones would make
                    # its distribution refuse them (a ValueError), so check them first.
                    _check_finite(values, checked)
                    checked = []
                    transform = self.model.support_transform(name, context, frame, (particles,))
                if held:
                    inverse = transform.inv(given[name])
                    unconstrained[name] = inverse.reshape(*inverse.shape[: inverse.dim() - len(var.event_shape)], -1)
                    continue
                shaped = pieces[i].reshape(*pieces[i].shape[:-1], *self.unconstrained_shapes[name])
                value = transform(shaped)
                # Change of variables: log q(value) = log q(z) - log |det d value / d z|.
                # A block's joint density goes to its first variable's term; every
                # variable's term takes its own Jacobian.
                log_det = transform.log_abs_det_jacobian(shaped, value)
                log_det = _sum_rightmost(log_det, log_det.dim() - density.dim())
                term = density - log_det if i == 0 else -log_det
                log_q[name] = sum_over_plates(term, 1) * frame.weight(plates)
                values[name] = context[name] = value
                unconstrained[name] = pieces[i]
                checked.append(name)
        _check_finite(values, checked)
        return Draw(values={n: values[n] for n in self.model.latent_names}, unconstrained=unconstrained, log_q=log_q)


def _check_finite(values: dict[str, Tensor], names: list[str]) -> None:
    """Raise :class:`NonFiniteDraw` naming the first of ``names`` whose values are not
    all finite; one synchronisation for all of them."""
    if not names:
        return
    finite = torch.stack([torch.isfinite(values[name]).all() for name in names])
    if not bool(finite.all()):
        raise NonFiniteDraw(names[int((~finite).nonzero()[0])])


def _sum_rightmost(value: Tensor, dims: int) -> Tensor:
    return value.sum(tuple(range(-dims, 0))) if dims > 0 else value
