"""Tests for the safe expression parser and evaluator."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from pavi_viz.model.errors import ModelError
from pavi_viz.model.expressions import (
    Expression, ExpressionError, Reference, Value, constant, parse,
)

X = torch.tensor([0.5, 1.5, 2.0])
Y = torch.tensor([2.0, -1.0, 3.0])
V = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])  # one 3-vector per element


def values(**extra: Value) -> dict[str, Value]:
    return {"x": Value(X), "y": Value(Y), "v": Value(V, 1), **extra}


def run(text: str, **extra: Value) -> torch.Tensor:
    return parse(text).evaluate(values(**extra).__getitem__).tensor


@pytest.mark.parametrize(("text", "expected"), [
    ("1 + 2 * 3", torch.tensor(7.0)),
    ("(1 + 2) * 3", torch.tensor(9.0)),
    ("10 - 4 - 3", torch.tensor(3.0)),
    ("8 / 4 / 2", torch.tensor(1.0)),
    ("2 ** 3 ** 2", torch.tensor(512.0)),
    ("-2 ** 2", torch.tensor(-4.0)),
    ("2 ** -1", torch.tensor(0.5)),
    ("--+3", torch.tensor(3.0)),
    (".5 + 1e-3 + 2.5E+4 + 3.", torch.tensor(25003.501)),
    ("-x ** 2", -(X**2)),
    ("x + y * x", X + Y * X),
    ("x / (y - 1)", X / (Y - 1)),
    ("exp(x)", torch.exp(X)),
    ("log(x) + log1p(x) + expm1(x) + sqrt(x)", torch.log(X) + torch.log1p(X) + torch.expm1(X) + torch.sqrt(X)),
    ("abs(y) + tanh(y) + sin(y) + cos(y)", torch.abs(Y) + torch.tanh(Y) + torch.sin(Y) + torch.cos(Y)),
    ("softplus(y) + 0.1", F.softplus(Y) + 0.1),
    ("sigmoid(y) + logit(x / 3) + square(y)", torch.sigmoid(Y) + torch.logit(X / 3) + Y * Y),
    ("minimum(x, y) - maximum(x, 1)", torch.minimum(X, Y) - torch.maximum(X, torch.tensor(1.0))),
    ("v[0] * x + v[2]", V[:, 0] * X + V[:, 2]),
    ("x * v", X[:, None] * V),  # (B,) * (B, 3): batch dims stay aligned
    ("v[county] + x[county]", V + X[:, None]),
    ("m[1][0] + m[0][2]", torch.tensor([3.0 + 2.0, 9.0 + 8.0])),  # m[:, 1, 0] + m[:, 0, 2]
])
def test_evaluate(text: str, expected: torch.Tensor) -> None:
    m = Value(torch.arange(12.0).reshape(2, 2, 3), 2)
    torch.testing.assert_close(run(text, m=m), expected)


def test_event_ranks() -> None:
    lookup = values(m=Value(torch.zeros(3, 3, 2), 2), w=Value(torch.zeros(4, 3), 1)).__getitem__
    assert parse("x * v").evaluate(lookup).event_rank == 1
    assert parse("m + v").evaluate(lookup).tensor.shape == (3, 3, 2)  # (3,3,2) + (3,3,1)
    assert parse("m[1][0]").evaluate(lookup).event_rank == 0
    with pytest.raises(ExpressionError, match="cannot compute '\\+' of shapes"):
        parse("w + v", culprit="mu").evaluate(lookup)  # batch sizes 4 and 3


def test_references_and_names() -> None:
    e = parse("  alpha[county] + beta[county] * floor ")
    assert isinstance(e, Expression) and str(e) == e.text == "alpha[county] + beta[county] * floor"
    assert e.references == (Reference("alpha", "county"), Reference("beta", "county"), Reference("floor", None))
    assert e.names == {"alpha", "beta", "floor"}
    e = parse("beta[0] * log_uppm + beta[1] * floor + exp(beta[0])")
    assert e.references == (Reference("beta", None), Reference("log_uppm", None), Reference("floor", None))
    assert e.names == {"beta", "log_uppm", "floor"}


def test_lookup_once_per_name_and_constant_dtype() -> None:
    calls: list[str] = []

    def lookup(name: str) -> Value:
        calls.append(name)
        return Value(torch.ones(2, dtype=torch.float64))

    out = parse("2 * a + a * b - a").evaluate(lookup)
    assert calls == ["a", "b"] and out.tensor.dtype == torch.float64
    assert parse("1 + 2").evaluate(lookup).tensor.dtype == torch.get_default_dtype()


def test_gradients_flow() -> None:
    x = torch.tensor([0.3, 1.2], requires_grad=True)
    b = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    out = parse("softplus(x) * b[1] + x ** 2").evaluate({"x": Value(x), "b": Value(b, 1)}.__getitem__)
    assert out.tensor.requires_grad
    out.tensor.sum().backward()
    torch.testing.assert_close(x.grad, torch.sigmoid(x.detach()) * b.detach()[:, 1] + 2 * x.detach())
    torch.testing.assert_close(b.grad, torch.tensor([[0.0, 1.0], [0.0, 1.0]]) * F.softplus(x.detach())[:, None])


@pytest.mark.parametrize(("text", "problem"), [
    ("__import__('os')", "may not start with '__'"),
    ("x.__class__", "unexpected character '.'"),
    ('"a"', "unexpected character '\"'"),
    ("a b", "unexpected 'b'"),
    ("a +", "unexpected end of text"),
    ("(a", "expected ')'"),
    ("a)", "unexpected ')'"),
    ("foo(a)", "unknown function 'foo' (allowed: abs, cos, exp"),
    ("exp", "'exp' is a function: write exp(...)"),
    ("exp(a, b)", "exp takes 1 argument, got 2"),
    ("minimum(a)", "minimum takes 2 arguments, got 1"),
    ("a[b+1]", "in an index"),
    ("(a)[0]", "only a name can be indexed"),
    ("3[0]", "only a name can be indexed"),
    ("exp(a)[0]", "only a name can be indexed"),
    ("a[-1]", "in an index"),
    ("a[0][c]", "bad index 'c'"),
    ("", "empty"),
    ("   ", "empty"),
    ("a" * 3000, "over the limit of 2000"),
    ("(" * 500 + "a" + ")" * 500, "nested too deeply"),
    ("-" * 300 + "a", "nested too deeply"),
    ("+".join(["a"] * 500), "nested too deeply"),
    ("a" + "[0]" * 500, "nested too deeply"),
    ("lambda: 1", "unexpected character ':'"),
    ("a; b", "unexpected character ';'"),
    ("a = 1", "unexpected character '='"),
    ("a, b", "unexpected ','"),
])
def test_bad_expressions(text: str, problem: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(text, culprit="mu")
    assert problem in str(info.value)
    assert info.value.culprit == "mu" and isinstance(info.value, ModelError)


def test_error_shows_a_caret() -> None:
    with pytest.raises(ExpressionError) as info:
        parse("alpha[county] + * floor")
    assert str(info.value) == (
        "bad expression 'alpha[county] + * floor': unexpected '*' at position 16\n"
        "  alpha[county] + * floor\n"
        "                  ^"
    )
    assert info.value.position == 16


@pytest.mark.parametrize(("text", "problem"), [
    ("v[3]", "'v[3]': v has 3 entries"),
    ("x[0]", "'x[0]': x is a scalar per element, it has no entries to index"),
    ("v[0][0]", "v[0] is a scalar per element"),
])
def test_bad_index_at_evaluation(text: str, problem: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(text, culprit="mu").evaluate(values().__getitem__)
    assert problem in str(info.value) and info.value.culprit == "mu"


def test_constant() -> None:
    assert constant(2.5).event_rank == 0 and constant(2.5).tensor.dtype == torch.get_default_dtype()
    c = constant([[1, 2], [3, 4]])
    assert c.event_rank == 2 and c.tensor.dtype.is_floating_point
    out = parse("c[1] * x[i]").evaluate({"c": constant([1.0, 2.0]), "x": Value(X)}.__getitem__)
    torch.testing.assert_close(out.tensor, 2 * X)


def _parses_or_explains(text: str) -> None:
    try:
        assert isinstance(parse(text), Expression)
    except ExpressionError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_parses_or_raises_expression_error(text: str) -> None:
    _parses_or_explains(text)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab01.()[]+-*/ e_,x", max_size=300))
def test_grammar_alphabet_parses_or_raises_expression_error(text: str) -> None:
    _parses_or_explains(text)
