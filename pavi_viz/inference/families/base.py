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
from torch.distributions import Normal, Transform

from pavi_viz.inference.families.structure import drawn_scale, prior_loc_scale
from pavi_viz.model.compiled import CompiledModel, sum_over_plates
from pavi_viz.model.plates import Frame, Shard, Total


#: The share of an importance pool's draws that take a funnel's ground variables from
#: its prior rather than from q (:meth:`VariationalFamily._prior_mixture`). On one fit
#: each (radon, spikes), 0.25 and 0.1 left spikes' Pareto k at 0.62 to 0.84 (0.47 to
#: 0.54 at 0.5) and sigma_animal up to 0.31 sd off; radon missed the bar at every share
#: with one pool of draws, and met it at 0.5 once the pool grows with its effective
#: sample size (``posterior.IMPORTANCE_ESS_PER_DRAW``).
FUNNEL_PRIOR_SHARE = 0.5
#: The most parameters a family may hold whose number grows with the plates (a free
#: encoding or a Gaussian per ground variable), refused before they are allocated:
#: with their gradients, Adam's two moments and the last good copy, 7 numbers of 4
#: bytes each, 1.4 GB.
MAX_PLATE_NUMBERS = 50_000_000


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

    def _check_plate_numbers(self, numbers: int, what: str) -> None:
        """Refuse, before they are allocated, ``numbers`` parameters that grow with the plates.

        Raises:
            ValueError: above :data:`MAX_PLATE_NUMBERS`, naming the family, the model and what
                the numbers are.
        """
        if numbers > MAX_PLATE_NUMBERS:
            raise ValueError(
                f"the {self.name} family of model {self.model.name!r} would hold {numbers:,} {what} (about "
                f"{numbers * 28 / 1e9:.1f} GB with their gradients and the optimizer's state), over the "
                f"{MAX_PLATE_NUMBERS:,} a family may hold; pavi-e's size does not grow with the plates"
            )

    def parameter_count(self) -> int:
        """The number of learnable numbers in the family."""
        return sum(p.numel() for p in self.parameters())

    def refresh(self) -> None:
        """Recompute, before the next training draw, what the family derives from the
        whole data (the trainer calls it every ``refresh_every`` steps); nothing here."""

    def share_out(self, shard: Shard, total: Total) -> None:
        """Take part in a data-parallel run as the process that holds ``shard``: what the
        family derives from the whole data for its training draws, it derives from the
        shard's part and adds up the processes' parts with ``total`` (so every process
        must take the same training draws); nothing here."""

    @classmethod
    def trains_on_a_part(cls, model: CompiledModel, plate: str) -> bool:
        """Whether a family of this kind can be built on one process's shard of ``model``'s
        top-level ``plate`` alone (:func:`~pavi_viz.model.sharding.compile_part`) and
        train as one built on the whole model: its parameters do not grow with the plate,
        and once it has loaded the whole model's family's state
        (:meth:`~torch.nn.Module.load_state_dict`) it draws the shard's elements as that
        family does. No: this family."""
        return False

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
                each particle from one or the other, with probability 1/2).

        Returns:
            the draws, the block's variables' coordinates concatenated in block order,
            shape ``(particles, *frame.batch_shape(P), block_size(block))``, and their
            joint log densities, shape ``(particles, *frame.batch_shape(P))``.
        """
        raise NotImplementedError

    def log_q_unconstrained(
        self,
        block: tuple[str, ...],
        frame: Frame,
        particles: int,
        drawn: dict[str, Tensor],
        values: Mapping[str, Tensor],
        z: Tensor,
    ) -> Tensor:
        """q's log density of given unconstrained draws ``z`` of one block (shaped and
        conditioned as :meth:`draw_unconstrained`'s), shape ``(particles, *frame.batch_shape(P))``."""
        raise NotImplementedError

    def _prior_mixture(
        self,
        block: tuple[str, ...],
        frame: Frame,
        particles: int,
        drawn: dict[str, Tensor],
        generator: torch.Generator | None,
        values: Mapping[str, Tensor],
        z: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """A defensive mixture for a funnel's block (a variable whose location-scale prior
        has a drawn scale: :func:`~pavi_viz.inference.families.structure.drawn_scale`).

        Each particle keeps q's draws ``z`` of all the block's ground variables, or,
        with probability :data:`FUNNEL_PRIOR_SHARE`, draws them all from the Normal
        with their prior's location and scale given the draws so far (on the real
        line, as ``drawn_scale``'s variables are: their unconstrained draws are their
        values). Where the drawn scale is small (a
        funnel's neck, which q, fitted by the reverse KL divergence, reaches too
        rarely), the posterior of the ground variables is close to that prior: these
        draws are where q's are not (Hesterberg, 1995, mixes the prior into a
        proposal for that reason). The mixture is over the block's ground variables
        jointly: a neck holds all of them at once.

        Returns:
            the draws, shaped as ``z``; q's log density of each ground draw, shape
            ``(particles, *batch_shape)``; and what turns their sum into the mixture's
            log density, shape ``(particles,)``.
        """
        (name,) = block
        loc, scale = prior_loc_scale(self.model, name, values, frame, particles, z.shape)
        from_prior = torch.rand(particles, generator=generator, device=z.device) < FUNNEL_PRIOR_SHARE
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        z = torch.where(from_prior.reshape(particles, *[1] * (z.dim() - 1)), loc + scale * noise, z)
        log_q = self.log_q_unconstrained(block, frame, particles, drawn, values, z)
        q_total = log_q.reshape(particles, -1).sum(-1)
        prior_total = Normal(loc, scale).log_prob(z).reshape(particles, -1).sum(-1)
        mixture = torch.logaddexp(q_total + math.log1p(-FUNNEL_PRIOR_SHARE), prior_total + math.log(FUNNEL_PRIOR_SHARE))
        return z, log_q, mixture - q_total

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
            spread: above 1, the draws come from a defensive mixture of q, and
                ``log_q`` is the mixture's (an importance sampling proposal for whole
                frames: :mod:`pavi_viz.inference.posterior`). The global latents (in
                no plate) come, for each particle with probability 1/2, from q with
                its base noise spread by this factor; each funnel's block, with
                probability :data:`FUNNEL_PRIOR_SHARE`, from the Normal of its
                prior's location and scale (:meth:`_prior_mixture`). The coins are independent, so that the
                proposal's density is the product of the mixtures'.
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
            plates = self.model.plates_of(block[0])
            if not held:
                z, density = self.draw_unconstrained(
                    block, frame, particles, unconstrained, generator, context, spread=1.0 if plates else spread)
                mixture = None  # the block's correction from q's density to a mixture's
                if spread > 1.0 and plates and len(block) == 1 and drawn_scale(self.model, block[0]):
                    z, density, mixture = self._prior_mixture(block, frame, particles, unconstrained, generator, context, z)
                pieces = z.split([self.unconstrained_size(name) for name in block], -1)
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
                if i == 0 and mixture is not None:
                    log_q[name] = log_q[name] + mixture * frame.weight(plates)
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
