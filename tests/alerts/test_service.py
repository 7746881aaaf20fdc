"""AlertService on a fake clock: settings, the default route and inhibition, rules to notifications."""

from __future__ import annotations

import dataclasses

import pytest

from elitemon.alerts._model import Status
from elitemon.alerts.rules import loads_rules
from elitemon.alerts.service import AlertService, AlertSettings, problems
from elitemon.alerts.signals import KnownNames, Signal, Snapshot

RULES = """
alert_rules:
  node_failure:
    threshold: "node_heartbeat_missing > 300s"
    severity: CRITICAL
    action: "Check the node"
    per: node
  hot:
    threshold: "cpu_usage > 95%"
    severity: HIGH
    action: "Cool it"
    per: node
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _service(text: str = RULES, clock: FakeClock | None = None) -> AlertService:
    return AlertService(loads_rules(text, known_names=KnownNames()), clock=clock or FakeClock())


def _snapshot(now: float, *, missing: dict[str, float], cpu: dict[str, float]) -> Snapshot:
    return Snapshot(
        now=now,
        signals={
            "node_heartbeat_missing": Signal({(("node", n),): v for n, v in missing.items()}),
            "cpu_usage": Signal({(("node", n),): v for n, v in cpu.items()}),
        },
    )


def test_settings_are_read_and_checked() -> None:
    text = RULES + "settings:\n  evaluation_interval: 1m\n  score_metric: reward\n  lookback: 10m\n"
    text += "  prices: {cpu_hour: 0.5, currency: EUR}\nvalues:\n  budget_threshold: 3\n"
    settings = AlertSettings.from_rule_file(loads_rules(text, known_names=KnownNames()))
    assert settings.evaluation_interval_s == 60.0
    assert settings.signals.score_metric == "reward" and settings.signals.lookback_s == 600.0
    assert settings.signals.prices.cpu_hour == 0.5 and settings.signals.prices.currency == "EUR"
    assert settings.signals.values == {"budget_threshold": 3.0}


@pytest.mark.parametrize(
    ("settings", "message", "line_column"),
    [
        ("evaluation_interval: 0s", "settings.evaluation_interval: must be positive", (14, 3)),
        ("improvement_tolerance: -1", "settings.improvement_tolerance: expected a finite number >= 0", (14, 3)),
        ("improvement_tolerance: .nan", "settings.improvement_tolerance: expected a finite number >= 0", (14, 3)),
        ("improvement_tolerance: .inf", "settings.improvement_tolerance: expected a finite number >= 0", (14, 3)),
        ("lookback: 0s", "settings.lookback: must be positive", (14, 3)),
        ("prices: {cpu_hour: -1}", "settings.prices: ", (14, 3)),
        ("every: 5s", "settings: unknown keys ['every']", (13, 1)),
    ],
)
def test_bad_settings_are_problems_at_their_key(settings: str, message: str, line_column: tuple[int, int]) -> None:
    rule_file = loads_rules(RULES + "settings:\n  " + settings + "\n", known_names=KnownNames())
    (problem,) = problems(rule_file)
    assert (problem.line, problem.column) == line_column and problem.message.startswith(message)
    with pytest.raises(ValueError, match="settings"):
        AlertService(rule_file)


def test_every_bad_setting_is_a_problem_of_its_own() -> None:
    text = RULES + "settings:\n  evaluation_interval: 0s\n  every: 5s\n  score_metric: ''\n  lookback: soon\n"
    rule_file = loads_rules(text, known_names=KnownNames())
    found = [(p.line, p.column, p.message.split(":")[0]) for p in problems(rule_file)]
    assert found == [
        (13, 1, "settings"),  # the unknown key 'every'
        (14, 3, "settings.evaluation_interval"),
        (16, 3, "settings.score_metric"),
        (17, 3, "settings.lookback"),
    ]
    with pytest.raises(ValueError) as raised:  # the service refuses the file with the same list
        AlertService(rule_file)
    assert [line.split(": ")[1] for line in str(raised.value).splitlines()] == [key for *_, key in found]


def test_a_receiver_problem_is_placed_at_the_receiver_it_names_or_numbers() -> None:
    receivers = "receivers:\n  - name: ok\n  - name: bad\n    pager: []\n  - slack_configs: []\n"
    rule_file = loads_rules(RULES + receivers, known_names=KnownNames())
    (problem,) = problems(rule_file)
    assert problem.message.startswith("receiver 'bad': unknown key 'pager'")
    assert (problem.line, problem.column) == (15, 5)  # "- name: bad", the second receiver
    unnamed = loads_rules(RULES + receivers.replace("    pager: []\n", ""), known_names=KnownNames())
    (problem,) = problems(unnamed)
    assert problem.message == "receiver #2 needs a non-empty string 'name'"
    assert (problem.line, problem.column) == (16, 5)  # "- slack_configs: []", the third
    integration = receivers.replace("    pager: []\n", "    webhook_configs: [{}]\n").replace(
        "  - slack", "  - name: x\n    slack"
    )
    (problem,) = problems(loads_rules(RULES + integration, known_names=KnownNames()))
    assert problem.message.startswith("receiver 'bad/webhook[0]': ") and (problem.line, problem.column) == (15, 5)
    twice = "receivers:\n  - name: ops\n  - name: ok\n  - name: ops\n"
    (problem,) = problems(loads_rules(RULES + twice, known_names=KnownNames()))
    assert problem.message == "receiver 'ops' is defined twice" and (problem.line, problem.column) == (16, 5)


def test_an_unknown_receiver_is_reported_once_where_it_is_written() -> None:
    route = "route:\n  receiver: nobody\n  routes:\n    - matchers: ['severity=\"HIGH\"']\n    - receiver: nor_me\n"
    found = [
        (p.line, p.column, p.message.split(":")[0])
        for p in problems(loads_rules(RULES + route, known_names=KnownNames()))
    ]
    assert found == [(14, 3, "route.receiver"), (17, 7, "route.routes[1].receiver")]  # not routes[0], which inherits


def test_default_route_groups_by_alertname_and_node_and_waits_group_wait() -> None:
    clock = FakeClock()
    service = _service(clock=clock)
    service.evaluate(_snapshot(clock.now, missing={"a": 1}, cpu={"a": 0.99, "b": 0.99}))
    assert service.flush() == []  # group_wait (30 s) has not passed
    clock.now += 30
    notifications = service.flush()
    assert sorted(dict(n.group_labels)["node"] for n in notifications) == ["a", "b"]
    assert {n.receiver for n in notifications} == {"default"}


def test_a_node_failure_inhibits_the_high_alerts_of_its_node_only() -> None:
    clock = FakeClock()
    service = _service(clock=clock)
    service.evaluate(_snapshot(clock.now, missing={"a": 400, "b": 1}, cpu={"a": 0.99, "b": 0.99}))
    clock.now += 30
    sent = {(n.alerts[0].name, dict(n.group_labels)["node"]) for n in service.flush()}
    assert sent == {("node_failure", "a"), ("hot", "b")}


def test_resolve_reaches_the_router() -> None:
    clock = FakeClock()
    service = _service(clock=clock)
    service.evaluate(_snapshot(clock.now, missing={}, cpu={"a": 0.99}))
    clock.now += 30
    (firing,) = service.flush()
    clock.now += 15
    service.evaluate(_snapshot(clock.now, missing={}, cpu={"a": 0.5}))
    clock.now += 300  # group_interval
    (resolved,) = service.flush()
    assert firing.status is Status.FIRING and resolved.status is Status.RESOLVED
    assert resolved.group_key == firing.group_key


def test_notifications_link_back_to_the_external_url() -> None:
    """`settings.external_url` is each notification's link (webhook `externalURL`, Slack's button,
    the email's link, PagerDuty's `client_url`), as Alertmanager's --web.external-url is."""
    clock = FakeClock()
    service = _service('settings: {external_url: "https://elitemon.example/ui"}\n' + RULES, clock=clock)
    service.evaluate(_snapshot(clock.now, missing={}, cpu={"a": 0.99}))
    clock.now += 30
    (notification,) = service.flush()
    assert notification.external_url == "https://elitemon.example/ui"
    assert notification.alerts[0].generator_url == "https://elitemon.example/ui"


def test_a_node_failure_inhibits_the_alerts_of_the_agents_on_that_node() -> None:
    """A per-agent alert carries the node its agent runs on: without it, the default inhibition
    (`equal: [node]`) never matched, and a failing node paged once for itself and once per agent."""
    rules = (
        RULES
        + """
  slow:
    threshold: "agent.episodes_per_s < 10"
    severity: HIGH
    action: "Look at the trainer"
    per: agent
"""
    )
    clock = FakeClock()
    service = _service(rules, clock=clock)
    snapshot = _snapshot(clock.now, missing={"a": 400, "b": 1}, cpu={})
    rates = {(("agent", "t1"), ("node", "a")): 2.0, (("agent", "t2"), ("node", "b")): 3.0}
    service.evaluate(dataclasses.replace(snapshot, signals={**snapshot.signals, "agent.episodes_per_s": Signal(rates)}))
    clock.now += 30
    sent = {(n.alerts[0].name, n.alerts[0].labels.get("agent"), dict(n.group_labels)["node"]) for n in service.flush()}
    assert sent == {("node_failure", None, "a"), ("slow", "t2", "b")}
