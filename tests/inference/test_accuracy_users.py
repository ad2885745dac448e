"""Accuracy of ``fit(model)`` with its defaults on models as users write them
(benchmarks/models.py), against NumPyro's NUTS: the bar of test_accuracy.py (a file of
its own, so that it runs beside that one).
"""

from __future__ import annotations

import pytest

from benchmarks.accuracy import run

pytestmark = [pytest.mark.slow, pytest.mark.long]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["glmm", "funnel", "poisson_exposure", "nested"])
def test_user_models_meet_the_bar(name: str) -> None:
    # glmm: a logistic GLMM whose fixed effects are correlated a posteriori (-0.76);
    # funnel: 30 groups, centred; poisson_exposure: alpha + u[region], fixed and random
    # intercepts along a ridge; nested: three levels of ragged plates.
    record = run(name, family=None, seed=0, draws=4000, settings={})  # the benchmark's record
    assert record.get("stop_reason") == "converged" and record["passes"], record
