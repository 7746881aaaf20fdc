"""The alert state machine of Prometheus, one instance per rule and label set.

At every evaluation, each rule's threshold is evaluated for each of its instances (see
`signals.Snapshot.instances`). For one instance:

- inactive → **pending** when the threshold holds (`active_since` = now); a pending instance whose
  threshold stops holding is dropped without a notification, as in Prometheus;
- pending → **firing** once the threshold has held for the rule's `for` (at once when `for` is 0);
- firing stays firing while the threshold holds, and for `keep_firing_for` from the first
  evaluation at which it no longer held (Prometheus' KeepFiringSince);
- firing → **resolved** when neither holds any more: the instance leaves the table, and the alert
  is handed on once with `status=resolved` and `ends_at` = now.

A threshold with unknown value (no data for a name it needs) does not hold, like a Prometheus query
with an empty result; a node that stops reporting is caught by `node_heartbeat_missing`, not by
every other rule going quiet. Instances are identified by their label set; its fingerprint
(`_model.fingerprint`) is stable across restarts.

The engine is pure: outcomes and a time in, changes out. The evaluator actor turns the changes into
`alert_firing`/`alert_resolved` events in the store and hands the alerts to the router.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from elitemon.alerts._model import Alert, AlertState, Status, fingerprint
from elitemon.alerts.signals import Labels, Snapshot


class Outcome(Protocol):
    """A threshold's result for one instance (`expr.Outcome`)."""

    active: bool | None
    value: float | None


@dataclass(frozen=True)
class Instance:
    """One alert instance the engine tracks (pending or firing)."""

    rule: str
    labels: Mapping[str, str]
    state: AlertState
    active_since: float
    last_active: float
    fired_at: float | None
    value: float | None
    fingerprint: str
    #: The first evaluation at which a firing instance's threshold no longer held, while
    #: `keep_firing_for` keeps it firing (Prometheus' KeepFiringSince); None while it holds.
    keep_firing_since: float | None = None


@dataclass(frozen=True)
class Change:
    """An instance started firing or resolved at this evaluation: what becomes an event."""

    alert: Alert
    previous: AlertState


@dataclass(frozen=True)
class Evaluation:
    """The result of one evaluation: the alerts to hand to the router (every firing one, and each
    one that resolved now) and the changes to record."""

    alerts: tuple[Alert, ...]
    changes: tuple[Change, ...]


def rule_per_labels(rule) -> tuple[str, ...]:
    """The label names `rule` is evaluated per (empty for once overall)."""
    return rule.per.labels if rule.per is not None else ()


def evaluate_rule(rule, snapshot: Snapshot) -> dict[Labels, Outcome]:
    """The rule's threshold evaluated for each of its instances in `snapshot`."""
    instances = snapshot.instances(rule.expression.names, rule_per_labels(rule))
    return {labels: rule.expression.evaluate(values) for labels, values in instances.items()}


class AlertEngine:
    """Instances of every rule, stepped through the state machine one evaluation at a time."""

    def __init__(self, rules: Iterable, *, external_url: str = "") -> None:
        self._rules = {rule.name: rule for rule in rules}
        self._external_url = external_url
        self._instances: dict[str, Instance] = {}

    @property
    def rules(self) -> tuple:
        return tuple(self._rules.values())

    def instances(self) -> tuple[Instance, ...]:
        """The pending and firing instances, firing first, then by rule and labels."""
        return tuple(
            sorted(
                self._instances.values(),
                key=lambda i: (i.state is not AlertState.FIRING, i.rule, sorted(i.labels.items())),
            )
        )

    def restore(self, alerts: Iterable[Alert], *, now: float) -> None:
        """Take up alerts that were firing before a restart (from the store's events): they fire on
        from their original start and resolve through the state machine like any other."""
        for alert in alerts:
            if alert.name in self._rules:
                self._instances[alert.fingerprint] = Instance(
                    rule=alert.name,
                    labels=dict(alert.labels),
                    state=AlertState.FIRING,
                    active_since=alert.starts_at,
                    last_active=now,
                    fired_at=alert.starts_at,
                    value=alert.value,
                    fingerprint=alert.fingerprint,
                )

    def evaluate(self, snapshot: Snapshot) -> Evaluation:
        """Evaluate every rule on `snapshot` and step every instance to `snapshot.now`."""
        outcomes = {name: evaluate_rule(rule, snapshot) for name, rule in self._rules.items()}
        return self.step(outcomes, snapshot.now)

    def step(self, outcomes: Mapping[str, Mapping[Labels, Outcome]], now: float) -> Evaluation:
        """Apply each rule's outcomes per instance at time `now` (the pure core of `evaluate`)."""
        changes: list[Change] = []
        seen: set[str] = set()
        for name, per_instance in outcomes.items():
            rule = self._rules[name]
            for instance_labels, outcome in per_instance.items():
                if not outcome.active:
                    continue
                labels = self._labels(rule, instance_labels)
                key = fingerprint(labels)
                seen.add(key)
                changes += self._hold(rule, key, labels, outcome.value, now)
        for key in list(self._instances):
            if key not in seen:
                changes += self._release(self._instances[key], now)
        firing = [self._alert(i) for i in self._instances.values() if i.state is AlertState.FIRING]
        resolved = [c.alert for c in changes if c.alert.status is Status.RESOLVED]
        return Evaluation(alerts=tuple(firing + resolved), changes=tuple(changes))

    def _labels(self, rule, instance_labels: Labels) -> dict[str, str]:
        return {**rule.labels, **dict(instance_labels), "alertname": rule.name, "severity": rule.severity.name}

    def _hold(self, rule, key: str, labels: dict[str, str], value: float | None, now: float) -> list[Change]:
        """The threshold holds for this instance now."""
        current = self._instances.get(key)
        if current is None:
            current = Instance(rule.name, labels, AlertState.PENDING, now, now, None, value, key)
        current = replace(current, last_active=now, value=value, keep_firing_since=None)
        if current.state is AlertState.PENDING and now - current.active_since >= rule.for_s:
            current = replace(current, state=AlertState.FIRING, fired_at=now)
            self._instances[key] = current
            return [Change(self._alert(current), AlertState.PENDING)]
        self._instances[key] = current
        return []

    def _release(self, instance: Instance, now: float) -> list[Change]:
        """The threshold no longer holds for this instance (or it has no data). A firing one is kept
        for `keep_firing_for` counted from the first evaluation at which it no longer held, as
        Prometheus counts it (not from when it last held: with 15 s evaluations, `keep_firing_for:
        10s` would then never keep it at all)."""
        rule = self._rules[instance.rule]
        if instance.state is AlertState.FIRING and rule.keep_firing_for_s > 0:
            since = now if instance.keep_firing_since is None else instance.keep_firing_since
            if now - since < rule.keep_firing_for_s:
                self._instances[instance.fingerprint] = replace(instance, keep_firing_since=since)
                return []
        del self._instances[instance.fingerprint]
        if instance.state is AlertState.PENDING:
            return []
        return [Change(self._alert(instance, ends_at=now), AlertState.FIRING)]

    def _alert(self, instance: Instance, *, ends_at: float | None = None) -> Alert:
        rule = self._rules[instance.rule]
        annotations = {"action": rule.action}
        description = rule.render_description(instance.labels, instance.value)
        if description:
            annotations["description"] = description
        return Alert(
            labels=instance.labels,
            annotations=annotations,
            status=Status.RESOLVED if ends_at is not None else Status.FIRING,
            starts_at=instance.fired_at if instance.fired_at is not None else instance.active_since,
            ends_at=ends_at,
            value=instance.value,
            generator_url=self._external_url,
            fingerprint=instance.fingerprint,
        )
