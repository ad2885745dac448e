"""Mean-field Gaussian in unconstrained space (ADVI): the off-the-shelf baseline."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.distributions import Normal

from pavi_viz.inference.families.base import VariationalFamily
from pavi_viz.inference.flows import gaussian_draw
from pavi_viz.model.compiled import CompiledModel
from pavi_viz.model.plates import Frame


class MeanField(VariationalFamily):
    """An independent Gaussian per ground variable and unconstrained coordinate.

    Its parameter count grows with the plates: two numbers per coordinate of every
    ground variable. Trained with the same plate batches as the PAVI families.

    Args:
        model: the compiled model.
        init_scale: the initial standard deviation of every Gaussian.
    """

    name = "mean-field"

    def __init__(self, model: CompiledModel, init_scale: float = 0.1) -> None:
        super().__init__(model)
        numbers = sum(math.prod(model.plate_shape(name)) * self.unconstrained_size(name) for name in model.latent_names)
        self._check_plate_numbers(2 * numbers, "means and scales")
        self.loc = nn.ParameterDict()
        self.log_scale = nn.ParameterDict()
        for name in model.latent_names:
            shape = (*model.plate_shape(name), self.unconstrained_size(name))
            self.loc[name] = nn.Parameter(torch.zeros(shape, device=model.device))
            self.log_scale[name] = nn.Parameter(torch.full(shape, math.log(init_scale), device=model.device))

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
        (name,) = block  # one variable a block: nothing is drawn jointly
        plates = self.model.plates_of(name)
        loc = frame.select(self.loc[name], plates)
        log_scale = frame.select(self.log_scale[name], plates)
        shape = (particles, *loc.shape)
        return gaussian_draw(loc.expand(shape), log_scale.exp().expand(shape), generator, spread)

    def log_q_unconstrained(
        self,
        block: tuple[str, ...],
        frame: Frame,
        particles: int,
        drawn: dict[str, Tensor],
        values: Mapping[str, Tensor],
        z: Tensor,
    ) -> Tensor:
        (name,) = block
        plates = self.model.plates_of(name)
        loc = frame.select(self.loc[name], plates)
        scale = frame.select(self.log_scale[name], plates).exp()
        return Normal(loc, scale).log_prob(z).sum(-1)
