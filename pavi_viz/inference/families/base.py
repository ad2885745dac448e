"""The shared base of the variational families: ancestral sampling with log densities.

Every family draws the latent variables of one batch in the model's topological
order, each in *unconstrained* space (the real line, or R^k), then maps the draw onto
the variable's support with ``torch.distributions.biject_to``. A family subclass
only says how to draw one template variable's batched ground variables in
unconstrained space: :meth:`VariationalFamily.draw_unconstrained`.

Random numbers: given a ``generator`` (a :class:`torch.Generator` on the model's
device), all the sampling noise comes from it, so that draws in concurrent threads
of one process are reproducible; without one, from torch's global generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.distributions import Transform

from pavi_viz.model.compiled import CompiledModel, CompiledVariable, sum_over_plates
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

    def unconstrained_size(self, name: str) -> int:
        """The number of free coordinates of one ground variable of ``name``."""
        return math.prod(self.unconstrained_shapes[name])

    def parameter_count(self) -> int:
        """The number of learnable numbers in the family."""
        return sum(p.numel() for p in self.parameters())

    def refresh(self) -> None:
        """Recompute, before the next training draw, what the family derives from the
        whole data (the trainer calls it every ``refresh_every`` steps); nothing here."""

    def draw_unconstrained(
        self,
        var: CompiledVariable,
        frame: Frame,
        particles: int,
        parents: dict[str, Tensor],
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw one template variable's batched ground variables in unconstrained space.

        Args:
            var: the variable.
            frame: the batch.
            particles: the number of independent draws.
            parents: the unconstrained draws of the latents sampled so far, shape
                ``(particles, *batch_shape, k)`` each.
            generator: the source of all the noise, on the model's device (``None``:
                torch's global generator).

        Returns:
            the draws, shape ``(particles, *frame.batch_shape(var.plates), k)``, and their
            log densities, shape ``(particles, *frame.batch_shape(var.plates))``.
        """
        raise NotImplementedError

    def sample(
        self,
        frame: Frame,
        particles: int = 1,
        given: dict[str, Tensor] | None = None,
        generator: torch.Generator | None = None,
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
        """
        given = given or {}
        values: dict[str, Tensor] = dict(given)
        unconstrained: dict[str, Tensor] = {}
        log_q: dict[str, Tensor] = {}
        context = {**self.model.batch_data(frame), **values}
        drawn: list[str] = []  # the latents drawn so far, whose finiteness is checked once, at the end
        for name in self.model.latent_names:
            var = self.model.variables[name]
            if name in self._fixed_transforms:
                transform = self._fixed_transforms[name]
            else:
                # This support depends on the draws so far: non-finite ones would make
                # its distribution refuse them (a ValueError), so check them first.
                _check_finite(values, drawn)
                drawn = []
                transform = self.model.support_transform(name, context, frame, (particles,))
            if name in given:
                z = transform.inv(given[name])
                unconstrained[name] = z.reshape(*z.shape[: z.dim() - len(var.event_shape)], -1)
                continue
            z, log_density = self.draw_unconstrained(var, frame, particles, unconstrained, generator)
            shaped = z.reshape(*z.shape[:-1], *self.unconstrained_shapes[name])
            value = transform(shaped)
            # Change of variables: log q(value) = log q(z) - log |det d value / d z|.
            log_det = transform.log_abs_det_jacobian(shaped, value)
            log_det = _sum_rightmost(log_det, log_det.dim() - log_density.dim())
            log_q[name] = sum_over_plates(log_density - log_det, 1) * frame.weight(var.plates)
            values[name] = context[name] = value
            unconstrained[name] = z
            drawn.append(name)
        _check_finite(values, drawn)
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
