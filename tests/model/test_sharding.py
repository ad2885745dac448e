"""A model restricted to a shard of a top-level plate (pavi_viz.model.sharding)."""

from __future__ import annotations

import pytest
import torch

import pavi_viz
from benchmarks.models import build_nested
from pavi_viz.model.plates import Shard
from pavi_viz.model.sharding import compile_part, restrict
from pavi_viz.model.spec import Plate, PlateModel, Variable

#: Regular nesting (GRE's observations in groups), one ragged level (radon's houses in
#: counties, with a county-level covariate) and two (students in classes in schools).
CASES = [
    (lambda: pavi_viz.examples.load("gre", G=10, N=3, D=2), "group", 3, 7),
    (lambda: pavi_viz.examples.load("radon").simulate(seed=0), "county", 20, 45),
    (lambda: build_nested(), "school", 5, 9),
]


@pytest.mark.parametrize(("build", "plate", "start", "stop"), CASES)
def test_a_restricted_model_holds_the_shards_terms_of_the_whole_model(build, plate, start, stop) -> None:
    whole = build()
    part = restrict(whole, plate, start, stop)
    assert part.plate(plate).size == stop - start and whole.plate(plate).size > stop - start
    compiled, small = whole.compile(), part.compile()
    frame = compiled.frame({plate: torch.arange(start, stop)})  # members of ragged plates come along
    latents = {name: frame.select(value, compiled.plates_of(name)) for name, value in whole.truth.items()}
    expected = compiled.log_joint_terms(latents, frame=frame)
    got = small.log_joint_terms(part.truth)
    for name, term in expected.items():
        # The whole model's batch estimate, scaled up: undone, it is the sum over the shard.
        torch.testing.assert_close(got[name], term / frame.weight(compiled.plates_of(name)), msg=name)
    for name in whole.data:  # every datum of the shard, in the same order
        torch.testing.assert_close(small.data[name], frame.select(compiled.data[name], compiled.plates_of(name)))


def test_compile_part_records_the_shard_of_the_whole_it_holds() -> None:
    shard = Shard("group", 4, 9, 2)
    compiled = compile_part(pavi_viz.examples.load("gre", G=10, N=3, D=2), shard)
    assert compiled.part == shard and compiled.plates["group"].size == 5
    assert pavi_viz.examples.load("gre", G=10, N=3, D=2).compile().part is None


def test_models_that_cannot_be_cut_are_refused_naming_why() -> None:
    gre = pavi_viz.examples.load("gre", G=10, N=3, D=2)
    with pytest.raises(ValueError, match="plate 'obs' nests in 'group'"):
        restrict(gre, "obs", 0, 2)
    with pytest.raises(ValueError, match="elements 8 to 11 are not a range of plate 'group'"):
        restrict(gre, "group", 8, 12)
    ragged_in_regular = PlateModel(
        [Plate("g", 2), Plate("r", 2, nested_in="g"), Plate("m", nested_in="r", membership=[0, 1, 1])],
        [Variable("y", "Normal", loc=0.0, scale=1.0, plates=["m"], observed=True)],
        data={"y": [0.0, 1.0, 2.0]},
    )
    with pytest.raises(ValueError, match="plate 'm' is ragged in 'r', which nests regularly below 'g'"):
        restrict(ragged_in_regular, "g", 0, 1)
    arrays = PlateModel([Plate("g", 3)], [Variable("y", "Normal", loc=[0.0, 1.0, 2.0], scale=1.0, plates=["g"],
                                                   observed=True)], data={"y": [0.0, 1.0, 2.0]})
    with pytest.raises(ValueError, match="variable 'y' has its parameter 'loc' given as an array"):
        restrict(arrays, "g", 0, 2)
