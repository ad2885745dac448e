"""The smoothed ELBO: a bias-corrected moving average that steps over spikes.

A step's ELBO estimate is noisy, and now and then one batch or one draw deep in a
tail gives an estimate orders of magnitude below the others (a *spike*: the spikes
example has one of -2.5e13 among values near -3e3). The smoothed ELBO, which early
stopping watches and the dashboard draws, is

- **bias-corrected**: the exponential moving average starts from zero and is divided
  by the weight its terms add up to, ``1 - (1 - SMOOTHING) ** step`` (as Adam does
  with its moments; Kingma & Ba, 2015). An average started at the first estimate
  gives that estimate, far below the later ones, a weight that fades only over a few
  hundred steps: the curve lagged about 150 steps behind the estimates;
- **robust to spikes**: an estimate more than ``SPIKE_SPREADS`` spreads below the
  smoothed ELBO enters the average at that bound (winsorized), and its record says
  it was a spike. The spread is the median distance of the recent estimates from
  their smoothed values, taken from the run's history, so a resumed run computes it
  as the uninterrupted one would. Only drops count: a run's ELBO rises legitimately
  by orders of magnitude in its first steps.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

#: Weight of the newest estimate in the exponential moving average.
SMOOTHING = 0.02
#: A spike lies more than this many spreads below the smoothed ELBO.
SPIKE_SPREADS = 10.0
#: The spread is the median of ``|elbo - smoothed_elbo|`` over this many latest steps...
SPREAD_WINDOW = 100
#: ...once there are this many (before, nothing counts as a spike).
SPREAD_MIN_STEPS = 20


def spike_bound(elbo: Sequence[float], smoothed: Sequence[float]) -> float:
    """The least ELBO estimate that is not a spike, given the history so far
    (``elbo``, ``smoothed``: one value per step, oldest first); ``-inf`` while the
    history is shorter than ``SPREAD_MIN_STEPS`` or holds a non-finite value."""
    if len(elbo) < SPREAD_MIN_STEPS:
        return -math.inf
    recent = range(max(0, len(elbo) - SPREAD_WINDOW), len(elbo))
    spread = statistics.median(abs(elbo[i] - smoothed[i]) for i in recent)
    bound = smoothed[-1] - SPIKE_SPREADS * spread
    return bound if math.isfinite(bound) else -math.inf


def smoothed_elbo(previous: float, value: float, step: int) -> float:
    """The bias-corrected moving average after ``step`` estimates (``step`` >= 1),
    from the one after ``step - 1`` (``previous``, ignored at step 1) and the newest
    estimate ``value`` (already winsorized by the caller)."""
    if step <= 1:
        return value
    kept = 1 - SMOOTHING
    # The uncorrected average before this step is previous * (1 - kept ** (step - 1)).
    return (kept * previous * (1 - kept ** (step - 1)) + SMOOTHING * value) / (1 - kept**step)


__all__ = ["SMOOTHING", "SPIKE_SPREADS", "smoothed_elbo", "spike_bound"]
