"""Alertmanager's routing tree and aggregation groups: which receiver hears of an alert, and when.

Pure Python with a clock passed in: no threads, no Ray. A caller ingests the current state of its
alert instances and calls `Router.flush_due()` whenever `Router.next_due()` says something is due.

Routing (Alertmanager's `route:`). An alert enters at the root, which matches every alert. At each
node the children are tried in order; the alert goes down into the first child whose matchers all
match, and stops looking unless that child has `continue: true`, in which case the next matching
children take it too. A node none of whose children took the alert keeps it itself. A child
inherits `receiver`, `group_by` and the three timings from its parent when it does not set them.

Grouping and timing (Alertmanager's aggregation groups and notification log, per group):
- A group is the alerts one route holds with equal values of its `group_by` labels (`['...']`:
  all labels, one group per alert; `[]`: one group for the route). Its key reads like
  Alertmanager's: `{}/{severity="CRITICAL"}:{alertname="node_failure", node="n1"}`.
- A group is created by its first firing alert and first flushed `group_wait` after that, so
  alerts that start together are batched into one notification. From then on it is re-evaluated
  every `group_interval`; an evaluation sends a notification when the group changed since the
  last one (an alert the receiver has not been told fires, or an alert the receiver was told
  fires has resolved), or when nothing changed but `repeat_interval` has passed since the last
  notification. Repeats thus come on the first evaluation at least `repeat_interval` after the
  last notification, as in Alertmanager.
- A notification holds every firing alert of the group the mute predicate lets through, plus the
  alerts that resolved since the last evaluation and that the receiver had been told fire. Each
  resolved alert is therefore sent once, and only if its firing was sent: one whose firing was
  muted throughout is dropped silently. After an evaluation, resolved alerts leave the group and
  an empty group is deleted.
- Muting (silences, inhibition) is asked at every evaluation, so an alert that stops being muted
  is sent at the next one. A muted alert does not hold back the resolve of an alert already sent.
- An alert for which `suppress_repeat` is true (acknowledged) still appears in the group's
  notifications, but cannot on its own cause a repeat; its resolve is sent as usual.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from elitemon.alerts._model import Alert, Notification, Status
from elitemon.alerts.expr import compound_duration

Clock = Callable[[], float]
AlertPredicate = Callable[[Alert], bool]
Mute = Callable[[Sequence[Alert]], AlertPredicate]
"""Given every alert firing now, the predicate of the alerts to hold back from this flush's
notifications; built once per flush, so inhibition can index its source alerts once."""

DEFAULT_GROUP_WAIT_S = 30.0
DEFAULT_GROUP_INTERVAL_S = 300.0
DEFAULT_REPEAT_INTERVAL_S = 4 * 3600.0
GROUP_BY_ALL = "..."

_LABEL_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_MATCHER = re.compile(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(=~|=|!=|!~)\s*(.*?)\s*", re.DOTALL)
_ROUTE_KEYS = frozenset(
    {"receiver", "group_by", "group_wait", "group_interval", "repeat_interval", "matchers", "continue", "routes"}
)


class MatchType(enum.Enum):
    """Alertmanager's four matcher operators."""

    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


@dataclass(frozen=True)
class Matcher:
    """One label matcher, as in Alertmanager: `name`, an operator, and a value or regex.

    A missing label reads as the empty string, so `team=""` matches alerts without `team`. Regexes
    are anchored at both ends (`node=~"n1"` does not match `n10`).
    """

    name: str
    type: MatchType
    value: str
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", MatchType(self.type))
        if not _LABEL_NAME.fullmatch(self.name):
            raise ValueError(f"invalid label name {self.name!r}")
        if self.type in (MatchType.REGEX, MatchType.NOT_REGEX):
            try:
                # Anchored by `fullmatch`, not by wrapping: a leading `(?i)` must stay at the start.
                object.__setattr__(self, "_regex", re.compile(self.value))
            except re.error as exc:
                raise ValueError(f"invalid regex {self.value!r}: {exc}") from None

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Parse `name="value"`, `name!="value"`, `name=~"regex"` or `name!~"regex"`.

        Alertmanager's rules: the value may be unquoted; inside it `\\"`, `\\\\` and `\\n` are
        escapes, any other backslash is literal, and a double quote must be escaped unless it
        closes an opening one.
        """
        parts = _MATCHER.fullmatch(text) if isinstance(text, str) else None
        if parts is None:
            raise ValueError(f"bad matcher format: {text!r}")
        name, operator, raw = parts.groups()
        return cls(name, MatchType(operator), _unquote(raw))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the label set satisfies this matcher."""
        value = labels.get(self.name, "")
        if self._regex is not None:
            return (self._regex.fullmatch(value) is not None) == (self.type is MatchType.REGEX)
        return (value == self.value) == (self.type is MatchType.EQUAL)

    def __str__(self) -> str:
        return f"{self.name}{self.type.value}{_quote(self.value)}"


def parse_matchers(items: Any, path: str) -> tuple[Matcher, ...]:
    """A config list of matcher strings; errors name `path` and the item's index."""
    if not isinstance(items, list | tuple):
        raise ValueError(f"{path}: expected a list of matchers, got {items!r}")
    matchers = []
    for index, item in enumerate(items):
        try:
            matchers.append(Matcher.parse(item))
        except ValueError as exc:
            raise ValueError(f"{path}[{index}]: {exc}") from None
    return tuple(matchers)


def parse_label_names(items: Any, path: str) -> tuple[str, ...]:
    """A config list of distinct label names; errors name `path` and the offending name."""
    if not isinstance(items, list | tuple):
        raise ValueError(f"{path}: expected a list of label names, got {items!r}")
    for item in items:
        if not isinstance(item, str) or not (_LABEL_NAME.fullmatch(item) or item == GROUP_BY_ALL):
            raise ValueError(f"{path}: invalid label name {item!r}")
        if items.count(item) > 1:
            raise ValueError(f"{path}: duplicated label {item!r}")
    return tuple(items)


def _unquote(raw: str) -> str:
    quoted = raw.startswith('"')
    body = raw[1:] if quoted else raw
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\" and index + 1 < len(body):
            escaped = body[index + 1]
            out.append({"n": "\n", '"': '"', "\\": "\\"}.get(escaped, "\\" + escaped))
            index += 2
            continue
        if char == '"':
            if not quoted or index != len(body) - 1:
                raise ValueError(f"matcher value contains unescaped double quote: {raw!r}")
            quoted = False
        else:
            out.append(char)
        index += 1
    if quoted:
        raise ValueError(f"matcher value contains unescaped double quote: {raw!r}")
    return "".join(out)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def label_set_text(labels: Mapping[str, str]) -> str:
    """Prometheus' rendering of a label set, sorted: `{alertname="x", node="n1"}`."""
    return "{" + ", ".join(f"{name}={_quote(labels[name])}" for name in sorted(labels)) + "}"


def _duration(value: Any, path: str, *, allow_zero: bool) -> float:
    """Seconds from a number or a Prometheus duration string (`30s`, `5m`, `1h30m`, `1d`, `2w`)."""
    compound = compound_duration(value) if isinstance(value, str) else None
    if compound is not None:
        seconds = compound
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        seconds = float(value)
    else:
        raise ValueError(f"{path}: not a duration: {value!r}")
    if seconds == 0 and not allow_zero:
        raise ValueError(f"{path}: must be positive, got {value!r}")
    return seconds


@dataclass(frozen=True)
class Route:
    """One node of the routing tree, with everything inherited already filled in.

    Build it with `Route.from_config`. `key` is Alertmanager's route key, the path of matcher sets
    from the root (`{}/{severity="CRITICAL"}`), with `/<index>` appended where siblings would
    otherwise share one; `group_by_all` stands for `group_by: ['...']`.
    """

    receiver: str
    group_by: tuple[str, ...] = ()
    group_by_all: bool = False
    group_wait: float = DEFAULT_GROUP_WAIT_S
    group_interval: float = DEFAULT_GROUP_INTERVAL_S
    repeat_interval: float = DEFAULT_REPEAT_INTERVAL_S
    matchers: tuple[Matcher, ...] = ()
    continue_: bool = False
    routes: tuple[Route, ...] = ()
    key: str = "{}"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Route:
        """The tree described by an Alertmanager `route:` mapping.

        Keys: `receiver` (required at the root), `group_by`, `group_wait` (default 30s),
        `group_interval` (5m), `repeat_interval` (4h), `matchers`, `continue`, `routes`. Durations
        are seconds or strings like `30s`, `5m`, `4h`, `1d`. The root takes no `matchers` and no
        `continue`. Any error is a ValueError naming the key path, e.g.
        `route.routes[1].group_wait: not a duration: 'abc'`.
        """
        defaults = cls(receiver="")
        root = _route_from_config(config, "route", defaults, key="{}")
        if not root.receiver:
            raise ValueError("route.receiver: the root route needs a receiver")
        if root.matchers:
            raise ValueError("route.matchers: the root route matches every alert and takes no matchers")
        if root.continue_:
            raise ValueError("route.continue: the root route cannot continue")
        return root

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """The routes that take an alert with these labels, in tree order (empty if none)."""
        if not all(matcher.matches(labels) for matcher in self.matchers):
            return []
        taken: list[Route] = []
        for child in self.routes:
            matched = child.match(labels)
            taken.extend(matched)
            if matched and not child.continue_:
                break
        return taken or [self]

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The labels that decide an alert's group on this route (names it lacks are left out)."""
        if self.group_by_all:
            return dict(labels)
        return {name: labels[name] for name in self.group_by if name in labels}


def _route_from_config(config: Any, path: str, parent: Route, key: str) -> Route:
    node = _node_from_config(config, path, parent, key)
    children = config.get("routes", [])
    if not isinstance(children, list | tuple):
        raise ValueError(f"{path}.routes: expected a list of routes, got {children!r}")
    paths = [f"{path}.routes[{index}]" for index in range(len(children))]
    keys = [
        f"{key}/{{{','.join(sorted(map(str, _matchers_of(child, child_path))))}}}"
        for child, child_path in zip(children, paths, strict=True)
    ]
    unique = [k if keys.count(k) == 1 else f"{k}/{index}" for index, k in enumerate(keys)]
    routes = tuple(map(_route_from_config, children, paths, [node] * len(children), unique))
    return replace(node, routes=routes)


def _node_from_config(config: Any, path: str, parent: Route, key: str) -> Route:
    """The route at `path` without its children: its own settings, else its parent's."""
    if not isinstance(config, Mapping):
        raise ValueError(f"{path}: expected a mapping, got {config!r}")
    unknown = sorted(set(config) - _ROUTE_KEYS)
    if unknown:
        raise ValueError(f"{path}.{unknown[0]}: unknown key (known: {', '.join(sorted(_ROUTE_KEYS))})")
    receiver = config.get("receiver", parent.receiver)
    if not isinstance(receiver, str) or ("receiver" in config and not receiver):
        raise ValueError(f"{path}.receiver: expected a non-empty string, got {receiver!r}")
    group_by, group_by_all = parent.group_by, parent.group_by_all
    if "group_by" in config:
        group_by = parse_label_names(config["group_by"], f"{path}.group_by")
        group_by_all = GROUP_BY_ALL in group_by
        if group_by_all and len(group_by) > 1:
            raise ValueError(f"{path}.group_by: '...' cannot be combined with other labels")
        group_by = () if group_by_all else group_by
    timings = {
        name: _duration(config[name], f"{path}.{name}", allow_zero=name == "group_wait")
        if name in config
        else getattr(parent, name)
        for name in ("group_wait", "group_interval", "repeat_interval")
    }
    continue_ = config.get("continue", False)
    if not isinstance(continue_, bool):
        raise ValueError(f"{path}.continue: expected true or false, got {continue_!r}")
    matchers = _matchers_of(config, path)
    return Route(receiver, group_by, group_by_all, **timings, matchers=matchers, continue_=continue_, key=key)


def _matchers_of(config: Any, path: str) -> tuple[Matcher, ...]:
    return parse_matchers(config.get("matchers", []), f"{path}.matchers") if isinstance(config, Mapping) else ()


def _never(alert: Alert) -> bool:
    return False


def _mute_nothing(firing: Sequence[Alert]) -> AlertPredicate:
    return _never


@dataclass
class _Group:
    """One aggregation group's mutable state; `notified` holds the fingerprints the receiver was
    told fire and not yet told resolved."""

    key: str
    route: Route
    labels: Mapping[str, str]
    due: float
    alerts: dict[str, Alert] = field(default_factory=dict)
    notified: set[str] = field(default_factory=set)
    last_sent: float | None = None

    def evaluate(self, now: float, muted: AlertPredicate, suppress_repeat: AlertPredicate) -> Notification | None:
        """The notification this evaluation sends, if any; drops the group's resolved alerts."""
        shown = [a for a in self.alerts.values() if a.status is Status.FIRING and not muted(a)]
        resolved = [a for a in self.alerts.values() if a.status is Status.RESOLVED]
        told_resolved = [a for a in resolved if a.fingerprint in self.notified]
        changed = bool(told_resolved) or any(a.fingerprint not in self.notified for a in shown)
        repeat = (
            self.last_sent is not None
            and now >= self.last_sent + self.route.repeat_interval
            and not all(suppress_repeat(a) for a in shown)
        )
        for alert in resolved:
            del self.alerts[alert.fingerprint]
            self.notified.discard(alert.fingerprint)
        if not (changed or repeat):
            return None
        self.notified.update(a.fingerprint for a in shown)
        self.last_sent = now
        alerts = sorted(shown, key=_labels_order) + sorted(told_resolved, key=_labels_order)
        return Notification(self.route.receiver, self.key, self.labels, tuple(alerts))


def _labels_order(alert: Alert) -> tuple[tuple[str, str], ...]:
    return tuple(alert.labels.items())


class Router:
    """Alertmanager's dispatcher: routes ingested alerts into aggregation groups and says which
    notifications are due (the semantics are in the module docstring).

    `mute(firing)` is called once per flush that has groups due, with every alert the router holds
    as firing (the sources inhibition looks for), and returns the predicate of the firing alerts to
    hold back in this flush (`elitemon.alerts.silences.muter` builds it from silences and inhibit
    rules). `suppress_repeat(alert)` says whether a firing alert may not cause a repeat (acknowledged).
    """

    def __init__(
        self,
        route: Route,
        *,
        clock: Clock,
        mute: Mute = _mute_nothing,
        suppress_repeat: AlertPredicate = _never,
        external_url: str = "",
    ) -> None:
        self._route = route
        self._clock = clock
        self._external_url = external_url  # Alertmanager's --web.external-url: each notification's link back
        self._mute = mute
        self._suppress_repeat = suppress_repeat
        self._groups: dict[str, _Group] = {}

    def ingest(self, alerts: Iterable[Alert]) -> None:
        """Store the current state of these alert instances, replacing what was stored for each
        fingerprint. Firing alerts create their groups; a resolved alert joins only an existing
        group (a group it is not in has nothing to resolve). An alert stays stored as last
        ingested until a resolved state is ingested for it."""
        now = self._clock()
        for alert in alerts:
            for route in self._route.match(alert.labels):
                labels = route.group_labels(alert.labels)
                key = f"{route.key}:{label_set_text(labels)}"
                group = self._groups.get(key)
                if group is None and alert.status is Status.FIRING:
                    group = self._groups[key] = _Group(key, route, labels, due=now + route.group_wait)
                if group is not None:
                    group.alerts[alert.fingerprint] = alert

    def restore_notified(self, group_key: str, firing: Iterable[str], at: float) -> None:
        """Mark the group `group_key` as told at `at` that the alerts `firing` (fingerprints) fire,
        as recorded before a restart (Alertmanager's notification log): its next flush then sends
        only what changed since, or a repeat once `repeat_interval` has passed, not everything
        again. Alerts no longer in the group are left out; a group that does not exist is no-op."""
        group = self._groups.get(group_key)
        if group is not None:
            group.notified = set(firing) & set(group.alerts)
            group.last_sent = at

    def flush_due(self) -> list[Notification]:
        """Evaluate every group that is due now and return the notifications to send, at most one
        per group, ordered by due time then group key."""
        now = self._clock()
        due = sorted((g for g in self._groups.values() if g.due <= now), key=lambda g: (g.due, g.key))
        muted = self._mute(self._firing()) if due else _never
        notifications = []
        for group in due:
            notification = group.evaluate(now, muted, self._suppress_repeat)
            if notification is not None:
                notifications.append(replace(notification, external_url=self._external_url))
            if group.alerts:
                group.due = now + group.route.group_interval
            else:
                del self._groups[group.key]
        return notifications

    def next_due(self) -> float | None:
        """When `flush_due` next has a group to evaluate (None without groups). An evaluation
        need not send anything: mute and repeat decisions are only made then."""
        return min((group.due for group in self._groups.values()), default=None)

    def _firing(self) -> list[Alert]:
        alerts = {a.fingerprint: a for g in self._groups.values() for a in g.alerts.values()}
        return [alert for alert in alerts.values() if alert.status is Status.FIRING]
