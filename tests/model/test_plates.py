"""Tests for the plate index structure: batches, frames, weights and alignment."""

from __future__ import annotations

import pytest
import torch

from pavi_viz.model.plates import PlateInfo, PlateStructure

HOUSE_COUNTY = torch.tensor([2, 0, 1, 2, 0, 3, 2, 3, 0, 2])  # 4 counties: 3, 1, 4, 2 houses
NEURON_ANIMAL = torch.tensor([1, 0, 1, 1, 0])  # 2 animals: 2 and 3 neurons
COUNTY_REGION = torch.tensor([1, 0, 1, 1])  # 2 regions: 1 and 3 counties


def idx(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


@pytest.fixture
def structure() -> PlateStructure:
    """Crossed top-level plates, a regular nesting, a ragged one, and ragged-then-regular."""
    return PlateStructure([
        PlateInfo("a", 3),
        PlateInfo("b", 4),
        PlateInfo("group", 3),
        PlateInfo("obs", 5, parent="group"),
        PlateInfo("county", 4),
        PlateInfo("house", 10, parent="county", membership=HOUSE_COUNTY),
        PlateInfo("animal", 2),
        PlateInfo("neuron", 5, parent="animal", membership=NEURON_ANIMAL),
        PlateInfo("trial", 6, parent="neuron"),
    ])


@pytest.fixture
def regions() -> PlateStructure:
    """Ragged in ragged: 10 houses in 4 counties in 2 regions."""
    return PlateStructure([
        PlateInfo("region", 2),
        PlateInfo("county", 4, parent="region", membership=COUNTY_REGION),
        PlateInfo("house", 10, parent="county", membership=HOUSE_COUNTY),
    ])


# -- structure ---------------------------------------------------------------------
def test_ragged_ancestors_and_closure(structure: PlateStructure, regions: PlateStructure) -> None:
    assert structure.ragged_ancestors("house") == ["county"]
    assert structure.ragged_ancestors("obs") == []  # regular nesting: the variable lists "group"
    assert structure.ragged_ancestors("trial") == []
    assert structure.closure(["neuron", "trial"]) == ["neuron", "trial", "animal"]
    assert regions.ragged_ancestors("house") == ["county", "region"]
    assert regions.closure(["house"]) == ["house", "county", "region"]
    assert structure["house"].ragged and not structure["obs"].ragged
    assert [p.name for p in structure][:2] == ["a", "b"]


def test_outer_plates_and_root(structure: PlateStructure, regions: PlateStructure) -> None:
    assert structure.outer("trial") == ["neuron", "animal"]  # regular in ragged
    assert structure.outer("obs") == ["group"]
    assert (structure.outer("a"), structure.root("a")) == ([], "a")
    assert structure.root("trial") == "animal"
    assert regions.outer("house") == ["county", "region"] and regions.root("house") == "region"


# -- sample_batch --------------------------------------------------------------------
def test_sample_batch_sizes_and_sorted(structure: PlateStructure) -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        batch = structure.sample_batch({"a": 2, "obs": 3, "group": 1}, gen)
        assert set(batch) == {"a", "obs", "group"}  # plates left out are taken whole
        assert [len(batch[p]) for p in ("a", "obs", "group")] == [2, 3, 1]
        for plate, chosen in batch.items():
            assert chosen.dtype == torch.int64
            assert torch.equal(chosen, torch.sort(chosen).values)
            assert len(torch.unique(chosen)) == len(chosen)  # without replacement
            assert 0 <= int(chosen.min()) and int(chosen.max()) < structure[plate].size


def test_sample_batch_whole_plates_left_out(structure: PlateStructure) -> None:
    # Asking for a plate's size (or more) takes it whole: no entry in the batch.
    assert structure.sample_batch({"a": 3, "b": 100}) == {}


def test_sample_batch_is_uniform(structure: PlateStructure) -> None:
    gen = torch.Generator().manual_seed(1)
    counts = torch.zeros(5)
    n = 4000
    for _ in range(n):
        counts[structure.sample_batch({"obs": 2}, gen)["obs"]] += 1
    # each element is drawn with probability 2/5
    assert torch.allclose(counts / n, torch.full((5,), 0.4), atol=0.04)


def test_sample_batch_ragged_members_belong_to_drawn_counties(structure: PlateStructure) -> None:
    gen = torch.Generator().manual_seed(2)
    for _ in range(50):
        batch = structure.sample_batch({"county": 2}, gen)
        counties, houses = batch["county"], batch["house"]
        assert len(counties) == 2
        # all members of the drawn counties, and only them
        expected = torch.nonzero(torch.isin(HOUSE_COUNTY, counties)).flatten()
        assert torch.equal(houses, expected)


def test_sample_batch_ragged_subsamples_members(structure: PlateStructure) -> None:
    gen = torch.Generator().manual_seed(3)
    seen_subsample = False
    for _ in range(50):
        batch = structure.sample_batch({"county": 3, "house": 4}, gen)
        counties, houses = batch["county"], batch["house"]
        pool = int(torch.isin(HOUSE_COUNTY, counties).sum())
        assert len(houses) == min(4, pool)
        assert torch.isin(HOUSE_COUNTY[houses], counties).all()
        assert torch.equal(houses, torch.sort(houses).values)
        assert len(torch.unique(houses)) == len(houses)
        seen_subsample |= len(houses) < pool
    assert seen_subsample


def test_sample_batch_ragged_outer_without_members() -> None:
    # county 1 has no houses: drawing it alone gives an empty house batch, which a frame
    # accepts (the house terms are then empty sums)
    structure = PlateStructure([PlateInfo("county", 3), PlateInfo("house", 4, "county", idx(0, 0, 2, 2))])
    gen = torch.Generator().manual_seed(0)
    batches = [structure.sample_batch({"county": 1}, gen) for _ in range(30)]
    empty = [b for b in batches if torch.equal(b["county"], idx(1))]
    assert empty, "county 1 was never drawn"
    for batch in empty:
        assert len(batch["house"]) == 0
        frame = structure.frame(batch)
        assert frame.sizes["house"] == 0
        assert frame.batch_shape(["house"]) == (0,)
        assert frame.local_index("house", "county").shape == (0,)
        assert frame.align(torch.ones(1), ["county"], ["house"], 0).shape == (0,)
    # the same with member subsampling, and a frame built from the county batch alone
    assert len(structure.sample_batch({"county": 1, "house": 1}, torch.Generator().manual_seed(1))["county"]) == 1
    assert structure.frame({"county": idx(1)}).sizes["house"] == 0
    # but an empty house batch is refused when the counties do have houses
    with pytest.raises(ValueError, match="empty"):
        structure.frame({"county": idx(0), "house": idx()})


def test_sample_batch_small_batch_of_a_huge_plate() -> None:
    # neither time nor memory in proportion to the plate: a billion-element plate is fine
    structure = PlateStructure([
        PlateInfo("subject", 10**12),
        PlateInfo("visit", 4, "subject", torch.tensor([0, 5, 10**12 - 1, 5])),
    ])
    batch = structure.sample_batch({"subject": 3}, torch.Generator().manual_seed(0))
    subjects = batch["subject"]
    assert len(subjects) == 3 and len(torch.unique(subjects)) == 3
    assert torch.equal(subjects, torch.sort(subjects).values)
    assert int(subjects.max()) < 10**12
    frame = structure.frame({"subject": idx(5, 10**12 - 1)})
    assert torch.equal(frame.indices("visit"), idx(1, 2, 3))
    assert torch.equal(frame.local_index("visit", "subject"), idx(0, 1, 0))
    assert frame.weights["subject"] == 10**12 / 2


def test_sample_batch_small_batches_are_uniform() -> None:
    # batches of 3 among 100: drawn with replacement then deduplicated; still uniform
    structure = PlateStructure([PlateInfo("p", 100)])
    gen = torch.Generator().manual_seed(8)
    n = 3000
    counts = torch.zeros(100)
    first = torch.zeros(100)
    for _ in range(n):
        chosen = structure.sample_batch({"p": 3}, gen)["p"]
        assert len(torch.unique(chosen)) == 3
        counts[chosen] += 1
        first[chosen[0]] += 1
    # each element with probability 3/100: 90 expected draws, sd about 9.3
    assert float((counts - 90).abs().max()) < 5 * 9.3
    # the chi-square statistic of the counts has mean ~99 and sd ~14
    assert float(((counts - 90) ** 2 / 90).sum()) < 99 + 5 * 14
    # the smallest of three is more often a small index: the batch is sorted
    assert first[:50].sum() > first[50:].sum()


def test_sample_batch_ragged_alone_draws_among_all_members(structure: PlateStructure) -> None:
    batch = structure.sample_batch({"house": 3}, torch.Generator().manual_seed(4))
    assert set(batch) == {"house"} and len(batch["house"]) == 3


def test_sample_batch_ragged_in_ragged(regions: PlateStructure) -> None:
    gen = torch.Generator().manual_seed(5)
    for _ in range(20):
        batch = regions.sample_batch({"region": 1}, gen)
        assert torch.equal(batch["county"], torch.nonzero(COUNTY_REGION == batch["region"]).flatten())
        assert torch.isin(HOUSE_COUNTY[batch["house"]], batch["county"]).all()


def test_sample_batch_reproducible(structure: PlateStructure) -> None:
    sizes = {"a": 2, "county": 2, "house": 3, "obs": 2}
    first = structure.sample_batch(sizes, torch.Generator().manual_seed(7))
    second = structure.sample_batch(sizes, torch.Generator().manual_seed(7))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_sample_batch_errors(structure: PlateStructure) -> None:
    with pytest.raises(KeyError, match="nope"):
        structure.sample_batch({"nope": 2})
    with pytest.raises(ValueError, match="at least 1"):
        structure.sample_batch({"a": 0})


# -- frames and weights --------------------------------------------------------------------
def test_frame_whole_model(structure: PlateStructure) -> None:
    frame = structure.frame()
    assert frame.sizes["house"] == 10 and frame.sizes["obs"] == 5
    assert all(w == 1.0 for w in frame.weights.values())
    assert frame.weight(["group", "obs"]) == 1.0
    assert frame.batch_shape(["group", "obs"]) == (3, 5)
    assert frame.indices("a") is None


def test_frame_weights_top_level(structure: PlateStructure) -> None:
    frame = structure.frame({"b": idx(1, 3)})
    assert frame.sizes["b"] == 2
    assert frame.weights["b"] == 2.0
    assert frame.weight(["a", "b"]) == 2.0
    assert frame.weight([]) == 1.0
    assert frame.batch_shape(["a", "b"]) == (3, 2)


def test_frame_weights_regular_nested(structure: PlateStructure) -> None:
    frame = structure.frame({"group": idx(2), "obs": idx(0, 1, 4)})
    assert frame.weights["group"] == 3.0
    assert frame.weights["obs"] == pytest.approx(5 / 3)
    assert frame.weight(["group"]) == 3.0
    assert frame.weight(["group", "obs"]) == pytest.approx(3 * 5 / 3)
    assert frame.batch_shape(["group", "obs"]) == (1, 3)


def test_frame_weights_ragged_all_members(structure: PlateStructure) -> None:
    frame = structure.frame({"county": idx(0, 2)})  # counties 0 and 2 hold houses 1, 4, 8 and 0, 3, 6, 9
    assert torch.equal(frame.indices("house"), idx(0, 1, 3, 4, 6, 8, 9))
    assert frame.sizes["house"] == 7
    assert frame.weights["county"] == 2.0
    assert frame.weights["house"] == 1.0
    # a house term sits in county too: scaled by 4/2
    assert frame.weight(["house"]) == 2.0


def test_frame_weights_ragged_subsampled_members(structure: PlateStructure) -> None:
    frame = structure.frame({"county": idx(0, 2), "house": idx(1, 6)})
    assert frame.sizes["house"] == 2
    assert frame.weights["house"] == pytest.approx(7 / 2)
    assert frame.weight(["house"]) == pytest.approx(2 * 7 / 2)


def test_frame_weights_ragged_without_outer_batch(structure: PlateStructure) -> None:
    frame = structure.frame({"house": idx(0, 5)})
    assert frame.weights["house"] == 5.0
    assert frame.weight(["house"]) == 5.0  # county whole: weight 1


def test_frame_weights_ragged_then_regular(structure: PlateStructure) -> None:
    frame = structure.frame({"animal": idx(1), "trial": idx(0, 3)})
    assert torch.equal(frame.indices("neuron"), idx(0, 2, 3))
    assert frame.weight(["neuron", "trial"]) == pytest.approx(2.0 * 1.0 * 3.0)


def test_frame_rejects_bad_batches(structure: PlateStructure) -> None:
    with pytest.raises(KeyError, match="nope"):
        structure.frame({"nope": idx(0)})
    with pytest.raises(ValueError, match="empty"):
        structure.frame({"a": idx()})
    with pytest.raises(IndexError, match="outside"):
        structure.frame({"a": idx(0, 3)})
    with pytest.raises(ValueError, match="int64"):
        structure.frame({"a": torch.tensor([0.0, 1.0])})


def test_local_index_missing_outer_element(structure: PlateStructure) -> None:
    # house 2 is in county 1, which is not in the county batch
    with pytest.raises(ValueError, match="not in the batch of 'county'"):
        structure.frame({"county": idx(0, 2), "house": idx(1, 2)})


def test_local_index(structure: PlateStructure, regions: PlateStructure) -> None:
    frame = structure.frame({"county": idx(0, 2, 3), "house": idx(0, 5, 8)})
    # house 0 -> county 2 (position 1), house 5 -> county 3 (2), house 8 -> county 0 (0)
    assert torch.equal(frame.local_index("house", "county"), idx(1, 2, 0))
    # with the county plate whole, positions are the county indices themselves
    assert torch.equal(structure.frame().local_index("house", "county"), HOUSE_COUNTY)
    frame = regions.frame({"region": idx(1)})
    houses = frame.indices("house")
    assert torch.equal(frame.local_index("house", "region"), torch.zeros(len(houses), dtype=torch.int64))


# -- align -----------------------------------------------------------------------------
def test_select(structure: PlateStructure) -> None:
    frame = structure.frame({"a": idx(0, 2), "b": idx(3)})
    full = torch.arange(12.0).reshape(3, 4)
    assert torch.equal(frame.select(full, ["a", "b"]), full[[0, 2]][:, [3]])
    # dims follow the plate list: a tensor in plates (b, a) has shape (4, 3)
    assert torch.equal(frame.select(full.T, ["b", "a"]), full.T[[3]][:, [0, 2]])
    # event dims are left alone
    assert frame.select(torch.zeros(3, 4, 2, 6), ["a", "b"]).shape == (2, 1, 2, 6)


def test_align_global_to_plate(structure: PlateStructure) -> None:
    frame = structure.frame({"a": idx(0, 2)})
    value = torch.tensor([1.5, -2.0])  # two particles of a global scalar
    out = frame.align(value, [], ["a"], 0)
    assert out.shape == (2, 1)
    assert torch.equal(out.expand(2, 2), value[:, None].expand(2, 2))
    vector = torch.arange(6.0).reshape(2, 3)  # particles x event (3,)
    assert frame.align(vector, [], ["a", "b"], 1).shape == (2, 1, 1, 3)


def test_align_plate_to_regular_nested_child(structure: PlateStructure) -> None:
    frame = structure.frame({"group": idx(0, 2), "obs": idx(1, 3, 4)})
    full = torch.tensor([10.0, 20.0, 30.0])
    out = frame.align(frame.select(full, ["group"]), ["group"], ["group", "obs"], 0)
    assert out.shape == (2, 1)
    assert torch.equal(out.expand(*frame.batch_shape(["group", "obs"])),
                       torch.tensor([[10.0] * 3, [30.0] * 3]))


def test_align_county_to_house(structure: PlateStructure) -> None:
    frame = structure.frame({"county": idx(0, 2, 3), "house": idx(0, 5, 8, 9)})
    full = torch.tensor([100.0, 101.0, 102.0, 103.0])
    particles = torch.stack([full, -full])  # (2, 4): sample dim first
    out = frame.align(frame.select(particles.T, ["county"]).T, ["county"], ["house"], 0)
    houses = frame.indices("house")
    expected = torch.stack([full[HOUSE_COUNTY[houses]], -full[HOUSE_COUNTY[houses]]])
    assert torch.equal(out, expected)
    # whole model: a plain gather by membership, with event dims carried along
    vectors = torch.arange(8.0).reshape(4, 2)
    assert torch.equal(structure.frame().align(vectors, ["county"], ["house"], 1), vectors[HOUSE_COUNTY])


def test_align_animal_to_neuron_trial(structure: PlateStructure) -> None:
    frame = structure.frame({"animal": idx(1), "trial": idx(2, 5)})
    gain = torch.tensor([[7.0], [-3.0]])  # full (animal, 1); select animal 1
    out = frame.align(frame.select(gain, ["animal"]), ["animal"], ["neuron", "trial"], 1)
    assert out.shape == (3, 1, 1)  # three neurons of animal 1, trial broadcast, event dim
    assert torch.equal(out, torch.full((3, 1, 1), -3.0))
    rate = torch.arange(5.0)  # per neuron, full
    out = frame.align(frame.select(rate, ["neuron"]), ["neuron"], ["neuron", "trial"], 0)
    assert torch.equal(out, torch.tensor([[0.0], [2.0], [3.0]]))
    # whole model: every neuron gets its own animal's value
    out = structure.frame().align(gain.squeeze(1), ["animal"], ["neuron", "trial"], 0)
    assert torch.equal(out.squeeze(1), gain.squeeze(1)[NEURON_ANIMAL])


def test_align_region_to_house(regions: PlateStructure) -> None:
    frame = regions.frame({"region": idx(1), "house": idx(0, 3, 7)})
    out = frame.align(torch.tensor([5.0]), ["region"], ["house"], 0)
    assert torch.equal(out, torch.full((3,), 5.0))
    values = torch.tensor([1.0, 2.0])
    assert torch.equal(regions.frame().align(values, ["region"], ["house"], 0), values[COUNTY_REGION[HOUSE_COUNTY]])


def test_align_permuted_crossing_plates(structure: PlateStructure) -> None:
    frame = structure.frame({"a": idx(0, 2), "b": idx(1, 2, 3)})
    full = torch.arange(12.0).reshape(3, 4)
    batched = frame.select(full, ["a", "b"])  # (2, 3)
    out = frame.align(batched, ["a", "b"], ["b", "a"], 0)
    assert torch.equal(out, batched.T)
    # with sample and event dims around the plate dims
    values = torch.randn(5, 2, 3, 7)
    out = frame.align(values, ["a", "b"], ["b", "a"], 1)
    assert torch.equal(out, values.permute(0, 2, 1, 3))
    # a parent in one of two crossed plates broadcasts along the other
    out = frame.align(frame.select(torch.arange(4.0), ["b"]), ["b"], ["a", "b"], 0)
    assert out.shape == (1, 3)
    out = frame.align(frame.select(torch.arange(3.0), ["a"]), ["a"], ["b", "a"], 0)
    assert out.shape == (1, 2) and torch.equal(out, torch.tensor([[0.0, 2.0]]))
