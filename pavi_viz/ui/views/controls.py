"""The training controls: the run's settings, Start / Pause / Resume / Stop, progress.

:class:`TrainingControls` edits the dashboard state's :class:`~pavi_viz.runner.RunConfig`
(the settings the next Start uses), drives the state's run, and shows what the latest
poll saw: the run's state, its progress and throughput, the family's parameter count,
and a failed run's error with its traceback (collapsed).

Each button is enabled only where its action applies (:func:`enabled_buttons`):

============  =====  =====  ======  ====
run state     Start  Pause  Resume  Stop
============  =====  =====  ======  ====
idle          yes
queued (a)                          yes
running                yes          yes
paused                      yes     yes
stopped       yes           yes*
finished      yes           yes*
failed        yes
============  =====  =====  ======  ====

\\* a stopped or finished run resumes up to the *steps* setting, when that is more
steps than it has done. (a) waiting for one of a server's training slots
(``pavi-viz serve --max-runs``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import panel as pn
import param
import torch
from panel.viewable import Viewer

from pavi_viz.inference.config import FitConfig
from pavi_viz.inference.resolve import default_batch_sizes
from pavi_viz.ui.state import DashboardState
from pavi_viz.ui.views.text import alert, markdown

#: The button names, in display order.
BUTTONS = ("start", "pause", "resume", "stop")


def enabled_buttons(run_state: str, step: int = 0, steps: int = 0) -> set[str]:
    """The buttons that apply in ``run_state`` (see the module's table).

    Args:
        run_state: a :class:`~pavi_viz.runner.RunState` value.
        step: the steps the run has done. steps: the *steps* setting (a stopped or
            finished run resumes only towards more steps than it has done).
    """
    if run_state == "queued":  # waiting for a training slot of the server's
        return {"stop"}
    if run_state == "running":
        return {"pause", "stop"}
    if run_state == "paused":
        return {"resume", "stop"}
    if run_state in ("stopped", "finished"):
        return {"start", "resume"} if steps > step else {"start"}
    return {"start"}  # idle, failed


def device_options() -> list[str]:
    """The devices offered: ``auto`` (CUDA when available), ``cpu``, and ``cuda`` or
    ``mps`` when the machine has one."""
    return ["auto", "cpu", *(["cuda"] if torch.cuda.is_available() else []),
            *(["mps"] if torch.backends.mps.is_available() else [])]


def format_seconds(seconds: float) -> str:
    """``"1 h 02 min"``, ``"3 min 05 s"``, ``"12 s"``; ``"–"`` when unknown."""
    if not math.isfinite(seconds):
        return "–"
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


#: The fit settings the dashboard offers, in rows; the others keep their defaults.
SETTING_ROWS = (("family",), ("steps", "lr"), ("particles", "seed"), ("schedule", "device"))


def setting_widget(config: FitConfig, name: str) -> pn.widgets.Widget:
    """A widget linked both ways to ``config``'s setting ``name``, made from the
    setting's declaration: its label, bounds, and help text as the tooltip; arrows
    that step by a tenth of the default's order of magnitude (100 for 2000 steps,
    0.001 for a rate of 0.01); CSS class ``pavi-setting-<name>``."""
    parameter = config.param[name]
    css = {"css_classes": [f"pavi-setting-{name}"]}
    if name == "device":
        return pn.widgets.Select.from_param(parameter, options=device_options(), **css)
    if isinstance(parameter, param.Selector):
        objects = list(parameter.objects)
        options = {("none" if o is None else str(o)): o for o in objects} if None in objects else objects
        return pn.widgets.Select.from_param(parameter, options=options, **css)
    default = parameter.default
    step = 10 ** (math.floor(math.log10(abs(default))) - 1) if default else 1
    if isinstance(parameter, param.Integer):
        return pn.widgets.IntInput.from_param(parameter, step=max(1, int(step)), **css)
    return pn.widgets.FloatInput.from_param(parameter, step=step, **css)


class TrainingControls(Viewer):
    """Settings, run buttons and progress of one dashboard's training.

    Args:
        state: the dashboard's state; the widgets edit ``state.config`` (the next
            Start's settings) and the buttons call ``state.start()``, ``pause()``,
            ``resume()`` and ``stop()``.
    """

    def __init__(self, state: DashboardState, **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        self.buttons = {
            "start": pn.widgets.Button(label="Start", color="primary"),
            "pause": pn.widgets.Button(label="Pause", color="default"),
            "resume": pn.widgets.Button(label="Resume", color="success"),
            "stop": pn.widgets.Button(label="Stop", color="danger"),
        }
        actions = {"start": self._start, "pause": self._pause, "resume": self._resume, "stop": self._stop}
        for name, button in self.buttons.items():
            button.on_click(actions[name])
        self.settings = pn.Column(sizing_mode="stretch_width")
        self.batch_editor = pn.Column(sizing_mode="stretch_width")
        self.progress = pn.indicators.Progress(value=0, max=1, sizing_mode="stretch_width", bar_color="primary")
        self.progress_text = markdown("", margin=(0, 10))
        self.run_status = markdown("", margin=(0, 10))
        self.error = alert("", alert_type="danger", visible=False)
        self.notice = alert("", alert_type="warning", visible=False)
        self.traceback = markdown("")
        self.traceback_card = pn.Card(self.traceback, title="Traceback", collapsed=True, visible=False)
        self._batch_inputs: dict[str, pn.widgets.IntInput] = {}
        self._build_settings()
        self._build_batch_editor()
        state.param.watch(self._build_settings, ["config"])
        state.param.watch(self._build_batch_editor, ["model", "config"])
        state.param.watch(
            self._refresh, ["run_name", "watched", "run_state", "message", "traceback", "step", "total_steps", "steps_per_second",
                            "parameter_count"],
        )
        self._refresh()
        self._layout = pn.Column(
            markdown("### Training", margin=(0, 10)),
            self.settings,
            markdown("**Batch size per plate** (empty: the default)", margin=(5, 10, 0, 10)),
            self.batch_editor,
            pn.Row(*self.buttons.values(), sizing_mode="stretch_width"),
            self.progress,
            self.progress_text,
            self.run_status,
            self.notice,
            self.error,
            self.traceback_card,
            sizing_mode="stretch_width",
        )

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    # -- widgets ------------------------------------------------------------------------
    def _build_settings(self, *_: Any) -> None:
        """Widgets linked both ways to the (current) ``state.config``, one per setting of
        :data:`SETTING_ROWS`."""
        config = self.state.config
        config.param.watch(self._refresh, ["steps"])  # Resume applies once steps exceed the steps done
        self.setting_widgets = {name: setting_widget(config, name) for row in SETTING_ROWS for name in row}
        self.settings.objects = [
            pn.Row(*(self.setting_widgets[name] for name in row), sizing_mode="stretch_width") for row in SETTING_ROWS
        ]

    def _build_batch_editor(self, *_: Any) -> None:
        """One input per plate of the model, showing the default batch size as placeholder."""
        batch = dict(self.state.config.batch or {})
        self._batch_inputs = {}
        defaults = default_batch_sizes(self.state.model.compile(device="cpu"))
        for plate in self.state.model.plates:
            default = f"default: {defaults[plate.name]}" if plate.name in defaults else "default: whole"
            where = f", in {plate.nested_in}" if plate.nested_in else ""
            widget = pn.widgets.IntInput(
                label=f"{plate.name} ({plate.size}{where})", value=batch.get(plate.name), start=1,
                end=plate.size, placeholder=default, sizing_mode="stretch_width",
            )
            widget.param.watch(self._batch_changed, "value")
            self._batch_inputs[plate.name] = widget
        # Settings for plates the model does not have would fail the next Start.
        known = {k: v for k, v in batch.items() if k in self._batch_inputs}
        if known != batch:
            self.state.config.batch = known
        self.batch_editor.objects = list(self._batch_inputs.values()) or [markdown("(no plates)")]

    def _batch_changed(self, *_: Any) -> None:
        self.state.config.batch = {
            name: widget.value for name, widget in self._batch_inputs.items() if widget.value is not None
        }

    # -- actions ------------------------------------------------------------------------
    def _start(self, *_: Any) -> None:
        self._act(self.state.start)

    def _pause(self, *_: Any) -> None:
        self._act(self.state.pause)

    def _resume(self, *_: Any) -> None:
        paused = self.state.run_state == "paused"
        self._act(lambda: self.state.resume(None if paused else self.state.config.steps))

    def _stop(self, *_: Any) -> None:
        self._act(self.state.stop)

    def _act(self, action: Callable[[], Any]) -> None:
        """Run a control action; one the run refuses (a bad setting, a model that does
        not validate) shows its reason in a notice instead."""
        try:
            action()
        except (RuntimeError, ValueError, TypeError) as err:  # a ModelError is a ValueError
            self.notice.param.update(object=f"{type(err).__name__}: {err}", visible=True)
        else:
            self.notice.visible = False

    # -- display ------------------------------------------------------------------------
    def _refresh(self, *_: Any) -> None:
        """Buttons, progress and status from the state's polled parameters."""
        state = self.state
        # A stored run trains in another process (or no longer): Start trains its model here.
        enabled = {"start"} if state.watched is not None else enabled_buttons(state.run_state, state.step,
                                                                              state.config.steps)
        for name, button in self.buttons.items():
            button.disabled = name not in enabled
        total = max(state.total_steps, 1)
        self.progress.param.update(max=total, value=min(state.step, total))
        if not state.run_name:
            self.progress_text.object = "No run yet: press **Start**."
        else:
            rate = f"{state.steps_per_second:,.0f} steps/s" if state.steps_per_second else "– steps/s"
            left = format_seconds(state.seconds_left) if state.run_state == "running" else "–"
            self.progress_text.object = f"step {state.step:,} / {state.total_steps:,} · {rate} · {left} left"
        count = "–" if state.parameter_count is None else f"{state.parameter_count:,}"
        name = f" · {state.run_name}" if state.run_name else ""
        self.run_status.object = f"Run: **{state.run_state}** · parameters: {count}{name}" + (
            f"  \n{state.message}" if state.message and state.run_state != "failed" else ""
        )
        failed = state.run_state == "failed"
        export = "  \nIts last good posterior can still be downloaded (Export, below)." if failed and state.fitted else ""
        self.error.param.update(object=state.message + export, visible=failed and bool(state.message))
        self.traceback.object = f"```text\n{state.traceback}\n```" if state.traceback else ""
        self.traceback_card.visible = failed and bool(state.traceback)
