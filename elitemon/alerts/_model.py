"""The values that flow through alerting: severities, alert states, alerts and notifications.

They are frozen dataclasses so that the evaluator, the router and the receivers can pass them
between threads and actors without copies going stale. Their field names follow Alertmanager's
(`labels`, `annotations`, `startsAt`/`endsAt`, `fingerprint`), so the webhook receiver renders an
Alertmanager version-4 body from them one field at a time.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class Severity(enum.Enum):
    """How bad an alert is; ordered, so inhibition can say "CRITICAL silences HIGH and below"."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str) -> Severity:
        """The severity named by `text` (any case); a ValueError lists the valid names."""
        try:
            return cls[str(text).strip().upper()]
        except KeyError:
            names = ", ".join(member.name for member in cls)
            raise ValueError(f"unknown severity {text!r}: expected one of {names}") from None


class AlertState(enum.Enum):
    """Prometheus' alert states. A resolved alert is an inactive one with an `ends_at`."""

    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"


class Status(enum.StrEnum):
    """What a notification says about an alert or a group: Alertmanager's `status` values."""

    FIRING = "firing"
    RESOLVED = "resolved"


def fingerprint(labels: Mapping[str, str]) -> str:
    """Prometheus' label-set fingerprint: FNV-1a 64 over the sorted names and values, 0xff between.

    It is stable across processes and restarts (unlike `hash()`), so it can be a PagerDuty
    `dedup_key` and the identity of an alert instance in the store.
    """
    digest = 0xCBF29CE484222325
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode() + b"\xff":
                digest = ((digest ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{digest:016x}"


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType({str(key): str(value) for key, value in sorted(mapping.items())})


@dataclass(frozen=True)
class Alert:
    """One alert instance as receivers see it: a rule's outcome for one label set.

    `labels` identify it (they always hold `alertname` and `severity`, plus the `per` labels such as
    `node`); `annotations` describe it (`action`, `description`). Times are epoch seconds; `ends_at`
    is set once the alert resolved. `value` is the signal value that decided the rule, if any.
    """

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    status: Status
    starts_at: float
    ends_at: float | None = None
    value: float | None = None
    generator_url: str = ""
    fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _frozen(self.labels))
        object.__setattr__(self, "annotations", _frozen(self.annotations))
        object.__setattr__(self, "status", Status(self.status))
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", fingerprint(self.labels))

    @property
    def name(self) -> str:
        """The rule's name (the `alertname` label)."""
        return self.labels.get("alertname", "")

    @property
    def severity(self) -> Severity:
        """The `severity` label as a Severity (INFO when it is missing)."""
        return Severity.parse(self.labels["severity"]) if "severity" in self.labels else Severity.INFO


@dataclass(frozen=True)
class Notification:
    """What one receiver is sent for one alert group at one flush: Alertmanager's webhook payload.

    `status` is FIRING while any alert of the group fires and RESOLVED once all have resolved.
    `group_key` identifies the group across flushes (receivers use it to update one message).
    """

    receiver: str
    group_key: str
    group_labels: Mapping[str, str]
    alerts: tuple[Alert, ...]
    external_url: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "group_labels", _frozen(self.group_labels))
        object.__setattr__(self, "alerts", tuple(self.alerts))

    @property
    def status(self) -> Status:
        """FIRING if any alert of the group fires, else RESOLVED."""
        firing = any(alert.status is Status.FIRING for alert in self.alerts)
        return Status.FIRING if firing else Status.RESOLVED

    @property
    def common_labels(self) -> Mapping[str, str]:
        """The labels every alert of the group shares with the same value."""
        return _common(alert.labels for alert in self.alerts)

    @property
    def common_annotations(self) -> Mapping[str, str]:
        """The annotations every alert of the group shares with the same value."""
        return _common(alert.annotations for alert in self.alerts)


def _common(mappings) -> Mapping[str, str]:
    mappings = list(mappings)
    if not mappings:
        return MappingProxyType({})
    shared = dict(mappings[0])
    for mapping in mappings[1:]:
        shared = {key: value for key, value in shared.items() if mapping.get(key) == value}
    return MappingProxyType(shared)
