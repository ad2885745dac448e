"""Accuracy of ``fit(model)`` with its defaults, against NUTS posteriors: eight schools
and spikes.

The bar (issue 13, ``benchmarks.accuracy.passes``): every latent's mean error below 0.1
reference sd on average, and every element's sd within [0.8, 1.25] of the reference's.
The fits are spread over files of about equal length, so that they run side by side:
the models as users write them (benchmarks/models.py) are in test_accuracy_users.py,
GRE (against its exact posterior) in test_accuracy_gre.py, the radon models in
test_accuracy_radon.py.
"""

from __future__ import annotations

import pytest

from benchmarks.accuracy import run

pytestmark = [pytest.mark.slow, pytest.mark.long]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["eight_schools", "spikes"])
def test_defaults_meet_the_bar(name: str) -> None:
    # spikes: 4 animals, so sigma_animal's posterior reaches down to 0.016 (5% quantile),
    # a funnel's neck that q alone stops short of; importance resampling from a pool
    # that takes half its animal effects from their prior brings its mean to the bar.
    # A diverged fit's record has no stop reason: "converged" also says it did not
    # diverge (benchmarks/results/: no default fit diverged at seeds 0 to 4).
    record = run(name, family=None, seed=0, draws=4000, settings={})  # the benchmark's record
    assert record.get("stop_reason") == "converged" and record["passes"], record
