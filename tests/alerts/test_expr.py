"""The threshold language: literals, operators, precedence, three-valued logic, errors and safety."""

from __future__ import annotations

import builtins
import math
import pickle
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elitemon.alerts.expr import (
    MAX_DEPTH,
    MAX_LENGTH,
    ExpressionError,
    Outcome,
    is_name,
    parse,
    parse_duration,
    parse_number,
)


def active(text: str, **signals: float | None) -> bool | None:
    return parse(text).evaluate(signals).active


# --- literals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("40_000_000", 40_000_000.0),
        ("1_000.000_5", 1000.0005),
        ("1.5", 1.5),
        ("2e6", 2_000_000.0),
        ("2.5E-3", 0.0025),
        ("1e+2", 100.0),
        ("90%", 0.9),
        ("95%", 0.95),
        ("12.5%", 0.125),
        ("300s", 300.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
    ],
)
def test_literals_have_their_scaled_values(literal: str, value: float) -> None:
    assert parse_number(literal) == value
    assert active(f"x == {literal}", x=value) is True


def test_names_may_hold_dots_and_keywords_any_case() -> None:
    expression = parse("node.gpu_0.memory > 1 and Cpu_Usage > 2 Or not x3 < 1")
    assert expression.names == {"node.gpu_0.memory", "Cpu_Usage", "x3"}
    assert expression.name_positions == (("node.gpu_0.memory", 0), ("Cpu_Usage", 26), ("x3", 47))
    assert str(expression) == expression.text
    assert is_name("a.b_1") and not is_name("and") and not is_name("1a") and not is_name("a-b")


# --- operators and precedence -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "signals", "expected"),
    [
        ("x + 2 == 5", {"x": 3}, True),
        ("x - 2 == 1", {"x": 3}, True),
        ("x * 2 == 6", {"x": 3}, True),
        ("x / 2 == 1.5", {"x": 3}, True),
        ("-x == -3", {"x": 3}, True),
        ("- -x == 3", {"x": 3}, True),
        ("x < 3", {"x": 3}, False),
        ("x <= 3", {"x": 3}, True),
        ("x > 3", {"x": 3}, False),
        ("x >= 3", {"x": 3}, True),
        ("x == 3", {"x": 3}, True),
        ("x != 3", {"x": 3}, False),
        ("x > 1 AND y > 1", {"x": 2, "y": 0}, False),
        ("x > 1 OR y > 1", {"x": 2, "y": 0}, True),
        ("NOT x > 1", {"x": 2}, False),
    ],
)
def test_each_operator(text: str, signals: dict[str, float], expected: bool) -> None:
    assert parse(text).evaluate(signals).active is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3 == 7", True),  # * before +
        ("(1 + 2) * 3 == 9", True),
        ("10 - 4 - 3 == 3", True),  # left-associative
        ("10 - (4 - 3) == 9", True),
        ("16 / 4 / 2 == 2", True),
        ("-2 * 3 == -6", True),
        ("-1 + 2 == 1", True),  # unary minus before +
        ("2 * -3 == -6", True),
        ("-(2 + 3) == -5", True),
        ("1 + 2 > 2 AND 1 < 2", True),  # arithmetic before comparison before AND
        ("1 > 2 AND 1 > 2 OR 1 < 2", True),  # AND before OR
        ("1 < 2 OR 1 > 2 AND 1 > 2", True),
        ("(1 < 2 OR 1 > 2) AND 1 > 2", False),
        ("NOT 1 > 2 AND 1 > 2", False),  # NOT before AND: (NOT 1 > 2) AND 1 > 2
        ("NOT (1 > 2 AND 1 > 2)", True),
        ("NOT NOT 1 < 2", True),
        ("NOT 1 + 1 > 3", True),  # NOT binds looser than the comparison and the sum
    ],
)
def test_precedence(text: str, expected: bool) -> None:
    assert active(text) is expected


def test_spec_thresholds() -> None:
    assert active("holomorphic_throughput < 40_000_000", holomorphic_throughput=39e6) is True
    assert active("no_improvement_for_generations >= 20", no_improvement_for_generations=20) is True
    spec = "gpu_memory_usage > 90% OR cpu_usage > 95%"
    assert parse(spec).evaluate({"gpu_memory_usage": 0.5, "cpu_usage": 0.96}) == Outcome(True, 0.96)
    assert parse(spec).evaluate({"gpu_memory_usage": 0.9, "cpu_usage": 0.95}) == Outcome(False, None)
    assert active("node_heartbeat_missing > 300s", node_heartbeat_missing=301) is True
    assert active("hourly_cost > budget_threshold * 1.5", hourly_cost=15.5, budget_threshold=10) is True
    assert active("hourly_cost > budget_threshold * 1.5", hourly_cost=15, budget_threshold=10) is False


# --- missing data: three-valued logic -----------------------------------------------------------

TRUE, FALSE, UNKNOWN = 1.0, -1.0, None  # a signal value that makes `name > 0` true, false or unknown
KLEENE = [(TRUE, True), (FALSE, False), (UNKNOWN, None)]


@pytest.mark.parametrize(("a", "a_truth"), KLEENE)
@pytest.mark.parametrize(("b", "b_truth"), KLEENE)
def test_and_or_follow_kleene(a: float | None, a_truth: bool | None, b: float | None, b_truth: bool | None) -> None:
    truths = {a_truth, b_truth}
    expected_and = False if False in truths else None if None in truths else True
    expected_or = True if True in truths else None if None in truths else False
    assert active("a > 0 AND b > 0", a=a, b=b) is expected_and
    assert active("a > 0 OR b > 0", a=a, b=b) is expected_or


@pytest.mark.parametrize(("a", "truth"), KLEENE)
def test_not_keeps_unknown(a: float | None, truth: bool | None) -> None:
    assert active("NOT a > 0", a=a) is (None if truth is None else not truth)


def test_unknown_spreads_through_arithmetic_and_comparison() -> None:
    assert parse("x + 1 > 0").evaluate({}) == Outcome(None, None)
    assert active("x * y > 0", x=1, y=None) is None
    assert active("-x < 0", x=None) is None
    assert active("x > 0", x=math.nan) is None
    assert active("1 > x", x=math.nan) is None
    assert active("x - x == 0", x=math.inf) is None  # inf - inf is NaN


def test_division_by_zero_is_unknown_and_never_raises() -> None:
    assert active("x / 0 > 1", x=1) is None
    assert active("x / (y - y) > 1 OR x > 0", x=1, y=3) is True
    assert active("0 / 0 == 0") is None
    assert active("x / 0 > 1 AND x < 0", x=1) is False


def test_a_signal_that_is_not_a_number_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="signal 'x' is 'high', not a number"):
        parse("x > 1").evaluate({"x": "high"})


# --- Outcome.value --------------------------------------------------------------------------------


def test_value_is_the_deciding_left_hand_side() -> None:
    assert parse("x * 2 > 1").evaluate({"x": 3}) == Outcome(True, 6.0)
    assert parse("x > 1").evaluate({"x": 0}) == Outcome(False, None)
    assert parse("x > 1").evaluate({}) == Outcome(None, None)
    either = parse("a > 1 OR b > 1 OR c > 1")
    assert either.evaluate({"a": 0, "b": 5, "c": 7}) == Outcome(True, 5.0)  # the first true operand
    assert either.evaluate({"a": None, "b": 0, "c": 7}) == Outcome(True, 7.0)
    both = parse("a > 1 AND b > 1")
    assert both.evaluate({"a": 2, "b": 3}) == Outcome(True, 2.0)  # the first comparison
    assert parse("NOT a > 1").evaluate({"a": 0}) == Outcome(True, 0.0)
    assert parse("(a > 1 OR b > 1) AND c > 1").evaluate({"a": 0, "b": 4, "c": 9}) == Outcome(True, 4.0)


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("", 0, "expected a number, a name, NOT or '(' but found end of expression"),
        ("cpu_usage > )", 12, "expected a number, a name or '(' but found ')'"),
        ("x + 1", 5, "expected a comparison operator (<, <=, >, >=, == or !=) but found end of expression"),
        ("NOT 3", 5, "expected a comparison operator (<, <=, >, >=, == or !=) but found end of expression"),
        ("1 AND x > 2", 2, "expected a comparison operator (<, <=, >, >=, == or !=) but found 'AND'"),
        ("x > 2 AND 1", 11, "expected a comparison operator (<, <=, >, >=, == or !=) but found end of expression"),
        (
            "a < b < c",
            6,
            "expected AND, OR or end of expression but found '<' (comparisons cannot be chained: join them with AND)",
        ),
        ("(a > b) + 1", 8, "expected AND, OR or end of expression but found '+'"),
        ("a + (b > c) > 1", 4, "expected a number or a numeric expression but found the condition '(b > c)'"),
        ("(x > 1", 6, "expected AND, OR or ')' but found end of expression"),
        ("(x 5) > 1", 3, "expected an operator or ')' but found '5'"),
        ("x > 1 )", 6, "expected AND, OR or end of expression but found ')'"),
        ("x = 5", 2, "expected a comparison operator (<, <=, >, >=, == or !=) but found '='"),
        ("x > 300x", 4, "expected a number such as 40_000_000, 1.5, 2e6, 90% or 300s but found '300x'"),
        ("x > 1__0", 4, "expected a number such as 40_000_000, 1.5, 2e6, 90% or 300s but found '1__0'"),
        ("x > 2e", 4, "expected a number such as 40_000_000, 1.5, 2e6, 90% or 300s but found '2e'"),
        ("x > 1e999", 4, "expected a finite number but found '1e999'"),
        ("x > NOT y", 4, "expected a number, a name or '(' but found 'NOT'"),
        ("x >", 3, "expected a number, a name or '(' but found end of expression"),
        ("x > 1 $", 6, "expected AND, OR or end of expression but found '$'"),
    ],
)
def test_error_position_and_message(text: str, position: int, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse(text)
    error = caught.value
    assert error.position == position
    assert str(error) == f"at column {position + 1}: {message}"
    assert message.startswith(f"expected {error.expected} but found {error.found}")


def test_limits_raise_expression_errors_not_recursion_errors() -> None:
    fine = "(" * 90 + "x" + ")" * 90 + " > 1"
    assert active(fine, x=2) is True
    for deep in ("(" * 4000 + "x" + ")" * 4000 + " > 1", "-" * 5000 + "x > 1", "NOT " * 2000 + "x > 1"):
        with pytest.raises(ExpressionError, match=f"nested more than {MAX_DEPTH} levels deep"):
            parse(deep)
    deep_tree = "x > 1"
    for _ in range(60):  # one parser level but two tree levels each: the tree's depth is checked too
        deep_tree = f"({deep_tree} AND x > 1 OR x > 1)"
    with pytest.raises(ExpressionError, match=f"nested more than {MAX_DEPTH} levels deep"):
        parse(deep_tree)
    with pytest.raises(ExpressionError, match=f"longer than {MAX_LENGTH} characters"):
        parse("x > " + "1" * MAX_LENGTH)


def test_a_long_flat_chain_parses_flat() -> None:
    text = "x > " + " + ".join(["1"] * 2000)
    assert parse(text).evaluate({"x": 2001}) == Outcome(True, 2001.0)
    assert active(" OR ".join(["x > 1"] * 1000), x=2) is True


def test_non_strings_are_expression_errors() -> None:
    with pytest.raises(ExpressionError, match="expected a string but found 5"):
        parse(5)  # type: ignore[arg-type]


def test_expression_error_pickles() -> None:
    with pytest.raises(ExpressionError) as caught:
        parse("x >")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (str(copy), copy.position, copy.expected, copy.found) == (
        str(caught.value),
        caught.value.position,
        caught.value.expected,
        caught.value.found,
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("300s", 300),
        ("5m", 300),
        (" 2h ", 7200),
        ("300", 300),
        (42, 42.0),
        ("1h30m", 5400),  # Prometheus' compound form, as `for:` in a Prometheus rule takes it
        ("1w", 604800),
        ("1d12h", 129600),
        ("250ms", 0.25),
        ("0.5s", 0.5),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["90%", "-5m", "5x", "5 m", "", True, math.inf, "1e999", "x", "30m1h", "1h30"])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ExpressionError, match="expected a duration such as 300s"):
        parse_duration(text)  # type: ignore[arg-type]


def test_parse_number() -> None:
    assert parse_number("-1.5e3") == -1500.0
    with pytest.raises(ExpressionError, match="expected end of the number but found 'x'"):
        parse_number("5 x")


# --- safety ---------------------------------------------------------------------------------------


PAYLOADS = [
    "__import__('os').system('touch {marker}')",
    "__import__('os').system('touch {marker}') > 0",
    "x > 0 OR __import__('os').system('touch {marker}')",
    "(lambda: __import__('os').system('touch {marker}'))() > 0",
    "().__class__.__bases__[0].__subclasses__() > 0",
    "open('{marker}', 'w').write('x') > 0",
    "exec(\"open('{marker}', 'w')\") > 0",
    "eval('1') > 0",
    "x.__class__.__init__(1) > 0",
    "[x for x in ()] > 0",
    "x if x else y",
    "x > 0; import os",
    "`touch {marker}` > 0",
    "$(touch {marker}) > 0",
    "f'{{x}}' > 0",
]


@pytest.fixture
def no_dynamic_code(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"dynamic code execution with {args!r}")

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, refuse)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_code_is_never_executed(payload: str, tmp_path, no_dynamic_code: None) -> None:
    marker = tmp_path / "executed"
    with pytest.raises(ExpressionError):
        parse(payload.format(marker=marker))
    assert not marker.exists()


def test_dotted_names_are_looked_up_as_keys_not_attributes() -> None:
    expression = parse("x.__class__ > 0")
    assert expression.names == {"x.__class__"}
    assert expression.evaluate({"x": 1}) == Outcome(None, None)
    assert expression.evaluate({"x.__class__": 1}) == Outcome(True, 1.0)


TOKENS = ["x", "y", "1", "2.5", "90%", "5m", "(", ")", "+", "-", "*", "/", "<", "<=", ">", "==", "!="]
TOKENS += ["AND", "or", "NOT", "$", "1e", "", " ", "__import__", "'", ".", "1_"]


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_arbitrary_text_raises_only_expression_errors(text: str) -> None:
    try:
        parse(text).evaluate({"x": 1.0})
    except ExpressionError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=25).map(" ".join))
def test_token_soup_raises_only_expression_errors(text: str) -> None:
    try:
        expression = parse(text)
    except ExpressionError as error:
        assert 0 <= error.position <= len(text)
    else:
        expression.evaluate({"x": 1.0, "y": 0.0})


# --- grammar-generated expressions against a reference evaluator ----------------------------------

NAMES = ("a", "b", "c.d")


@dataclass(frozen=True)
class Lit:
    text: str
    value: float


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class Neg:
    operand: object


@dataclass(frozen=True)
class Bin:
    operator: str
    left: object
    right: object


@dataclass(frozen=True)
class Group:
    inner: object


POWER = {"OR": 1, "AND": 2, "<": 4, "<=": 4, ">": 4, ">=": 4, "==": 4, "!=": 4, "+": 5, "-": 5, "*": 6, "/": 6}
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")


def literals() -> st.SearchStrategy[Lit]:
    integers = st.integers(0, 10**6)
    return st.one_of(
        st.integers(0, 9).map(lambda n: Lit(str(n), float(n))),  # small, so comparisons go both ways
        integers.map(lambda n: Lit(f"{n:_}", float(n))),
        st.floats(0, 1e9, allow_nan=False).map(lambda x: Lit(repr(x), x)),
        integers.map(lambda n: Lit(f"{n}%", n / 100)),
        integers.map(lambda n: Lit(f"{n}ms", n / 1000)),
        st.tuples(integers, st.sampled_from([("s", 1), ("m", 60), ("h", 3600), ("d", 86400)])).map(
            lambda pair: Lit(f"{pair[0]}{pair[1][0]}", float(pair[0] * pair[1][1]))
        ),
    )


LEAVES = [Var(name) for name in NAMES] + [
    Lit(text, value)
    for text, value in [("0", 0.0), ("1", 1.0), ("2", 2.0), ("3", 3.0), ("7", 7.0), ("1_000", 1000.0)]
    + [("2.5", 2.5), ("1e-3", 0.001), ("90%", 0.9), ("250ms", 0.25), ("5m", 300.0), ("2h", 7200.0)]
]


@st.composite
def numerics(draw: st.DrawFn, depth: int = 3) -> object:
    """Mostly binary operators over small values, so precedence and associativity show in results."""
    kind = draw(st.sampled_from(["leaf", "bin", "bin", "bin", "neg", "group"])) if depth else "leaf"
    if kind == "leaf":
        return draw(st.sampled_from(LEAVES))
    if kind == "bin":
        return Bin(draw(st.sampled_from("+-*/")), draw(numerics(depth - 1)), draw(numerics(depth - 1)))
    return (Neg if kind == "neg" else Group)(draw(numerics(depth - 1)))


@st.composite
def conditions(draw: st.DrawFn, depth: int = 3) -> object:
    kind = draw(st.sampled_from(["comparison", "logic", "logic", "not", "group"])) if depth else "comparison"
    if kind == "comparison":
        return Bin(draw(st.sampled_from(COMPARISONS)), draw(numerics(2)), draw(numerics(2)))
    if kind == "logic":
        return Bin(draw(st.sampled_from(["AND", "OR"])), draw(conditions(depth - 1)), draw(conditions(depth - 1)))
    if kind == "not":
        return Bin("NOT", None, draw(conditions(depth - 1)))
    return Group(draw(conditions(depth - 1)))


def power(node: object) -> int:
    if isinstance(node, Bin):
        return 3 if node.operator == "NOT" else POWER[node.operator]
    return 7 if isinstance(node, Neg) else 8


def render(node: object) -> str:
    """The text with only the parentheses that precedence requires (plus explicit Groups)."""
    match node:
        case Lit(text):
            return text
        case Var(name):
            return name
        case Group(inner):
            return f"({render(inner)})"
        case Neg(operand):
            return "-" + wrap(operand, power(operand) < 7)
        case Bin("NOT", _, operand):
            return "NOT " + wrap(operand, power(operand) < 3)
        case Bin(operator, left, right):
            own = POWER[operator]
            return f"{wrap(left, power(left) < own)} {operator} {wrap(right, power(right) <= own)}"
    raise AssertionError(node)


def wrap(node: object, needed: bool) -> str:
    return f"({render(node)})" if needed else render(node)


def reference_number(node: object, signals: dict[str, float | None]) -> float | None:
    match node:
        case Lit(_, value):
            return value
        case Var(name):
            value = signals.get(name)
            return None if value is None or math.isnan(value) else value
        case Group(inner):
            return reference_number(inner, signals)
        case Neg(operand):
            value = reference_number(operand, signals)
            return None if value is None else -value
        case Bin(operator, left, right):
            x, y = reference_number(left, signals), reference_number(right, signals)
            if x is None or y is None or (operator == "/" and y == 0):
                return None
            result = {"+": x + y, "-": x - y, "*": x * y}[operator] if operator != "/" else x / y
            return None if math.isnan(result) else result
    raise AssertionError(node)


def reference_condition(node: object, signals: dict[str, float | None]) -> tuple[bool | None, float | None]:
    match node:
        case Group(inner):
            return reference_condition(inner, signals)
        case Bin("NOT", _, operand):
            truth, value = reference_condition(operand, signals)
            return (None if truth is None else not truth), value
        case Bin("AND", left, right):
            (p, value), (q, _) = reference_condition(left, signals), reference_condition(right, signals)
            if p is False or q is False:
                return False, None
            return (None, None) if p is None or q is None else (True, value)
        case Bin("OR", left, right):
            (p, v), (q, w) = reference_condition(left, signals), reference_condition(right, signals)
            if p is True or q is True:
                return True, v if p is True else w
            return (None, None) if p is None or q is None else (False, None)
        case Bin(operator, left, right):
            x, y = reference_number(left, signals), reference_number(right, signals)
            if x is None or y is None:
                return None, x
            truth = {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y, "==": x == y, "!=": x != y}[operator]
            return truth, x
    raise AssertionError(node)


def names_in(node: object) -> set[str]:
    match node:
        case Var(name):
            return {name}
        case Group(inner) | Neg(inner):
            return names_in(inner)
        case Bin(_, left, right):
            return names_in(left) | names_in(right)
    return set()


signal_values = st.one_of(st.integers(-3, 3).map(float), st.none(), st.floats())


@settings(max_examples=200, deadline=None)
@given(conditions(), st.fixed_dictionaries({name: signal_values for name in NAMES}))
def test_generated_expressions_match_the_reference(tree: object, signals: dict[str, float | None]) -> None:
    text = render(tree)
    expression = parse(text)
    truth, value = reference_condition(tree, signals)
    assert expression.evaluate(signals) == Outcome(truth, value if truth else None), text
    assert expression.names == names_in(tree)


@settings(max_examples=200, deadline=None)
@given(literals())
def test_generated_literals_have_their_values(literal: Lit) -> None:
    assert parse_number(literal.text) == literal.value
    assert parse(f"x == {literal.text}").evaluate({"x": literal.value}) == Outcome(True, literal.value)
