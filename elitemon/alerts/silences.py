"""Silences, acknowledgements and inhibition: the ways a person or a rule keeps an alert quiet.

- A silence (Alertmanager's) mutes every alert its matchers match while its time window is open.
- An acknowledgement says a person is on one alert instance: the alert is not repeated, but its
  resolve is still sent, so whoever acknowledged it learns that it is over.
- An inhibit rule (Alertmanager's) mutes target alerts while a related source alert fires, e.g.
  the HIGH alerts of a node whose CRITICAL `node_failure` already paged someone.

The router asks for silences and inhibition through one `Mute` predicate (`muter` builds it) and
for acknowledgements through `AckStore.suppress_repeat`; both are asked at every evaluation, so a
silence that ends or an inhibiting alert that resolves lets the alert through at the next one.
"""

from __future__ import annotations

import enum
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from elitemon.alerts._model import Alert, Status
from elitemon.alerts.routing import AlertPredicate, Clock, Matcher, Mute, parse_label_names, parse_matchers

_INHIBIT_KEYS = frozenset({"source_matchers", "target_matchers", "equal"})


class SilenceState(enum.Enum):
    """Where a silence's window stands: not yet open, open, or closed."""

    PENDING = "pending"
    ACTIVE = "active"
    EXPIRED = "expired"


def _as_matchers(items: Iterable[Matcher | str], what: str) -> tuple[Matcher, ...]:
    if isinstance(items, str):
        raise ValueError(f"{what}: expected a list of matchers, got the string {items!r}")
    matchers = []
    for index, item in enumerate(items):
        try:
            matchers.append(item if isinstance(item, Matcher) else Matcher.parse(item))
        except ValueError as exc:
            raise ValueError(f"{what}[{index}]: {exc}") from None
    if not matchers:
        raise ValueError(f"{what}: at least one matcher is needed")
    return tuple(matchers)


@dataclass(frozen=True)
class Silence:
    """A set of matchers muting alerts in the window `starts_at <= now < ends_at` (epoch seconds).

    Like Alertmanager, at least one matcher must not match the empty string, so a silence cannot
    mute every alert by accident. A window with `ends_at == starts_at` is empty: that is what
    expiring a pending silence leaves. `SilenceStore.add` further requires a new silence to end
    after it starts and in the future.
    """

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "matchers", _as_matchers(self.matchers, "matchers"))
        if not self.id:
            raise ValueError(f"a silence needs an id, got {self.id!r}")
        if all(matcher.matches({}) for matcher in self.matchers):
            shown = ", ".join(map(str, self.matchers))
            raise ValueError(f"at least one matcher must not match the empty string, got {shown}")
        if self.ends_at < self.starts_at:
            raise ValueError(f"a silence cannot end before it starts, got {self.starts_at=}, {self.ends_at=}")
        for name in ("created_by", "comment"):
            _check_text("a silence", name, getattr(self, name))

    def state(self, now: float) -> SilenceState:
        """PENDING before `starts_at`, EXPIRED from `ends_at` on, ACTIVE in between."""
        if now < self.starts_at:
            return SilenceState.PENDING
        return SilenceState.EXPIRED if now >= self.ends_at else SilenceState.ACTIVE

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether every matcher matches the label set (whatever the window)."""
        return all(matcher.matches(labels) for matcher in self.matchers)


#: Expired silences and old acknowledgements are kept this long (Alertmanager's default retention,
#: 120 h), then forgotten; at most MAX_SILENCES silences exist at once (a new one past it is refused).
RETENTION_S = 120 * 3600.0
MAX_SILENCES = 10_000


class SilenceStore:
    """The silences of one Alertmanager-like instance. Expired ones are kept for listing for
    `retention_s`, then dropped; more than `max_silences` at once is refused with a ValueError."""

    def __init__(self, clock: Clock, *, retention_s: float = RETENTION_S, max_silences: int = MAX_SILENCES) -> None:
        self._clock = clock
        self._retention_s = retention_s
        self._max_silences = max_silences
        self._silences: dict[str, Silence] = {}
        self._lock = threading.RLock()  # commands arrive on the actor's threads, evaluations on its loop

    def add(
        self,
        matchers: Iterable[Matcher | str],
        *,
        ends_at: float,
        created_by: str,
        comment: str,
        starts_at: float | None = None,
    ) -> str:
        """Create a silence (starting now unless `starts_at` is given) and return its id."""
        now = self._clock()
        starts_at = now if starts_at is None else starts_at
        if ends_at <= max(starts_at, now):
            raise ValueError(f"a new silence must end after it starts and in the future, got {ends_at=}")
        _check_length("a silence", created_by=created_by, comment=comment)
        silence = Silence(uuid.uuid4().hex, tuple(matchers), starts_at, ends_at, created_by, comment)
        with self._lock:
            self._forget_old(now)
            if len(self._silences) >= self._max_silences:
                raise ValueError(
                    f"already {len(self._silences)} silences (max_silences={self._max_silences}): expire some"
                )
            self._silences[silence.id] = silence
        return silence.id

    def restore(self, silence: Silence) -> None:
        """Put back a silence as it was recorded (a restart reads its records from the store), in
        any order: a silence only ever ends earlier (expiry), so of two records of one id the one
        that ends first is the later. One expired longer than `retention_s` ago is not kept."""
        now = self._clock()
        with self._lock:
            self._forget_old(now)
            held = self._silences.get(silence.id)
            if (held is None or silence.ends_at < held.ends_at) and silence.ends_at >= now - self._retention_s:
                self._silences[silence.id] = silence

    def _forget_old(self, now: float) -> None:
        for silence_id in [i for i, s in self._silences.items() if s.ends_at < now - self._retention_s]:
            del self._silences[silence_id]

    def get(self, silence_id: str) -> Silence:
        """The silence with this id; a ValueError names an unknown id."""
        try:
            with self._lock:
                return self._silences[silence_id]
        except KeyError:
            raise ValueError(f"no silence with id {silence_id!r}") from None

    def expire(self, silence_id: str) -> None:
        """End the silence now (a pending one never opens); expiring an expired one is an error."""
        now = self._clock()
        with self._lock:
            silence = self.get(silence_id)
            if silence.state(now) is SilenceState.EXPIRED:
                raise ValueError(f"silence {silence_id!r} has already expired")
            self._silences[silence_id] = replace(silence, starts_at=min(silence.starts_at, now), ends_at=now)

    def list(self, active_only: bool = False) -> list[Silence]:
        """All silences, or only the active ones, by start time then id."""
        now = self._clock()
        with self._lock:
            silences = sorted(self._silences.values(), key=lambda s: (s.starts_at, s.id))
        return [s for s in silences if not active_only or s.state(now) is SilenceState.ACTIVE]

    def is_silenced(self, alert: Alert) -> list[str]:
        """The ids of the active silences that match the alert (empty: not silenced)."""
        return [silence.id for silence in self.list(active_only=True) if silence.matches(alert.labels)]


@dataclass(frozen=True)
class Acknowledgement:
    """A person taking one alert instance (by fingerprint), until it resolves or `until` passes.

    It covers the firing episode under way when it was made (`at`): an alert that resolves and
    fires again starts after `at`, so it is a new episode and is repeated as usual.
    """

    fingerprint: str
    by: str
    comment: str
    at: float
    until: float | None = None

    def __post_init__(self) -> None:
        for name in ("fingerprint", "by", "comment"):
            _check_text("an acknowledgement", name, getattr(self, name))
        if self.until is not None and self.until <= self.at:
            raise ValueError(f"an acknowledgement must last past its time, got {self.at=}, {self.until=}")

    def covers(self, alert: Alert, now: float) -> bool:
        """Whether this acknowledgement holds for the alert at `now`."""
        in_time = self.until is None or now < self.until
        return alert.fingerprint == self.fingerprint and alert.starts_at <= self.at and in_time


class AckStore:
    """The latest acknowledgement of each alert instance; ones past their `until`, or older than
    `retention_s` (by then their episode has almost surely resolved), are forgotten."""

    def __init__(self, clock: Clock, *, retention_s: float = RETENTION_S) -> None:
        self._clock = clock
        self._retention_s = retention_s
        self._acks: dict[str, Acknowledgement] = {}
        self._lock = threading.Lock()  # commands arrive on the actor's threads, evaluations on its loop

    def acknowledge(self, fingerprint: str, by: str, comment: str, until: float | None = None) -> Acknowledgement:
        """Acknowledge the alert instance with this fingerprint now, replacing an earlier one."""
        _check_length("an acknowledgement", by=by, comment=comment)
        ack = Acknowledgement(fingerprint, by, comment, at=self._clock(), until=until)
        self.restore(ack)
        return ack

    def restore(self, ack: Acknowledgement) -> None:
        """Keep `ack` as its alert instance's acknowledgement (as made, or as recorded before a
        restart, in any order) unless one made later is held, or it is past its `until` or older
        than `retention_s`."""
        now = self._clock()
        with self._lock:
            for old in [f for f, a in self._acks.items() if self._stale(a, now)]:
                del self._acks[old]
            held = self._acks.get(ack.fingerprint)
            if (held is None or ack.at >= held.at) and not self._stale(ack, now):
                self._acks[ack.fingerprint] = ack

    def _stale(self, ack: Acknowledgement, now: float) -> bool:
        return ack.at < now - self._retention_s or (ack.until or now) < now

    def list(self) -> list[Acknowledgement]:
        """The acknowledgements in force, oldest first."""
        now = self._clock()
        with self._lock:
            held = list(self._acks.values())
        return sorted((a for a in held if not self._stale(a, now)), key=lambda a: a.at)

    def __len__(self) -> int:
        return len(self.list())

    def suppress_repeat(self, alert: Alert) -> bool:
        """Whether the alert is acknowledged now: the router's `suppress_repeat` predicate."""
        with self._lock:
            ack = self._acks.get(alert.fingerprint)
        return ack is not None and ack.covers(alert, self._clock())


@dataclass(frozen=True)
class InhibitRule:
    """Alertmanager's inhibit rule: while an alert matching `source_matchers` fires, alerts
    matching `target_matchers` with the same values of the `equal` labels are muted.

    A label missing on both sides counts as equal (Alertmanager's rule). An alert that matches both
    sides cannot be inhibited by an alert that also matches both sides, itself included, so a rule
    never mutes an alert by itself nor two alerts each other.
    """

    source_matchers: tuple[Matcher, ...]
    target_matchers: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "source_matchers", _as_matchers(self.source_matchers, "source_matchers"))
        object.__setattr__(self, "target_matchers", _as_matchers(self.target_matchers, "target_matchers"))
        object.__setattr__(self, "equal", parse_label_names(self.equal, "equal"))

    @classmethod
    def from_config(cls, config: Any, path: str = "inhibit_rules[0]") -> InhibitRule:
        """A rule from an Alertmanager `inhibit_rules` item; a ValueError names the key path."""
        if not isinstance(config, Mapping):
            raise ValueError(f"{path}: expected a mapping, got {config!r}")
        unknown = sorted(set(config) - _INHIBIT_KEYS)
        if unknown:
            raise ValueError(f"{path}.{unknown[0]}: unknown key (known: {', '.join(sorted(_INHIBIT_KEYS))})")
        sides = {}
        for side in ("source_matchers", "target_matchers"):
            sides[side] = parse_matchers(config.get(side, []), f"{path}.{side}")
            if not sides[side]:
                raise ValueError(f"{path}.{side}: at least one matcher is needed")
        return cls(**sides, equal=parse_label_names(config.get("equal", []), f"{path}.equal"))

    def sources(self, firing_alerts: Iterable[Alert]) -> dict[tuple[str, ...], bool]:
        """The firing alerts matching the source side, indexed by their `equal` label values.

        A key is present when some source has those values; its value says whether one of them
        does not match the target side too (only such a source may mute a two-sided target).
        """
        index: dict[tuple[str, ...], bool] = {}
        for source in firing_alerts:
            if source.status is Status.FIRING and self._all(self.source_matchers, source):
                key = self._equal_values(source)
                index[key] = index.get(key, False) or not self.is_target(source)
        return index

    def inhibited(self, target: Alert, sources: Mapping[tuple[str, ...], bool]) -> bool:
        """Whether `target` is muted under this rule by the source alerts indexed by `sources`."""
        key = self._equal_values(target)
        if not self.is_target(target) or key not in sources:
            return False
        return sources[key] or not self._all(self.source_matchers, target)

    def is_target(self, alert: Alert) -> bool:
        """Whether the target side matches the alert."""
        return self._all(self.target_matchers, alert)

    def _equal_values(self, alert: Alert) -> tuple[str, ...]:
        return tuple(alert.labels.get(name, "") for name in self.equal)

    @staticmethod
    def _all(matchers: tuple[Matcher, ...], alert: Alert) -> bool:
        return all(matcher.matches(alert.labels) for matcher in matchers)


DEFAULT_INHIBIT_RULES = (
    InhibitRule(
        source_matchers=('alertname="node_failure"', 'severity="CRITICAL"'),
        target_matchers=('severity=~"HIGH|MEDIUM|LOW|INFO"',),
        equal=("node",),
    ),
)
"""A CRITICAL `node_failure` mutes the node's less severe alerts: the node being down explains them.
Severity label values are matched as written, upper case."""


class Inhibitor:
    """A set of inhibit rules, applied to the alerts firing now."""

    def __init__(self, rules: Iterable[InhibitRule] = DEFAULT_INHIBIT_RULES) -> None:
        self.rules = tuple(rules)

    @classmethod
    def from_config(cls, config: Any, path: str = "inhibit_rules") -> Inhibitor:
        """An Inhibitor from an Alertmanager `inhibit_rules` list."""
        if not isinstance(config, list | tuple):
            raise ValueError(f"{path}: expected a list of inhibit rules, got {config!r}")
        return cls(InhibitRule.from_config(item, f"{path}[{index}]") for index, item in enumerate(config))

    def inhibited(self, alert: Alert, firing_alerts: Iterable[Alert]) -> bool:
        """Whether any of the firing alerts mutes `alert` under any rule."""
        return self.muting(firing_alerts)(alert)

    def muting(self, firing_alerts: Iterable[Alert]) -> AlertPredicate:
        """The predicate of the alerts these firing alerts mute: indexes the sources once, so each
        alert is then checked in time independent of how many alerts fire."""
        firing = list(firing_alerts)
        indexed = [(rule, rule.sources(firing)) for rule in self.rules]
        return lambda alert: any(rule.inhibited(alert, sources) for rule, sources in indexed)


def muter(*, silences: SilenceStore | None = None, inhibitor: Inhibitor | None = None) -> Mute:
    """The router's `mute`: an alert is muted while an active silence matches it or a firing alert
    inhibits it, as both stand when the router flushes."""

    def mute(firing: Sequence[Alert]) -> AlertPredicate:
        active = silences.list(active_only=True) if silences is not None else []
        inhibited = inhibitor.muting(firing) if inhibitor is not None else None

        def muted(alert: Alert) -> bool:
            silenced = any(silence.matches(alert.labels) for silence in active)
            return silenced or (inhibited is not None and inhibited(alert))

        return muted

    return mute


#: The longest author or comment of a new silence or acknowledgement: each is stored as an event,
#: whose payload the store caps at 1 MiB; one over it would be in force and yet lost at a restart.
#: (Not checked on one read back from the store: it was stored, and must not be lost now.)
MAX_TEXT_CHARS = 10_000


def _check_text(what: str, name: str, value: object) -> None:
    if not str(value).strip():
        raise ValueError(f"{what} needs a non-empty {name}, got {value!r}")


def _check_length(what: str, **texts: object) -> None:
    for name, value in texts.items():
        if len(str(value)) > MAX_TEXT_CHARS:
            raise ValueError(f"{what}'s {name} is {len(str(value)):,} characters, over {MAX_TEXT_CHARS:,}")
