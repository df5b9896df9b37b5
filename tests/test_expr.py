"""The parameter expression language: grammar, folding, canonical text, evaluation."""

from __future__ import annotations

import math
import random

import pytest

from qbus.errors import CircuitError
from qbus.frontends import expr
from qbus.frontends.expr import canonical, evaluate, fold, free_names, parse


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1.0),
        ("2.5e-3", 0.0025),
        (".5", 0.5),
        ("3.", 3.0),
        ("1E2", 100.0),
        ("pi", math.pi),
        ("π", math.pi),
        ("tau", math.tau),
        ("τ", math.tau),
        ("euler", math.e),
        ("ℇ", math.e),
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("8 / 4 / 2", 1.0),
        ("8 - 4 - 2", 2.0),
        ("-2**2", -4.0),
        ("(-2)**2", 4.0),
        ("2**3**2", 512.0),
        ("2^3", 8.0),
        ("2**-1", 0.5),
        ("-+-3", 3.0),
        ("sin(pi/2)", 1.0),
        ("cos(0)", 1.0),
        ("tan(0)", 0.0),
        ("exp(0)", 1.0),
        ("ln(euler)", 1.0),
        ("sqrt(16)", 4.0),
        ("arcsin(1)", math.pi / 2),
        ("arccos(1)", 0.0),
        ("arctan(1)", math.pi / 4),
        ("  pi / 4  ", math.pi / 4),
    ],
)
def test_constant_expressions_fold_to_their_value(text: str, value: float) -> None:
    result = fold(parse(text))
    assert isinstance(result, float)
    assert result == pytest.approx(value, abs=1e-15)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("theta", {"theta"}),
        ("2*theta + sin(phi)/pi", {"theta", "phi"}),
        ("θ * euler", {"θ"}),
        ("a_1 ** b2", {"a_1", "b2"}),
        ("pi + tau", set()),
    ],
)
def test_free_names_exclude_constants_and_functions(text: str, names: set[str]) -> None:
    assert free_names(text) == names


def test_free_names_is_cached() -> None:
    free_names.cache_clear()
    free_names("3*gamma")
    free_names("3*gamma")
    assert free_names.cache_info().hits == 1


def test_evaluate_binds_names() -> None:
    assert evaluate("2*theta + pi/4", {"theta": 0.5}) == pytest.approx(1 + math.pi / 4)
    assert evaluate("sqrt(x) ^ 2", {"x": 9.0}) == pytest.approx(9.0)


def test_evaluate_without_a_value_is_unbound_parameter() -> None:
    with pytest.raises(CircuitError) as info:
        evaluate("theta + phi", {"theta": 1.0})
    assert info.value.code == "unbound_parameter"
    assert "phi" in info.value.message


@pytest.mark.parametrize(
    ("text", "values"),
    [("1/x", {"x": 0.0}), ("ln(x)", {"x": 0.0}), ("x ** 0.5", {"x": -1.0}), ("exp(x)", {"x": 1e6})],
)
def test_evaluate_undefined_values_are_invalid_parameter(text: str, values: dict) -> None:
    with pytest.raises(CircuitError) as info:
        evaluate(text, values)
    assert info.value.code == "invalid_parameter"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty expression"),
        ("   ", "empty expression"),
        ("1 +", "ends too early"),
        ("(1", "expected ')'"),
        ("1)", "unexpected ')'"),
        ("sin", "needs an argument"),
        ("sin(1, 2)", "takes one argument"),
        ("foo(1)", "unknown function 'foo'"),
        ("1 $ 2", "unexpected '$'"),
        ("2e", "unexpected 'e'"),
        ("1e999", "too large"),
        ("__import__('os').system('true')", "unknown function '__import__'"),
        ("theta.real", "unexpected"),
        ("[1]", "unexpected '['"),
        ("(" * 200 + "1" + ")" * 200, "nested more than"),
        ("+".join(["x"] * 500), "nested more than"),
    ],
)
def test_bad_text_raises_value_error_with_a_reason(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="bad expression") as info:
        parse(text)
    assert fragment in str(info.value)


def test_error_message_gives_the_character_position() -> None:
    with pytest.raises(ValueError, match=r"at character 5\)"):
        parse("1 + * 2")


@pytest.mark.parametrize("text", ["1/0", "ln(0)", "sqrt(-1)", "(-8) ** (1/3)", "theta + 1/0"])
def test_fold_rejects_undefined_constants(text: str) -> None:
    with pytest.raises(ValueError):
        fold(parse(text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2*theta + pi/4", "2.0 * theta + 0.7853981633974483"),
        ("a - (b - c)", "a - (b - c)"),
        ("a - b - c", "a - b - c"),
        ("a + (b + c)", "a + (b + c)"),
        ("a / (b * c)", "a / (b * c)"),
        ("(a * b) / c", "a * b / c"),
        ("-x**2", "-x ** 2.0"),
        ("(-x)**2", "(-x) ** 2.0"),
        ("(x**2)**3", "(x ** 2.0) ** 3.0"),
        ("x**2**3", "x ** 8.0"),
        ("x**y**z", "x ** y ** z"),
        ("x**-y", "x ** -y"),
        ("x * -1.5", "x * -1.5"),
        ("x - -1", "x - -1.0"),
        ("-(a + b)", "-(a + b)"),
        ("--x", "x"),
        ("sin(θ)^2 + cos(θ)^2", "sin(θ) ** 2.0 + cos(θ) ** 2.0"),
        ("x + 0.1 + 0.2", "x + 0.1 + 0.2"),
        ("x + (0.1 + 0.2)", "x + 0.30000000000000004"),
    ],
)
def test_canonical_text(text: str, expected: str) -> None:
    assert canonical(text) == expected
    assert canonical(expected) == expected


def _random_expression(rng: random.Random, depth: int) -> str:
    if depth == 0 or rng.random() < 0.25:
        return rng.choice(
            ["theta", "phi", "θ", "pi", "τ", "2", "0.5", "1e-3", "3.25", "-1", str(rng.random())]
        )
    kind = rng.randrange(4)
    a = _random_expression(rng, depth - 1)
    if kind == 0:
        return f"-{a}" if rng.random() < 0.5 else f"({a})"
    if kind == 1:
        return f"{rng.choice(['sin', 'cos', 'arctan', 'exp'])}({a})"
    b = _random_expression(rng, depth - 1)
    op = rng.choice(["+", "-", "*", "/", "**"] if kind == 2 else ["+", "-", "*"])
    return f"({a}) {op} ({b})" if rng.random() < 0.5 else f"{a} {op} {b}"


def test_canonical_form_round_trips_and_keeps_the_value() -> None:
    rng = random.Random(7)
    values = {"theta": 0.7, "phi": -1.3, "θ": 0.25}
    checked = 0
    for _ in range(2000):
        text = _random_expression(rng, 4)
        try:
            reference = evaluate(text, values)
            form = canonical(text)
        except (ValueError, CircuitError):
            continue  # undefined at these values or too large: not what this test is about
        if isinstance(form, float):
            assert form == pytest.approx(reference, rel=1e-9, abs=1e-12)
            continue
        assert canonical(form) == form, text
        assert evaluate(form, values) == pytest.approx(reference, rel=1e-9, abs=1e-9), text
        checked += 1
    assert checked > 500


def test_substitute_then_fold() -> None:
    tree = parse("2*a + b")
    result = expr.substitute(tree, {"a": parse("pi/4"), "b": parse("theta")})
    assert fold(result) == "1.5707963267948966 + theta"
    assert fold(expr.substitute(tree, {"a": ("num", 1.0), "b": ("num", 2.0)})) == 4.0


def test_parse_tokens_stops_at_the_first_token_it_cannot_use() -> None:
    tokens = ["pi", "/", "2", ",", "x", ")", ""]
    tree, end = expr.parse_tokens(tokens, 0)
    assert tokens[end] == ","
    assert fold(tree) == pytest.approx(math.pi / 2)
