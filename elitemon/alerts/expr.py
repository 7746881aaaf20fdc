"""The threshold language of alert rules, parsed by hand and never handed to `eval`.

Rule files come from users and are reloaded while a cluster trains, so a threshold must not be able to
run code, and a typo must point at its column. The grammar is small (numbers, names, `+ - * /`,
comparisons, AND/OR/NOT), so a Pratt parser over a token list gives exact error columns, a fixed bound
on recursion, and our literals (`40_000_000`, `90%` = 0.9, `5m` = 300 seconds), none of which Python's
`ast` module would.

Evaluation follows Prometheus on missing data: a signal that is absent, None or NaN is *unknown*, a
comparison with an unknown side is unknown, and Kleene's three-valued AND/OR/NOT carry that up. The
evaluator can then tell "no data" (`Outcome.active is None`) from "fine" (`False`).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "Expression",
    "ExpressionError",
    "Outcome",
    "parse",
    "is_name",
    "compound_duration",
    "parse_duration",
    "parse_number",
]

MAX_LENGTH = 10_000
"""Longest accepted expression text, in characters."""

MAX_DEPTH = 100
"""Deepest accepted nesting, in parser calls and in tree levels: keeps both far below Python's
recursion limit, so a hostile input gets an ExpressionError and never a RecursionError."""

Signals = Mapping[str, float | None]


class ExpressionError(ValueError):
    """A threshold that does not parse. `position` is the 0-based offset into the text; the message
    shows it 1-based (`at column 13: ...`), like an editor's column, and says what was expected and
    what was found, so the rule loader can add the file's line and column in front."""

    def __init__(self, detail: str, position: int, expected: str = "", found: str = "") -> None:
        super().__init__(f"at column {position + 1}: {detail}")
        self.detail = detail
        self.position = position
        self.expected = expected
        self.found = found

    @classmethod
    def unexpected(cls, position: int, expected: str, found: str) -> ExpressionError:
        """The usual parse error: `expected <expected> but found <found>`."""
        return cls(f"expected {expected} but found {found}", position, expected, found)

    def __reduce__(self):
        # Ray pickles exceptions; the default reduction would call __init__ with the message only.
        return type(self), (self.detail, self.position, self.expected, self.found)


# --- tokens -------------------------------------------------------------------------------------


class _Kind(enum.Enum):
    NUMBER = "number"
    NAME = "name"
    KEYWORD = "keyword"
    OPERATOR = "operator"
    UNKNOWN = "unknown"
    END = "end"


class _Token(NamedTuple):
    kind: _Kind
    text: str
    position: int
    value: float = 0.0


_DIGITS = r"[0-9](?:_?[0-9])*"
_NUMBER = re.compile(rf"({_DIGITS}(?:\.{_DIGITS})?(?:[eE][+-]?{_DIGITS})?)(%|ms|[smhd])?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_STUCK_ON = re.compile(r"[A-Za-z0-9_.%]*")
_KEYWORDS = frozenset({"AND", "OR", "NOT"})
_OPERATORS = ("<=", ">=", "==", "!=", "<", ">", "+", "-", "*", "/", "(", ")")
_MULTIPLIERS = {None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DIVISORS = {"%": 100.0, "ms": 1000.0}  # dividing keeps 95% == 0.95 exactly, where * 0.01 would not
_NUMBER_EXAMPLES = "a number such as 40_000_000, 1.5, 2e6, 90% or 300s"


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    index = 0
    while index < len(text):
        char = text[index]
        if char.isspace():
            index += 1
        elif number := _NUMBER.match(text, index):
            tokens.append(_number_token(text, number))
            index = number.end()
        elif name := _NAME.match(text, index):
            word = name.group()
            kind = _Kind.KEYWORD if word.upper() in _KEYWORDS else _Kind.NAME
            tokens.append(_Token(kind, word, index))
            index = name.end()
        else:
            operator = next((op for op in _OPERATORS if text.startswith(op, index)), None)
            tokens.append(_Token(_Kind.OPERATOR if operator else _Kind.UNKNOWN, operator or char, index))
            index += len(operator or char)
    tokens.append(_Token(_Kind.END, "", len(text)))
    return tokens


def _number_token(text: str, match: re.Match[str]) -> _Token:
    start, end = match.span()
    if stuck := _STUCK_ON.match(text, end).group():
        raise ExpressionError.unexpected(start, _NUMBER_EXAMPLES, _describe_text(text[start:end] + stuck))
    digits, suffix = match.groups()
    value = float(digits.replace("_", ""))
    value = value / _DIVISORS[suffix] if suffix in _DIVISORS else value * _MULTIPLIERS[suffix]
    if not math.isfinite(value):
        raise ExpressionError.unexpected(start, "a finite number", _describe_text(match.group()))
    return _Token(_Kind.NUMBER, match.group(), start, value)


def _describe_text(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _describe(token: _Token) -> str:
    return "end of expression" if token.kind is _Kind.END else _describe_text(token.text)


def is_name(text: str) -> bool:
    """Whether `text` can be a name in a threshold: `[A-Za-z_][A-Za-z0-9_.]*` and not AND/OR/NOT."""
    return bool(_NAME.fullmatch(text)) and text.upper() not in _KEYWORDS


def parse_number(text: str) -> float:
    """The value of one number literal (`1.5`, `40_000_000`, `90%`, `5m`), for config values that
    share the threshold language's literals."""
    tokens = _tokenize(_checked_text(text))
    negative = tokens[0].kind is _Kind.OPERATOR and tokens[0].text == "-"
    number = tokens[1] if negative else tokens[0]
    if number.kind is not _Kind.NUMBER:
        raise ExpressionError.unexpected(number.position, _NUMBER_EXAMPLES, _describe(number))
    rest = tokens[2 if negative else 1]
    if rest.kind is not _Kind.END:
        raise ExpressionError.unexpected(rest.position, "end of the number", _describe(rest))
    return -number.value if negative else number.value


_COMPOUND_DURATION = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?")
_COMPOUND_UNITS_S = (365 * 86400.0, 7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)


def compound_duration(text: str) -> float | None:
    """Seconds in a Prometheus duration, whole units from the largest down (`1h30m`, `2w`, `250ms`,
    `1y`: Prometheus' model.ParseDuration, which Alertmanager also uses); None for other text."""
    parts = _COMPOUND_DURATION.fullmatch(text.strip())
    if parts is None or not any(parts.groups()):
        return None
    return sum(int(count) * unit for count, unit in zip(parts.groups(), _COMPOUND_UNITS_S, strict=True) if count)


def parse_duration(value: str | float) -> float:
    """Seconds in a duration: a number of seconds, a Prometheus duration (`300s`, `5m`, `1h30m`,
    `1d`, `250ms`) or a decimal with one unit (`0.5s`, `1.5h`). Rejects percentages, negatives and
    infinities, which are never a sensible wait."""
    expected = "a duration such as 300s, 5m, 1h30m, 1d or 250ms"
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (compound := compound_duration(value)) is not None:
        seconds = compound
    elif isinstance(value, str) and not value.strip().endswith("%"):
        try:
            seconds = parse_number(value)
        except ExpressionError as error:
            raise ExpressionError.unexpected(error.position, expected, error.found) from None
    else:
        seconds = math.nan
    if not 0 <= seconds < math.inf:
        raise ExpressionError.unexpected(0, expected, _describe_text(str(value).strip()))
    return seconds


def _checked_text(text: str) -> str:
    if not isinstance(text, str):
        raise ExpressionError.unexpected(0, "a string", repr(text))
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression is longer than {MAX_LENGTH} characters", MAX_LENGTH)
    return text


# --- the tree -----------------------------------------------------------------------------------


def _signal(signals: Signals, name: str) -> float | None:
    raw = signals.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"signal {name!r} is {raw!r}, not a number") from None
    return None if math.isnan(value) else value


class ArithmeticOperator(enum.Enum):
    """`+ - * /`. Unknown in, unknown out; dividing by zero is unknown too, never an exception."""

    ADD = "+"
    SUBTRACT = "-"
    MULTIPLY = "*"
    DIVIDE = "/"

    def apply(self, left: float | None, right: float | None) -> float | None:
        """`left <op> right`, or None when either is unknown or the result is undefined."""
        if left is None or right is None:
            return None
        match self:
            case ArithmeticOperator.ADD:
                result = left + right
            case ArithmeticOperator.SUBTRACT:
                result = left - right
            case ArithmeticOperator.MULTIPLY:
                result = left * right
            case ArithmeticOperator.DIVIDE:
                if right == 0:
                    return None
                result = left / right
        return None if math.isnan(result) else result


class ComparisonOperator(enum.Enum):
    """`< <= > >= == !=` between two known numbers."""

    LESS = "<"
    LESS_EQUAL = "<="
    GREATER = ">"
    GREATER_EQUAL = ">="
    EQUAL = "=="
    NOT_EQUAL = "!="

    def apply(self, left: float, right: float) -> bool:
        """Whether `left <op> right` holds."""
        match self:
            case ComparisonOperator.LESS:
                return left < right
            case ComparisonOperator.LESS_EQUAL:
                return left <= right
            case ComparisonOperator.GREATER:
                return left > right
            case ComparisonOperator.GREATER_EQUAL:
                return left >= right
            case ComparisonOperator.EQUAL:
                return left == right
            case ComparisonOperator.NOT_EQUAL:
                return left != right


Decision = tuple[bool | None, float | None]
"""A condition's truth (None = unknown) and the left-hand value that decided it, for `$value`."""


class LogicalOperator(enum.Enum):
    """AND and OR in Kleene's three-valued logic: a definite answer wins over unknown."""

    AND = "AND"
    OR = "OR"

    def combine(self, decisions: list[Decision]) -> Decision:
        """AND: False if any is False, else unknown if any is, else True with the first's value.
        OR: True (with that operand's value) if any is True, else unknown if any is, else False."""
        if self is LogicalOperator.AND:
            if any(truth is False for truth, _ in decisions):
                return False, None
            if any(truth is None for truth, _ in decisions):
                return None, None
            return True, decisions[0][1]
        for truth, value in decisions:
            if truth is True:
                return True, value
        if any(truth is None for truth, _ in decisions):
            return None, None
        return False, None


@dataclass(frozen=True, slots=True)
class Number:
    """A literal, already scaled (`90%` holds 0.9, `5m` holds 300.0)."""

    value: float
    position: int

    def compute(self, signals: Signals) -> float | None:
        """The literal's value."""
        return self.value


@dataclass(frozen=True, slots=True)
class Name:
    """A signal or configuration value looked up at evaluation time."""

    name: str
    position: int

    def compute(self, signals: Signals) -> float | None:
        """The signal's value, or None when it is missing, None or NaN."""
        return _signal(signals, self.name)


@dataclass(frozen=True, slots=True)
class Negate:
    """Unary minus."""

    operand: Numeric
    position: int

    def compute(self, signals: Signals) -> float | None:
        """Minus the operand, or None when it is unknown."""
        value = self.operand.compute(signals)
        return None if value is None else -value


@dataclass(frozen=True, slots=True)
class Arithmetic:
    """A left-associative run of operators of one precedence (`a - b + c`), kept flat so that long
    sums do not make a deep tree."""

    first: Numeric
    rest: tuple[tuple[ArithmeticOperator, Numeric], ...]
    position: int

    def compute(self, signals: Signals) -> float | None:
        """The run's value, left to right; None once any step is unknown."""
        result = self.first.compute(signals)
        for operator, operand in self.rest:
            result = operator.apply(result, operand.compute(signals))
        return result


@dataclass(frozen=True, slots=True)
class Comparison:
    """`left <op> right`; its left side is the value an alert reports."""

    operator: ComparisonOperator
    left: Numeric
    right: Numeric
    position: int

    def decide(self, signals: Signals) -> Decision:
        """Unknown when either side is; otherwise the comparison, with the left side's value."""
        left, right = self.left.compute(signals), self.right.compute(signals)
        if left is None or right is None:
            return None, left
        return self.operator.apply(left, right), left


@dataclass(frozen=True, slots=True)
class Not:
    """NOT: flips True and False, keeps unknown."""

    operand: Condition
    position: int

    def decide(self, signals: Signals) -> Decision:
        """The operand's truth flipped, with the operand's value."""
        truth, value = self.operand.decide(signals)
        return (None if truth is None else not truth), value


@dataclass(frozen=True, slots=True)
class Logical:
    """A flat run of AND or of OR (`a AND b AND c`)."""

    operator: LogicalOperator
    operands: tuple[Condition, ...]
    position: int

    def decide(self, signals: Signals) -> Decision:
        """The operands combined in three-valued logic."""
        decisions = []
        for operand in self.operands:
            decisions.append(operand.decide(signals))
        return self.operator.combine(decisions)


Numeric = Number | Name | Negate | Arithmetic
Condition = Comparison | Not | Logical
_NUMERIC = (Number, Name, Negate, Arithmetic)


def _children(node: Numeric | Condition) -> tuple[Numeric | Condition, ...]:
    match node:
        case Negate(operand) | Not(operand):
            return (operand,)
        case Arithmetic(first, rest):
            return (first, *(operand for _, operand in rest))
        case Comparison(_, left, right):
            return left, right
        case Logical(_, operands):
            return operands
    return ()


def _check_depth(root: Condition) -> None:
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ExpressionError(f"expression is nested more than {MAX_DEPTH} levels deep", node.position)
        stack.extend((child, depth + 1) for child in _children(node))


# --- the parser ---------------------------------------------------------------------------------

_INFIX_POWER = {"OR": 1, "AND": 2, "<": 4, "<=": 4, ">": 4, ">=": 4, "==": 4, "!=": 4}
_INFIX_POWER.update({"+": 5, "-": 5, "*": 6, "/": 6})
_NOT_POWER = 3
_NEGATE_POWER = 7
_COMPARISON_OPERATOR = "a comparison operator (<, <=, >, >=, == or !=)"


class _Parser:
    """Precedence climbing: OR < AND < NOT < comparison < `+ -` < `* /` < unary minus. Each operand is
    parsed as a number or as a condition, so type errors surface where the token is wrong."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._tokens = _tokenize(text)
        self._index = 0
        self._depth = 0
        self._parens = 0
        self.names: list[tuple[str, int]] = []

    def parse(self) -> Condition:
        root = self._condition(0)
        token = self._peek()
        if token.kind is not _Kind.END:
            raise ExpressionError.unexpected(token.position, "AND, OR or end of expression", _describe(token))
        _check_depth(root)
        return root

    def _peek(self) -> _Token:
        return self._tokens[self._index]

    def _advance(self) -> _Token:
        token = self._tokens[self._index]
        self._index += 1
        return token

    def _condition(self, min_power: int) -> Condition:
        node = self._expression(min_power, allow_not=True)
        if isinstance(node, _NUMERIC):
            token = self._peek()
            raise ExpressionError.unexpected(token.position, _COMPARISON_OPERATOR, _describe(token))
        return node

    def _numeric(self, min_power: int) -> Numeric:
        start = self._peek().position
        node = self._expression(min_power, allow_not=False)
        if not isinstance(node, _NUMERIC):
            found = "the condition " + _describe_text(self._text[start : self._peek().position].strip())
            raise ExpressionError.unexpected(start, "a number or a numeric expression", found)
        return node

    def _expression(self, min_power: int, *, allow_not: bool) -> Numeric | Condition:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            position = self._peek().position
            raise ExpressionError(f"expression is nested more than {MAX_DEPTH} levels deep", position)
        left = self._prefix(allow_not)
        while (power := self._infix_power(self._peek())) > min_power:
            token = self._peek()
            if isinstance(left, _NUMERIC):
                if token.text.upper() in _KEYWORDS:
                    break  # the caller wanted a condition and reports the missing comparison
                left = self._numeric_infix(left, power)
            elif token.kind is _Kind.KEYWORD:
                left = self._logical(left, power)
            else:
                self._raise_after_condition(token)
        self._depth -= 1
        return left

    @staticmethod
    def _infix_power(token: _Token) -> int:
        if token.kind in (_Kind.OPERATOR, _Kind.KEYWORD):
            return _INFIX_POWER.get(token.text.upper(), 0)
        return 0

    def _numeric_infix(self, left: Numeric, power: int) -> Numeric | Condition:
        token = self._advance()
        right = self._numeric(power)
        if power == _INFIX_POWER["<"]:
            return Comparison(ComparisonOperator(token.text), left, right, left.position)
        operator = ArithmeticOperator(token.text)
        if isinstance(left, Arithmetic) and _INFIX_POWER[left.rest[0][0].value] == power:
            return Arithmetic(left.first, (*left.rest, (operator, right)), left.position)
        return Arithmetic(left, ((operator, right),), left.position)

    def _logical(self, left: Condition, power: int) -> Logical:
        operator = LogicalOperator(self._advance().text.upper())
        right = self._condition(power)
        if isinstance(left, Logical) and left.operator is operator:
            return Logical(operator, (*left.operands, right), left.position)
        return Logical(operator, (left, right), left.position)

    def _raise_after_condition(self, token: _Token) -> None:
        closer = "')'" if self._parens else "end of expression"
        found = _describe(token)
        if _INFIX_POWER.get(token.text) == _INFIX_POWER["<"]:
            found += " (comparisons cannot be chained: join them with AND)"
        raise ExpressionError.unexpected(token.position, f"AND, OR or {closer}", found)

    def _prefix(self, allow_not: bool) -> Numeric | Condition:
        token = self._advance()
        if token.kind is _Kind.NUMBER:
            return Number(token.value, token.position)
        if token.kind is _Kind.NAME:
            self.names.append((token.text, token.position))
            return Name(token.text, token.position)
        if token.kind is _Kind.OPERATOR and token.text == "(":
            return self._parenthesised()
        if token.kind is _Kind.OPERATOR and token.text == "-":
            return Negate(self._numeric(_NEGATE_POWER), token.position)
        if allow_not and token.text.upper() == "NOT" and token.kind is _Kind.KEYWORD:
            return Not(self._condition(_NOT_POWER), token.position)
        expected = "a number, a name, NOT or '('" if allow_not else "a number, a name or '('"
        raise ExpressionError.unexpected(token.position, expected, _describe(token))

    def _parenthesised(self) -> Numeric | Condition:
        self._parens += 1
        node = self._expression(0, allow_not=True)
        token = self._advance()
        if token.text != ")" or token.kind is not _Kind.OPERATOR:
            expected = "an operator or ')'" if isinstance(node, _NUMERIC) else "AND, OR or ')'"
            raise ExpressionError.unexpected(token.position, expected, _describe(token))
        self._parens -= 1
        return node


# --- the public face ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a threshold says about one set of signals.

    `active` is None when the data could not decide (a missing signal, a division by zero). `value`
    is the left-hand side of the comparison that made it True (OR: the first true operand's; AND: the
    first operand's), the alert's `$value`; None unless `active` is True.
    """

    active: bool | None
    value: float | None = None


@dataclass(frozen=True)
class Expression:
    """A parsed threshold. Build it with `parse`; `names` are the signals it reads, and
    `name_positions` says where each occurrence is, so a rule file can point at an unknown name."""

    text: str
    root: Condition
    name_positions: tuple[tuple[str, int], ...]
    names: frozenset[str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", frozenset(name for name, _ in self.name_positions))

    def evaluate(self, signals: Signals) -> Outcome:
        """The threshold over `signals` (a missing, None or NaN signal is unknown); never raises for
        missing data or arithmetic, only a ValueError for a signal value that is not a number."""
        truth, value = self.root.decide(signals)
        return Outcome(truth, value if truth else None)

    def __str__(self) -> str:
        return self.text


def parse(text: str) -> Expression:
    """Parse a threshold such as `gpu_memory_usage > 90% OR cpu_usage > 95%`.

    Raises ExpressionError, and nothing else, for any input: bad syntax, a top level that is not a
    condition, operands of the wrong kind, more than MAX_LENGTH characters or MAX_DEPTH nesting.
    """
    parser = _Parser(_checked_text(text))
    root = parser.parse()
    return Expression(text, root, tuple(parser.names))
