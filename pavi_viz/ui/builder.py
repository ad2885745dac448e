"""The visual model builder: assemble a plate model by clicks, check it, give it data, fit it.

:class:`Builder` shows one :class:`~pavi_viz.ui.builder_state.BuilderState` in three
columns:

- **left**: the Fit button (enabled only while the model is valid and has data) and
  what it waits for; start afresh or from a bundled example; open and save a model
  file (JSON); undo / redo; add a plate or a variable; data: upload a CSV or NetCDF
  file (see :mod:`pavi_viz.model.tables`; plates picked as *ragged* take their
  nesting from the file's columns; covariates take their values from the columns of
  their names), or simulate it from the prior at the sizes set in the plates' editor,
  with a seed (the latent values are kept as the truth); every problem of the
  model, in a list. Uploads go through :class:`~pavi_viz.ui.views.upload.GuardedUpload`:
  a file too large to send is refused in the browser;
- **middle**: why the last action failed (a malformed or too large file, a name in use), and the
  plate diagram (:class:`~pavi_viz.ui.views.diagram.PlateDiagram`), redrawn as the
  model changes; clicking a variable opens it in the editor;
- **right**: the selected variable's editor, the plates' editor and the covariates'
  editor with its Add covariate button (:mod:`pavi_viz.ui.views.editors`), each part's
  problems under it.

Every button and widget calls one state method; the state checks the model after each
change and keeps the undo history. Fit hands a copy of the model to ``on_fit`` (the
app gives it to its training dashboard, see :mod:`pavi_viz.ui.app`).

Browser tests find the widgets by their CSS classes (``pavi-builder-*``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import Any

import panel as pn

from pavi_viz import examples
from pavi_viz.model.spec import PlateModel
from pavi_viz.model.tables import CSV_SUFFIXES, NETCDF_SUFFIXES, Attached, Table, attach_table, read_table
from pavi_viz.ui.builder_state import MAX_MODEL_NAME, BuilderState, read_model_file
from pavi_viz.ui.dashboard import EXAMPLE_OPTIONS
from pavi_viz.ui.state import DEFAULT_EXAMPLE, DEFAULT_OPTIONS
from pavi_viz.ui.views.diagram import PlateDiagram
from pavi_viz.ui.views.editors import (
    CovariatesEditor,
    PlatesEditor,
    StateView,
    VariableEditor,
)
from pavi_viz.ui.views.upload import GuardedUpload
from pavi_viz.ui.views.text import alert, markdown

#: Width of the left and right columns (pixels); the diagram takes the rest.
LEFT_WIDTH, RIGHT_WIDTH = 300, 480


def _read_data(model: PlateModel, content: bytes, filename: str,
               ragged: Mapping[str, str] | None) -> tuple[Table, Attached]:
    """An uploaded file's table, and ``model`` with it attached (see
    :func:`~pavi_viz.model.tables.attach_table`): pure, for a worker thread."""
    table = read_table(content, filename)
    return table, attach_table(model, table, ragged=ragged)


def _button(label: str, css: str, **options: Any) -> pn.widgets.Button:
    return pn.widgets.Button(label=label, css_classes=[f"pavi-builder-{css}"], **options)


def _heading(text: str) -> pn.pane.Markdown:
    return markdown(f"### {text}", margin=(10, 10, 0, 10))


class Builder(StateView):
    """The visual builder of one :class:`BuilderState`.

    Args:
        state: the state to show and edit (default: a new state on a copy of the
            dashboard's default example).
        on_fit: called with a copy of the model when Fit is pressed.

    Attributes:
        diagram, variable_editor, plates_editor, covariates_editor: the views.
        fit: the Fit button, enabled while ``state.valid``.
    """

    def __init__(self, state: BuilderState | None = None, on_fit: Callable[[PlateModel], Any] | None = None,
                 **params: Any) -> None:
        if state is None:
            state = BuilderState(examples.load(DEFAULT_EXAMPLE, **DEFAULT_OPTIONS))
        super().__init__(state, **params)
        self.on_fit = on_fit
        self.fit = _button("Fit", "fit", color="success", disabled=True, sizing_mode="stretch_width")
        self.status = markdown("", css_classes=["pavi-builder-status"], margin=(0, 10))
        self.example = pn.widgets.Select(label="Example", options=examples.list(), value=DEFAULT_EXAMPLE,
                                         css_classes=["pavi-builder-example"])
        self.load_example = _button("Load example", "load-example", align="end")
        self.new = _button("New", "new", color="warning", variant="outline")
        self.model_name = pn.widgets.TextInput(label="Model name", css_classes=["pavi-builder-model-name"],
                                               max_length=MAX_MODEL_NAME)
        self.json_upload = pn.widgets.FileInput(accept=".json", css_classes=["pavi-builder-json-upload"])
        self.json_download = pn.widgets.FileDownload(callback=self._model_file, filename="model.json",
                                                     label="Save model (JSON)", color="default",
                                                     css_classes=["pavi-builder-json-download"])
        self.undo = _button("Undo", "undo")
        self.redo = _button("Redo", "redo")
        self.add_plate = _button("Add plate", "add-plate", color="primary", variant="outline")
        self.add_variable = _button("Add variable", "add-variable", color="primary", variant="outline")
        self.data_upload = pn.widgets.FileInput(accept=",".join(CSV_SUFFIXES + NETCDF_SUFFIXES),
                                                css_classes=["pavi-builder-data-upload"])
        self.ragged = pn.widgets.MultiChoice(
            label="Ragged plates (nesting read from the file)", options=[], css_classes=["pavi-builder-ragged"],
            description="Plates whose elements belong to outer elements as the file's id columns say, "
                        "in groups of any size (houses in counties)",
        )
        self.seed = pn.widgets.IntInput(label="Seed", value=0, width=90, css_classes=["pavi-builder-seed"])
        self.simulate = _button("Simulate", "simulate", color="primary", align="end")
        self.data_info = markdown("", css_classes=["pavi-builder-data-info"], margin=(0, 10))
        self.problems = markdown("", css_classes=["pavi-builder-problems"], margin=(0, 10))
        self.message = alert("", alert_type="danger", visible=False, css_classes=["pavi-builder-message"])
        self.json_guard = GuardedUpload(self.json_upload, on_refused=self._refused)
        self.data_guard = GuardedUpload(self.data_upload, on_refused=self._refused)

        self.diagram = PlateDiagram(state)
        self.variable_editor = VariableEditor(state)
        self.plates_editor = PlatesEditor(state)
        self.covariates_editor = CovariatesEditor(state)

        self.fit.on_click(self._fit)
        self.load_example.on_click(
            lambda _: self.edit(state.load_example, self.example.value, **EXAMPLE_OPTIONS.get(self.example.value, {})))
        self.new.on_click(lambda _: self.edit(state.new))
        self.model_name.param.watch(lambda event: self.edit(state.rename_model, event.new), "value")
        self.undo.on_click(lambda _: state.undo())
        self.redo.on_click(lambda _: state.redo())
        self.add_plate.on_click(lambda _: self.edit(state.add_plate))
        self.add_variable.on_click(lambda _: self.edit(state.add_variable))
        self.simulate.on_click(lambda _: self.edit(state.simulate, seed=self.seed.value or 0))
        self.json_upload.param.watch(self._json_uploaded, "value")
        self.data_upload.param.watch(self._data_uploaded, "value")
        state.param.watch(self.show_state, ["revision"])
        self.show_state()

    # -- layout ----------------------------------------------------------------------------
    def controls(self) -> pn.Column:
        """The left column: Fit, the model's files and actions, data, problems."""
        return pn.Column(
            self.fit, self.status,
            _heading("Model"),
            pn.Row(self.example, self.load_example, sizing_mode="stretch_width"),
            self.new, self.model_name,
            markdown("Open a model file (JSON):", margin=(5, 10, 0, 10)), self.json_guard,
            self.json_download,
            pn.Row(self.undo, self.redo, sizing_mode="stretch_width"),
            pn.Row(self.add_plate, self.add_variable, sizing_mode="stretch_width"),
            _heading("Data"),
            markdown("Upload a CSV file (one row per element of the innermost plate) or NetCDF:",
                             margin=(0, 10)),
            self.data_guard, self.ragged,
            # Simulate has no size inputs of its own: the plates' editor holds the one place to set them.
            markdown("or simulate it from the prior, at the sizes from the **Plates** editor "
                             "(covariates' data must be uploaded first):", margin=(5, 10, 0, 10)),
            pn.Row(self.seed, self.simulate, sizing_mode="stretch_width"),
            self.data_info,
            _heading("Problems"), self.problems,
            width=LEFT_WIDTH,
        )

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Row(
            self.controls(),
            pn.Column(self.message, self.diagram, sizing_mode="stretch_width"),
            pn.Column(self.variable_editor, self.plates_editor, self.covariates_editor, width=RIGHT_WIDTH),
            sizing_mode="stretch_width",
        )

    # -- actions ---------------------------------------------------------------------------
    def _fit(self, *_: Any) -> None:
        if self.state.valid and self.on_fit is not None:
            self.on_fit(self.state.model.copy())

    def _model_file(self) -> io.StringIO:
        return io.StringIO(self.state.to_json())

    async def _json_uploaded(self, event: Any) -> None:
        if event.new is None:
            return
        self._reading(self.json_upload)
        await self.edit_after_reading(read_model_file, event.new, then=self.state.load_model)

    async def _data_uploaded(self, event: Any) -> None:
        if event.new is None:
            return
        nesting = {p.name: p.nested_in for p in self.state.model.plates}
        ragged = {p: nesting[p] for p in self.ragged.value if nesting.get(p)}
        filename = self._reading(self.data_upload)
        # Attached to a copy on the worker thread too (seconds for a large file), while the
        # session may go on editing the model: see _attach_read.
        await self.edit_after_reading(_read_data, self.state.model.copy(), event.new, filename, ragged or None,
                                      then=self._attach_read, revision=self.state.revision, ragged=ragged or None)

    def _attach_read(self, read: tuple[Table, Attached], revision: int, ragged: Mapping[str, str] | None) -> None:
        """Take the model that a file was attached to on a worker thread, unless the
        model changed meanwhile (``revision``): then attach the table to it as it is now."""
        table, attached = read
        if self.state.revision == revision:
            self.state.load_model(attached.model)
        else:
            self.state.attach(table, ragged=ragged)

    def _reading(self, upload: pn.widgets.FileInput) -> str:
        """Say that ``upload``'s file is being read, with Fit disabled meanwhile (the
        state's next revision says what came of it, and enables it again where it
        applies), and forget the file (see :meth:`_clear`); returns its name."""
        filename = upload.filename or ""
        self.status.object = f"Reading {filename}…"
        self.fit.disabled = True
        self._clear(upload)
        return filename

    def _refused(self, filename: str, size: int) -> None:
        """A file the browser kept: too large to send (the model stays as it is)."""
        limit = self.data_guard.max_bytes / 2**20
        self.message.param.update(
            object=f"{filename} is {size / 2**20:.1f} MB; files up to {limit:.0f} MB can be uploaded here "
                   f"(attach larger data in Python: pavi_viz.model.tables)",
            visible=True,
        )

    def _clear(self, upload: pn.widgets.FileInput) -> None:
        """Forget an upload once read, here and in the browser, so that the same file
        chosen again is read again."""
        with self.quietly():
            upload.param.update(value=None, filename=None)
        upload.clear()

    # -- showing the state ----------------------------------------------------------------------
    def show(self) -> None:
        state, model = self.state, self.state.model
        self.fit.disabled = not state.valid
        self.undo.disabled, self.redo.disabled = not state.can_undo, not state.can_redo
        if state.valid:
            self.status.object = "Ready: **Fit** trains it in the *Fit* tab."
        elif state.problems:
            self.status.object = f"**{len(state.problems)} problem(s)** to fix first: see the list below."
        else:
            self.status.object = "No data yet: upload a file or simulate it."
        self.message.param.update(object=state.message, visible=bool(state.message))
        self.model_name.value = model.name
        self.json_download.filename = f"{model.name or 'model'}.json"
        nested = [p.name for p in model.plates if p.nested_in]
        self.ragged.param.update(options=nested, value=[p for p in self.ragged.value if p in nested])
        self.data_info.object = _describe_data(model)
        self.problems.object = "\n".join(
            f"- **{p.culprit}**: {p.message}" if p.culprit else f"- {p.message}" for p in state.problems
        ) or "None."


def _describe_data(model: PlateModel) -> str:
    """``"Data: x (20 × 10 × 2). Truth: mu, mu_g."``, or that there is none."""
    if not model.data:
        return "No data attached."
    arrays = ", ".join(f"{k} ({' × '.join(map(str, v.shape)) or 'a number'})" for k, v in model.data.items())
    truth = f" Truth kept: {', '.join(model.truth)}." if model.truth else ""
    return f"Data: {arrays}.{truth}"
