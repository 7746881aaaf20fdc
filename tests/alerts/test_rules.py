"""Rule files: the spec's format loads, every problem is reported at its line and column."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest

from elitemon.alerts._model import Severity
from elitemon.alerts.expr import Outcome, parse
from elitemon.alerts.rules import (
    DEFAULT_RULES_PATH,
    Per,
    Problem,
    Rule,
    RuleFileError,
    check_template,
    load_rules,
    loads_rules,
)

SIGNALS = frozenset(
    {
        "holomorphic_throughput",
        "no_improvement_for_generations",
        "gpu_memory_usage",
        "cpu_usage",
        "node_heartbeat_missing",
        "hourly_cost",
    }
)

SPEC = """\
alert_rules:
  performance_degradation:
    threshold: "holomorphic_throughput < 40_000_000"
    severity: HIGH
    action: "Scale GPU resources or optimize batch size"
  convergence_stall:   {threshold: "no_improvement_for_generations >= 20", severity: MEDIUM, action: "Increase exploration or population diversity"}
  resource_exhaustion: {threshold: "gpu_memory_usage > 90% OR cpu_usage > 95%", severity: CRITICAL, action: "Reduce batch size or add nodes"}
  node_failure:        {threshold: "node_heartbeat_missing > 300s", severity: CRITICAL, action: "Check the node; PBT trials on it are restarted elsewhere"}
  cost_spike:          {threshold: "hourly_cost > budget_threshold * 1.5", severity: HIGH, action: "Review resource allocation"}
"""  # noqa: E501 (the spec's own lines)

SPEC_NAMES = [
    "performance_degradation",
    "convergence_stall",
    "resource_exhaustion",
    "node_failure",
    "cost_spike",
]


def problems(text: str, known: frozenset[str] = SIGNALS) -> list[str]:
    with pytest.raises(RuleFileError) as caught:
        loads_rules(textwrap.dedent(text), known_names=known, filename="rules.yaml")
    assert str(caught.value) == "\n".join(str(problem) for problem in caught.value.problems)
    return [str(problem) for problem in caught.value.problems]


def rule_with(extra: str, threshold: str = '"cpu_usage > 1"') -> str:
    """A valid rule `r` (lines 1-5) followed by `extra` lines at the rule's indentation (line 6 on)."""
    lines = ["alert_rules:", "  r:", f"    threshold: {threshold}", "    severity: HIGH", "    action: act"]
    return "\n".join(lines + ["    " + line for line in extra.splitlines()]) + "\n"


# --- files that load ------------------------------------------------------------------------------


def test_the_spec_loads_unchanged_when_budget_threshold_is_known() -> None:
    rules = loads_rules(SPEC, known_names=SIGNALS | {"budget_threshold"}).rules
    assert [rule.name for rule in rules] == SPEC_NAMES
    assert [rule.severity for rule in rules] == [
        Severity.HIGH,
        Severity.MEDIUM,
        Severity.CRITICAL,
        Severity.CRITICAL,
        Severity.HIGH,
    ]
    assert [rule.line for rule in rules] == [2, 6, 7, 8, 9]
    exhaustion = rules[2]
    assert exhaustion.action == "Reduce batch size or add nodes"
    assert exhaustion.expression.names == {"gpu_memory_usage", "cpu_usage"}
    assert exhaustion.expression.evaluate({"gpu_memory_usage": 0.95, "cpu_usage": 0.1}) == Outcome(True, 0.95)
    assert (exhaustion.for_s, exhaustion.keep_firing_for_s, exhaustion.per, exhaustion.description) == (0, 0, None, "")
    assert dict(exhaustion.labels) == {}


def test_the_spec_reports_budget_threshold_when_nobody_defines_it() -> None:
    assert problems(SPEC) == [
        "rules.yaml:9:51: rule 'cost_spike': threshold: at column 15: unknown name 'budget_threshold'",
    ]


def test_the_spec_loads_with_a_values_section() -> None:
    loaded = loads_rules("values:\n  budget_threshold: 50.0\n" + SPEC, known_names=SIGNALS)
    assert dict(loaded.values) == {"budget_threshold": 50.0}
    assert [rule.line for rule in loaded.rules] == [4, 8, 9, 10, 11]


def test_the_default_rules_load() -> None:
    loaded = load_rules(DEFAULT_RULES_PATH, known_names=SIGNALS)
    assert [rule.name for rule in loaded.rules] == SPEC_NAMES
    assert dict(loaded.values) == {"budget_threshold": 10.0}
    by_name = {rule.name: rule for rule in loaded.rules}
    assert by_name["resource_exhaustion"].per is Per.NODE
    assert by_name["resource_exhaustion"].for_s == 60
    assert by_name["node_failure"].per is Per.NODE
    assert by_name["node_failure"].for_s == 0
    assert by_name["performance_degradation"].per is None
    assert all(rule.description for rule in loaded.rules)
    assert all(rule.action for rule in loaded.rules)
    text = by_name["resource_exhaustion"].render_description({"node": "worker-3"}, 0.93)
    assert text == "Node worker-3 is at 93% of its GPU memory or CPU."
    assert by_name["cost_spike"].render_description({}, 16.0) == "Spending $16.00 per hour, over 1.5 times the budget."
    assert "n/a" in by_name["node_failure"].render_description({}, None)


def test_optional_keys_and_sections() -> None:
    text = """\
    settings: {evaluation_interval: 15s}
    alert_rules:
      r:
        threshold: "cpu_usage > 95% AND limit > 0"
        severity: low
        action: act
        for: 5m
        keep_firing_for: 90
        labels: {team: ml, 'on': 'yes'}
        per: GPU
        description: "{gpu}: {value:.1%} of {labels[team]}"
    values: {limit: "90%"}
    route:
      receiver: pager
      routes:
        - {match: {severity: CRITICAL}, receiver: pager}
    receivers: [{name: pager}]
    """
    loaded = loads_rules(textwrap.dedent(text), known_names=SIGNALS)
    (rule,) = loaded.rules
    assert (rule.severity, rule.for_s, rule.keep_firing_for_s, rule.per) == (Severity.LOW, 300.0, 90.0, Per.GPU)
    assert dict(rule.labels) == {"team": "ml", "on": "yes"}
    assert dict(loaded.values) == {"limit": 0.9}
    assert rule.render_description({"gpu": "gpu-0", "team": "x"}, 0.9612) == "gpu-0: 96.1% of x"
    assert dict(loaded.sections) == {
        "route": {"receiver": "pager", "routes": [{"match": {"severity": "CRITICAL"}, "receiver": "pager"}]},
        "receivers": [{"name": "pager"}],
        "settings": {"evaluation_interval": "15s"},
    }
    assert {path: loaded.positions[path] for path in ("route", "receivers", "settings")} == {
        "route": (13, 1),
        "receivers": (17, 1),
        "settings": (1, 1),
    }
    assert loaded.position_of("route.routes[0].receiver: unknown receiver") == (16, 37)
    assert loaded.position_of("route.routes[0].group_wait: not a duration") == (16, 7)  # the nearest enclosing key
    assert loaded.position_of("receivers[0]: problem") == (17, 13)
    assert loaded.position_of("settings.evaluation_interval: problem") == (1, 12)
    assert loaded.position_of("receiver 'pager': not a path") is None
    assert loaded.filename == "<string>"


def test_load_rules_reads_a_path(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(SPEC)
    assert len(load_rules(path, known_names=SIGNALS | {"budget_threshold"}).rules) == 5
    assert load_rules(str(path), known_names=SIGNALS | {"budget_threshold"}).filename == str(path)
    with pytest.raises(RuleFileError) as caught:
        load_rules(path, known_names=SIGNALS)
    assert caught.value.problems[0].filename == str(path)
    path.write_bytes(b"alert_rules:\n  r: {threshold: '\xff'}\n")
    with pytest.raises(RuleFileError, match=r"rules.yaml:2:1: not UTF-8 text"):
        load_rules(path, known_names=SIGNALS)


def test_an_empty_rule_mapping_is_allowed() -> None:
    assert loads_rules("alert_rules: {}", known_names=SIGNALS).rules == ()


# --- problems -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            rule_with("", '"gpu_mem_usage > 90%"'),
            "rules.yaml:3:17: rule 'r': threshold: at column 1: unknown name 'gpu_mem_usage'; "
            "did you mean 'gpu_memory_usage'?",
        ),
        (
            rule_with("", "cpu_usage > zz_top"),  # plain scalar: no quote to skip
            "rules.yaml:3:28: rule 'r': threshold: at column 13: unknown name 'zz_top'",
        ),
        (
            rule_with("", "'cpu_usage > )'"),
            "rules.yaml:3:29: rule 'r': threshold: at column 13: expected a number, a name or '(' but found ')'",
        ),
        (
            rule_with("", '"cpu_usage + 1"'),
            "rules.yaml:3:30: rule 'r': threshold: at column 14: expected a comparison operator "
            "(<, <=, >, >=, == or !=) but found end of expression",
        ),
        (
            rule_with("", "|\n      cpu_usage >"),  # a block scalar: its start
            "rules.yaml:3:16: rule 'r': threshold: at column 13: expected a number, a name or '(' "
            "but found end of expression",
        ),
        (rule_with("", "5"), "rules.yaml:3:16: rule 'r': threshold: expected a string, found 5"),
        (
            "alert_rules:\n  r: {threshold: 'cpu_usage > 1', severity: HUGE, action: a}\n",
            "rules.yaml:2:45: rule 'r': severity: unknown severity 'HUGE': expected one of "
            "INFO, LOW, MEDIUM, HIGH, CRITICAL",
        ),
        ("alert_rules:\n  r: {threshold: 'cpu_usage > 1', severity: HIGH, action: [a]}\n", None),
        (
            rule_with("for: 5x"),
            "rules.yaml:6:10: rule 'r': for: expected a duration such as 300s, 5m, 1h30m, 1d or 250ms but found '5x'",
        ),
        (
            rule_with("keep_firing_for: -5"),
            "rules.yaml:6:22: rule 'r': keep_firing_for: expected a duration such as 300s, 5m, 1h30m, 1d or 250ms "
            "but found '-5'",
        ),
        (
            rule_with("for: yes"),
            "rules.yaml:6:10: rule 'r': for: expected a duration such as 300s or 5m, found yes",
        ),
        (
            rule_with("for:"),
            "rules.yaml:6:9: rule 'r': for: expected a duration such as 300s or 5m, found an empty value",
        ),
        (
            rule_with("treshold: x"),
            "rules.yaml:6:5: rule 'r': unknown key 'treshold': expected one of threshold, severity, action, for, "
            "keep_firing_for, labels, per, description; did you mean 'threshold'?",
        ),
        (
            rule_with("per: rack"),
            "rules.yaml:6:10: rule 'r': per: unknown per 'rack': expected one of agent, node, gpu",
        ),
        (
            rule_with("labels: {team: 1}"),
            "rules.yaml:6:20: rule 'r': labels: label 'team' must have a string value, found 1 (quote it)",
        ),
        (
            rule_with("labels: {alertname: x}"),
            "rules.yaml:6:14: rule 'r': labels: label 'alertname' is set from the rule and cannot be given in labels",
        ),
        (
            rule_with("labels: {bad-name: x}"),
            "rules.yaml:6:14: rule 'r': labels: label name 'bad-name' must match [A-Za-z_][A-Za-z0-9_]* "
            "and not start with '__'",
        ),
        (
            rule_with("labels: [a]"),
            "rules.yaml:6:13: rule 'r': labels: expected a mapping of label names to strings, found a list",
        ),
        (
            rule_with("per: node\nlabels: {node: x}"),
            "rules.yaml:2:3: rule 'r': label 'node' is set by `per: node` and cannot be given in labels",
        ),
        (
            rule_with("per: gpu\nlabels: {node: x}"),  # a GPU instance carries its node too
            "rules.yaml:2:3: rule 'r': label 'node' is set by `per: gpu` and cannot be given in labels",
        ),
        (
            rule_with("description: '{value.__class__}'"),
            "rules.yaml:6:18: rule 'r': description: field {value.__class__}: expected {value}, {labels[name]} or "
            "{name} with an optional format spec",
        ),
        (
            "alert_rules:\n  r: [1]\n",
            "rules.yaml:2:6: rule 'r': expected a mapping with threshold, severity, action, found a list",
        ),
        ("", "rules.yaml:1:1: the file is empty: expected a mapping with an 'alert_rules' section"),
        ("# only a comment\n", "rules.yaml:1:1: the file is empty: expected a mapping with an 'alert_rules' section"),
        ("- a\n", "rules.yaml:1:1: expected a mapping with an 'alert_rules' section, found a list"),
        ("route: {}\n", "rules.yaml:1:1: missing the 'alert_rules' section"),
        (
            "alert_rules:\n",
            "rules.yaml:1:13: alert_rules: expected a mapping of rule names to rules, found an empty value",
        ),
        (
            "alert_rules: {}\nalert_rule: {}\n",
            "rules.yaml:2:1: unknown section 'alert_rule': expected one of alert_rules, values, route, receivers, "
            "inhibit_rules, settings; did you mean 'alert_rules'?",
        ),
        (
            "alert_rules:\n  r: {threshold: 'x > 1'\n",
            "rules.yaml:3:1: invalid YAML: while parsing a flow mapping, expected ',' or '}', but got '<stream end>'",
        ),
        ("alert_rules: {}\n---\nalert_rules: {}\n", None),
        ("alert_rules: {}\nvalues: {cpu_usage: 1}\n", "rules.yaml:2:10: values: 'cpu_usage' is already a signal name"),
        ("alert_rules: {}\nvalues: {x: lots}\n", None),
        ("alert_rules: {}\nvalues: {x: true}\n", "rules.yaml:2:13: values: x: expected a number, found true"),
        ("alert_rules: {}\nvalues: {AND: 1}\n", None),
        (
            "alert_rules: {}\nvalues: [1]\n",
            "rules.yaml:2:9: values: expected a mapping of names to numbers, found a list",
        ),
        ("alert_rules: {}\nroute: !!python/object/apply:os.system ['true']\n", None),
    ],
)
def test_each_problem_at_its_line_and_column(text: str, expected: str | None) -> None:
    found = problems(text)
    assert len(found) == 1, found
    if expected is not None:
        assert found[0] == expected
    else:  # the exact wording is PyYAML's or a parse error's; the place is what matters here
        assert found[0].startswith("rules.yaml:")


def test_missing_keys_are_reported_at_the_rule() -> None:
    assert problems("alert_rules:\n  r: {action: a}\n") == [
        "rules.yaml:2:3: rule 'r': missing 'threshold'",
        "rules.yaml:2:3: rule 'r': missing 'severity'",
    ]


def test_duplicate_keys_are_problems_at_every_level() -> None:
    text = """\
    alert_rules:
      r: {threshold: 'cpu_usage > 1', severity: HIGH, action: a, severity: LOW}
      r: {threshold: 'cpu_usage > 2', severity: HIGH, action: a, labels: {a: x, a: y}}
    values: {v: 1, v: 2}
    route: {routes: [{receiver: a, receiver: b}]}
    alert_rules: {}
    """
    assert problems(text) == [
        "rules.yaml:2:62: rule 'r': duplicate key 'severity' (first at line 2)",
        "rules.yaml:3:3: duplicate rule 'r' (first at line 2)",
        "rules.yaml:4:16: duplicate value 'v' (first at line 4)",
        "rules.yaml:5:32: route: duplicate key 'receiver' (first at line 5)",
        "rules.yaml:6:1: duplicate section 'alert_rules' (first at line 1)",
    ]


def test_all_problems_are_collected_in_file_order() -> None:
    text = """\
    values: {budget: cheap}
    alert_rules:
      a:
        threshold: "gpu_mem > 1"
        severity: HUGE
        action: a
      b: {threshold: "cpu_usage > 1", severity: LOW, action: b}
      c:
        threshold: "cpu_usage > 1 >"
        severity: LOW
        colour: red
    extra: 1
    """
    found = problems(text)
    assert [line.split(": ", 1)[0] for line in found] == [
        "rules.yaml:1:18",
        "rules.yaml:4:17",
        "rules.yaml:5:15",
        "rules.yaml:8:3",
        "rules.yaml:9:31",
        "rules.yaml:11:5",
        "rules.yaml:12:1",
    ]
    assert "rule 'c': missing 'action'" in found[3]


def test_unsafe_yaml_tags_are_not_constructed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    text = f"alert_rules: {{}}\nroute: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(RuleFileError, match="rules.yaml:2:8: route: could not determine a constructor"):
        loads_rules(text, known_names=SIGNALS, filename="rules.yaml")
    assert not marker.exists()


def test_hostile_nesting_is_a_problem_not_a_crash() -> None:
    assert problems("alert_rules: {}\nroute: " + "[" * 150 + "]" * 150 + "\n") == [
        "rules.yaml:1:1: the file is nested more than 100 levels deep"
    ]
    assert problems("route: " + "[" * 800) == ["rules.yaml:1:1: invalid YAML: nested too deeply"]


def test_a_key_with_a_colon_is_located_whole() -> None:
    loaded = loads_rules('alert_rules: {}\nsettings:\n  x: 1\n  "x:y": 2\n', known_names=SIGNALS)
    assert loaded.position_of("settings.x:y: a problem") == (4, 3)
    assert loaded.position_of("settings.x: a problem") == (3, 3)


def test_nested_aliases_are_located_once_not_expanded() -> None:
    # Each level repeats the one before ten times: 10**9 paths if every alias were walked.
    levels = ["  l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 10)]
    loaded = loads_rules("alert_rules: {}\nroute:\n" + "\n".join(levels) + "\n", known_names=SIGNALS)
    assert loaded.positions["route.l9"] == (12, 3)
    assert loaded.positions["route.l1[0]"] == (3, 7)  # an alias is located at its anchor
    assert "route.l1[0][9]" not in loaded.positions and loaded.positions["route.l0[9]"] == (3, 39)
    assert len(loaded.positions) == 111  # the section, its 10 keys and the 10 items under each


def test_rule_file_errors_pickle() -> None:
    with pytest.raises(RuleFileError) as caught:
        loads_rules("", known_names=SIGNALS)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert copy.problems == caught.value.problems
    assert str(copy) == str(caught.value)


def test_problem_renders_like_a_compiler() -> None:
    assert str(Problem("rules.yaml", 7, 16, "convergence_stall", "threshold: x")) == (
        "rules.yaml:7:16: rule 'convergence_stall': threshold: x"
    )
    assert str(Problem("rules.yaml", 1, 1, None, "empty")) == "rules.yaml:1:1: empty"


# --- templates and rules built in code ------------------------------------------------------------


def make_rule(**overrides: object) -> Rule:
    fields = {"name": "r", "expression": parse("x > 1"), "severity": Severity.HIGH, "action": "act"}
    return Rule(**(fields | overrides))


def test_render_description() -> None:
    rule = make_rule(description="{node}/{labels[gpu]} at {value:.1%}; raw {value}; {missing}!", per=Per.NODE)
    assert rule.render_description({"node": "n1", "gpu": "0"}, 0.9234) == "n1/0 at 92.3%; raw 0.9234; !"
    assert rule.render_description({}, None) == "/ at n/a; raw n/a; !"
    assert make_rule(description="{{literal}} {value:>8.2f}").render_description({}, 3) == "{literal}     3.00"


@pytest.mark.parametrize(
    "template",
    [
        "{value.__class__}",
        "{value.__class__.__init__.__globals__}",
        "{labels.__class__}",
        "{value[0]}",
        "{0}",
        "{}",
        "{labels}",
        "{value!r}",
        "{value:{width}}",
        "{value:d}",
        "{node:.1%}",
        "{value",
        "value}",
        "{a-b}",
    ],
)
def test_unsafe_or_broken_templates_are_refused(template: str) -> None:
    with pytest.raises(ValueError):
        check_template(template)
    with pytest.raises(ValueError):
        make_rule(description=template)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": ""}, "a rule needs a name, got name=''"),
        ({"for_s": -1}, "for_s must be a finite number of seconds >= 0, got for_s=-1"),
        ({"keep_firing_for_s": float("inf")}, "keep_firing_for_s must be a finite"),
        ({"severity": "HIGH"}, "severity must be a Severity, got severity='HIGH'"),
        ({"per": "node"}, "per must be a Per or None, got per='node'"),
        ({"expression": "x > 1"}, "expression must come from expr.parse"),
        ({"labels": {"team": 1}}, "label 'team' must have a string value, got 1"),
        ({"labels": {"severity": "x"}}, "label 'severity' is set from the rule"),
    ],
)
def test_rules_check_their_fields(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_rule(**overrides)


def test_per_parse() -> None:
    assert Per.parse(" Node ") is Per.NODE
    with pytest.raises(ValueError, match="unknown per 'rack': expected one of agent, node, gpu"):
        Per.parse("rack")


def test_rule_labels_are_read_only() -> None:
    rule = make_rule(labels={"team": "ml"})
    with pytest.raises(TypeError):
        rule.labels["team"] = "x"  # type: ignore[index]
