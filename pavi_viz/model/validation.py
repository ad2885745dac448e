"""Checks of a model description, each problem a :class:`ModelError` naming its culprit.

:func:`find_problems` gathers every problem instead of stopping at the first, so
that the visual builder can show each one next to the part at fault while the user
keeps editing. The structural checks come first; when they pass, a dry run on a
small batch (see :meth:`CompiledModel.dry_run`) catches what only evaluation shows,
such as a declared event shape that the distribution's parameters contradict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.distributions import constraints

from pavi_viz.model.distributions import DISTRIBUTIONS, DistributionInfo
from pavi_viz.model.errors import ModelError
from pavi_viz.model.expressions import FUNCTIONS, Expression, parse

if TYPE_CHECKING:
    from pavi_viz.model.spec import PlateModel, Variable

#: Plates and variables larger than this are refused (a guard against malformed files).
MAX_ELEMENTS = 2**31 - 1
#: One ground variable's value may hold at most this many numbers: event dims are never
#: batched, so the dry run (and every training step) holds them whole.
MAX_EVENT_ELEMENTS = 2**20

#: A model may have at most this many plates...
MAX_PLATES = 256
#: ... each nested at most this deep...
MAX_NESTING = 16
#: ... and a variable at most this many dims (its plates, then its event dims): with the
#: draws' sample dims they must stay within torch's 64 dims.
MAX_DIMS = 32

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_POSITIVE_CONSTRAINTS = (constraints.positive, constraints.nonnegative, constraints.unit_interval,
                         constraints.simplex, constraints.nonnegative_integer)


def find_problems(model: PlateModel, require_data: bool = True) -> list[ModelError]:
    """Every problem of ``model``; see the module docstring."""
    checker = _Checker(model, require_data)
    checker.run()
    return checker.problems


def name_problem(name: Any, kind: str) -> str | None:
    """Why ``name`` cannot name a ``kind`` (plate, variable, covariate); None when it can."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        return f"{kind} name {name!r} is not a valid name: use letters, digits and _, not starting with a digit"
    if name.startswith("__"):
        return f"{kind} name {name!r} may not start with '__'"
    if name in FUNCTIONS:
        return f"{kind} name {name!r} is the name of a function; choose another"
    return None


def parse_param(value: Any, variable: str, param: str) -> Expression | torch.Tensor:
    """A parameter value as a parsed expression or a constant tensor.

    Raises:
        ModelError: for a value that is neither a finite number, a rectangular list of
            finite numbers, nor a valid expression.
    """
    where = f"parameter {param!r} of {variable!r}"
    if isinstance(value, str):
        return parse(value, culprit=variable)
    if isinstance(value, bool) or not isinstance(value, (int, float, list, tuple)):
        raise ModelError(f"{where} must be a number, a list of numbers or an expression, not {value!r}", variable)
    try:
        tensor = torch.tensor(value, dtype=torch.get_default_dtype())
    except (TypeError, ValueError):
        raise ModelError(f"{where} must be a number or a rectangular list of numbers, got {value!r}", variable) from None
    if not bool(torch.isfinite(tensor).all()):
        raise ModelError(f"{where} must be finite, got {value!r}", variable)
    return tensor


class _Checker:
    """Walks a model once, recording problems in order: names, plates, covariates,
    variables, the dependency graph, data, and finally a dry run."""

    def __init__(self, model: PlateModel, require_data: bool) -> None:
        self.model = model
        self.require_data = require_data
        self.problems: list[ModelError] = []
        self.plates = {p.name: p for p in model.plates}
        self._chains: dict[str, list[str]] = {}
        self.variables = {v.name: v for v in model.variables}
        self.covariates = {c.name: c for c in model.covariates}
        self.parsed: dict[str, dict[str, Expression | torch.Tensor]] = {}

    def add(self, message: str, culprit: str | None) -> None:
        self.problems.append(ModelError(message, culprit))

    def run(self) -> None:
        plates = len(self.model.plates)
        if plates > MAX_PLATES:
            # Checked alone: every later check walks the plates.
            self.add(f"the model has {plates} plates, more than the {MAX_PLATES} supported", self.model.plates[-1].name)
            return
        self.check_names()
        self.check_plates()
        for cov in self.model.covariates:
            if self.check_plate_list(cov.name, "covariate", cov.plates):
                self.check_size(cov.name, cov.plates, cov.event_shape)
            self.check_event_shape(cov.name, cov.event_shape)
        for var in self.model.variables:
            self.check_variable(var)
        self.check_cycles()
        self.check_data()
        if not self.problems:
            self.dry_run()

    # -- names and plates --------------------------------------------------------
    def check_names(self) -> None:
        seen: dict[str, str] = {}
        parts = ([("plate", p.name) for p in self.model.plates]
                 + [("covariate", c.name) for c in self.model.covariates]
                 + [("variable", v.name) for v in self.model.variables])
        for kind, name in parts:
            if (problem := name_problem(name, kind)) is not None:
                self.add(problem, name)
            if name in seen:
                self.add(f"duplicate name {name!r}: used by a {seen[name]} and a {kind}", name)
            seen.setdefault(name, kind)

    def check_plates(self) -> None:
        for plate in self.model.plates:
            name, size = plate.name, plate.size
            if isinstance(size, bool) or not isinstance(size, int):
                self.add(f"plate {name!r} has size {size!r}; a size is a whole number", name)
            elif size < 1:
                self.add(f"plate {name!r} is empty (size {size}): a plate needs at least one element", name)
            elif size > MAX_ELEMENTS:
                self.add(f"plate {name!r} has size {size}, more than the {MAX_ELEMENTS} supported", name)
            outer = plate.nested_in
            if outer is None:
                if plate.membership is not None:
                    self.add(f"plate {name!r} has a membership array but is nested in no plate", name)
                continue
            if outer not in self.plates:
                self.add(f"plate {name!r} is nested in unknown plate {outer!r}", name)
            elif self.nesting_cycle(name):
                self.add(f"plate {name!r} is nested in itself (through {outer!r})", name)
            elif self.nesting_depth(name) > MAX_NESTING:
                self.add(f"plate {name!r} is nested {self.nesting_depth(name)} plates deep, more than the "
                         f"{MAX_NESTING} supported", name)
            elif plate.membership is not None:
                self.check_membership(plate)

    def outer_chain(self, name: str) -> list[str]:
        """The plates ``name`` nests in, innermost first, up to a top-level or unknown
        plate or back to one already in the chain (a cycle); memoised."""
        chain = self._chains.get(name)
        if chain is None:
            chain, seen, plate = [], {name}, self.plates[name]
            while plate.nested_in is not None and plate.nested_in in self.plates and plate.nested_in not in seen:
                chain.append(plate.nested_in)
                seen.add(plate.nested_in)
                plate = self.plates[plate.nested_in]
                if len(chain) > MAX_NESTING:  # deep enough to refuse: the rest does not matter
                    break
            self._chains[name] = chain
        return chain

    def nesting_cycle(self, name: str) -> bool:
        chain = self.outer_chain(name)
        last = self.plates[chain[-1]] if chain else self.plates[name]
        return len(chain) <= MAX_NESTING and last.nested_in is not None and (
            last.nested_in == name or last.nested_in in chain)

    def nesting_depth(self, name: str) -> int:
        return len(self.outer_chain(name))

    def check_membership(self, plate: Any) -> None:
        name, outer = plate.name, self.plates[plate.nested_in]
        if outer.nested_in is not None and outer.membership is None:
            self.add(f"ragged plate {name!r} sits in {outer.name!r}, which is regularly nested: "
                     "a ragged plate's outer plate must be top-level or ragged itself", name)
            return
        try:  # floats: whole numbers too large for int64, or given as 2.0, are still checked below
            members = torch.as_tensor(np.asarray(plate.membership, dtype=np.float64))
        except (TypeError, ValueError, OverflowError):
            self.add(f"plate {name!r}: membership must be an array of whole numbers", name)
            return
        if members.dim() != 1 or len(members) != plate.size:
            self.add(f"plate {name!r}: its membership array must list one outer element per member "
                     f"({plate.size}), got shape {tuple(members.shape)}", name)
        elif members.is_floating_point() and not bool((members == members.round()).all()):
            self.add(f"plate {name!r}: membership must hold whole numbers", name)
        elif len(members) and (int(members.min()) < 0 or int(members.max()) >= outer.size):
            self.add(f"plate {name!r}: membership must hold indices from 0 to {outer.size - 1} "
                     f"(elements of {outer.name!r}), got {int(members.min())} to {int(members.max())}", name)

    def ragged_ancestors(self, name: str) -> list[str]:
        chain, plate = [], self.plates[name]
        while plate.membership is not None and plate.nested_in in self.plates and plate.nested_in not in chain:
            chain.append(plate.nested_in)
            plate = self.plates[plate.nested_in]
        return chain

    def check_plate_list(self, owner: str, kind: str, plates: Sequence[str]) -> bool:
        """Whether ``plates`` is a valid plate list for a variable or covariate."""
        ok = True
        for i, name in enumerate(plates):
            if name not in self.plates:
                self.add(f"{kind} {owner!r} is in unknown plate {name!r}", owner)
                ok = False
                continue
            if plates.index(name) != i:
                self.add(f"{kind} {owner!r} lists plate {name!r} twice", owner)
                ok = False
            plate = self.plates[name]
            if plate.nested_in is None or plate.nested_in not in self.plates:
                continue
            if plate.membership is None and plate.nested_in not in plates[:i]:
                self.add(f"{kind} {owner!r} is in plate {name!r}, which is nested in {plate.nested_in!r}: "
                         f"list {plate.nested_in!r} before {name!r}", owner)
                ok = False
            for outer in self.ragged_ancestors(name) if plate.membership is not None else []:
                if outer in plates:
                    self.add(f"{kind} {owner!r} lists {outer!r} and {name!r}, but each {name!r} element "
                             f"already belongs to one {outer!r}: list {name!r} only", owner)
                    ok = False
        return ok

    def check_event_shape(self, owner: str, shape: Sequence[int]) -> None:
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
            self.add(f"{owner!r} has event shape {list(shape)}; each entry must be a positive whole number", owner)
        elif math.prod(shape) > MAX_EVENT_ELEMENTS:
            self.add(f"{owner!r} has event shape {list(shape)}: {math.prod(shape)} elements per ground "
                     f"variable, more than the {MAX_EVENT_ELEMENTS} supported", owner)

    def check_size(self, owner: str, plates: Sequence[str], shape: Sequence[int]) -> None:
        """Refuse a variable or covariate whose full value would be too large to hold."""
        sizes = [self.plates[p].size for p in plates] + list(shape)
        valid = all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_ELEMENTS for n in sizes)
        if not valid or math.prod(shape) > MAX_EVENT_ELEMENTS:
            return  # a bad plate size or event shape is reported on its own
        total = math.prod(sizes)
        if total > MAX_ELEMENTS:
            self.add(f"{owner!r} has {total} elements in all (plates {list(plates)}, event shape "
                     f"{list(shape)}), more than the {MAX_ELEMENTS} supported", owner)

    # -- variables ---------------------------------------------------------------
    def check_variable(self, var: Variable) -> None:
        name = var.name
        plates_ok = self.check_plate_list(name, "variable", var.plates)
        if plates_ok:
            self.check_size(name, var.plates, var.event_shape)
        self.check_event_shape(name, var.event_shape)
        if len(var.plates) + len(var.event_shape) > MAX_DIMS:
            self.add(f"variable {name!r} has {len(var.plates)} plates and {len(var.event_shape)} event dims, "
                     f"more than the {MAX_DIMS} dims supported", name)
            return
        info = DISTRIBUTIONS.get(var.distribution)
        if info is None:
            self.add(f"variable {name!r} has unknown distribution {var.distribution!r}; "
                     f"choose one of {', '.join(DISTRIBUTIONS)}", name)
            return
        if info.discrete and not var.observed:
            self.add(f"variable {name!r} follows {info.name}, a discrete distribution: it can only be "
                     "observed, since reparameterized variational inference needs continuous latent "
                     "variables (marginalise it out or use a continuous distribution)", name)
        self.check_param_names(var, info)
        parsed = {}
        for pname, value in var.params.items():
            if pname not in info.by_name:
                continue
            try:
                parsed[pname] = parse_param(value, name, pname)
            except ModelError as err:
                self.problems.append(err)
                continue
            if isinstance(parsed[pname], torch.Tensor):
                self.check_constant(var, info, pname, parsed[pname])
            else:
                self.check_expression(var, info, pname, parsed[pname], plates_ok)
        self.parsed[name] = parsed

    def check_param_names(self, var: Variable, info: DistributionInfo) -> None:
        name = var.name
        for pname in var.params:
            if pname not in info.by_name:
                self.add(f"{info.name} has no parameter {pname!r} (variable {name!r}); "
                         f"its parameters are {', '.join(info.by_name)}", name)
        for pname in info.required:
            if pname not in var.params:
                self.add(f"variable {name!r} needs parameter {pname!r} of {info.name}", name)
        for group in info.one_of:
            given = [p for p in group if p in var.params]
            if len(given) != 1:
                self.add(f"variable {name!r}: give exactly one of {' or '.join(group)} for {info.name}", name)

    def check_constant(self, var: Variable, info: DistributionInfo, pname: str, value: torch.Tensor) -> None:
        constraint = info.by_name[pname].constraint
        if constraint is constraints.real or constraints.is_dependent(constraint):
            return
        if constraint is constraints.simplex and value.dim() == 0:
            return  # the dry run reports the missing vector dimension
        if not bool(constraint.check(value).all()):
            self.add(f"parameter {pname!r} of {var.name!r} must be {_describe(constraint)}, got {var.params[pname]!r}",
                     var.name)

    def check_expression(self, var: Variable, info: DistributionInfo, pname: str, expr: Expression,
                         plates_ok: bool) -> None:
        name = var.name
        for ref in expr.references:
            if ref.name == name:
                self.add(f"variable {name!r} depends on itself (parameter {pname!r})", name)
                continue
            source = self.variables.get(ref.name) or self.covariates.get(ref.name)
            if source is None:
                if ref.name in self.plates:
                    self.add(f"in parameter {pname!r} of {name!r}: {ref.name!r} is a plate; write it inside "
                             f"brackets after a variable, as in alpha[{ref.name}]", name)
                else:
                    self.add(f"in parameter {pname!r} of {name!r}: unknown name {ref.name!r} "
                             "(not a variable or a covariate of the model)", name)
                continue
            if ref.plate is not None and ref.plate not in source.plates:
                self.add(f"in parameter {pname!r} of {name!r}: {ref.name}[{ref.plate}] indexes {ref.name!r} "
                         f"by {ref.plate!r}, but {ref.name!r} lives in plates {source.plates}", name)
            if plates_ok and all(p in self.plates for p in source.plates):
                self.check_plate_coverage(var, source)
            if expr.text.strip() == ref.name and isinstance(source, type(var)):
                self.check_support(var, info, pname, source)

    def check_plate_coverage(self, var: Variable, source: Any) -> None:
        reach = set(var.plates)
        for plate in var.plates:
            if plate in self.plates:
                reach.update(self.ragged_ancestors(plate))
        for plate in source.plates:
            if plate not in reach:
                self.add(f"variable {var.name!r} depends on {source.name!r}, which lives in plate {plate!r}, "
                         f"but {var.name!r} is not in plate {plate!r}: add {plate!r} to its plates", var.name)

    def check_support(self, var: Variable, info: DistributionInfo, pname: str, parent: Variable) -> None:
        constraint = info.by_name[pname].constraint
        parent_info = DISTRIBUTIONS.get(parent.distribution)
        if parent_info is None or constraint not in _POSITIVE_CONSTRAINTS:
            return
        if parent_info.support in (constraints.real, constraints.real_vector):
            self.add(f"parameter {pname!r} of {var.name!r} must be {_describe(constraint)}, but {parent.name!r} "
                     f"({parent_info.name}) can be any real number: use a positive distribution for it "
                     f"or transform it, e.g. exp({parent.name}) or softplus({parent.name})", var.name)

    def check_cycles(self) -> None:
        parents = {
            name: [r for expr in exprs.values() if isinstance(expr, Expression)
                   for r in expr.names if r in self.variables and r != name]
            for name, exprs in self.parsed.items()
        }
        done: set[str] = set()
        # A depth-first walk with a stack of its own (a chain of any length fits): the
        # path from the root, its positions, and each name's parents still to visit.
        for root in parents:
            if root in done:
                continue
            path, position = [root], {root: 0}
            stack = [iter(parents[root])]
            while stack:
                parent = next(stack[-1], None)
                if parent is None:
                    finished = path.pop()
                    del position[finished]
                    done.add(finished)
                    stack.pop()
                elif parent in position:
                    cycle = path[position[parent]:] + [parent]
                    self.add(f"the variables form a cycle: {' -> '.join(reversed(cycle))}", parent)
                elif parent not in done:
                    position[parent] = len(path)
                    path.append(parent)
                    stack.append(iter(parents.get(parent, [])))

    # -- data ----------------------------------------------------------------------
    def full_shape(self, plates: Sequence[str], event_shape: Sequence[int]) -> tuple[int, ...] | None:
        if not all(p in self.plates for p in plates):
            return None
        return tuple(self.plates[p].size for p in plates) + tuple(event_shape)

    def check_data(self) -> None:
        data = self.model.data or {}
        for key in data:
            var = self.variables.get(key)
            if var is not None and not var.observed:
                self.add(f"data was given for {key!r}, which is latent: mark it observed or remove the data", key)
            elif var is None and key not in self.covariates:
                self.add(f"data {key!r} matches no observed variable or covariate of the model", key)
        needed = [*self.model.covariates, *(v for v in self.model.variables if v.observed)]
        for item in needed:
            if item.name not in data:
                if self.require_data:
                    kind = "covariate" if item.name in self.covariates else "observed variable"
                    self.add(f"no data for {kind} {item.name!r}", item.name)
                continue
            self.check_array(item, data[item.name], "data")
        for key, value in (self.model.truth or {}).items():
            var = self.variables.get(key)
            if var is None or var.observed:
                self.add(f"ground truth given for {key!r}, which is not a latent variable", key)
            else:
                self.check_array(var, value, "ground truth")

    def check_array(self, item: Any, value: torch.Tensor, what: str) -> None:
        name = item.name
        shape = self.full_shape(item.plates, item.event_shape)
        if shape is None:
            return
        if tuple(value.shape) != shape:
            self.add(f"{what} for {name!r} has shape {tuple(value.shape)}, but its plates "
                     f"{item.plates} and event shape {list(item.event_shape)} call for {shape}", name)
            return
        bad = ~torch.isfinite(value)
        if bool(bad.any()):
            where = tuple(int(i) for i in bad.nonzero()[0])
            self.add(f"{what} for {name!r} has {int(bad.sum())} NaN or infinite values "
                     f"(the first at index {where})", name)
            return
        info = DISTRIBUTIONS.get(getattr(item, "distribution", None))
        if info is not None and what == "data":
            support = info.support if info.support is not None else (
                constraints.nonnegative_integer if info.discrete else None)
            if support is not None:
                inside = support.check(value)
                if not bool(inside.all()):
                    where = tuple(int(i) for i in (~inside).nonzero()[0])
                    self.add(f"data for {name!r} has values outside the support of {info.name} "
                             f"({_describe(support)}); the first at index {where}", name)

    # -- evaluation ----------------------------------------------------------------
    def dry_run(self) -> None:
        from pavi_viz.model.compiled import CompiledModel

        try:
            CompiledModel(self.model, parsed=self.parsed).dry_run()
        except ModelError as err:
            self.problems.extend(err.problems)


def _describe(constraint: constraints.Constraint) -> str:
    names = {
        constraints.positive: "positive",
        constraints.nonnegative: "non-negative",
        constraints.unit_interval: "between 0 and 1",
        constraints.simplex: "a probability vector (non-negative, summing to 1)",
        constraints.nonnegative_integer: "a non-negative whole number",
        constraints.boolean: "0 or 1",
        constraints.real: "a real number",
    }
    return names.get(constraint, str(constraint))
