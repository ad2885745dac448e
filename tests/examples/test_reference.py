"""examples.reference: reference posterior draws shipped as package data."""

from __future__ import annotations

import numpy as np
import pytest

import pavi_viz
from pavi_viz import examples


def test_eight_schools_reference_is_named_like_the_posterior() -> None:
    reference = examples.reference("eight_schools")
    assert set(reference.data_vars) == {"mu", "tau", "theta"}
    assert reference["mu"].dims == reference["tau"].dims == ("sample",)
    assert reference["theta"].dims == ("sample", "school")
    assert reference.sizes == {"sample": 10_000, "school": 8}
    np.testing.assert_array_equal(reference["school"].values, np.arange(8))
    assert "posteriordb" in reference.attrs["source"]
    assert (reference["tau"] > 0).all()
    # The known posterior: the mean effect near 4.4, the spread's median near 3.
    assert 3.5 < float(reference["mu"].mean()) < 5.5
    assert 2 < float(reference["tau"].median()) < 4


def test_reference_dims_match_a_fitted_posterior() -> None:
    model = examples.load("eight_schools")
    result = pavi_viz.fit(model, "mean-field", steps=5, seed=0)
    draws = result.posterior.sample(3)
    reference = examples.reference("eight_schools")
    for name in reference.data_vars:
        assert reference[name].dims == draws[name].dims
    np.testing.assert_array_equal(reference["school"].values, draws["school"].values)


def test_examples_without_reference_and_unknown_names() -> None:
    assert examples.reference("gre") is None
    assert examples.reference("radon") is None
    with pytest.raises(KeyError, match="unknown example"):
        examples.reference("nope")
