"""The visual builder's editors: the selected variable's, the plates' and the covariates'.

Each editor is a ``pn.viewable.Viewer`` over one
:class:`~pavi_viz.ui.builder_state.BuilderState`. A user's edit calls one state method
(``rename_variable``, ``set_param``, ``resize_plate``...), never the model directly, so
that every edit is validated and undoable. After every change of the state (its
``revision``; its ``variable`` for the selection) the editor sets its widgets from the
model again, *quietly*: showing the state (after an undo, say) is never taken for a new
edit. An edit the state refuses (a name already in use) changes nothing: the state
records why in ``message`` (the builder shows it) and the widget shows the model's value
again.

The widgets are made by hand rather than with ``pn.Param`` or ``Widget.from_param``:
those would write a plate's or variable's parameters directly, around the state's undo
history and checks. Their labels' tooltips are the parameters' own docs.

The problems of a variable, a plate or a covariate (:meth:`BuilderState.problems_for`)
show in a red alert under its editor or row. Every key widget carries a CSS class
(``pavi-variable-*``, ``pavi-plate-*``, ``pavi-covariate-*``) for the browser tests.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import panel as pn
from panel.viewable import Viewer

from pavi_viz.model.distributions import DISTRIBUTIONS
from pavi_viz.model.errors import ModelError
from pavi_viz.model.spec import Covariate, Plate, PlateModel, Variable
from pavi_viz.ui.builder_state import BuilderState
from pavi_viz.ui.views.text import alert, labelled, markdown

#: The parent picker's entry that picks nothing (the text input keeps its value).
NO_PARENT = ""
#: The "nested in" choice of a top-level plate.
TOP_LEVEL = ""


class StateView(Viewer):
    """Widgets that edit a :class:`BuilderState` through its methods and show it back.

    Subclasses build their widgets, then call :meth:`show_state` (their :meth:`show`,
    quietly) whenever the state changes.
    """

    def __init__(self, state: BuilderState, **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        self._showing = False

    def edit(self, action: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``action`` (a state method) for a user's edit; nothing while the widgets
        are being set from the state. A refused edit is recorded by the state (its
        ``message``), and its new revision sets the widgets back."""
        if self._showing:
            return
        try:
            action(*args, **kwargs)
        except ModelError:
            pass  # recorded in state.message, which the builder shows

    async def edit_after_reading(self, read: Callable[..., Any], *args: Any, then: Callable[..., Any],
                                 **kwargs: Any) -> None:
        """Run ``read(*args)`` on a worker thread, then ``then(result, **kwargs)`` as an
        edit. Reading a large upload (seconds of parsing) thus never holds up the server's
        event loop, which every other session shares; a file ``read`` refuses is recorded
        as a refused edit (``state.refuse``)."""
        try:
            result = await asyncio.to_thread(read, *args)
        except ModelError as err:
            self.edit(self.state.refuse, err)
            return
        self.edit(then, result, **kwargs)

    @contextmanager
    def quietly(self) -> Iterator[None]:
        """Widget changes made inside are shown state, not edits."""
        showing, self._showing = self._showing, True
        try:
            yield
        finally:
            self._showing = showing

    def show_state(self, *_: Any) -> None:
        with self.quietly():
            self.show()

    def show(self) -> None:
        """Set the widgets from the state (called quietly)."""
        raise NotImplementedError


def problems_alert(css_class: str) -> pn.pane.Alert:
    """A red alert for the problems of one part of the model (hidden while there are none)."""
    return alert("", alert_type="danger", visible=False, css_classes=[css_class], margin=(0, 10, 5, 10))


def show_problems(pane: pn.pane.Alert, messages: Sequence[str]) -> None:
    """Put ``messages`` in ``pane`` as a list, and show it only when there are some."""
    pane.param.update(object="\n".join(f"- {m}" for m in messages), visible=bool(messages))


def value_text(value: Any) -> str:
    """A parameter value as the text input shows it: ``1.0``, ``[0.5, 0.5]``, ``mu + 1``."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def shape_text(shape: Sequence[int]) -> str:
    """An event shape as text: ``""`` (a number), ``"2"``, ``"2, 3"``."""
    return ", ".join(str(n) for n in shape)


def parse_shape(text: str) -> list[int | str]:
    """An event shape typed as ``2``, ``2, 3``, ``[2, 3]`` or ``2x3``; entries that are
    not whole numbers are kept as text, for the state to refuse with its message."""
    tokens = [t for t in re.split(r"[\s,×()\[\]]+|(?<=\d)x(?=\d)", text) if t]
    return [int(t) if re.fullmatch(r"-?\d+", t) else t for t in tokens]


def _doc(parameter: Any) -> str:
    """The first sentence of a parameter's doc, for a widget's tooltip."""
    return (parameter.doc or "").strip().split("\n")[0]


class VariableEditor(StateView):
    """The selected variable (``state.variable``): name, latent or observed, distribution,
    one input per distribution parameter with a parent picker, plates and event shape.

    Attributes:
        select: which variable to edit (a click on the diagram sets it too).
        name_input, kind, distribution, plates, event_shape, remove: its widgets.
        param_inputs, parent_pickers: per distribution parameter, its text input (a
            constant, a parent's name or an expression) and its picker of parents.
        problems: the variable's problems.
    """

    def __init__(self, state: BuilderState, **params: Any) -> None:
        super().__init__(state, **params)
        self.select = pn.widgets.Select(label="Variable", options=[], css_classes=["pavi-variable-select"])
        self.remove = pn.widgets.Button(label="Remove variable", color="danger", variant="outline",
                                        css_classes=["pavi-variable-remove"], align="end")
        self.name_input = pn.widgets.TextInput(label="Name", description=_doc(Variable.param.name),
                                         css_classes=["pavi-variable-name"])
        self.kind = pn.widgets.RadioButtonGroup(options=["latent", "observed"], color="primary",
                                                variant="outline", css_classes=["pavi-variable-kind"],
                                                description=_doc(Variable.param.observed))
        self.distribution = pn.widgets.Select(label="Distribution", options=list(DISTRIBUTIONS),
                                              description=_doc(Variable.param.distribution),
                                              css_classes=["pavi-variable-distribution"])
        self.about = markdown("", margin=(0, 10), styles={"color": "#666"})
        self.plates = pn.widgets.MultiChoice(label="Plates", options=[], description=_doc(Variable.param.plates),
                                             css_classes=["pavi-variable-plates"])
        self.event_shape = pn.widgets.TextInput(
            label="Event shape", placeholder="empty: a number; 2: a vector of 2; 2, 3: a 2 × 3 array",
            description=_doc(Variable.param.event_shape), css_classes=["pavi-variable-event-shape"],
        )
        self.param_rows = pn.Column(sizing_mode="stretch_width", margin=0)
        self.param_inputs: dict[str, pn.widgets.TextInput] = {}
        self.parent_pickers: dict[str, pn.widgets.Select] = {}
        self._rows_key: tuple = ()
        self.problems = problems_alert("pavi-variable-problems")
        self.empty = markdown("No variable yet: press **Add variable**.")

        self.select.param.watch(self._selected, "value")
        self.remove.on_click(lambda _: self.edit(self.state.remove_variable, self.state.variable))
        self.name_input.param.watch(lambda e: self.edit(self.state.rename_variable, self.state.variable, e.new), "value")
        self.kind.param.watch(
            lambda e: self.edit(self.state.set_observed, self.state.variable, e.new == "observed"), "value")
        self.distribution.param.watch(
            lambda e: self.edit(self.state.set_distribution, self.state.variable, e.new), "value")
        self.plates.param.watch(lambda e: self.edit(self._set_plates, e.new), "value")
        self.event_shape.param.watch(
            lambda e: self.edit(self.state.set_event_shape, self.state.variable, parse_shape(e.new)), "value")

        self.fields = pn.Column(
            self.name_input, self.kind, self.distribution, self.about,
            markdown("**Parameters**: a number, a parent (pick one) or an expression such as "
                             "`alpha[county] + beta * floor`", margin=(5, 10, 0, 10)),
            self.param_rows, self.plates, self.event_shape,
            sizing_mode="stretch_width", margin=0,
        )
        self._layout = pn.Column(
            markdown("### Variable", margin=(0, 10)),
            pn.Row(self.select, self.remove, sizing_mode="stretch_width"),
            self.empty, self.fields, self.problems,
            sizing_mode="stretch_width",
        )
        state.param.watch(self.show_state, ["revision", "variable"])
        self.show_state()

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    # -- edits ------------------------------------------------------------------------------
    def _selected(self, event: Any) -> None:
        if not self._showing and event.new:
            self.state.variable = event.new

    def _set_plates(self, plates: Sequence[str]) -> None:
        self.state.set_plates(self.state.variable, outer_first(self.state.model, plates))

    def _param_edited(self, name: str, value: str) -> None:
        self.edit(self.state.set_param, self.state.variable, name, value)

    def _parent_picked(self, name: str, parent: str) -> None:
        if parent != NO_PARENT:
            self.edit(self.state.set_param, self.state.variable, name, parent)

    # -- showing the state ---------------------------------------------------------------------
    def show(self) -> None:
        model, name = self.state.model, self.state.variable
        names = [v.name for v in model.variables]
        self.select.param.update(options=names, value=name if name in names else None)
        self.remove.disabled = not names
        variable = next((v for v in model.variables if v.name == name), None)
        self.empty.visible = variable is None
        self.fields.visible = variable is not None
        if variable is None:
            show_problems(self.problems, [])
            return
        known = variable.distribution in DISTRIBUTIONS
        info = DISTRIBUTIONS.get(variable.distribution)
        self.name_input.value = variable.name
        self.kind.value = "observed" if variable.observed else "latent"
        # An unknown distribution (from a file) stays listed, so that it shows; validation says why it is wrong.
        self.distribution.param.update(
            options=list(DISTRIBUTIONS) + ([] if known else [variable.distribution]), value=variable.distribution)
        self.about.object = info.doc if info is not None else ""
        show_plates(self.plates, model.plates, variable.plates)
        self.event_shape.value = shape_text(variable.event_shape)
        self._show_params(variable)
        show_problems(self.problems, self.state.problems_for(variable.name))

    def _show_params(self, variable: Variable) -> None:
        """One row per parameter of its distribution (and per parameter it has that the
        distribution lacks, so that it can be cleared). The rows are made anew only for
        another list of parameters, so that a widget being used stays in the page."""
        info = DISTRIBUTIONS.get(variable.distribution)
        names = [p.name for p in info.params] if info is not None else []
        names += [p for p in variable.params if p not in names]
        key = (variable.distribution, tuple(names))
        if key != self._rows_key:
            self._rows_key = key
            self.param_inputs, self.parent_pickers = {}, {}
            self.param_rows.objects = [self._param_row(name, _placeholder(variable.distribution, name))
                                       for name in names]
        parents = self.state.candidate_parents(variable.name)
        for name in names:
            value = variable.params.get(name)
            self.param_inputs[name].value = value_text(value)
            self.parent_pickers[name].param.update(
                options={"–": NO_PARENT, **{p: p for p in parents}},
                value=value if isinstance(value, str) and value in parents else NO_PARENT,
            )

    def _param_row(self, name: str, placeholder: str) -> pn.Row:
        text = pn.widgets.TextInput(label=name, placeholder=placeholder, css_classes=["pavi-variable-param"],
                                    sizing_mode="stretch_width")
        picker = pn.widgets.Select(label="parent", css_classes=["pavi-variable-parent"], width=110)
        text.param.watch(lambda e: self._param_edited(name, e.new), "value")
        picker.param.watch(lambda e: self._parent_picked(name, e.new), "value")
        self.param_inputs[name], self.parent_pickers[name] = text, picker
        return pn.Row(text, picker, sizing_mode="stretch_width", margin=0)


def _placeholder(distribution: str, name: str) -> str:
    """What an empty parameter input means: required, its default, or the other of a pair."""
    info = DISTRIBUTIONS.get(distribution)
    if info is None or name not in info.by_name:
        return f"{distribution} has no {name!r}: empty it"
    for group in info.one_of:
        if name in group:
            return "or " + " or ".join(p for p in group if p != name)
    default = info.by_name[name].default
    return "required" if default is None else f"default {default}"


def outer_first(model: PlateModel, chosen: Sequence[str]) -> list[str]:
    """The ``chosen`` plates' names, outer plates first: a MultiChoice keeps the order of
    the clicks, and a variable or covariate lists the plate a nested one sits in before it."""
    return sorted(chosen, key=model.nesting_depth)


def show_plates(choice: pn.widgets.MultiChoice, plates: Sequence[Plate], listed: Sequence[str]) -> None:
    """Show the plates a variable or covariate ``listed`` in ``choice``, offering the
    model's plates (and the unknown ones it lists, so that they show; validation says why)."""
    names = [p.name for p in plates]
    choice.param.update(options=labelled(names + [p for p in listed if p not in names]), value=list(listed))


class RowsEditor(StateView):
    """One row of widgets per item of a list of the model (its plates, its covariates),
    the item's problems under its row.

    Rows are reused while the number of items stays, so that a widget being used stays
    in the page; a row's edits act on the item it shows now (``_names[i]``), whatever
    the items were when the row was made.

    Subclasses say which items (:meth:`items`), make a row's widgets (:meth:`make_row`,
    the keys of :attr:`line` laid out in one line) and show one item in them
    (:meth:`show_row`).

    Args:
        state: the state to edit.
        title: the heading.
        empty: what shows while there is no item.

    Attributes:
        rows: per item (in model order) its widgets, keyed as :attr:`line` plus ``"problems"``.
        header: the heading's row (a subclass may add a button to it).
    """

    #: The keys of a row's widgets, in the order of its line.
    line: tuple[str, ...] = ()
    #: The CSS class of a row's problems.
    problems_class: str = ""

    def __init__(self, state: BuilderState, title: str, empty: str, **params: Any) -> None:
        super().__init__(state, **params)
        self.rows: list[dict[str, Any]] = []
        self._names: list[str] = []  # the items' names as the rows show them
        self.column = pn.Column(sizing_mode="stretch_width", margin=0)
        self.empty = markdown(empty)
        self.header = pn.Row(markdown(f"### {title}", margin=(0, 10)), sizing_mode="stretch_width")
        self._layout = pn.Column(self.header, self.empty, self.column, sizing_mode="stretch_width")
        state.param.watch(self.show_state, "revision")
        self.show_state()

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    def items(self) -> Sequence[Plate | Covariate]:
        """The items shown, one per row."""
        raise NotImplementedError

    def make_row(self, i: int) -> dict[str, Any]:
        """The widgets of row ``i`` (the keys of :attr:`line`); their edits act on ``self._names[i]``."""
        raise NotImplementedError

    def show_row(self, row: dict[str, Any], item: Any) -> None:
        """Set a row's widgets from its item (called quietly)."""
        raise NotImplementedError

    def show(self) -> None:
        items = self.items()
        if len(items) != len(self.rows):
            self.rows = [{**self.make_row(i), "problems": problems_alert(self.problems_class)}
                         for i in range(len(items))]
            self.column.objects = [pn.Column(pn.Row(*[r[k] for k in self.line], sizing_mode="stretch_width",
                                                    margin=0),
                                             r["problems"], sizing_mode="stretch_width", margin=0)
                                   for r in self.rows]
        self._names = [item.name for item in items]
        self.empty.visible = not items
        for row, item in zip(self.rows, items):
            self.show_row(row, item)
            show_problems(row["problems"], self.state.problems_for(item.name))


class PlatesEditor(RowsEditor):
    """One row per plate: name, size, the plate it nests in, whether its nesting is
    ragged, and a remove button; the plate's problems under its row.

    A ragged nesting comes from a data file (each row's outer element, see
    :mod:`pavi_viz.model.tables`): the builder's data upload makes plates ragged. Here
    the box only turns a ragged plate back into a regular one.

    Attributes:
        rows: per plate (in model order) its widgets, ``{"name", "size", "nested_in",
            "ragged", "remove", "problems"}``.
    """

    line = ("name", "size", "nested_in", "ragged", "remove")
    problems_class = "pavi-plate-problems"

    def __init__(self, state: BuilderState, **params: Any) -> None:
        super().__init__(state, "Plates", "No plate yet: press **Add plate**.", **params)

    def items(self) -> Sequence[Plate]:
        return self.state.model.plates

    def show_row(self, row: dict[str, Any], plate: Plate) -> None:
        others = [n for n in self._names if n != plate.name]
        if plate.nested_in is not None and plate.nested_in not in others:
            others.append(plate.nested_in)  # an unknown outer plate shows; validation says why
        row["name"].value = plate.name
        row["size"].param.update(value=plate.size, disabled=plate.ragged)
        row["nested_in"].param.update(options={"(top level)": TOP_LEVEL, **{n: n for n in others}},
                                      value=plate.nested_in or TOP_LEVEL)
        row["ragged"].param.update(value=plate.ragged, disabled=not plate.ragged)

    def make_row(self, i: int) -> dict[str, Any]:
        name = pn.widgets.TextInput(label="Plate", description=_doc(Plate.param.name), width=100,
                                    css_classes=["pavi-plate-name"])
        size = pn.widgets.IntInput(label="Size", description=_doc(Plate.param.size), width=75,
                                   css_classes=["pavi-plate-size"])
        nested_in = pn.widgets.Select(label="Nested in", description=_doc(Plate.param.nested_in), width=105,
                                      css_classes=["pavi-plate-nested-in"])
        ragged = pn.widgets.Checkbox(label="ragged", align="center", width=65, css_classes=["pavi-plate-ragged"])
        remove = pn.widgets.Button(label="✕", color="danger", variant="outline", align="end", width=40,
                                   description="Remove this plate", css_classes=["pavi-plate-remove"])
        state = self.state
        name.param.watch(lambda e: self.edit(state.rename_plate, self._names[i], e.new), "value")
        size.param.watch(lambda e: self.edit(state.resize_plate, self._names[i], e.new), "value")
        nested_in.param.watch(lambda e: self.edit(state.nest_plate, self._names[i], e.new or None), "value")
        ragged.param.watch(lambda e: self._ragged_ticked(i, e.new), "value")
        remove.on_click(lambda _: self.edit(state.remove_plate, self._names[i]))
        return {"name": name, "size": size, "nested_in": nested_in, "ragged": ragged, "remove": remove}

    def _ragged_ticked(self, i: int, ragged: bool) -> None:
        """Unticked: plate ``i`` nests regularly again (the box is enabled only on a
        ragged plate, whose membership came from a data file)."""
        if not ragged:
            self.edit(self.state.set_ragged, self._names[i], None)


class CovariatesEditor(RowsEditor):
    """One row per covariate: name, plates, event shape and a remove button; the
    covariate's problems under its row. **Add covariate** (in the heading) adds one.

    A covariate is known data that expressions use (``floor`` in
    ``alpha[county] + beta * floor``); its values come with an uploaded data file, from
    the column(s) of its name, never from simulation.

    Attributes:
        add: the Add covariate button.
        rows: per covariate (in model order) its widgets, ``{"name", "plates",
            "event_shape", "remove", "problems"}``.
    """

    line = ("name", "plates", "event_shape", "remove")
    problems_class = "pavi-covariate-problems"

    def __init__(self, state: BuilderState, **params: Any) -> None:
        super().__init__(
            state, "Covariates",
            "No covariate yet. A covariate is known data that expressions use (`floor` in "
            "`alpha[county] + beta * floor`), its values read from the data file's column of its name: "
            "press **Add covariate**.",
            **params,
        )
        self.add = pn.widgets.Button(label="Add covariate", color="primary", variant="outline", align="center",
                                     css_classes=["pavi-covariate-add"])
        self.add.on_click(lambda _: self.edit(self.state.add_covariate))
        self.header.append(self.add)

    def items(self) -> Sequence[Covariate]:
        return self.state.model.covariates

    def show_row(self, row: dict[str, Any], covariate: Covariate) -> None:
        row["name"].value = covariate.name
        show_plates(row["plates"], self.state.model.plates, covariate.plates)
        row["event_shape"].value = shape_text(covariate.event_shape)

    def make_row(self, i: int) -> dict[str, Any]:
        name = pn.widgets.TextInput(label="Covariate", description=_doc(Covariate.param.name), width=100,
                                    css_classes=["pavi-covariate-name"])
        plates = pn.widgets.MultiChoice(label="Plates", description=_doc(Covariate.param.plates), width=170,
                                        css_classes=["pavi-covariate-plates"])
        event_shape = pn.widgets.TextInput(label="Event shape", placeholder="empty: a number",
                                           description=_doc(Covariate.param.event_shape), width=90,
                                           css_classes=["pavi-covariate-event-shape"])
        remove = pn.widgets.Button(label="✕", color="danger", variant="outline", align="end", width=40,
                                   description="Remove this covariate", css_classes=["pavi-covariate-remove"])
        state = self.state
        name.param.watch(lambda e: self.edit(state.rename_covariate, self._names[i], e.new), "value")
        plates.param.watch(
            lambda e: self.edit(state.set_plates, self._names[i], outer_first(state.model, e.new)), "value")
        event_shape.param.watch(
            lambda e: self.edit(state.set_event_shape, self._names[i], parse_shape(e.new)), "value")
        remove.on_click(lambda _: self.edit(state.remove_covariate, self._names[i]))
        return {"name": name, "plates": plates, "event_shape": event_shape, "remove": remove}
