"""Which latents a structured family draws jointly, and what each draw is conditioned on.

A family that follows the *prior's* graph (each variable given its prior parents)
drops dependencies that the posterior has: observing a child couples its parents,
so sibling regression coefficients are correlated a posteriori, and a group effect
depends on every global that shares a likelihood term with it. Structured
("faithful inversion") variational inference builds the variational graph from the
posterior's dependencies instead (Webb et al., 2018, "Faithful inversion of
generative models for effective amortized inference"; Ambrogioni et al., 2021,
"Automatic structured variational inference"):

* all the global latents (in no plate) form one block, drawn jointly by one flow;
* every other latent is drawn given each latent drawn before it that is in its
  Markov blanket (its parents, its children, and its children's other parents) and
  that lies at its level or above (in a subset of its plates, ragged ancestors
  included), so that its value can be read at every ground variable.

These are pure functions of the model's graph.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor
from torch.distributions import Independent, constraints

from pavi_viz.model.compiled import CompiledModel
from pavi_viz.model.expressions import Expression
from pavi_viz.model.plates import Frame


def joint_blocks(model: CompiledModel) -> list[tuple[str, ...]]:
    """The drawing blocks: the global latents together first, then every other latent alone.

    The order is a topological one: a global's parents are globals (a variable's
    parents lie in a subset of its plates), and the other latents keep the model's order.
    """
    glob = tuple(name for name in model.latent_names if not model.plates_of(name))
    rest = [(name,) for name in model.latent_names if model.plates_of(name)]
    return ([glob] if glob else []) + rest


def markov_blanket(model: CompiledModel, name: str) -> set[str]:
    """The variables in ``name``'s Markov blanket: its parents, its children and their other parents."""
    children = [child for child, var in model.variables.items() if name in var.parents]
    blanket = set(model.variables[name].parents) | set(children)
    for child in children:
        blanket |= set(model.variables[child].parents)
    blanket.discard(name)
    return blanket


def conditioning(model: CompiledModel, blocks: list[tuple[str, ...]]) -> dict[tuple[str, ...], list[str]]:
    """The latents each block is drawn given, in drawing order.

    A block of one variable ``v`` is conditioned on every latent of an earlier block
    that is in ``v``'s Markov blanket and whose plates (with their ragged ancestors)
    are among ``v``'s. The global block is conditioned on nothing.
    """
    out: dict[tuple[str, ...], list[str]] = {}
    earlier: list[str] = []
    for block in blocks:
        plates = set(model.plates.closure(model.plates_of(block[0])))
        blanket = set().union(*(markov_blanket(model, name) for name in block))
        out[block] = [
            u for u in earlier if u in blanket and set(model.plates.closure(model.plates_of(u))) <= plates
        ]
        earlier += block
    return out


def drawn_scale(model: CompiledModel, name: str) -> bool:
    """Whether ``name`` follows a location-scale prior on the real line (a Normal, a
    Student-t...) whose scale is a latent's draw: a funnel, where the posterior's
    spread of ``name`` grows and shrinks with that latent (Neal, 2003)."""
    var = model.variables[name]
    scale = var.params.get("scale")
    return (
        {"loc", "scale"} <= set(var.info.by_name)
        and var.info.support is constraints.real
        and isinstance(scale, Expression)
        and any(n in model.variables and not model.variables[n].observed for n in scale.names)
    )


def prior_loc_scale(
    model: CompiledModel, name: str, values: Mapping[str, Tensor], frame: Frame, particles: int, shape: tuple[int, ...]
) -> tuple[Tensor, Tensor]:
    """The location and the scale of the prior of ``name`` (a funnel: :func:`drawn_scale`)
    given ``values`` (the data and the latents drawn so far), shaped as its
    unconstrained draws: ``shape = (particles, *frame.batch_shape(its plates), k)``."""
    prior = model.distribution(name, values, frame, (particles,))
    prior = prior.base_dist if isinstance(prior, Independent) else prior
    full = (*prior.batch_shape, *prior.event_shape)
    return prior.loc.expand(full).reshape(shape), prior.scale.expand(full).reshape(shape)
