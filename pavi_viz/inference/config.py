"""The settings of a fit, declared once: :class:`FitConfig`.

Every training setting (its name, type, default, bounds and help text) is a
parameter of :class:`FitConfig`. :func:`pavi_viz.inference.fit` reads one,
:class:`pavi_viz.runner.RunConfig` adds the settings of publishing to it, the
command line's ``pavi-viz fit`` options and the dashboard's training widgets are
generated from it: a new setting appears everywhere by being declared here. Values
are checked as they are set (``FitConfig(steps=-1)`` raises a ``ValueError`` naming
``steps``); what can only be checked against a model (plate names of ``batch``, the
device) is checked by :func:`~pavi_viz.inference.resolve.batch_sizes` and
:func:`~pavi_viz.inference.resolve.resolve_device`.

This module imports param alone (no torch), so that the command line builds its
options at once; :mod:`pavi_viz.inference.resolve` turns a config and a compiled
model into what training uses (batch sizes, device, threads, refresh spacing).
"""

from __future__ import annotations

import math
from typing import Any

import param

#: The variational families by the names users pass (``pavi_viz.inference.families.FAMILIES``
#: holds their classes), the default first.
FAMILY_NAMES = ("pavi-e", "pavi-f", "mean-field")

#: A model whose latent and observed values hold at most this many numbers is trained
#: on all of it at every step (no plate batched): such a step costs little (about 30
#: PAVI-E steps a second on one core at 22,000 numbers, benchmarks/threads.py), its
#: gradient has no batch noise, and PAVI-E needs no whole-data summaries, whose refresh
#: jolted a batched radon fit off course (it diverged at step 1,091 with 64 of 85 counties).
#: Beyond it, the outermost plates are batched to as many elements as keep a step's
#: numbers within it (more elements a step than a fixed 64 give the global variables'
#: gradient less noise: at G = 10^4 groups, 64 a step left ``mu`` over 1 posterior sd
#: off after 97 s).
WHOLE_STEP_NUMBERS = 50_000
#: The learning-rate schedules (:mod:`pavi_viz.inference.schedule`): decay at each
#: plateau of the ELBO until converged (the default), constant (``None``), half a
#: cosine, or geometric decay.
SCHEDULES = ("plateau", None, "cosine", "exponential")
#: The default most steps of a fit (the ``"plateau"`` schedule ends it once converged).
DEFAULT_STEPS = 10_000
#: ``particles=None``: as many Monte Carlo draws a step as keep a step's numbers
#: (latent and observed values, times the particles) within this...
PARTICLE_NUMBERS = 16_384
#: ... between 1 and this many: more draws average out the gradient's noise where a
#: step costs little, as on the small models of workshops.
MAX_AUTO_PARTICLES = 8

#: A step may hold at most this many numbers (latent and observed values, times the
#: particles): a PAVI-E step takes about 450 bytes of memory a number (20,000 particles
#: of a 442-number GRE took 3.9 GB), so about 2 GB.
MAX_STEP_NUMBERS = 4_000_000
#: The most steps a fit may ask for (its history keeps a record of each).
MAX_STEPS = 10_000_000

#: ``threads="auto"``: one intra-op thread per this many numbers in a step's batch
#: (latent and observed values, times the particles), at least one, and at most the
#: CPUs this process may use but one: that one is left for whatever else runs (the
#: dashboard's server, a browser, another run), since a thread that must share a core
#: stalls every step. Measured with ``benchmarks/threads.py`` on 2 cores (README,
#: "Threads", two runs): alone, a second thread gains 9 to 24% at 22,000 numbers and
#: 17 to 81% from 220,000; beside one busy process it costs 45 to 78% at every size.
NUMBERS_PER_THREAD = 100_000
#: ``refresh_every="auto"``: PAVI-E refreshes its whole-data summaries at least every
#: this many steps (where a refresh is cheap: between refreshes the summaries lag
#: behind the encoder's weights, and radon_uranium's funnel diverged at 39)...
MIN_REFRESH_EVERY = 10
#: ... and no more often than keeps their cost under this share of training...
REFRESH_SHARE = 0.1
#: ... with a refresh costing this many steps per step's worth of data in the whole
#: data (an encoder pass without gradients over the whole data, against a step's
#: forward and backward passes; measured 0.02 on radon, 0.05 on GRE at G = 10^4, 0.11
#: at 10^5 when the encoder embedded each datum; 0.04 at 10^5 on the moments of each
#: group's data, as Normal and count data are encoded now, so a bound for both).
REFRESH_COST = 0.1


class Whole(param.Integer):
    """An integer parameter that refuses booleans (``True`` is no number of steps)."""

    __slots__ = ()

    def _validate_value(self, val: Any, allow_None: bool) -> None:
        if isinstance(val, bool):
            raise ValueError(f"{_owner_name(self)} must be a whole number, not {val!r}")
        super()._validate_value(val, allow_None)


class Finite(param.Number):
    """A number parameter that refuses infinities and NaN."""

    __slots__ = ()

    def _validate_value(self, val: Any, allow_None: bool) -> None:
        if isinstance(val, bool) or (isinstance(val, int | float) and not math.isfinite(val)):
            raise ValueError(f"{_owner_name(self)} must be a finite number, not {val!r}")
        super()._validate_value(val, allow_None)


class AutoInteger(param.Parameter):
    """``"auto"`` (a rule of the library's decides) or a whole number of at least ``least``."""

    __slots__ = ["least"]

    def __init__(self, default: Any = "auto", least: int = 1, **params: Any) -> None:
        self.least = least
        super().__init__(default=default, **params)

    def _validate(self, val: Any) -> None:
        super()._validate(val)
        if val == "auto":
            return
        if isinstance(val, bool) or not isinstance(val, int) or val < self.least:
            raise ValueError(f"{_owner_name(self)} must be 'auto' or a whole number of at least {self.least}, "
                             f"not {val!r}")


def _owner_name(parameter: param.Parameter) -> str:
    owner = getattr(parameter, "owner", None)
    return f"{owner.__name__ if isinstance(owner, type) else type(owner).__name__}.{parameter.name}"


class FitConfig(param.Parameterized):
    """How a model is fitted: every setting of :func:`pavi_viz.inference.fit`, once.

    ``FitConfig(steps=500, lr=0.02)``; ``config.copy(seed=1)`` gives a changed copy.
    """

    family = param.Selector(default=FAMILY_NAMES[0], objects=list(FAMILY_NAMES), label="Family",
                            doc="The variational family: pavi-e, pavi-f or mean-field.")
    family_options = param.Dict(default={}, label="Family options",
                                doc="Keyword options of the family (flow, transforms, encoding_size...).")
    steps = Whole(default=DEFAULT_STEPS, bounds=(0, MAX_STEPS), label="Steps",
                  doc="The most training steps (a resumed run counts the steps already done); with the "
                      "'plateau' schedule the fit ends sooner, once the ELBO has converged.")
    batch = param.Dict(default={}, allow_None=True, label="Batch sizes",
                       doc=f"Elements per step of some plates, {{plate: size}} (a size of None: the whole plate). "
                           f"By default a model of at most {WHOLE_STEP_NUMBERS:,} numbers is taken whole; in a larger "
                           f"one, the outermost plates get as many elements a step as keep it within that many "
                           f"numbers (batch=None: the defaults).")
    lr = Finite(default=1e-2, bounds=(0, None), label="Learning rate",
                doc="Adam's learning rate (the start of the schedule).")
    particles = Whole(default=None, bounds=(1, None), allow_None=True, label="Particles",
                      doc=f"Monte Carlo draws per ELBO estimate (None: as many as keep a step within "
                          f"{PARTICLE_NUMBERS:,} numbers, from 1 to {MAX_AUTO_PARTICLES}).")
    seed = Whole(default=0, allow_None=True, label="Seed",
                 doc="Seeds the initial weights, the noise and the batches (None: a fresh seed, kept in the result).")
    device = param.String(default="auto", label="Device",
                          doc="Where to train: 'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:N' or 'mps'.")
    schedule = param.Selector(default="plateau", objects=list(SCHEDULES), label="Schedule",
                              doc="The learning rate's course: 'plateau' (warm-up, then divided by 3 each time "
                                  "the ELBO stops improving, down to lr / 100, then the fit ends: converged), "
                                  "None (constant), 'cosine' or 'exponential' (warm-up, then down to lr / 100 "
                                  "at the last step).")
    clip = Finite(default=10.0, bounds=(0, None), inclusive_bounds=(False, True), allow_None=True, label="Clip",
                  doc="The maximum gradient norm (None: no clipping).")
    early_stopping = Whole(default=None, bounds=(1, None), allow_None=True, label="Early stopping",
                           doc="Stop once the smoothed ELBO has not improved for this many steps (None: never).")
    redraws = Whole(default=3, bounds=(0, None), label="Redraws",
                    doc="Times a step draws its batch and noise again when its ELBO or gradient comes out "
                        "non-finite (a draw deep in a tail; NumPyro's stable_update); still non-finite after "
                        "them, training stops with a DivergenceError.")
    threads = AutoInteger(label="Threads",
                          doc="torch's intra-op CPU threads, for this fit's own thread only: 'auto' takes one per "
                              f"{NUMBERS_PER_THREAD:,} numbers in a step, at least 1, and leaves one CPU for the "
                              "rest of the machine.")
    refresh_every = AutoInteger(label="Refresh every",
                                doc="Steps between two refreshes of PAVI-E's whole-data summaries (batched plates "
                                    f"only): 'auto' takes {MIN_REFRESH_EVERY}, or more where a refresh costs over "
                                    f"{REFRESH_SHARE:.0%} of training.")

    def copy(self, **changes: Any) -> FitConfig:
        """A config of the same class with these settings, ``changes`` applied."""
        return type(self)(**{**self.settings(), **changes})

    def settings(self) -> dict[str, Any]:
        """The settings as a plain dict (dicts copied), for checkpoints and displays."""
        return {
            name: dict(value) if isinstance(value, dict) else value
            for name, value in self.param.values().items()
            if name != "name"
        }

    @classmethod
    def setting_names(cls) -> list[str]:
        """The names of the fit settings (those of :class:`FitConfig` itself, not a subclass's)."""
        return [name for name in FitConfig.param if name != "name"]


__all__ = [
    "DEFAULT_STEPS",
    "MAX_AUTO_PARTICLES",
    "PARTICLE_NUMBERS",
    "FAMILY_NAMES",
    "WHOLE_STEP_NUMBERS",
    "SCHEDULES",
    "AutoInteger",
    "FitConfig",
    "Finite",
    "Whole",
]
