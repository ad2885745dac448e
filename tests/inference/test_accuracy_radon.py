"""Accuracy of ``fit(model)`` with its defaults on the radon models, against NumPyro's
NUTS (a file of its own, so that it runs beside test_accuracy.py).

The bar of test_accuracy.py (``benchmarks.accuracy.passes``), met at seeds 0 to 4
(``benchmarks/results/``) through importance resampling (``Posterior``): q alone
leaves the scale of the county effects too narrow (sd ratios 0.74), since its
posterior reaches into a funnel's neck.
"""

from __future__ import annotations

import pytest

from benchmarks.accuracy import run

pytestmark = [pytest.mark.slow, pytest.mark.long]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", ["radon", "radon_uranium"])
def test_radon_defaults_meet_the_bar(name: str) -> None:
    record = run(name, family=None, seed=0, draws=4000, settings={})  # the benchmark's record
    assert record.get("stop_reason") == "converged" and record["reweighted"] and record["passes"], record
