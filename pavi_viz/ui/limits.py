"""Limits that whoever serves the app sets for every session: :class:`ServeLimits`.

A workshop server is shared: one student's run of 10^6 steps with 1,000 particles, or a
simulation of 10^8 numbers, would slow everyone else. ``pavi-viz serve --max-steps
20000 --max-particles 16 --max-simulated 1000000 --max-runs 4`` sets them; the served
app reads them back from the environment (:meth:`ServeLimits.from_environment`) and
gives them to each session's dashboard and builder, which refuse, with a message that
names the limit, a Start or a Simulate beyond them. It also passes the hosts the server
answers to (:func:`allowed_host`): a page is built for those alone; and the run store the
sessions record their runs in and list (:func:`served_store`).

The library's own bounds (:data:`~pavi_viz.inference.config.MAX_STEPS`,
:data:`~pavi_viz.inference.config.MAX_STEP_NUMBERS`,
:data:`~pavi_viz.model.spec.MAX_SIMULATED_NUMBERS`) hold everywhere; these can only be
tighter. This module never imports Panel.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping

from pavi_viz.inference.config import MAX_STEPS, FitConfig
from pavi_viz.model.spec import MAX_SIMULATED_NUMBERS
from pavi_viz.runner import RunSlots, RunStore

#: The environment variable that carries the limits from ``pavi-viz serve`` to the app.
ENVIRONMENT_VARIABLE = "PAVI_VIZ_SERVE_LIMITS"
#: The environment variable that carries, from ``pavi-viz serve`` to the app, the hosts
#: (``name:port``, a JSON list) that the server answers to: the origins its websocket
#: accepts.
HOSTS_VARIABLE = "PAVI_VIZ_SERVE_HOSTS"
#: The environment variable that carries, from ``pavi-viz serve`` to the app, the run
#: store's file (absent or empty: no store; the sessions' runs are not recorded and the
#: *Runs* tab is not shown).
STORE_VARIABLE = "PAVI_VIZ_SERVE_STORE"
#: Each limit's command-line flag, for the messages that name it.
FLAGS = {"steps": "--max-steps", "particles": "--max-particles", "simulated": "--max-simulated",
         "runs": "--max-runs"}


@dataclasses.dataclass(frozen=True)
class ServeLimits:
    """What one session of a served app may ask for.

    Attributes:
        steps: the most steps a run may train (its Steps setting).
        particles: the most Monte Carlo draws a step may take (its Particles setting;
            None: the library's own bound on a step's numbers only).
        simulated: the most numbers a simulation may draw (the builder's Simulate).
        runs: the most runs that train at once in the server, all sessions together
            (the others wait their turn, see :class:`pavi_viz.runner.RunSlots`; None:
            no limit).
    """

    steps: int = MAX_STEPS
    particles: int | None = None
    simulated: int = MAX_SIMULATED_NUMBERS
    runs: int | None = None

    def __post_init__(self) -> None:
        bounds = {"steps": MAX_STEPS, "simulated": MAX_SIMULATED_NUMBERS}
        for name, value in dataclasses.asdict(self).items():
            if value is None and name in ("particles", "runs"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{FLAGS[name]} must be a whole number of at least 1, not {value!r}")
            if name in bounds and value > bounds[name]:
                raise ValueError(f"{FLAGS[name]} may be at most {bounds[name]:,} (pavi_viz's own bound), "
                                 f"not {value:,}")

    def check_run(self, config: FitConfig, steps: int | None = None) -> None:
        """Refuse a run (or a resume to ``steps`` in all) beyond the limits.

        Raises:
            ValueError: naming the setting, its value and the limit.
        """
        steps = config.steps if steps is None else steps
        if steps > self.steps:
            raise ValueError(f"Steps: {steps:,} is over this server's limit of {self.steps:,} a run "
                             f"(set by whoever serves it: {FLAGS['steps']})")
        if self.particles is not None and config.particles is not None and config.particles > self.particles:
            raise ValueError(f"Particles: {config.particles:,} is over this server's limit of {self.particles:,} "
                             f"(set by whoever serves it: {FLAGS['particles']})")

    def to_environment(self) -> dict[str, str]:
        """The environment entry that :meth:`from_environment` reads back."""
        return {ENVIRONMENT_VARIABLE: json.dumps(dataclasses.asdict(self))}

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> ServeLimits:
        """The limits ``pavi-viz serve`` set (the library's own bounds when none).

        Raises:
            ValueError: the variable holds something else than limits.
        """
        text = environ.get(ENVIRONMENT_VARIABLE)
        if not text:
            return cls()
        try:
            values = json.loads(text)
            return cls(**values)
        except (json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"{ENVIRONMENT_VARIABLE} must hold the JSON of ServeLimits' fields, not {text!r}: "
                             f"{err}") from None


def allowed_host(host: str | None, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether a page may be built for a request whose ``Host`` header is ``host``.

    A page asked for under another name than the server's (a site whose name was made
    to resolve to this machine: DNS rebinding) is refused before any app is built: its
    websocket would be refused anyway, since its origin is not the server's, but the
    page would cost the server's event loop a page build. Anything goes where no list
    was set (``panel serve`` run directly, a notebook).
    """
    text = environ.get(HOSTS_VARIABLE)
    if text is None:
        return True
    return (host or "").lower() in {h.lower() for h in json.loads(text)}


def served_store(environ: Mapping[str, str] = os.environ) -> RunStore | None:
    """The run store ``pavi-viz serve`` named for its sessions (:data:`STORE_VARIABLE`),
    or None.

    Raises:
        StoreError: the file is not a pavi_viz store (or of a newer schema).
    """
    path = environ.get(STORE_VARIABLE)
    return _store_at(path) if path else None


@functools.cache
def _store_at(path: str) -> RunStore:
    """One RunStore per file and process (each session's would check the file again)."""
    return RunStore(path)


@functools.cache
def shared_slots(runs: int | None) -> RunSlots | None:
    """The process's one :class:`RunSlots` of ``runs`` slots, shared by every session of a
    served app (``panel serve`` runs the app's script once per session, but imports this
    module once); None when ``runs`` is None."""
    return None if runs is None else RunSlots(runs)
