"""Alerting wired together, without Ray: rules → state machine → router → dispatcher.

A rule file holds everything (see README "Alerts"): `alert_rules`, `values`, and optionally
`settings`, `receivers`, `route` and `inhibit_rules` in Alertmanager's shape. `AlertService` builds
each part from its section, checking it (`problems` lists every error with its line, for
`elitemon alerts check`), and then does two things on a clock that it is given:
`evaluate(snapshot)` steps every alert instance and hands the alerts to the router, and `flush()`
sends the notifications that are due to each integration of their receiver.

Without a `route`, every alert goes to one receiver, `default`, grouped by `alertname` and `node`;
without `receivers`, that receiver has no integrations, so notifications are only recorded (the
history of firing and resolved alerts is in the store either way). Without `inhibit_rules`, a
CRITICAL `node_failure` silences the lower-severity alerts of its node.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from elitemon.alerts._model import Notification
from elitemon.alerts.delivery import Dispatcher
from elitemon.alerts.expr import ExpressionError, parse_duration
from elitemon.alerts.receivers import Receiver, build_receivers
from elitemon.alerts.routing import Route, Router
from elitemon.alerts.rules import Problem, RuleFile
from elitemon.alerts.signals import DEFAULT_LOOKBACK_S, SignalSettings, Snapshot
from elitemon.alerts.silences import AckStore, Inhibitor, SilenceStore, muter
from elitemon.alerts.state import AlertEngine, Evaluation
from elitemon.analytics.convergence import DEFAULT_METRIC
from elitemon.analytics.cost import PriceTable

DEFAULT_RECEIVER = "default"
DEFAULT_ROUTE: Mapping[str, Any] = {"receiver": DEFAULT_RECEIVER, "group_by": ["alertname", "node"]}
DEFAULT_EVALUATION_INTERVAL_S = 15.0
_SETTINGS = ("evaluation_interval", "external_url", "score_metric", "improvement_tolerance", "lookback", "prices")


@dataclass(frozen=True, kw_only=True)
class AlertSettings:
    """The `settings` section: how often to evaluate, the link put in notifications, and what the
    signals need (score metric, improvement tolerance, staleness lookback, prices)."""

    evaluation_interval_s: float = DEFAULT_EVALUATION_INTERVAL_S
    external_url: str = ""
    signals: SignalSettings = field(default_factory=SignalSettings)

    @classmethod
    def from_rule_file(cls, rule_file: RuleFile) -> AlertSettings:
        """Read `settings` (every key optional). Bad keys raise a SettingsProblems (a ValueError)
        with one message for each, naming the key and the reason."""
        section = rule_file.sections.get("settings") or {}
        if not isinstance(section, Mapping):
            raise ValueError(f"settings: expected a mapping, got {section!r}")
        errors: list[str] = []
        unknown = sorted(set(section) - set(_SETTINGS))
        if unknown:
            errors.append(f"settings: unknown keys {unknown}; expected some of {list(_SETTINGS)}")

        def read(key: str, parse: Callable[[Any], Any], default: Any) -> Any:
            try:
                return parse(section.get(key, default))
            except ValueError as error:
                errors.append(f"settings.{key}: {error}")
                return default

        interval = read("evaluation_interval", _positive_duration, DEFAULT_EVALUATION_INTERVAL_S)
        lookback = read("lookback", _positive_duration, DEFAULT_LOOKBACK_S)
        tolerance = read("improvement_tolerance", _non_negative_number, 0.0)
        metric = read("score_metric", _metric_name, DEFAULT_METRIC)
        url = read("external_url", _url, "")
        prices = read("prices", _price_table, {})
        if errors:
            raise SettingsProblems(errors)
        signals = SignalSettings(
            score_metric=metric,
            improvement_tolerance=float(tolerance),
            prices=prices,
            values=dict(rule_file.values),
            lookback_s=lookback,
        )
        return cls(evaluation_interval_s=interval, external_url=url, signals=signals)


class SettingsProblems(ValueError):
    """Every bad key of the `settings` section, one message each (`messages`)."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages


def _duration(value: Any) -> float:
    try:
        return parse_duration(value)
    except ExpressionError as error:
        raise ValueError(str(error)) from None


def _positive_duration(value: Any) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise ValueError(f"must be positive, got {seconds}")
    return seconds


def _non_negative_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ValueError(f"expected a finite number >= 0, got {value!r}")
    return float(value)


def _metric_name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a metric name, got {value!r}")
    return value


def _url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a URL, got {value!r}")
    return value


def _price_table(value: Any) -> PriceTable:
    try:
        return PriceTable.from_mapping(value)
    except TypeError as error:
        raise ValueError(str(error)) from None


class AlertService:
    """One rule file's alerting: state machine, router with silences, acknowledgements and
    inhibition, and delivery. `clock` (epoch seconds) drives the router, silences and records."""

    def __init__(
        self,
        rule_file: RuleFile,
        *,
        clock: Callable[[], float] = time.time,
        environ: Mapping[str, str] | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        parts = _Parts(rule_file, environ)
        parts.raise_problems()
        self.rule_file = rule_file
        self.settings: AlertSettings = parts.settings
        self.receivers: dict[str, tuple[Receiver, ...]] = parts.receivers
        self.engine = AlertEngine(rule_file.rules, external_url=self.settings.external_url)
        self.silences = SilenceStore(clock)
        self.acks = AckStore(clock)
        self.router = Router(
            parts.route,
            clock=clock,
            mute=muter(silences=self.silences, inhibitor=parts.inhibitor),
            suppress_repeat=self.acks.suppress_repeat,
            external_url=self.settings.external_url,
        )
        self.dispatcher = dispatcher if dispatcher is not None else Dispatcher(clock=clock)

    @property
    def signal_names(self) -> set[str]:
        """Every name the rules read (what the snapshot must hold)."""
        return {name for rule in self.rule_file.rules for name in rule.expression.names}

    def evaluate(self, snapshot: Snapshot) -> Evaluation:
        """Step every alert instance to `snapshot.now` and give the router their state."""
        evaluation = self.engine.evaluate(snapshot)
        self.router.ingest(evaluation.alerts)
        return evaluation

    def flush(self) -> list[Notification]:
        """Send the notifications due now to every integration of their receiver."""
        notifications = self.router.flush_due()
        for notification in notifications:
            for integration in self.receivers.get(notification.receiver, ()):
                self.dispatcher.submit(integration, notification)
        return notifications

    def close(self, timeout_s: float = 10.0) -> bool:
        """Deliver what is queued (for up to `timeout_s`) and stop the delivery threads."""
        return self.dispatcher.close(timeout_s)


def problems(rule_file: RuleFile, *, environ: Mapping[str, str] | None = None) -> list[Problem]:
    """Every problem of the sections beyond the rules (settings, receivers, route, inhibition), located
    at the key its message names (else at its section), in the file's order: what `elitemon alerts
    check` prints after the rules' own."""
    return _Parts(rule_file, environ).problems


class _Parts:
    """Builds each section, collecting the problems (in the file's order) instead of stopping at the
    first."""

    def __init__(self, rule_file: RuleFile, environ: Mapping[str, str] | None) -> None:
        self._file = rule_file
        self.problems: list[Problem] = []
        sections = rule_file.sections
        self.settings = self._build("settings", lambda: AlertSettings.from_rule_file(rule_file), AlertSettings())
        self.receivers = self._build(
            "receivers", lambda: build_receivers(_listed(sections, "receivers"), environ=environ), {}
        )
        self.receivers.setdefault(DEFAULT_RECEIVER, ())
        self.route = self._build("route", lambda: Route.from_config(sections.get("route") or DEFAULT_ROUTE), None)
        if self.route is not None:
            # A receiver whose definition has a problem (reported above) is still declared: naming it
            # unknown as well would send the reader looking for a typo that is not there.
            declared = set(self.receivers) | {n for n in _entry_names(sections) if isinstance(n, str)}
            for path, receiver in _receivers_of(self.route):
                # Once, where it is written: a child route inherits its parent's receiver.
                written = path == "route" or f"{path}.receiver" in rule_file.positions
                if written and receiver not in declared:
                    known = ", ".join(sorted(declared))
                    self._problem("route", f"{path}.receiver: unknown receiver {receiver!r} (receivers: {known})")
        self.inhibitor = self._build(
            "inhibit_rules",
            lambda: Inhibitor.from_config(sections["inhibit_rules"]) if "inhibit_rules" in sections else Inhibitor(),
            Inhibitor(),
        )
        self.problems.sort(key=lambda problem: (problem.line, problem.column))

    def _build(self, section: str, build: Callable[[], Any], fallback: Any) -> Any:
        try:
            return build()
        except ValueError as error:
            for message in error.messages if isinstance(error, SettingsProblems) else [str(error)]:
                self._problem(section, message)
            return fallback

    def _problem(self, section: str, message: str) -> None:
        positions = self._file.positions
        located = self._file.position_of(message) or positions.get(self._receiver_path(message))
        line, column = located or positions.get(section, (1, 1))
        self.problems.append(Problem(self._file.filename, line, column, None, message))

    def _receiver_path(self, message: str) -> str:
        """`receivers[i]` for a message about the receiver named (or numbered) i, or about one of its
        integrations ('ops/slack[0]'): `build_receivers` names them, not their path. A receiver
        defined twice is placed at its second definition."""
        found = ""
        for index, name in enumerate(_entry_names(self._file.sections)):
            if message.startswith((f"receiver {name!r}", f"receiver '{name}/", f"receiver #{index} ")):
                found = f"receivers[{index}]"
                if "defined twice" not in message:
                    break
        return found

    def raise_problems(self) -> None:
        if self.problems:
            raise ValueError("\n".join(str(problem) for problem in self.problems))


def _listed(sections: Mapping[str, Any], name: str) -> list:
    value = sections.get(name) or []
    if not isinstance(value, list):
        raise ValueError(f"{name}: expected a list, got {type(value).__name__}")
    return value


def _entry_names(sections: Mapping[str, Any]) -> list[Any]:
    """The `name` of each entry of the raw `receivers` section, in order (None where an entry has
    none), whether or not its receiver builds."""
    entries = sections.get("receivers")
    return [
        entry.get("name") if isinstance(entry, dict) else None
        for entry in (entries if isinstance(entries, list) else [])
    ]


def _receivers_of(route: Route, path: str = "route") -> Iterator[tuple[str, str]]:
    yield path, route.receiver
    for index, child in enumerate(route.routes):
        yield from _receivers_of(child, f"{path}.routes[{index}]")
