"""Plate-amortized families: one conditional flow per block of template variables.

The global latents are drawn jointly by one flow; every other template variable's
ground variables share one conditional normalizing flow, followed by the bijection
onto the variable's support. What tells the copies apart is their *encoding*
``e_i^n`` and the draws of the latents that the posterior couples them with (their
Markov blanket, :mod:`pavi_viz.inference.families.structure`), which form the
flow's context: so the family keeps the posterior's dependencies, unlike mean-field.
The two families differ in where encodings come from:

* :class:`PaviF`: a free, learnable vector per ground variable;
* :class:`PaviE`: computed from the data below the ground variable by a
  permutation-invariant set encoder (:mod:`pavi_viz.inference.encoders`), so the
  parameter count does not grow with the plates.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pavi_viz.inference.encoders import DataEncoder, Level, encodes_per_shard
from pavi_viz.inference.families.base import Draw, VariationalFamily
from pavi_viz.inference.families.structure import conditioning, drawn_scale, joint_blocks, prior_loc_scale
from pavi_viz.inference.flows import draw, make_flow, reset_to_identity
from pavi_viz.model.compiled import CompiledModel, CompiledVariable
from pavi_viz.model.plates import Frame, Shard, Total


class PlateAmortizedFamily(VariationalFamily):
    """The shared machinery of PAVI-F and PAVI-E.

    Args:
        model: the compiled model.
        encoding_size: the length of each ground variable's encoding.
        flow: the flow kind (``"maf"`` or ``"nsf"``).
        transforms: the number of flow layers.
        hidden: the hidden layer sizes of the flows' conditioners.
    """

    def __init__(
        self,
        model: CompiledModel,
        encoding_size: int = 16,
        flow: str = "maf",
        transforms: int = 3,
        hidden: tuple[int, ...] = (64, 64),
    ) -> None:
        super().__init__(model)
        self.encoding_size = encoding_size
        self.blocks = joint_blocks(model)
        self.given = conditioning(model, self.blocks)
        self.flows = nn.ModuleDict(
            {
                block_key(block): make_flow(
                    flow,
                    features=self.block_size(block),
                    context=encoding_size * len(block) + sum(self.unconstrained_size(u) for u in self.given[block]),
                    transforms=transforms,
                    hidden=hidden,
                )
                for block in self.blocks
            }
        )
        # Each ground draw is scaled and shifted by linear functions of the draws it is
        # given that are not its parents (the other parents of its children), with
        # coefficients read off its encoding: exp(B(e) g) * z + A(e) g. Where two
        # latents share a likelihood term (a random intercept and the fixed one in
        # alpha + u[group]), the posterior runs along a ridge: given the other, each
        # moves by a coefficient that differs from group to group with its data. The
        # flow's conditioner would have to learn that product of encoding and draw;
        # the read-out states it. Parents are left to the conditioner: a read-out of
        # GRE's population mean made its fitted sd half the exact one. Zero at the
        # start: the flow alone.
        self.coupled = {
            block: [u for u in self.given[block] if not any(u in model.variables[v].parents for v in block)]
            for block in self.blocks
        }
        # The global block's draws are z = centre + scale * (its flow's output): the
        # identity until :meth:`standardise_globals` sets them.
        self.global_block = next((block for block in self.blocks if not model.plates_of(block[0])), None)
        if self.global_block is not None:
            size = self.block_size(self.global_block)
            self.register_buffer("global_centre", torch.zeros(size, device=model.device))
            self.register_buffer("global_scale", torch.ones(size, device=model.device))
        self.slopes = nn.ModuleDict()
        for block, coupled in self.coupled.items():
            inputs = sum(self.unconstrained_size(u) for u in coupled)
            if inputs:
                slope = nn.Linear(encoding_size * len(block), 2 * self.block_size(block) * inputs)
                nn.init.zeros_(slope.weight)
                nn.init.zeros_(slope.bias)
                self.slopes[block_key(block)] = slope
        # Funnels (a group effect whose prior scale is drawn: radon's slopes given
        # sigma_beta): given the scale s and the location m of its prior, a ground draw
        # becomes k * m + s^k * z, with one learnt k per coordinate of the variable.
        # k = 0 is the centred form (the flow alone), k = 1 the non-centred one (the
        # flow draws (x - m) / s); the best lies between (Gorinova, Moore & Hoffman,
        # 2020, "Automatic reparameterisation of probabilistic programs"). The
        # conditioner could learn the product s^k * z only approximately; this states
        # it. Zero at the start: the flow alone. A k per ground variable, read off its
        # encoding, drove radon's sigma_beta below the reference (0.30 sd) where one k
        # brought it within 0.02.
        self.centring = nn.ParameterDict(
            {
                block_key(block): nn.Parameter(torch.zeros(self.block_size(block), device=model.device))
                for block in self.blocks
                if len(block) == 1 and drawn_scale(model, block[0])
            }
        )

    def encodings(self, var: CompiledVariable, frame: Frame) -> Tensor:
        """The encodings of the batch's ground variables of ``var``, shape ``(*batch_shape, encoding_size)``."""
        raise NotImplementedError

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
        batch_shape = frame.batch_shape(self.model.plates_of(block[0]))
        if 0 in batch_shape:  # drawn outer elements without members: nothing to draw
            empty = torch.zeros(particles, *batch_shape, device=self.model.device)
            return empty.unsqueeze(-1).expand(*empty.shape, self.block_size(block)), empty
        context, pieces = self._context(block, frame, particles, drawn)
        u, log_q = draw(self.flows[block_key(block)], context, generator, spread)
        u, log_q = u.reshape(particles, *batch_shape, -1), log_q.reshape(particles, *batch_shape)
        shift, log_scale = self._affine(block, frame, particles, values, pieces, u.shape)
        return shift + log_scale.exp() * u, log_q - log_scale.sum(-1)

    def log_q_unconstrained(
        self,
        block: tuple[str, ...],
        frame: Frame,
        particles: int,
        drawn: dict[str, Tensor],
        values: Mapping[str, Tensor],
        z: Tensor,
    ) -> Tensor:
        context, pieces = self._context(block, frame, particles, drawn)
        shift, log_scale = self._affine(block, frame, particles, values, pieces, z.shape)
        u = (z - shift) * (-log_scale).exp()
        flow = self.flows[block_key(block)](context)
        log_q = flow.log_prob(u.reshape(-1, u.shape[-1])).reshape(z.shape[:-1])  # the flow's inverse pass
        return log_q - log_scale.sum(-1)

    def _context(
        self, block: tuple[str, ...], frame: Frame, particles: int, drawn: dict[str, Tensor]
    ) -> tuple[Tensor, list[Tensor]]:
        """The context of the block's flow, shape ``(particles * prod(batch_shape), context)``,
        and its pieces: the block's encodings, then the draws it is given, each of shape
        ``(particles, *batch_shape, size)``."""
        plates = self.model.plates_of(block[0])
        batch_shape = frame.batch_shape(plates)
        pieces = [
            self.encodings(self.model.variables[name], frame).expand(particles, *batch_shape, self.encoding_size)
            for name in block
        ]
        for name in self.given[block]:
            aligned = frame.align(drawn[name], self.model.plates_of(name), plates, event_rank=1, key=(name, "context"))
            pieces.append(aligned.expand(particles, *batch_shape, aligned.shape[-1]))
        context = torch.cat(pieces, -1)
        return context.reshape(-1, context.shape[-1]), pieces

    def _affine(
        self,
        block: tuple[str, ...],
        frame: Frame,
        particles: int,
        values: Mapping[str, Tensor] | None,
        pieces: list[Tensor],
        shape: tuple[int, ...],
    ) -> tuple[Tensor, Tensor]:
        """What maps the flow's output ``u`` onto the block's draws, ``shift + exp(log_scale) * u``:
        the read-out of the coupled draws, the funnel's centring, the globals'
        standardisation, in that order (see ``__init__``); both broadcast to ``shape``,
        the draws' ``(particles, *batch_shape, block_size)``."""
        key = block_key(block)
        shift = torch.zeros((), device=self.model.device)
        log_scale = torch.zeros((), device=self.model.device)
        if key in self.slopes:
            coupled = [p for u, p in zip(self.given[block], pieces[len(block) :]) if u in self.coupled[block]]
            given = torch.cat(coupled, -1).unsqueeze(-1)  # (particles, *batch_shape, inputs, 1)
            encodings = torch.cat(pieces[: len(block)], -1)
            slopes = self.slopes[key](encodings).unflatten(-1, (2, shape[-1], given.shape[-2]))
            log_scale = (slopes[..., 0, :, :] @ given).squeeze(-1)
            shift = (slopes[..., 1, :, :] @ given).squeeze(-1)
        if key in self.centring:
            loc, scale = prior_loc_scale(self.model, block[0], values, frame, particles, shape)
            k = self.centring[key]
            centring = k * scale.log()
            shift = k * loc + centring.exp() * shift
            log_scale = log_scale + centring
        if block == self.global_block:
            shift = self.global_centre + self.global_scale * shift
            log_scale = log_scale + self.global_scale.log()
        return shift.expand(shape), log_scale.expand(shape)

    @property
    def standardisable(self) -> bool:
        return self.global_block is not None and len(self.blocks) > 1

    @torch.no_grad()
    def standardise_globals(self, generator: torch.Generator | None = None, draws: int = 2000) -> None:
        """Draw the global latents in units of their current q from now on.

        Adam moves every parameter by about ``lr`` a step, in the units of the draws it
        shapes. Where the data pin a global latent down (GRE's population mean: posterior
        sd 0.01 at 10^4 groups, 0.003 at 10^5), steps of that size keep its mean several
        posterior sds off to the end of a fit, through every pathway at once: the flow's
        layers, the encodings it reads. So once a first stage has found their scale, the
        global block's draws become ``centre + scale * u``, with ``centre`` and ``scale``
        the mean and sd of ``draws`` draws of q (unconstrained), and ``u`` a fresh flow
        (its weights drawn again from torch's global generator: the caller seeds it)
        that starts as a standard Normal (:func:`~pavi_viz.inference.flows.reset_to_identity`),
        so that the switch keeps q's mean and sd of the global latents, and a step of
        ``lr`` then moves them by about ``lr`` of their posterior sd. (Redrawn at random,
        the flow's output layers moved GRE's population mean by 0.15 of q's sd at the
        switch; with one global coordinate, whose flow's layers were left as trained,
        by 1.7 of it, with q's sd cut to 0.23 of itself.)

        The second stage of the ``"plateau"`` schedule follows this, with the optimizer's
        state cleared (:meth:`Trainer.step`).
        """
        if not self.standardisable:
            return
        block = self.global_block
        model = self.model
        frame = model.frame(model.sample_batch({p.name: 1 for p in model.plates}, generator))
        draw = self.sample(frame, draws, generator=generator).unconstrained
        z = torch.cat([draw[name].reshape(draws, -1) for name in block], -1)
        self.global_centre.copy_(z.mean(0))
        self.global_scale.copy_(z.std(0).clamp(min=torch.finfo(z.dtype).tiny))
        reset_to_identity(self.flows[block_key(block)])


def block_key(block: tuple[str, ...]) -> str:
    """The name of a block's flow: its variables' names joined by ``+`` (no name has one)."""
    return "+".join(block)


class PaviF(PlateAmortizedFamily):
    """PAVI with free encodings: one learnable vector per ground variable.

    Memory grows with the plates (``encoding_size`` numbers per ground variable), far
    less than a separate flow per ground variable would need.
    """

    name = "pavi-f"

    def __init__(self, model: CompiledModel, encoding_size: int = 16, **options) -> None:
        super().__init__(model, encoding_size=encoding_size, **options)
        numbers = encoding_size * sum(math.prod(model.plate_shape(name)) for name in model.latent_names)
        self._check_plate_numbers(numbers, "numbers of free encodings")
        self.free_encodings = nn.ParameterDict(
            {
                name: nn.Parameter(
                    0.1 * torch.randn(
                        *model.plate_shape(name),
                        encoding_size,
                        device=model.device,
                    )
                )
                for name in model.latent_names
            }
        )

    def encodings(self, var: CompiledVariable, frame: Frame) -> Tensor:
        return frame.select(self.free_encodings[var.name], var.plates)


@dataclass(frozen=True)
class _Summaries:
    """Whole-data summaries that :class:`PaviE` keeps: those averaged over ``plates``
    (:meth:`DataEncoder.full_summaries`), made after ``draws`` training draws."""

    plates: frozenset[str]
    values: dict[Level, Tensor]
    draws: int = 0


def _kept(
    made: _Summaries | None, plates: frozenset[str], draws: int, make: Callable[[frozenset[str]], dict[Level, Tensor]]
) -> _Summaries:
    """``made``, where it holds the summaries averaged over ``plates`` and was made after
    ``draws`` training draws; else new ones, by ``make``, over ``plates`` and those that
    ``made`` holds (then after the same draws)."""
    if made is not None and made.draws == draws:
        if plates <= made.plates:
            return made
        plates = plates | made.plates
    return _Summaries(plates, make(plates), draws)


class PaviE(PlateAmortizedFamily):
    """PAVI with encodings computed from the data by a set encoder.

    The parameter count does not grow with plate sizes, and the encoder carries over
    to other datasets of the same model.

    Whole-data summaries: a frame that holds part of a plate needs the encoder's
    summaries of the whole data for the levels above it. A training draw uses the
    summaries made at the latest :meth:`refresh` (the trainer calls it every
    ``refresh_every`` steps: a cadence counted in steps, so a seeded fit is
    reproducible), lagging a little behind the encoder's weights in between. A draw
    without gradients (a posterior summary) uses summaries made with the current
    weights, kept apart so that evaluating never changes training. In a data-parallel
    run (:meth:`share_out`), each process pools the training summaries over its shard
    only, and one sum over the processes makes them whole; a draw without gradients
    (made by one process alone) pools the whole data itself.

    Args:
        model: the compiled model.
        encoding_size: the length of each ground variable's encoding.
        encoder_hidden: the width of the set encoder's hidden layers.
        **options: flow options, as for :class:`PlateAmortizedFamily`.
    """

    name = "pavi-e"

    def __init__(self, model: CompiledModel, encoding_size: int = 16, encoder_hidden: int = 32, **options) -> None:
        super().__init__(model, encoding_size=encoding_size, **options)
        self.encoder = DataEncoder(model, encoding_size, encoder_hidden)
        # The frame being drawn and its encodings, per thread (draws may run in several
        # threads at once: a posterior summary next to another one).
        self._encoded: dict[int, tuple[Frame, dict[str, Tensor]]] = {}
        self._training_summaries: _Summaries | None = None
        # A data-parallel run's shard of this process and the sum over processes
        # (:meth:`share_out`): training summaries are pooled per shard and added up.
        self._shard_and_total: tuple[Shard, Total] | tuple[None, None] = (None, None)
        # Training draws so far, and the summaries for draws without gradients with
        # the count of training draws they were made after.
        self._training_draws = 0
        self._evaluation_summaries: _Summaries | None = None

    @classmethod
    def trains_on_a_part(cls, model: CompiledModel, plate: str) -> bool:
        return encodes_per_shard(model, plate)

    def refresh(self) -> None:
        self._training_summaries = None  # made anew by the next training draw that needs them

    def share_out(self, shard: Shard, total: Total) -> None:
        self._shard_and_total = (shard, total)

    def encodings(self, var: CompiledVariable, frame: Frame) -> Tensor:
        # All latents of one draw share the frame: encode its data once.
        thread = threading.get_ident()
        cached = self._encoded.get(thread)
        if cached is None or cached[0] is not frame:
            cached = self._encoded[thread] = (frame, self.encoder(frame, self._whole_data_summaries(frame)))
        return cached[1][var.name]

    def _whole_data_summaries(self, frame: Frame) -> dict | None:
        """The whole data's summaries, when ``frame`` needs them (see the class's docstring):
        those averaged over the plates that ``frame`` (or a frame before it, since they
        were made) holds only part of."""
        partial = self.encoder.partial_plates(frame)
        if not partial:
            return None
        if torch.is_grad_enabled():
            shard, total = self._shard_and_total
            if shard is not None:
                # Every process must make them at the same steps (their sum is a collective),
                # so by the plates every frame batches, not by those this one holds part of.
                partial = frozenset(frame.batch)
            made = self._training_summaries = _kept(
                self._training_summaries, partial, 0,
                lambda plates: self.encoder.full_summaries(shard=shard, total=total, averaged_over=plates))
        else:
            made = self._evaluation_summaries = _kept(
                self._evaluation_summaries, partial, self._training_draws,
                lambda plates: self.encoder.full_summaries(averaged_over=plates))
        return made.values

    def sample(
        self,
        frame: Frame,
        particles: int = 1,
        given: dict[str, Tensor] | None = None,
        generator: torch.Generator | None = None,
        spread: float = 1.0,
    ) -> Draw:
        if torch.is_grad_enabled():
            self._training_draws += 1
        try:
            return super().sample(frame, particles, given, generator, spread)
        finally:
            self._encoded.pop(threading.get_ident(), None)  # never keep a graph or a frame alive between steps
