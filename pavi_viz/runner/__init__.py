"""The runner layer: training runs in background threads, the hub they publish to, and
the run store that keeps runs after their process has ended.

Imports the inference layer, never a GUI library: notebooks, served dashboards and
the command line all drive training through it::

    from pavi_viz.runner import TrainingRun
    run = TrainingRun(pavi_viz.examples.load("gre"), steps=2000).start()
    reader = run.hub.reader()
    ...
    new_records = reader.read()      # from any thread, any time: Point, Summary, StateChange, Info
    run.stop(wait=True)

The public names below are loaded on first access (PEP 562): the run store and the hub
need neither torch nor the inference layer, so ``pavi-viz runs`` answers at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pavi_viz._lazy import lazy_names

# public name -> the submodule that defines it
_PUBLIC: dict[str, str] = {
    "Info": "hub",
    "MetricsHub": "hub",
    "Point": "hub",
    "Reader": "hub",
    "Record": "hub",
    "StateChange": "hub",
    "Summary": "hub",
    "Update": "hub",
    "ACTIVE": "run",
    "ENDED": "run",
    "THREAD_PREFIX": "run",
    "Progress": "run",
    "RunConfig": "run",
    "RunState": "run",
    "TrainingRun": "run",
    "StoreFollower": "follow",
    "RunSlots": "slots",
    "RunStore": "store",
    "StoreError": "store",
    "StoredRun": "store",
    "FitLog": "store_writer",
    "RunWriter": "store_writer",
}

__all__ = sorted(_PUBLIC)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from pavi_viz.runner.follow import StoreFollower
    from pavi_viz.runner.hub import Info, MetricsHub, Point, Reader, Record, StateChange, Summary, Update
    from pavi_viz.runner.run import ACTIVE, ENDED, THREAD_PREFIX, Progress, RunConfig, RunState, TrainingRun
    from pavi_viz.runner.slots import RunSlots
    from pavi_viz.runner.store import RunStore, StoredRun, StoreError
    from pavi_viz.runner.store_writer import FitLog, RunWriter


__getattr__, __dir__ = lazy_names(__name__, _PUBLIC, globals())
