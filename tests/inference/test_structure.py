"""The structured families' graph: joint global blocks and Markov-blanket conditioning."""

from __future__ import annotations

import pytest

import pavi_viz
from pavi_viz.inference.families import PaviE, PaviF
from pavi_viz.inference.families.structure import conditioning, joint_blocks, markov_blanket
from pavi_viz.model import Covariate, Plate, PlateModel, Variable


def _structure(model: PlateModel) -> dict[tuple[str, ...], list[str]]:
    compiled = model.compile()
    return conditioning(compiled, joint_blocks(compiled))


def test_radon_globals_are_one_block_and_slopes_see_intercepts() -> None:
    given = _structure(pavi_viz.examples.load("radon"))
    assert list(given) == [("mu_alpha", "mu_beta", "sigma_alpha", "sigma_beta", "sigma_y"), ("alpha",), ("beta",)]
    # alpha and beta share each house's likelihood (with sigma_y): each county's slope
    # is drawn given that county's intercept, and both given the noise scale.
    assert given["alpha",] == ["mu_alpha", "sigma_alpha", "sigma_y"]
    assert given["beta",] == ["mu_beta", "sigma_beta", "sigma_y", "alpha"]


def test_markov_blanket_holds_parents_children_and_co_parents() -> None:
    compiled = pavi_viz.examples.load("radon").compile()
    assert markov_blanket(compiled, "alpha") == {"mu_alpha", "sigma_alpha", "log_radon", "beta", "sigma_y"}


def test_nested_latents_see_every_level_above_but_not_beside() -> None:
    # Classes nested in schools, and a crossing plate of raters: a class effect is read
    # off its school's draw, never off a rater's (a plate it is not in).
    model = PlateModel(
        [Plate("school", 3), Plate("klass", 2, nested_in="school"), Plate("rater", 4)],
        [
            Variable("tau", "HalfNormal", scale=1.0),
            Variable("school_effect", "Normal", loc=0.0, scale="tau", plates=["school"]),
            Variable("class_effect", "Normal", loc="school_effect", scale=1.0, plates=["school", "klass"]),
            Variable("rater_effect", "Normal", loc=0.0, scale=1.0, plates=["rater"]),
            Variable("y", "Normal", loc="class_effect + rater_effect", scale=1.0,
                     plates=["school", "klass", "rater"], observed=True),
        ],
    ).simulate(0)
    given = _structure(model)
    assert given["school_effect",] == ["tau"]
    assert given["class_effect",] == ["school_effect"]
    assert given["rater_effect",] == []


@pytest.mark.parametrize("family", [PaviF, PaviE])
def test_sibling_coefficients_are_drawn_jointly(family) -> None:
    # Two regression coefficients of correlated covariates: their posterior is
    # correlated, so q draws them with one flow, and its draws can be correlated.
    x1 = [float(i % 5) for i in range(20)]
    model = PlateModel(
        [Plate("obs", 20)],
        [
            Variable("a", "Normal", loc=0.0, scale=1.0),
            Variable("b", "Normal", loc=0.0, scale=1.0),
            Variable("y", "Normal", loc="a * x1 + b * x2", scale=1.0, plates=["obs"], observed=True),
        ],
        [Covariate("x1", plates=["obs"]), Covariate("x2", plates=["obs"])],
        data={"x1": x1, "x2": [x + 0.1 for x in x1], "y": [0.0] * 20},
    )
    fam = family(model.compile())
    assert fam.blocks == [("a", "b")]
    assert list(fam.flows) == ["a+b"]
    draw = fam.sample(model.compile().frame(), particles=3)
    assert draw.values["a"].shape == draw.values["b"].shape == (3,)
