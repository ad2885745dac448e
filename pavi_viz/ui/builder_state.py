"""The state of the visual model builder: a model being edited, its problems, undo/redo.

:class:`BuilderState` is a ``param.Parameterized`` object that never imports Panel:
the builder's views call its methods, one per user action (add a plate, rename a
variable, set a parameter...), and watch its parameters. A notebook or a test can
drive it without any display.

The model may be invalid at any moment (a parameter that names a variable not yet
added, a cycle, a negative scale): the user keeps editing, and :attr:`problems` says
what is wrong, each problem naming its culprit so that a view can show it next to the
plate or variable at fault (:meth:`BuilderState.problems_for`).

Every action that changes the model is one undoable step. An action that fails (a
name already taken, a malformed file, a table that does not fit) raises a
:class:`ModelError`, records it in ``error`` / ``message`` and leaves the model as it
was. Missing data counts as a problem only once some data is attached or simulated
(while the user draws the graph, an observed variable without data is no problem yet);
``valid``, which the Fit button follows, needs data as well as no problem.

What views watch: ``revision`` grows by one after every change (edits change the
model's objects in place, and undo, loading, simulating or attaching replace ``model``
itself), so a view that redraws on ``revision`` and reads ``model`` afresh is always
up to date. ``problems``, ``valid``, ``error``, ``message``, ``can_undo`` and
``can_redo`` change with it, in the same batch.

``variable`` names the selected variable (the one the builder's editor shows and the
diagram rings; a click on the diagram sets it). It follows the model: a new variable is
selected, a renamed one stays selected, and a selection the model no longer holds
moves to its first variable ('' when it has none).
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import param

from pavi_viz import examples
from pavi_viz.model.distributions import DISTRIBUTIONS, DistributionInfo, ParamInfo
from pavi_viz.model.errors import ModelError
from pavi_viz.model.expressions import parse, rename
from pavi_viz.model.spec import Covariate, ParamValue, Plate, PlateModel, Variable
from pavi_viz.model.tables import Attached, Table, attach_table
from pavi_viz.ui.limits import ServeLimits
from pavi_viz.model.validation import name_problem

if TYPE_CHECKING:
    from torch import Tensor

#: Undo steps kept; older ones are forgotten.
MAX_UNDO = 200
#: The longest model name (it titles the dashboard's model menu and the files saved).
MAX_MODEL_NAME = 60

#: Parameter values of a new variable (or of one whose distribution changes) that make
#: it valid on its own, with the event shape of :data:`DEFAULT_EVENT_SHAPES`.
DEFAULT_PARAMS: dict[str, dict[str, ParamValue]] = {
    "Normal": {"loc": 0.0, "scale": 1.0},
    "HalfNormal": {"scale": 1.0},
    "LogNormal": {"loc": 0.0, "scale": 1.0},
    "HalfCauchy": {"scale": 1.0},
    "Cauchy": {"loc": 0.0, "scale": 1.0},
    "StudentT": {"df": 3.0, "loc": 0.0, "scale": 1.0},
    "Laplace": {"loc": 0.0, "scale": 1.0},
    "Gamma": {"concentration": 2.0, "rate": 1.0},
    "Exponential": {"rate": 1.0},
    "Beta": {"concentration1": 1.0, "concentration0": 1.0},
    "Uniform": {"low": 0.0, "high": 1.0},
    "Bernoulli": {"probs": 0.5},
    "Binomial": {"total_count": 10.0, "probs": 0.5},
    "Poisson": {"rate": 1.0},
    "Categorical": {"probs": [0.5, 0.5]},
    "Dirichlet": {"concentration": [1.0, 1.0, 1.0]},
    "DiagNormal": {"loc": [0.0, 0.0], "scale": [1.0, 1.0]},
    "GaussianMixture": {"weights": [0.5, 0.5], "locs": [[-1.0, -1.0], [1.0, 1.0]], "scale": 1.0},
}
#: The event shape of distributions whose values are vectors fixed by their parameters;
#: the others keep the variable's own event shape (a Normal works in any shape).
DEFAULT_EVENT_SHAPES: dict[str, list[int]] = {"Dirichlet": [3], "DiagNormal": [2], "GaussianMixture": [2]}


def param_value(value: ParamValue | None) -> ParamValue | None:
    """A parameter value as the model stores it.

    Numbers and lists of numbers are kept. Text (from a widget) is read as a number
    (``"1.5"`` gives 1.5) or a list of numbers (``"[1, 2]"``) when it is one, and is
    otherwise kept as a parent's name or an expression (``"mu"``, ``"mu + 2*x"``), which
    validation then checks. ``None`` or blank text mean "no value".

    Raises:
        ModelError: for anything else (a bool, an infinite number, a dict...).
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            number = json.loads(text)
        except (ValueError, RecursionError):
            return text
        if not _finite_numbers(number):
            return text
        return number if isinstance(number, list) else float(number)
    if not _finite_numbers(value):
        raise ModelError(f"a parameter is a finite number, a list of numbers or an expression, not {value!r:.60}")
    return value


def read_model_file(text: str | bytes) -> PlateModel:
    """The model in a model file's content (text, or the bytes of an upload). Only text
    is read, never a path on the server; pure, so a server may read a large upload on a
    worker thread.

    Raises:
        ModelError: the content is not a model file, or its model does not hold.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not text.lstrip().startswith("{"):
        raise ModelError("this is not a model file: a model file is JSON text starting with '{'")
    return PlateModel.from_json(text)


def _finite_numbers(value: Any) -> bool:
    """Whether ``value`` is a finite number or a (nested) list of them."""
    if isinstance(value, list):
        return all(_finite_numbers(v) for v in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _rank(value: ParamValue) -> int:
    """How many list levels a constant has (0 for a number)."""
    rank = 0
    while isinstance(value, list):
        rank += 1
        value = value[0] if value else None
    return rank


@dataclass(frozen=True, eq=False)  # eq=False: == on tensors has no single truth value; see same_as
class _Snapshot:
    """A model as it was: its description, and its data tensors by reference (they are
    never modified in place, so sharing them is safe and keeps undo cheap)."""

    spec: dict[str, Any]
    data: dict[str, Tensor]
    truth: dict[str, Tensor] | None

    @classmethod
    def of(cls, model: PlateModel) -> _Snapshot:
        truth = None if model.truth is None else dict(model.truth)
        return cls(model.to_dict(include_data=False), dict(model.data), truth)

    def restore(self) -> PlateModel:
        return PlateModel.from_dict(self.spec).with_data(self.data, self.truth)

    def same_as(self, other: _Snapshot) -> bool:
        """Whether both hold the same description and the very same data tensors."""
        return (self.spec == other.spec and _same_tensors(self.data, other.data)
                and _same_tensors(self.truth or {}, other.truth or {}))


def _same_tensors(first: Mapping[str, Tensor], second: Mapping[str, Tensor]) -> bool:
    return first.keys() == second.keys() and all(first[k] is second[k] for k in first)


class BuilderState(param.Parameterized):
    """A model being built by clicks, with its problems and an undo history.

    Args:
        model: the model to start from (an empty one by default); edited in place, so
            pass a copy to keep the original.
    """

    model = param.ClassSelector(class_=PlateModel, doc="The model being edited (possibly invalid).")
    problems = param.List(
        default=[], item_type=ModelError,
        doc="Every problem of the model. Missing data counts only once some data is attached "
            "(or simulated): while the user draws the graph, an observed variable without data "
            "is no problem yet.",
    )
    valid = param.Boolean(default=False, doc="Whether Fit may run: no problem, and data attached or simulated.")
    error = param.ClassSelector(class_=ModelError, allow_None=True,
                                doc="Why the last action failed (None: it worked).")
    message = param.String(default="", doc="The text of ``error`` ('' when the last action worked).")
    revision = param.Integer(default=0, doc="Grows by one after every change: views redraw on it.")
    can_undo = param.Boolean(default=False, doc="Whether there is an action to undo.")
    can_redo = param.Boolean(default=False, doc="Whether there is an undone action to redo.")
    variable = param.String(default="", doc="The selected variable ('' when the model has none).")
    limits = param.ClassSelector(class_=ServeLimits, default=ServeLimits(), constant=True,
                                 doc="What Simulate may draw (set by whoever serves the app).")

    def __init__(self, model: PlateModel | None = None, **params: Any) -> None:
        super().__init__(model=model if model is not None else PlateModel(), **params)
        self._undo: deque[_Snapshot] = deque(maxlen=MAX_UNDO)
        self._redo: list[_Snapshot] = []
        self._select: str | None = None  # the variable an action asks to select once it is done
        self._refresh()

    # -- the machinery of an action ----------------------------------------------------
    @contextmanager
    def _action(self) -> Iterator[None]:
        """One undoable step. On success, the model as it was goes on the undo stack and
        the redo stack is cleared (an action that changed nothing makes no step). On
        failure, a model the step had begun changing is put back as it was, and the error
        is recorded and raised again."""
        before = _Snapshot.of(self.model)
        try:
            yield
        except Exception as err:
            if not _Snapshot.of(self.model).same_as(before):
                self.model = before.restore()
            self._refresh(err if isinstance(err, ModelError) else ModelError(str(err)))
            raise
        if not _Snapshot.of(self.model).same_as(before):
            self._undo.append(before)
            self._redo.clear()
        self._refresh()

    def _refresh(self, error: ModelError | None = None) -> None:
        """Check the model again and tell the watchers, in one batch."""
        has_data = bool(self.model.data)
        problems = self.model.problems(require_data=has_data)
        self.param.update(
            problems=problems, valid=has_data and not problems, error=error,
            message=error.message if error is not None else "",
            can_undo=bool(self._undo), can_redo=bool(self._redo), variable=self._selection(error),
            revision=self.revision + 1,
        )

    def _selection(self, error: ModelError | None) -> str:
        """The variable to select after an action: the one it asked for (unless it
        failed), else the selected one while the model holds it, else the first."""
        wanted, self._select = self._select, None
        names = [v.name for v in self.model.variables]
        for name in (wanted if error is None else None, self.variable):
            if name in names:
                return name
        return names[0] if names else ""

    def undo(self) -> None:
        """Go back one action (nothing happens when there is none)."""
        if self._undo:
            self._redo.append(_Snapshot.of(self.model))
            self.model = self._undo.pop().restore()
            self._refresh()

    def redo(self) -> None:
        """Do again the last undone action (nothing happens when there is none)."""
        if self._redo:
            self._undo.append(_Snapshot.of(self.model))
            self.model = self._redo.pop().restore()
            self._refresh()

    # -- whole models ----------------------------------------------------------------------
    def new(self) -> None:
        """Start from an empty model."""
        with self._action():
            self.model = PlateModel()

    def load_example(self, name: str, **options: Any) -> None:
        """Start from a bundled example (see :mod:`pavi_viz.examples`), with its data."""
        with self._action():
            try:
                self.model = examples.load(name, **options)
            except (KeyError, TypeError) as err:  # an unknown example or option, named in the message
                raise ModelError(str(err.args[0]), culprit=name) from None

    def load_json(self, text: str | bytes) -> None:
        """Load a model file's content (text or the bytes of an upload, see :func:`read_model_file`)."""
        with self._action():
            self.model = read_model_file(text)

    def load_model(self, model: PlateModel) -> None:
        """Replace the model by ``model`` (one undoable step), e.g. a file read elsewhere."""
        with self._action():
            self.model = model

    def refuse(self, error: ModelError) -> None:
        """Record ``error`` as a refused action (a file that could not be read elsewhere):
        the model stays as it is and ``message`` says why. Raises it again, as every
        refused action does."""
        with self._action():
            raise error

    def rename_model(self, name: str) -> None:
        """Name the model: the dashboard's model menu, the files saved and the exports
        show it (a model built from scratch is called ``model``)."""
        with self._action():
            name = name.strip()
            if not name or len(name) > MAX_MODEL_NAME:
                raise ModelError(f"a model name has 1 to {MAX_MODEL_NAME} characters, not {len(name)}",
                                 culprit="model name")
            self.model.name = name

    def to_json(self, include_data: bool = True) -> str:
        """The model as JSON text, for a download (with its data unless told otherwise)."""
        return self.model.to_json(include_data=include_data)

    # -- plates ---------------------------------------------------------------------------
    def add_plate(self, name: str | None = None, size: int = 10, nested_in: str | None = None) -> str:
        """Add a plate (named ``plate1``, ``plate2``... when ``name`` is None); returns its name."""
        with self._action():
            name = self._new_name(name, "plate")
            self.model.plates = [*self.model.plates, Plate(name, _whole(size, name), nested_in=nested_in)]
        return name

    def rename_plate(self, old: str, new: str) -> None:
        """Rename a plate everywhere: the plates nested in it, the ``plates`` of every
        variable and covariate, and the plate indexes of expressions (``alpha[old]``)."""
        with self._action():
            plate = self._plate(old)
            plate.name = self._new_name(new, "plate", current=old)
            for other in self.model.plates:
                if other.nested_in == old:
                    other.nested_in = new
            for item in self._items():
                if old in item.plates:
                    item.plates = [new if p == old else p for p in item.plates]
            self._rewrite_expressions(lambda text: rename(text, old, new, plate=True))

    def resize_plate(self, name: str, size: int) -> None:
        """Change a plate's number of elements (attached data no longer fits: re-simulate)."""
        with self._action():
            self._plate(name).size = _whole(size, name)

    def remove_plate(self, name: str) -> None:
        """Remove a plate. Variables and covariates that list it stay, without it in their
        ``plates``; expressions lose its indexes (``alpha[name]`` becomes ``alpha``); the
        plates nested in it move to its own outer plate (or the top level) and lose their
        ragged membership, which numbered the removed plate's elements."""
        with self._action():
            removed = self._plate(name)
            self.model.plates = [p for p in self.model.plates if p is not removed]
            for plate in self.model.plates:
                if plate.nested_in == name:
                    plate.param.update(nested_in=removed.nested_in, membership=None)
            for item in self._items():
                if name in item.plates:
                    item.plates = [p for p in item.plates if p != name]
            self._rewrite_expressions(lambda text: rename(text, name, None, plate=True))

    def nest_plate(self, inner: str, outer: str | None) -> None:
        """Nest plate ``inner`` in ``outer`` (None: make it top-level). A new outer plate
        drops a ragged membership, which numbered the old one's elements."""
        with self._action():
            plate = self._plate(inner)
            if outer != plate.nested_in:
                plate.param.update(nested_in=outer, membership=None)

    def set_ragged(self, name: str, membership: Sequence[int] | np.ndarray | None) -> None:
        """Make a nested plate ragged: ``membership[i]`` is the outer element (0-based) of
        element ``i``, and the plate's size becomes its length. None: regular nesting again."""
        with self._action():
            plate = self._plate(name)
            if membership is None:
                plate.membership = None
            else:
                members = _membership(membership, name)
                plate.param.update(membership=members, size=len(members))

    # -- variables ------------------------------------------------------------------------
    def add_variable(
        self,
        name: str | None = None,
        distribution: str = "Normal",
        *,
        plates: Sequence[str] = (),
        event_shape: Sequence[int] | None = None,
        observed: bool = False,
        **params: ParamValue,
    ) -> str:
        """Add a variable (named ``var1``, ``var2``... when ``name`` is None); returns its name.

        Its parameters are :data:`DEFAULT_PARAMS`, updated with ``params`` (read as by
        :meth:`set_param`); its event shape defaults to :data:`DEFAULT_EVENT_SHAPES`'s, or none.
        """
        with self._action():
            name = self._new_name(name, "variable")
            info = self._distribution(distribution)
            values = {**DEFAULT_PARAMS.get(info.name, {}), **{k: param_value(v) for k, v in params.items()}}
            if event_shape is None:
                event_shape = DEFAULT_EVENT_SHAPES.get(info.name, [])
            variable = Variable(
                name, info.name, plates=_names(plates, name), event_shape=_shape(event_shape, name),
                observed=bool(observed), params={k: v for k, v in values.items() if v is not None},
            )
            self.model.variables = [*self.model.variables, variable]
            self._select = name
        return name

    def rename_variable(self, old: str, new: str) -> None:
        """Rename a variable, in other variables' expressions (whole names only: renaming
        ``mu`` leaves ``mu_g`` alone) and in the data and ground truth."""
        with self._action():
            self._variable(old).name = self._new_name(new, "variable", current=old)
            self._renamed_value(old, new)
            if self.variable == old:
                self._select = new

    def remove_variable(self, name: str) -> None:
        """Remove a variable and its data. Expressions that use it keep its name, which
        validation then reports as unknown, next to each variable that still uses it."""
        with self._action():
            removed = self._variable(name)
            self.model.variables = [v for v in self.model.variables if v is not removed]
            self._drop_values(name, data=True, truth=True)

    def set_observed(self, name: str, observed: bool) -> None:
        """Mark a variable observed or latent. A variable made observed loses its ground
        truth, one made latent its data (simulate or attach data again)."""
        with self._action():
            self._variable(name).observed = bool(observed)
            self._drop_values(name, data=not observed, truth=bool(observed))

    def set_distribution(self, name: str, distribution: str) -> None:
        """Change a variable's distribution. Parameters the new one shares are kept (a
        constant only when it has enough dimensions: a scalar ``loc`` is no DiagNormal
        ``loc``); the others come from :data:`DEFAULT_PARAMS`. A distribution whose
        values are vectors of a fixed size sets :data:`DEFAULT_EVENT_SHAPES`'s shape."""
        with self._action():
            variable = self._variable(name)
            info = self._distribution(distribution)
            kept = {p: v for p, v in variable.params.items()
                    if p in info.by_name and (isinstance(v, str) or _rank(v) >= info.by_name[p].event_rank)}
            defaults = dict(DEFAULT_PARAMS.get(info.name, {}))
            for group in info.one_of:  # a kept "logits" rules out a default "probs"
                if any(p in kept for p in group):
                    defaults = {p: v for p, v in defaults.items() if p not in group}
            values = {**defaults, **kept}
            variable.param.update(
                distribution=info.name, params={p.name: values[p.name] for p in info.params if p.name in values},
                event_shape=DEFAULT_EVENT_SHAPES.get(info.name, variable.event_shape),
            )

    def set_param(self, name: str, param_name: str, value: ParamValue | None) -> None:
        """Set one parameter of a variable's distribution: a number, a list of numbers, a
        parent's name or an expression, or text read as one of them (see :func:`param_value`).
        None or blank text removes it (an optional one, or one of a probs/logits pair)."""
        with self._action():
            variable = self._variable(name)
            value = param_value(value)
            params = {k: v for k, v in variable.params.items() if k != param_name}
            variable.params = params if value is None else {**variable.params, param_name: value}

    def set_plates(self, name: str, plates: Sequence[str]) -> None:
        """The plates a variable or covariate lives in, outer to inner."""
        with self._action():
            self._item(name).plates = _names(plates, name)

    def set_event_shape(self, name: str, shape: Sequence[int]) -> None:
        """The shape of one element's value of a variable or covariate (``[]``: a number)."""
        with self._action():
            self._item(name).event_shape = _shape(shape, name)

    # -- covariates --------------------------------------------------------------------------
    def add_covariate(
        self, name: str | None = None, plates: Sequence[str] = (), event_shape: Sequence[int] = ()
    ) -> str:
        """Add a covariate (named ``cov1``... when ``name`` is None); returns its name.
        Its values come with attached data."""
        with self._action():
            name = self._new_name(name, "covariate")
            covariate = Covariate(name, _names(plates, name), _shape(event_shape, name))
            self.model.covariates = [*self.model.covariates, covariate]
        return name

    def rename_covariate(self, old: str, new: str) -> None:
        """Rename a covariate, in expressions and in the data."""
        with self._action():
            self._covariate(old).name = self._new_name(new, "covariate", current=old)
            self._renamed_value(old, new)

    def remove_covariate(self, name: str) -> None:
        """Remove a covariate and its data (expressions using it are then reported)."""
        with self._action():
            removed = self._covariate(name)
            self.model.covariates = [c for c in self.model.covariates if c is not removed]
            self._drop_values(name, data=True, truth=False)

    # -- data ----------------------------------------------------------------------------------
    def simulate(self, seed: int = 0, sizes: Mapping[str, int] | None = None) -> None:
        """Resize plates (``{plate: size}``), then draw the observed data from the prior,
        keeping the latent values that produced it as ``truth``. Covariates keep their data
        (a model with covariates needs them attached first)."""
        with self._action():
            for plate, size in (sizes or {}).items():
                self._plate(plate).size = _whole(size, plate)
            covariates = {c.name for c in self.model.covariates}
            # Observed data of the old sizes would fail the check before sampling.
            self.model.with_data({k: v for k, v in self.model.data.items() if k in covariates})
            self.model = self.model.simulate(seed, max_numbers=self.limits.simulated)

    def attach(self, table: Table, ragged: Mapping[str, str] | None = None) -> Attached:
        """Attach a table's data (see :func:`pavi_viz.model.tables.attach_table`): plates are
        sized from it, and the ground truth goes. Returns what it attached (ignored columns,
        element labels)."""
        with self._action():
            attached = attach_table(self.model, table, ragged=ragged)
            self.model = attached.model
        return attached


    # -- what the editors show ------------------------------------------------------------------
    def problems_for(self, culprit: str | None) -> list[str]:
        """The messages of the problems of one plate, variable or covariate (None: those
        of the model as a whole)."""
        return [p.message for p in self.problems if p.culprit == culprit]

    def parents_of(self, name: str) -> list[str]:
        """The variables and covariates a variable's parameters use, in order of appearance
        (a covariate has none; an expression that does not parse is skipped)."""
        item = self._item(name)
        known = self._value_names()
        parents: list[str] = []
        for value in getattr(item, "params", {}).values():
            if not isinstance(value, str):
                continue
            try:
                references = parse(value).references
            except ModelError:
                continue
            parents += [r.name for r in references if r.name in known and r.name != name and r.name not in parents]
        return parents

    def candidate_parents(self, name: str) -> list[str]:
        """The variables and covariates a variable's parameters may use without making a
        cycle: all but itself and the variables that depend on it (a covariate: none)."""
        if not isinstance(self._item(name), Variable):
            return []
        children: dict[str, list[str]] = {}
        for variable in self.model.variables:
            for parent in self.parents_of(variable.name):
                children.setdefault(parent, []).append(variable.name)
        descendants, stack = {name}, [name]
        while stack:
            for child in children.get(stack.pop(), []):
                if child not in descendants:
                    descendants.add(child)
                    stack.append(child)
        return [n for n in self._value_names() if n not in descendants]

    @staticmethod
    def distribution_params(distribution: str) -> list[ParamInfo]:
        """The parameters of a distribution (name, event rank, default, constraint)."""
        return list(BuilderState._distribution(distribution).params)

    # -- helpers ------------------------------------------------------------------------------------
    def _items(self) -> list[Variable | Covariate]:
        return [*self.model.variables, *self.model.covariates]

    def _value_names(self) -> list[str]:
        """Names an expression may use: variables, then covariates."""
        return [item.name for item in self._items()]

    def _find(self, items: Sequence[Any], name: str, kind: str) -> Any:
        for item in items:
            if item.name == name:
                return item
        raise ModelError(f"the model has no {kind} called {name!r}", culprit=name)

    def _plate(self, name: str) -> Plate:
        return self._find(self.model.plates, name, "plate")

    def _variable(self, name: str) -> Variable:
        return self._find(self.model.variables, name, "variable")

    def _covariate(self, name: str) -> Covariate:
        return self._find(self.model.covariates, name, "covariate")

    def _item(self, name: str) -> Variable | Covariate:
        return self._find(self._items(), name, "variable or covariate")

    @staticmethod
    def _distribution(name: str) -> DistributionInfo:
        if name not in DISTRIBUTIONS:
            raise ModelError(f"unknown distribution {name!r}; choose one of {', '.join(DISTRIBUTIONS)}")
        return DISTRIBUTIONS[name]

    def _new_name(self, name: str | None, kind: str, current: str | None = None) -> str:
        """``name`` checked to be valid and free (but for the ``current`` name of what is
        renamed), or the first free ``plate1``, ``var1``..."""
        taken = ({p.name for p in self.model.plates} | set(self._value_names())) - {current}
        if name is None:
            prefix = {"plate": "plate", "variable": "var", "covariate": "cov"}[kind]
            return next(f"{prefix}{i}" for i in range(1, len(taken) + 2) if f"{prefix}{i}" not in taken)
        culprit = current if current is not None else name  # a rename's error shows by what is renamed
        if (problem := name_problem(name, kind)) is not None:
            raise ModelError(problem, culprit=culprit)
        if name in taken:
            raise ModelError(f"the name {name!r} is already used in the model; choose another", culprit=culprit)
        return name

    def _rewrite_expressions(self, rewrite: Callable[[str], str]) -> None:
        """Apply ``rewrite(text) -> text`` to every expression, replacing only the
        ``params`` dicts that change (so that their watchers hear of it)."""
        for variable in self.model.variables:
            params = {k: rewrite(v) if isinstance(v, str) else v for k, v in variable.params.items()}
            if params != variable.params:
                variable.params = params

    def _renamed_value(self, old: str, new: str) -> None:
        """After renaming a variable or covariate: its uses in expressions, data and truth."""
        self._rewrite_expressions(lambda text: rename(text, old, new))
        model = self.model
        if old in model.data:
            model.data = {new if k == old else k: v for k, v in model.data.items()}
        if model.truth is not None and old in model.truth:
            model.truth = {new if k == old else k: v for k, v in model.truth.items()}

    def _drop_values(self, name: str, *, data: bool, truth: bool) -> None:
        model = self.model
        if data and name in model.data:
            model.data = {k: v for k, v in model.data.items() if k != name}
        if truth and model.truth is not None and name in model.truth:
            model.truth = {k: v for k, v in model.truth.items() if k != name}


def _whole(size: Any, culprit: str) -> int:
    """A plate size: any whole number (validation reports one below 1)."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ModelError(f"the size of plate {culprit!r} must be a whole number, not {size!r:.40}", culprit)
    return int(size)


def _shape(shape: Sequence[int], culprit: str) -> list[int]:
    """An event shape: a list of whole numbers (validation reports one below 1)."""
    if isinstance(shape, str) or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) for n in shape):
        raise ModelError(f"the event shape of {culprit!r} must be a list of whole numbers, not {shape!r:.40}", culprit)
    return [int(n) for n in shape]


def _names(plates: Sequence[str], culprit: str) -> list[str]:
    if isinstance(plates, str) or not all(isinstance(p, str) for p in plates):
        raise ModelError(f"the plates of {culprit!r} must be a list of plate names, not {plates!r:.40}", culprit)
    return list(plates)


def _membership(membership: Sequence[int] | np.ndarray, culprit: str) -> np.ndarray:
    """A ragged membership: one whole number per element (validation checks their range)."""
    try:
        members = np.asarray(membership, dtype=np.float64)
    except (TypeError, ValueError):
        members = np.array([np.nan])  # reported just below
    if members.ndim != 1 or not np.isfinite(members).all() or (members != np.round(members)).any():
        raise ModelError(f"the membership of plate {culprit!r} must list one whole number per element", culprit)
    return members.astype(np.int64)
