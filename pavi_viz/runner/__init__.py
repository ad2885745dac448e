"""The runner layer: training runs in background threads and the hub they publish to.

Imports the inference layer, never a GUI library: notebooks, served dashboards and
the command line all drive training through it::

    from pavi_viz.runner import TrainingRun
    run = TrainingRun(pavi_viz.examples.load("gre"), steps=2000).start()
    reader = run.hub.reader()
    ...
    new_records = reader.read()      # from any thread, any time: Point, Summary, StateChange, Info
    run.stop(wait=True)
"""

from pavi_viz.runner.hub import Info, MetricsHub, Point, Reader, Record, StateChange, Summary, Update
from pavi_viz.runner.run import ACTIVE, ENDED, THREAD_PREFIX, Progress, RunConfig, RunState, TrainingRun
from pavi_viz.runner.slots import RunSlots

__all__ = [
    "ACTIVE",
    "ENDED",
    "Info",
    "MetricsHub",
    "Point",
    "Progress",
    "Reader",
    "Record",
    "RunConfig",
    "RunSlots",
    "RunState",
    "StateChange",
    "Summary",
    "THREAD_PREFIX",
    "TrainingRun",
    "Update",
]
