"""Alert rule files: YAML in, validated `Rule`s out, and every problem at its line and column.

A rule file is edited by hand and reloaded into a running monitor, so a mistake should be reported
all at once and precisely, the way a compiler does (`rules.yaml:7:16: rule 'x': threshold: ...`).
That is why the file is read as PyYAML's composed node tree rather than as plain data: the nodes keep
their marks (line, column) and show duplicate keys, which `yaml.safe_load` silently drops.

Only `alert_rules` and `values` are interpreted here. `route`, `receivers`, `inhibit_rules` and
`settings` pass through as plain data with their line numbers, for the modules that own them.
"""

from __future__ import annotations

import difflib
import enum
import math
import os
import re
import string
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from elitemon.alerts._model import Severity
from elitemon.alerts.expr import Expression, ExpressionError, is_name, parse, parse_duration, parse_number

__all__ = [
    "DEFAULT_RULES_PATH",
    "PASS_THROUGH_SECTIONS",
    "Per",
    "Problem",
    "Rule",
    "RuleFile",
    "RuleFileError",
    "check_template",
    "load_rules",
    "loads_rules",
]

DEFAULT_RULES_PATH = Path(__file__).with_name("default_rules.yaml")
"""The rules elitemon ships with: the product spec's five."""

PASS_THROUGH_SECTIONS = ("route", "receivers", "inhibit_rules", "settings")
_SECTIONS = ("alert_rules", "values", *PASS_THROUGH_SECTIONS)
_RULE_KEYS = ("threshold", "severity", "action", "for", "keep_firing_for", "labels", "per", "description")
_REQUIRED_KEYS = ("threshold", "severity", "action")
_RESERVED_LABELS = frozenset({"alertname", "severity"})
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_NESTING = 100  # PyYAML composes and constructs recursively; deeper files are refused up front
_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"


class Per(enum.Enum):
    """What one alert instance is about: the rule is evaluated per agent, node or GPU, and the alert
    carries that entity as a label of the same name (`node="worker-3"`)."""

    AGENT = "agent"
    NODE = "node"
    GPU = "gpu"

    @property
    def labels(self) -> tuple[str, ...]:
        """The label names an instance carries: a GPU is numbered within its node, and an agent
        carries the node it runs on (so that `node_failure` inhibits its alerts, `equal: [node]`)."""
        return (self.value, "node") if self in (Per.GPU, Per.AGENT) else (self.value,)

    @classmethod
    def parse(cls, text: str) -> Per:
        """The entity named by `text` (any case); a ValueError lists the valid names."""
        try:
            return cls(str(text).strip().lower())
        except ValueError:
            names = ", ".join(member.value for member in cls)
            raise ValueError(f"unknown per {text!r}: expected one of {names}") from None


# --- description templates ----------------------------------------------------------------------

_FIELD = re.compile(r"labels\[(?P<label>[A-Za-z_][A-Za-z0-9_]*)\]|(?P<name>[A-Za-z_][A-Za-z0-9_]*)")
_FIELD_HELP = "expected {value}, {labels[name]} or {name} with an optional format spec"


class _TemplateFormatter(string.Formatter):
    """`str.format` limited to `{value}`, `{labels[node]}` and `{node}` plus a format spec.

    Plain `str.format` resolves `{value.__class__.__init__.__globals__}`, which would let a rule file
    read the process's memory; looking fields up by a fixed pattern here means no attribute or index
    access ever happens. A missing label renders empty and an unknown value as "n/a".
    """

    def get_field(self, field_name: str, args: Any, kwargs: Mapping[str, Any]) -> tuple[Any, str]:
        match = _FIELD.fullmatch(field_name)
        if match is None or field_name == "labels":
            raise ValueError(f"field {{{field_name}}}: {_FIELD_HELP}")
        if match["name"] == "value":
            return kwargs["value"], field_name
        return str(kwargs["labels"].get(match["label"] or match["name"], "")), field_name

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion:
            raise ValueError(f"conversion !{conversion}: {_FIELD_HELP}")
        return value

    def format_field(self, value: Any, format_spec: str) -> str:
        return "n/a" if value is None else format(value, format_spec)


_FORMATTER = _TemplateFormatter()


def check_template(template: str) -> None:
    """Raise a ValueError naming the first field of `template` that rendering would refuse, so a bad
    description fails when the file loads and not when the alert fires."""
    if not isinstance(template, str):
        raise ValueError(f"a template must be a string, got {template!r}")
    try:
        fields = list(_FORMATTER.parse(template))
    except ValueError as error:
        raise ValueError(f"bad template {template!r}: {error}") from None
    for _, field_name, spec, conversion in fields:
        if field_name is None:
            continue
        _FORMATTER.convert_field(None, conversion)
        _FORMATTER.get_field(field_name, (), {"value": None, "labels": {}})
        if "{" in spec:
            raise ValueError(f"field {{{field_name}:{spec}}}: nested fields in a format spec are not allowed")
        try:
            format(0.5 if field_name == "value" else "text", spec)
        except ValueError as error:
            raise ValueError(f"field {{{field_name}:{spec}}}: {error}") from None


# --- rules ---------------------------------------------------------------------------------------


def _check_label_name(name: str, per: Per | None = None) -> None:
    if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
        raise ValueError(f"label name {name!r} must match [A-Za-z_][A-Za-z0-9_]* and not start with '__'")
    if name in _RESERVED_LABELS:
        raise ValueError(f"label {name!r} is set from the rule and cannot be given in labels")
    if per is not None and name in per.labels:
        raise ValueError(f"label {name!r} is set by `per: {per.value}` and cannot be given in labels")


def _check_seconds(name: str, seconds: float) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds < math.inf:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {name}={seconds!r}")


@dataclass(frozen=True)
class Rule:
    """One alert rule: when `expression` is active for `for_s` seconds the alert fires, and it keeps
    firing `keep_firing_for_s` after the expression stops being active (Prometheus' semantics).
    `per` makes one alert instance per agent, node or GPU; `line` is where the rule starts in its file.
    """

    name: str
    expression: Expression
    severity: Severity
    action: str
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    labels: Mapping[str, str] = field(default_factory=dict)
    per: Per | None = None
    description: str = ""
    line: int = 0

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"a rule needs a name, got name={self.name!r}")
        if not isinstance(self.expression, Expression):
            raise ValueError(f"expression must come from expr.parse, got expression={self.expression!r}")
        if not isinstance(self.severity, Severity):
            raise ValueError(f"severity must be a Severity, got severity={self.severity!r}")
        if self.per is not None and not isinstance(self.per, Per):
            raise ValueError(f"per must be a Per or None, got per={self.per!r}")
        _check_seconds("for_s", self.for_s)
        _check_seconds("keep_firing_for_s", self.keep_firing_for_s)
        for name, value in self.labels.items():
            _check_label_name(name, self.per)
            if not isinstance(value, str):
                raise ValueError(f"label {name!r} must have a string value, got {value!r}")
        check_template(self.description)
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))

    def render_description(self, labels: Mapping[str, str], value: float | None) -> str:
        """The description with `{value}` and the labels filled in; a missing label renders as an
        empty string and a missing value as "n/a"."""
        value = None if value is None else float(value)
        return _FORMATTER.vformat(self.description, (), {"value": value, "labels": labels})


@dataclass(frozen=True)
class RuleFile:
    """A loaded rule file. `values` are the file's named constants (such as `budget_threshold`): the
    evaluator must pass them to `Expression.evaluate` alongside the signals. `sections` holds the
    pass-through sections as plain data and `positions` the 1-based (line, column) of each section's
    key and of every key and list item inside it, by path as their owners' messages name them
    (`settings`, `settings.evaluation_interval`, `route.routes[0].receiver`); what lies under an
    alias is listed once, under its anchor's path."""

    rules: tuple[Rule, ...]
    values: Mapping[str, float]
    sections: Mapping[str, Any]
    positions: Mapping[str, tuple[int, int]]
    filename: str = "<string>"

    def position_of(self, message: str) -> tuple[int, int] | None:
        """Where a pass-through section's problem lies, when its message starts with a path
        (`route.routes[1].group_wait: ...`): the deepest part of that path the file has (the key
        itself, else the nearest enclosing one). None when the message names no path in the file."""
        written = [path for path in self.positions if message.startswith(f"{path}:")]
        if written:  # a key with a ':' of its own is matched whole
            return self.positions[max(written, key=len)]
        path = message.split(":", 1)[0]
        while path:
            if path in self.positions:
                return self.positions[path]
            shorter = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", path)
            path = shorter if shorter != path else ""
        return None


class Problem(NamedTuple):
    """One thing wrong in a rule file; `line` and `column` are 1-based, `rule` is None outside rules."""

    filename: str
    line: int
    column: int
    rule: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.filename}:{self.line}:{self.column}: "
        return where + (f"rule {self.rule!r}: " if self.rule is not None else "") + self.message


class RuleFileError(ValueError):
    """All the problems of a rule file, one per line in the message."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = list(problems)

    def __reduce__(self):
        # Ray pickles exceptions; the default reduction would pass the message as `problems`.
        return type(self), (self.problems,)


def load_rules(source: str | os.PathLike[str], *, known_names: Collection[str]) -> RuleFile:
    """Load the rule file at path `source`. `known_names` are the signals a threshold may read; the
    file's `values` are added to them. Raises RuleFileError listing every problem."""
    filename = os.fspath(source)
    data = Path(source).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise RuleFileError([Problem(filename, line, 1, None, f"not UTF-8 text: {error.reason}")]) from None
    return loads_rules(text, known_names=known_names, filename=filename)


def loads_rules(text: str, *, known_names: Collection[str], filename: str = "<string>") -> RuleFile:
    """Load a rule file from its text; `filename` only labels the problems. See `load_rules`."""
    return _Loader(filename, known_names).load(text)


# --- the loader ----------------------------------------------------------------------------------


def _suggest(word: str, candidates: Collection[str]) -> str:
    close = difflib.get_close_matches(word, sorted(candidates), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "an empty value" if node.tag == _NULL_TAG else str(node.value)


def _nesting(root: Node) -> int:
    deepest, stack, seen = 0, [(root, 1)], set()
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:  # aliases share nodes; a recursive alias would loop
            continue
        seen.add(id(node))
        deepest = max(deepest, depth)
        if isinstance(node, MappingNode):
            stack.extend((child, depth + 1) for pair in node.value for child in pair)
        elif isinstance(node, SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
    return deepest


_INVALID = object()


class _Names(Collection[str]):
    """The caller's known names plus the file's values. The caller's may be any Collection (say,
    one that accepts every `agent.<metric>` name), so membership is asked of it, not of a copy."""

    def __init__(self, known: Collection[str], values: frozenset[str]) -> None:
        self._known, self._values = known, values

    def __contains__(self, name: object) -> bool:
        return name in self._values or name in self._known

    def __iter__(self) -> Iterator[str]:
        yield from self._values
        yield from (name for name in self._known if name not in self._values)

    def __len__(self) -> int:
        return len(self._values) + sum(1 for name in self._known if name not in self._values)


class _Loader:
    """Walks one composed file, collecting Problems instead of stopping at the first."""

    def __init__(self, filename: str, known_names: Collection[str]) -> None:
        self._filename = filename
        self._known = known_names
        self._problems: list[Problem] = []
        self._yaml: yaml.SafeLoader | None = None

    def _report(
        self, node: Node | None, message: str, rule: str | None = None, line_column: tuple[int, int] | None = None
    ) -> None:
        if line_column is None:
            mark = node.start_mark if node is not None else None
            line_column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        self._problems.append(Problem(self._filename, *line_column, rule, message))

    def load(self, text: str) -> RuleFile:
        self._yaml = yaml.SafeLoader(text)
        try:
            root = self._compose()
            result = self._file(root) if root is not None else None
        finally:
            self._yaml.dispose()
        if self._problems:
            raise RuleFileError(sorted(self._problems, key=lambda problem: (problem.line, problem.column)))
        return result

    def _compose(self) -> Node | None:
        try:
            root = self._yaml.get_single_node()
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            context = f"{error.context}, " if error.context else ""
            line_column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            self._report(None, f"invalid YAML: {context}{error.problem}", line_column=line_column)
            return None
        except yaml.YAMLError as error:
            self._report(None, f"invalid YAML: {error}")
            return None
        except RecursionError:
            self._report(None, "invalid YAML: nested too deeply")
            return None
        if root is None:
            self._report(None, "the file is empty: expected a mapping with an 'alert_rules' section")
        elif _nesting(root) > _MAX_NESTING:
            self._report(root, f"the file is nested more than {_MAX_NESTING} levels deep")
            return None
        return root

    def _items(self, node: MappingNode, what: str, rule: str | None = None) -> list[tuple[str, Node, Node]]:
        """The mapping's (key, key node, value node) in order, reporting non-scalar and repeated keys."""
        items, first_lines = [], {}
        for key, value in node.value:
            if not isinstance(key, ScalarNode) or not key.value:
                self._report(key, f"expected a {what} name, found {_describe(key)}", rule)
            elif key.value in first_lines:
                line = first_lines[key.value]
                self._report(key, f"duplicate {what} {key.value!r} (first at line {line})", rule)
            else:
                first_lines[key.value] = key.start_mark.line + 1
                items.append((key.value, key, value))
        return items

    def _construct(self, node: Node, rule: str | None, what: str) -> Any:
        try:
            return self._yaml.construct_object(node, deep=True)
        except yaml.YAMLError as error:
            self._report(node, f"{what}: {getattr(error, 'problem', None) or error}", rule)
            return _INVALID

    def _file(self, root: Node) -> RuleFile | None:
        if not isinstance(root, MappingNode):
            self._report(root, f"expected a mapping with an 'alert_rules' section, found {_describe(root)}")
            return None
        found = {}
        for name, key, value in self._items(root, "section"):
            if name in _SECTIONS:
                found[name] = (key, value)
            else:
                valid = ", ".join(_SECTIONS)
                self._report(key, f"unknown section {name!r}: expected one of {valid}{_suggest(name, _SECTIONS)}")
        values = self._values(found["values"][1]) if "values" in found else {}
        if "alert_rules" not in found:
            self._report(root, "missing the 'alert_rules' section")
            rules = ()
        else:
            rules = self._rules(found["alert_rules"][1], _Names(self._known, frozenset(values)))
        sections = {name: found[name][1] for name in PASS_THROUGH_SECTIONS if name in found}
        for name, node in sections.items():
            self._check_duplicates(node, name)
        return RuleFile(
            rules=rules,
            values=MappingProxyType(values),
            sections=MappingProxyType({name: self._construct(node, None, name) for name, node in sections.items()}),
            positions=MappingProxyType(
                {path: mark for name in sections for path, mark in _positions(name, *found[name])}
            ),
            filename=self._filename,
        )

    def _check_duplicates(self, root: Node, section: str) -> None:
        stack, seen = [root], set()
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, MappingNode):
                first_lines = {}
                for key, value in node.value:
                    if isinstance(key, ScalarNode) and key.value in first_lines:
                        line = first_lines[key.value]
                        self._report(key, f"{section}: duplicate key {key.value!r} (first at line {line})")
                    elif isinstance(key, ScalarNode):
                        first_lines[key.value] = key.start_mark.line + 1
                    stack.extend((key, value))
            elif isinstance(node, SequenceNode):
                stack.extend(node.value)

    def _values(self, node: Node) -> dict[str, float]:
        if not isinstance(node, MappingNode):
            self._report(node, f"values: expected a mapping of names to numbers, found {_describe(node)}")
            return {}
        values = {}
        for name, key, value in self._items(node, "value"):
            if not is_name(name):
                self._report(
                    key, f"values: {name!r} is not a valid name: use letters, digits, '_' and '.', not AND, OR or NOT"
                )
            elif name in self._known:
                self._report(key, f"values: {name!r} is already a signal name")
            elif (number := self._number(value, None, f"values: {name}")) is not _INVALID:
                values[name] = number
        return values

    def _number(self, node: Node, rule: str | None, what: str) -> Any:
        data = self._construct(node, rule, what) if isinstance(node, ScalarNode) else None
        if data is _INVALID:
            return _INVALID
        if isinstance(data, int | float) and not isinstance(data, bool) and math.isfinite(data):
            return float(data)
        if isinstance(data, str):
            try:
                return parse_number(data)
            except ExpressionError as error:
                self._report(node, f"{what}: {error.detail}", rule)
                return _INVALID
        self._report(node, f"{what}: expected a number, found {_describe(node)}", rule)
        return _INVALID

    def _rules(self, node: Node, names: Collection[str]) -> tuple[Rule, ...]:
        if not isinstance(node, MappingNode):
            self._report(node, f"alert_rules: expected a mapping of rule names to rules, found {_describe(node)}")
            return ()
        rules = (self._rule(name, key, value, names) for name, key, value in self._items(node, "rule"))
        return tuple(rule for rule in rules if rule is not None)

    def _rule(self, name: str, key: Node, node: Node, names: Collection[str]) -> Rule | None:
        if not isinstance(node, MappingNode):
            message = f"expected a mapping with {', '.join(_REQUIRED_KEYS)}, found {_describe(node)}"
            self._report(node, message, name)
            return None
        before = len(self._problems)
        given = {}
        for field_name, field_key, value in self._items(node, "key", name):
            if field_name not in _RULE_KEYS:
                valid = ", ".join(_RULE_KEYS)
                message = f"unknown key {field_name!r}: expected one of {valid}{_suggest(field_name, _RULE_KEYS)}"
                self._report(field_key, message, name)
            else:
                given[field_name] = self._field(field_name, value, name, names)
        for required in _REQUIRED_KEYS:
            if required not in given:
                self._report(key, f"missing {required!r}", name)
        if len(self._problems) > before:
            return None
        try:
            return Rule(
                name=name,
                expression=given["threshold"],
                severity=given["severity"],
                action=given["action"],
                for_s=given.get("for", 0.0),
                keep_firing_for_s=given.get("keep_firing_for", 0.0),
                labels=given.get("labels", {}),
                per=given.get("per"),
                description=given.get("description", ""),
                line=key.start_mark.line + 1,
            )
        except ValueError as error:
            self._report(key, str(error), name)
            return None

    def _field(self, field_name: str, node: Node, rule: str, names: Collection[str]) -> Any:
        if field_name in ("for", "keep_firing_for"):
            return self._duration(node, rule, field_name)
        if field_name == "labels":
            return self._labels(node, rule)
        if not isinstance(node, ScalarNode) or node.tag != _STR_TAG:
            self._report(node, f"{field_name}: expected a string, found {_describe(node)}", rule)
            return _INVALID
        if field_name == "threshold":
            return self._threshold(node, rule, names)
        try:
            if field_name == "severity":
                return Severity.parse(node.value)
            if field_name == "per":
                return Per.parse(node.value)
            if field_name == "description":
                check_template(node.value)
        except ValueError as error:
            self._report(node, f"{field_name}: {error}", rule)
            return _INVALID
        return node.value

    def _threshold(self, node: ScalarNode, rule: str, names: Collection[str]) -> Any:
        try:
            expression = parse(node.value)
        except ExpressionError as error:
            self._report(node, f"threshold: {error}", rule, _text_position(node, error.position))
            return _INVALID
        reported = set()
        for name, position in expression.name_positions:
            if name not in names and name not in reported:
                reported.add(name)
                error = ExpressionError(f"unknown name {name!r}{_suggest(name, names)}", position)
                self._report(node, f"threshold: {error}", rule, _text_position(node, position))
        return _INVALID if reported else expression

    def _duration(self, node: Node, rule: str, field_name: str) -> Any:
        data = self._construct(node, rule, field_name) if isinstance(node, ScalarNode) else None
        if data is _INVALID:
            return _INVALID
        if isinstance(data, str | int | float) and not isinstance(data, bool):
            try:
                return parse_duration(data)
            except ExpressionError as error:
                self._report(node, f"{field_name}: {error.detail}", rule)
                return _INVALID
        self._report(node, f"{field_name}: expected a duration such as 300s or 5m, found {_describe(node)}", rule)
        return _INVALID

    def _labels(self, node: Node, rule: str) -> Any:
        if not isinstance(node, MappingNode):
            self._report(node, f"labels: expected a mapping of label names to strings, found {_describe(node)}", rule)
            return _INVALID
        labels = {}
        for name, key, value in self._items(node, "label", rule):
            try:
                _check_label_name(name)
            except ValueError as error:
                self._report(key, f"labels: {error}", rule)
                continue
            if isinstance(value, ScalarNode) and value.tag == _STR_TAG:
                labels[name] = value.value
            else:
                message = f"labels: label {name!r} must have a string value, found {_describe(value)} (quote it)"
                self._report(value, message, rule)
        return labels


def _positions(
    path: str, key: Node, value: Node, seen: set[int] | None = None
) -> Iterator[tuple[str, tuple[int, int]]]:
    """(path, 1-based line and column of its key) for `key` and everything under `value`. A node an
    alias repeats is walked once: a file of nested aliases would otherwise have exponentially many paths."""
    seen = set() if seen is None else seen
    yield path, (key.start_mark.line + 1, key.start_mark.column + 1)
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, MappingNode):
        for child_key, child in value.value:
            if isinstance(child_key, ScalarNode):
                yield from _positions(f"{path}.{child_key.value}", child_key, child, seen)
    elif isinstance(value, SequenceNode):
        for index, item in enumerate(value.value):
            yield from _positions(f"{path}[{index}]", item, item, seen)


def _text_position(node: ScalarNode, offset: int) -> tuple[int, int]:
    """The file's 1-based (line, column) of character `offset` of a scalar's text: exact for one-line
    plain and quoted scalars without escapes; a block or multi-line scalar gives its start."""
    mark = node.start_mark
    if node.end_mark.line == mark.line and node.style in (None, '"', "'"):
        return mark.line + 1, mark.column + 1 + offset + (node.style is not None)
    return mark.line + 1, mark.column + 1
