"""The Prometheus alert state machine, step by step on a fake clock (times are plain numbers)."""

from __future__ import annotations

import pytest

from elitemon.alerts._model import AlertState, Severity, Status, fingerprint
from elitemon.alerts.expr import parse
from elitemon.alerts.rules import Per, Rule
from elitemon.alerts.signals import Signal, Snapshot
from elitemon.alerts.state import AlertEngine


def _rule(threshold: str = "cpu_usage > 90%", *, for_s: float = 0.0, keep_s: float = 0.0, per=Per.NODE) -> Rule:
    return Rule(
        name="hot",
        expression=parse(threshold),
        severity=Severity.HIGH,
        action="cool it",
        for_s=for_s,
        keep_firing_for_s=keep_s,
        labels={"team": "ml"},
        per=per,
        description="{node} at {value:.0%}",
    )


def _snapshot(now: float, **cpu_by_node: float) -> Snapshot:
    series = {(("node", node),): value for node, value in cpu_by_node.items()}
    return Snapshot(now=now, signals={"cpu_usage": Signal(series)})


def _labels(node: str) -> dict[str, str]:
    return {"team": "ml", "node": node, "alertname": "hot", "severity": "HIGH"}


def test_inactive_to_pending_to_firing_after_for() -> None:
    engine = AlertEngine([_rule(for_s=30)])
    first = engine.evaluate(_snapshot(0, a=0.95))
    assert first.alerts == () and first.changes == ()
    (pending,) = engine.instances()
    assert pending.state is AlertState.PENDING and pending.active_since == 0
    assert engine.evaluate(_snapshot(29, a=0.96)).changes == ()
    fired = engine.evaluate(_snapshot(30, a=0.97))
    (change,) = fired.changes
    assert change.previous is AlertState.PENDING
    assert change.alert.status is Status.FIRING and change.alert.starts_at == 30
    assert dict(change.alert.labels) == _labels("a")
    assert change.alert.fingerprint == fingerprint(_labels("a"))
    assert change.alert.value == pytest.approx(0.97)
    assert change.alert.annotations["description"] == "a at 97%"
    assert change.alert.annotations["action"] == "cool it"
    assert fired.alerts == (change.alert,)


def test_for_zero_fires_at_once() -> None:
    engine = AlertEngine([_rule()])
    (change,) = engine.evaluate(_snapshot(5, a=0.99)).changes
    assert change.alert.status is Status.FIRING and change.alert.starts_at == 5


def test_pending_that_clears_is_dropped_without_a_notification() -> None:
    engine = AlertEngine([_rule(for_s=60)])
    engine.evaluate(_snapshot(0, a=0.95))
    cleared = engine.evaluate(_snapshot(10, a=0.5))
    assert cleared.changes == () and cleared.alerts == () and engine.instances() == ()
    engine.evaluate(_snapshot(20, a=0.95))  # holds again: pending restarts from now
    assert engine.instances()[0].active_since == 20


def test_firing_resolves_once_then_leaves() -> None:
    engine = AlertEngine([_rule()])
    engine.evaluate(_snapshot(0, a=0.95))
    assert len(engine.evaluate(_snapshot(15, a=0.95)).alerts) == 1  # still firing: handed on again
    resolved = engine.evaluate(_snapshot(30, a=0.1))
    (change,) = resolved.changes
    assert change.previous is AlertState.FIRING
    assert change.alert.status is Status.RESOLVED and change.alert.ends_at == 30 and change.alert.starts_at == 0
    assert resolved.alerts == (change.alert,)
    after = engine.evaluate(_snapshot(45, a=0.1))
    assert after.alerts == () and after.changes == () and engine.instances() == ()


def test_keep_firing_for_holds_the_alert_after_the_threshold_clears() -> None:
    """Counted from the first evaluation at which the threshold no longer held (Prometheus'
    KeepFiringSince), not from the last at which it did."""
    engine = AlertEngine([_rule(keep_s=60)])
    engine.evaluate(_snapshot(0, a=0.95))
    assert engine.evaluate(_snapshot(30, a=0.1)).changes == ()  # the 60 s count from here
    assert engine.instances()[0].state is AlertState.FIRING
    assert engine.evaluate(_snapshot(89, a=0.1)).changes == ()
    (change,) = engine.evaluate(_snapshot(90, a=0.1)).changes
    assert change.alert.status is Status.RESOLVED and change.alert.ends_at == 90


def test_keep_firing_for_shorter_than_the_evaluation_interval_still_keeps_one_round() -> None:
    """With 15 s evaluations and `keep_firing_for: 10s` the alert fires through the first
    evaluation without its threshold, as in Prometheus."""
    engine = AlertEngine([_rule(keep_s=10)])
    engine.evaluate(_snapshot(0, a=0.95))
    assert engine.evaluate(_snapshot(15, a=0.1)).changes == ()
    (change,) = engine.evaluate(_snapshot(30, a=0.1)).changes
    assert change.alert.status is Status.RESOLVED and change.alert.ends_at == 30


def test_keep_firing_for_restarts_when_the_threshold_holds_again() -> None:
    engine = AlertEngine([_rule(keep_s=60)])
    engine.evaluate(_snapshot(0, a=0.95))
    engine.evaluate(_snapshot(50, a=0.1))
    engine.evaluate(_snapshot(55, a=0.95))  # holds again: a later release counts afresh
    assert engine.evaluate(_snapshot(100, a=0.1)).changes == ()
    assert engine.evaluate(_snapshot(159, a=0.1)).changes == ()
    assert engine.evaluate(_snapshot(160, a=0.1)).changes[0].alert.status is Status.RESOLVED


def test_one_instance_per_label_set_each_with_its_own_timing() -> None:
    engine = AlertEngine([_rule(for_s=10)])
    engine.evaluate(_snapshot(0, a=0.95, b=0.2))
    engine.evaluate(_snapshot(5, a=0.95, b=0.95))
    changes = engine.evaluate(_snapshot(10, a=0.95, b=0.95)).changes
    assert [dict(c.alert.labels)["node"] for c in changes] == ["a"]
    changes = engine.evaluate(_snapshot(15, a=0.95, b=0.95)).changes
    assert [dict(c.alert.labels)["node"] for c in changes] == ["b"]
    assert {i.labels["node"] for i in engine.instances()} == {"a", "b"}


def test_no_data_means_not_active_so_a_firing_alert_resolves() -> None:
    engine = AlertEngine([_rule()])
    engine.evaluate(_snapshot(0, a=0.95))
    resolved = engine.evaluate(Snapshot(now=20, signals={}))
    assert resolved.changes[0].alert.status is Status.RESOLVED


def test_fingerprints_are_stable_across_engines() -> None:
    first = AlertEngine([_rule()]).evaluate(_snapshot(0, a=0.95)).alerts[0]
    second = AlertEngine([_rule()]).evaluate(_snapshot(100, a=0.99)).alerts[0]
    assert first.fingerprint == second.fingerprint


def test_rule_without_per_is_one_instance_over_the_worst_node() -> None:
    engine = AlertEngine([_rule(per=None)])
    (alert,) = engine.evaluate(_snapshot(0, a=0.5, b=0.97)).alerts
    assert "node" not in alert.labels and alert.value == pytest.approx(0.97)


def test_constants_from_the_rule_file_take_part() -> None:
    rule = Rule(
        name="cost",
        expression=parse("hourly_cost > budget_threshold * 1.5"),
        severity=Severity.HIGH,
        action="review",
    )
    engine = AlertEngine([rule])
    signals = {"hourly_cost": Signal({(): 16.0}), "budget_threshold": Signal({(): 10.0})}
    (alert,) = engine.evaluate(Snapshot(now=0, signals=signals)).alerts
    assert alert.value == 16.0
    signals["hourly_cost"] = Signal({(): 14.0})
    assert engine.evaluate(Snapshot(now=1, signals=signals)).alerts[0].status is Status.RESOLVED
