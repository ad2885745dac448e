"""PAVI-E's data encoder: which data its encodings depend on (pavi_viz.inference.encoders)."""

from __future__ import annotations

import math

import pytest
import torch

import pavi_viz
from pavi_viz.inference.encoders import moments, pooling_order
from pavi_viz.inference.families import make_family
from pavi_viz.model import Plate, PlateModel, Variable

# Two groups of four values with the same mean (0) and mean square (1), and a third
# with another mean square: the first two differ only beyond their first two moments.
SAME_MOMENTS = [[1.0, -1.0, 1.0, -1.0], [0.0, 0.0, math.sqrt(2.0), -math.sqrt(2.0)], [2.0, -2.0, 0.0, 0.0]]


def _encodings(model: PlateModel, variable: str) -> torch.Tensor:
    compiled = model.compile()
    torch.manual_seed(0)
    encoder = make_family("pavi-e", compiled).encoder
    with torch.no_grad():
        return encoder(compiled.frame())[variable]


def test_moments_are_the_features_then_their_pairwise_products() -> None:
    features = torch.tensor([[2.0, 3.0], [1.0, -1.0]])
    expected = torch.tensor([[2.0, 3.0, 4.0, 6.0, 9.0], [1.0, -1.0, 1.0, -1.0, 1.0]])
    torch.testing.assert_close(moments(features), expected)


def test_a_normal_groups_encoding_depends_on_its_data_through_their_moments_alone() -> None:
    model = pavi_viz.examples.load("gre", G=3, N=4, D=1)
    model = model.with_data({"x": torch.tensor(SAME_MOMENTS).unsqueeze(-1)})
    encodings = _encodings(model, "mu_g")
    torch.testing.assert_close(encodings[0], encodings[1])
    assert not torch.allclose(encodings[0], encodings[2])


def test_a_mixtures_groups_are_told_apart_beyond_their_moments() -> None:
    # A mixture's posterior is not a function of the low moments: its data are
    # embedded one by one before they are pooled.
    model = pavi_viz.examples.load("mixture", G=3, N=4, L=2, D=1)
    model = model.with_data({"x": torch.tensor(SAME_MOMENTS).unsqueeze(-1)})
    encodings = _encodings(model, "mu_g")
    assert not torch.allclose(encodings[0], encodings[1])


def test_a_ragged_groups_encoding_depends_on_its_number_of_data() -> None:
    # Group 0 holds two 1.0s, group 1 four: same moments, other counts (the posterior of
    # a group with more data is narrower).
    membership = [0, 0, 1, 1, 1, 1, 2, 2, 2]
    model = PlateModel(
        [Plate("group", 3), Plate("obs", len(membership), nested_in="group", membership=membership)],
        [
            Variable("mu_g", "Normal", loc=0.0, scale=1.0, plates=["group"]),
            Variable("y", "Normal", loc="mu_g", scale=1.0, plates=["obs"], observed=True),
        ],
    ).with_data({"y": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 0.0, 1.0]})
    encodings = _encodings(model, "mu_g")
    assert not torch.allclose(encodings[0], encodings[1])


def test_the_encoders_cost_does_not_grow_with_the_data_per_group() -> None:
    # Its parameters do not depend on N, and neither do the statistics it keeps: one row
    # per group, and their standardisation (a centre and a scale per column).
    sizes = {}
    for n in (5, 500):
        compiled = pavi_viz.examples.load("gre", G=20, N=n, D=2).compile()
        encoder = make_family("pavi-e", compiled).encoder
        sizes[n] = (
            sum(p.numel() for p in encoder.parameters()),
            sorted(b.shape for name, b in encoder.named_buffers() if name.startswith("statistics")),
        )
    assert sizes[5] == sizes[500]
    columns = 2 + 3 + 1  # 2 features, their 3 products, a count
    assert sizes[5][1] == [torch.Size([columns]), torch.Size([columns]), torch.Size([20, columns])]


def test_plates_are_pooled_innermost_first() -> None:
    plates = pavi_viz.examples.load("radon").compile().plates
    assert pooling_order(plates, ("house",), ()) == ["house", "county"]
    assert pooling_order(plates, ("house",), ("county",)) == ["house"]
    assert pooling_order(plates, ("house",), ("house",)) == []


@pytest.mark.parametrize(("example", "options"), [("gre", {"G": 30, "N": 4, "D": 2}), ("radon", {})])
def test_the_datas_mean_and_sd_are_the_same_taken_chunk_by_chunk(example, options) -> None:
    """The encoder standardises the features by their mean and sd over all the data,
    taken a chunk at a time (so that the whole data's features are never held at once)."""
    model = pavi_viz.examples.load(example, **options).compile()
    encoder = make_family("pavi-e", model).encoder
    for observed in model.observed_names:
        raw = encoder._raw_features(observed, model.frame())
        rows = raw.reshape(-1, raw.shape[-1]).double()
        for chunk_elements in (7, 10**9):  # several outer elements a chunk, or all of them
            mean, sd = encoder._feature_moments(observed, chunk_elements)
            torch.testing.assert_close(mean, rows.mean(0).to(mean.dtype))
            torch.testing.assert_close(sd, rows.std(0, correction=0).to(sd.dtype))
