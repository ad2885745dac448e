"""Safe arithmetic expressions over model variables and covariates.

A variable's distribution parameters may be written as expressions such as
``alpha[county] + beta[county] * floor`` or ``exp(log_rate + gain * stimulus)``.
Models are loaded from JSON files written by anyone, so the text is read by a
small hand-written tokenizer and recursive-descent parser: nothing in it is ever
executed (no ``eval``, ``exec``, ``compile`` or ``ast``). Only numbers, names,
``+ - * / **``, parentheses, whitelisted functions and ``name[index]`` exist.

Grammar (``**`` binds tighter than unary minus and is right associative)::

    sum     := product (('+' | '-') product)*
    product := unary (('*' | '/') unary)*
    unary   := ('-' | '+') unary | power
    power   := atom ('**' unary)?
    atom    := NUMBER | '(' sum ')' | FUNCTION '(' sum (',' sum)* ')'
             | NAME ('[' (INTEGER | PLATE) ']') ('[' INTEGER ']')*
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from pavi_viz.model.errors import ModelError

#: Texts longer than this, or nested deeper than this, are refused: a JSON file
#: must not be able to exhaust memory or the Python stack.
MAX_LENGTH = 2000
MAX_DEPTH = 100
_SHOWN = 80  # characters of the text shown in an error message


def _square(x: Tensor) -> Tensor:
    return x * x


UNARY_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "exp": torch.exp, "log": torch.log, "log1p": torch.log1p, "expm1": torch.expm1,
    "sqrt": torch.sqrt, "abs": torch.abs, "softplus": F.softplus,
    "sigmoid": torch.sigmoid, "logit": torch.logit, "tanh": torch.tanh,
    "sin": torch.sin, "cos": torch.cos, "square": _square,
}
BINARY_FUNCTIONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "minimum": torch.minimum, "maximum": torch.maximum,
}
FUNCTIONS = UNARY_FUNCTIONS.keys() | BINARY_FUNCTIONS.keys()
_OPERATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "+": torch.add, "-": torch.sub, "*": torch.mul, "/": torch.div, "**": torch.pow,
}
_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOO_DEEP = f"the expression is nested too deeply (over {MAX_DEPTH} levels)"
_INDEX_RULE = "an index is a non-negative integer or a plate name (beta[0], alpha[county])"


class ExpressionError(ModelError):
    """A bad expression: the message quotes the text with a caret under the problem.

    Args:
        problem: what is wrong (the whole message when ``text`` is ``None``).
        culprit: the variable whose parameter the expression is.
        text: the expression, if known; position: where in it the problem is.
    """

    def __init__(
        self,
        problem: str,
        culprit: str | None = None,
        problems: list[ModelError] | None = None,
        *,
        text: str | None = None,
        position: int | None = None,
    ) -> None:
        self.problem, self.text, self.position = problem, text, position
        super().__init__(_describe(problem, text, position), culprit, problems)


def _describe(problem: str, text: str | None, position: int | None) -> str:
    if text is None:
        return problem
    shown = text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
    message = f"bad expression {shown!r}: {problem}"
    if position is None:
        return message
    start = max(0, position - _SHOWN // 2)  # a window around the problem in long texts
    # Tabs, newlines... would shift the caret: show them as spaces.
    line = "".join(c if c.isprintable() else " " for c in text[start : start + _SHOWN])
    return f"{message} at position {position}\n  {line}\n  {' ' * (position - start)}^"


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors has no single truth value
class Value:
    """A tensor with the number of its trailing event dimensions.

    Shape: ``(*batch, *event)`` where ``len(event) == event_rank``. Batch dims are
    aligned right-to-left between values (the caller aligns plates so that they match).
    """

    tensor: Tensor
    event_rank: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.event_rank <= self.tensor.dim():
            raise ValueError(f"event_rank {self.event_rank} for a tensor of shape {tuple(self.tensor.shape)}")


@dataclass(frozen=True)
class Reference:
    """One use of a name: ``name`` alone, or ``name[plate]``."""

    name: str
    plate: str | None


def constant(value: float | list) -> Value:
    """A constant: a number (event rank 0) or a nested list (event rank = its ndim)."""
    try:
        tensor = torch.tensor(value, dtype=torch.get_default_dtype())
    except (TypeError, ValueError, RuntimeError) as error:
        raise ModelError(f"{value!r} is not a number or a rectangular list of numbers") from error
    return Value(tensor, tensor.dim())


# ---------------------------------------------------------------------------- AST


@dataclass
class _Scope:
    """What evaluating one expression needs: the looked-up values and where constants go."""

    values: dict[str, Value]
    dtype: torch.dtype
    device: torch.device | None
    text: str
    culprit: str | None

    def error(self, problem: str) -> ExpressionError:
        return ExpressionError(problem, self.culprit, text=self.text)


def _pad(value: Value, rank: int) -> Tensor:
    """Append singleton dims so that ``value`` has ``rank`` event dims: batch dims stay aligned."""
    extra = rank - value.event_rank
    return value.tensor.reshape(*value.tensor.shape, *(1,) * extra) if extra else value.tensor


def _combine(scope: _Scope, what: str, fn: Callable[..., Tensor], *args: Value) -> Value:
    rank = max(a.event_rank for a in args)
    try:
        return Value(fn(*(_pad(a, rank) for a in args)), rank)
    except RuntimeError as error:  # shapes that do not broadcast
        shapes = ", ".join(str(tuple(a.tensor.shape)) for a in args)
        raise scope.error(f"cannot compute {what} of shapes {shapes}: {error}") from error


@dataclass(frozen=True)
class Node:
    """A node of the parsed expression; ``depth`` is the height of its subtree."""

    depth: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "depth", 1 + max((c.depth for c in self.children()), default=0))

    def children(self) -> tuple[Node, ...]:
        return ()

    def evaluate(self, scope: _Scope) -> Value:
        raise NotImplementedError


@dataclass(frozen=True)
class Number(Node):
    value: float

    def evaluate(self, scope: _Scope) -> Value:
        return Value(torch.tensor(self.value, dtype=scope.dtype, device=scope.device))


@dataclass(frozen=True)
class Name(Node):
    name: str

    def __str__(self) -> str:
        return self.name

    def evaluate(self, scope: _Scope) -> Value:
        return scope.values[self.name]


@dataclass(frozen=True)
class Index(Node):
    """``base[index]``: an int selects an event entry; a plate name changes nothing here."""

    base: Node
    index: int | str

    def children(self) -> tuple[Node, ...]:
        return (self.base,)

    def __str__(self) -> str:
        return f"{self.base}[{self.index}]"

    def evaluate(self, scope: _Scope) -> Value:
        value = self.base.evaluate(scope)
        if isinstance(self.index, str):  # the caller's lookup already aligned plates
            return value
        rank = value.event_rank
        if rank == 0:
            raise scope.error(f"'{self}': {self.base} is a scalar per element, it has no entries to index")
        size = value.tensor.shape[-rank]
        if self.index >= size:
            raise scope.error(f"'{self}': {self.base} has {size} entries")
        return Value(value.tensor.select(-rank, self.index), rank - 1)


@dataclass(frozen=True)
class Call(Node):
    function: str
    args: tuple[Node, ...]

    def children(self) -> tuple[Node, ...]:
        return self.args

    def evaluate(self, scope: _Scope) -> Value:
        fn = UNARY_FUNCTIONS.get(self.function) or BINARY_FUNCTIONS[self.function]
        return _combine(scope, self.function, fn, *(a.evaluate(scope) for a in self.args))


@dataclass(frozen=True)
class Unary(Node):
    op: str
    operand: Node

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)

    def evaluate(self, scope: _Scope) -> Value:
        value = self.operand.evaluate(scope)
        return Value(-value.tensor, value.event_rank) if self.op == "-" else value


@dataclass(frozen=True)
class Binary(Node):
    op: str
    left: Node
    right: Node

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)

    def evaluate(self, scope: _Scope) -> Value:
        left, right = self.left.evaluate(scope), self.right.evaluate(scope)
        return _combine(scope, f"'{self.op}'", _OPERATORS[self.op], left, right)


# ------------------------------------------------------------------ tokens, parser


class _Token(NamedTuple):
    kind: str  # "number", "name", "end", or the operator itself: "+", "**", "(", ...
    text: str
    position: int

    def __str__(self) -> str:
        return "end of text" if self.kind == "end" else repr(self.text)


class _Parser:
    """Recursive descent over the tokens; records the names it meets."""

    def __init__(self, text: str, culprit: str | None) -> None:
        self.text, self.culprit = text, culprit
        self.tokens = self._tokenize()
        self.at = 0  # index of the next token
        self.nesting = 0  # current recursion depth, bounded by MAX_DEPTH
        self.references: list[Reference] = []

    def error(self, problem: str, position: int) -> ExpressionError:
        return ExpressionError(problem, self.culprit, text=self.text, position=position)

    def _tokenize(self) -> list[_Token]:
        tokens, i, text = [], 0, self.text
        while i < len(text):
            if text[i].isspace():
                i += 1
                continue
            if match := _NUMBER.match(text, i):
                tokens.append(_Token("number", match.group(), i))
            elif match := _NAME.match(text, i):
                if match.group().startswith("__"):  # dunder names are how sandboxes get escaped
                    raise self.error(f"names may not start with '__': {match.group()!r}", i)
                tokens.append(_Token("name", match.group(), i))
            else:
                op = "**" if text.startswith("**", i) else text[i]
                if op not in _OPERATORS and op not in "()[],":
                    raise self.error(f"unexpected character {op!r}", i)
                tokens.append(_Token(op, op, i))
            i += len(tokens[-1].text)
        return [*tokens, _Token("end", "", len(text))]

    def peek(self) -> _Token:
        return self.tokens[self.at]

    def next(self) -> _Token:
        token = self.tokens[self.at]
        self.at = min(self.at + 1, len(self.tokens) - 1)  # stay on "end"
        return token

    def expect(self, kind: str, what: str) -> None:
        token = self.next()
        if token.kind != kind:
            raise self.error(f"expected {what}, found {token}", token.position)

    def checked(self, node: Node, token: _Token) -> Node:
        # Long chains like a+a+...+a nest without recursion in the parser, but
        # evaluating (or printing) the tree recurses: bound its height too.
        if node.depth > MAX_DEPTH:
            raise self.error(_TOO_DEEP, token.position)
        return node

    @contextmanager
    def nested(self) -> Iterator[None]:
        self.nesting += 1
        try:
            if self.nesting > MAX_DEPTH:
                raise self.error(_TOO_DEEP, self.peek().position)
            yield
        finally:
            self.nesting -= 1

    def parse(self) -> Node:
        root = self.sum()
        if self.peek().kind != "end":
            raise self.error(f"unexpected {self.peek()}", self.peek().position)
        return root

    def sum(self) -> Node:
        node = self.product()
        while self.peek().kind in ("+", "-"):
            op = self.next()
            node = self.checked(Binary(op.kind, node, self.product()), op)
        return node

    def product(self) -> Node:
        node = self.unary()
        while self.peek().kind in ("*", "/"):
            op = self.next()
            node = self.checked(Binary(op.kind, node, self.unary()), op)
        return node

    def unary(self) -> Node:
        # Every recursion (parentheses, calls, signs, exponents) passes here.
        with self.nested():
            if self.peek().kind in ("-", "+"):
                op = self.next()
                return self.checked(Unary(op.kind, self.unary()), op)
            return self.power()

    def power(self) -> Node:
        base = self.atom()
        if self.peek().kind == "**":
            op = self.next()  # the exponent is a unary: right associative, and 2 ** -1 works
            return self.checked(Binary("**", base, self.unary()), op)
        return base

    def atom(self) -> Node:
        token = self.next()
        if token.kind == "number":
            node: Node = Number(float(token.text))
        elif token.kind == "name":
            node = self.call(token) if self.peek().kind == "(" else self.name(token)
        elif token.kind == "(":
            node = self.sum()
            self.expect(")", f"')' to match the '(' at position {token.position}")
        else:
            raise self.error(f"unexpected {token}", token.position)
        if self.peek().kind == "[":
            where = self.peek().position
            raise self.error("only a name can be indexed, like beta[0] or alpha[county]", where)
        return node

    def name(self, token: _Token) -> Node:
        if token.text in FUNCTIONS:
            raise self.error(f"'{token.text}' is a function: write {token.text}(...)", token.position)
        node: Node = Name(token.text)
        plate = None
        while self.peek().kind == "[":
            bracket, inside = self.next(), self.next()
            if self.peek().kind != "]":  # beta[i + 1], beta[-1], beta[(0)]...
                inside = self.peek() if inside.kind in ("number", "name") else inside
                raise self.error(f"unexpected {inside} in an index: {_INDEX_RULE}", inside.position)
            self.next()
            if inside.kind == "number" and inside.text.isdigit():
                index: int | str = int(inside.text)
            elif inside.kind == "name" and isinstance(node, Name):
                index = plate = inside.text
            else:  # beta[0.5], beta[0][county]
                raise self.error(f"bad index {inside}: {_INDEX_RULE}", inside.position)
            node = self.checked(Index(node, index), bracket)
        if (reference := Reference(token.text, plate)) not in self.references:
            self.references.append(reference)
        return node

    def call(self, token: _Token) -> Node:
        function = token.text
        if function not in FUNCTIONS:
            allowed = ", ".join(sorted(FUNCTIONS))
            raise self.error(f"unknown function '{function}' (allowed: {allowed})", token.position)
        self.next()  # "("
        args = [self.sum()]
        while self.peek().kind == ",":
            self.next()
            args.append(self.sum())
        self.expect(")", f"')' to close the call to {function}")
        arity = 2 if function in BINARY_FUNCTIONS else 1
        if len(args) != arity:
            plural = "s" if arity > 1 else ""
            raise self.error(f"{function} takes {arity} argument{plural}, got {len(args)}", token.position)
        return self.checked(Call(function, tuple(args)), token)


# -------------------------------------------------------------------- public API


class Expression:
    """A parsed expression: its text, the names it uses, and a way to evaluate it."""

    def __init__(self, text: str, root: Node, references: tuple[Reference, ...], culprit: str | None) -> None:
        self.text, self.root, self.references, self.culprit = text, root, references, culprit
        self.names = frozenset(r.name for r in references)

    def evaluate(self, lookup: Callable[[str], Value]) -> Value:
        """Evaluate with ``lookup(name)`` giving each name's value (called once per name)."""
        # Look everything up first, in order of appearance: constants then take
        # the dtype/device of the first value, whatever their place in the text.
        values: dict[str, Value] = {}
        for reference in self.references:
            if reference.name not in values:
                values[reference.name] = lookup(reference.name)
        first = next(iter(values.values()), None)
        dtype = torch.get_default_dtype()
        if first is not None and first.tensor.is_floating_point():  # not int covariates
            dtype = first.tensor.dtype
        device = first.tensor.device if first is not None else None
        return self.root.evaluate(_Scope(values, dtype, device, self.text, self.culprit))

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


def parse(text: str, culprit: str | None = None) -> Expression:
    """Parse ``text``; any problem raises :class:`ExpressionError` naming ``culprit``."""
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be text, not {type(text).__name__}", culprit)
    text = text.strip()
    if not text:
        raise ExpressionError("the expression is empty", culprit, text=text)
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"the expression has {len(text)} characters, over the limit of {MAX_LENGTH}",
                              culprit, text=text)
    parser = _Parser(text, culprit)
    try:
        root = parser.parse()
    except RecursionError:  # a last guard, should the caller's own stack already be deep
        raise ExpressionError(_TOO_DEEP, culprit, text=text) from None
    return Expression(text, root, tuple(parser.references), culprit)


def rename(text: str, old: str, new: str | None, *, plate: bool = False) -> str:
    """``text`` with the name ``old`` replaced by ``new``, token by token (never inside a
    longer name: renaming ``mu`` leaves ``mu_g`` alone).

    Without ``plate``, ``old`` names a variable or covariate: its uses as a value are
    renamed, not a plate index ``x[old]`` nor a function call. With ``plate``, only the
    plate indexes ``x[old]`` are renamed, and ``new=None`` drops them (``alpha[county]``
    becomes ``alpha``). Spacing is kept; text that does not tokenize (a typo the user is
    still fixing) comes back unchanged.
    """
    if new is None and not plate:
        raise ValueError("only a plate index can be dropped, not a variable or covariate")
    try:
        tokens = _Parser(text, None).tokens
    except ExpressionError:
        return text
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement), left to right
    for before, token, after in zip([None, *tokens], tokens, tokens[1:]):
        if token.kind != "name" or token.text != old:
            continue
        is_index = before is not None and before.kind == "[" and after.kind == "]"
        if plate and is_index:
            if new is None:  # drop the brackets too
                edits.append((before.position, after.position + 1, ""))
            else:
                edits.append((token.position, token.position + len(old), new))
        elif not plate and not is_index and after.kind != "(":
            edits.append((token.position, token.position + len(old), new))
    for start, end, replacement in reversed(edits):
        text = text[:start] + replacement + text[end:]
    return text
