"""PagerDuty Events API v2: one event per alert, deduplicated by the alert's fingerprint.

One event per alert (not one per group) so that each alert instance opens, and later resolves,
its own PagerDuty alert: the `dedup_key` is the label-set fingerprint, stable across restarts.
Because PagerDuty deduplicates on that key, resending a whole notification after a partial
failure is harmless, which is what the dispatcher's retry does.
"""

from __future__ import annotations

import math

from elitemon.alerts._model import Alert, Notification, Severity, Status
from elitemon.alerts.receivers._base import (
    HttpRequest,
    Receiver,
    check_url,
    json_request,
    label_text,
    link,
    post,
    redact_url,
    rfc3339,
)

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
SEVERITIES = {
    Severity.CRITICAL: "critical",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "info",
    Severity.INFO: "info",
}
_SUMMARY_CHARS = 1024  # PagerDuty's limit for payload.summary


class PagerDutyReceiver(Receiver):
    """Sends trigger/resolve events to one PagerDuty service, named by its integration `routing_key`."""

    def __init__(self, name: str, *, routing_key: str, url: str = EVENTS_URL) -> None:
        if not isinstance(routing_key, str) or not routing_key.strip():
            raise ValueError(f"{name}: routing_key must be a non-empty string")
        self.name = name
        self._routing_key = routing_key.strip()
        self._url = check_url(url, what="url", owner=name)

    def render(self, notification: Notification) -> tuple[HttpRequest, ...]:
        """One Events API v2 POST per alert, in the notification's order."""
        return tuple(json_request(self._url, self.event(alert, notification)) for alert in notification.alerts)

    def event(self, alert: Alert, notification: Notification) -> dict[str, object]:
        """The Events API v2 body for one alert."""
        body: dict[str, object] = {
            "routing_key": self._routing_key,
            "event_action": "trigger" if alert.status is Status.FIRING else "resolve",
            "dedup_key": alert.fingerprint,
            "payload": {
                "summary": _summary(alert),
                "source": alert.labels.get("node") or alert.labels.get("instance") or "elitemon",
                "severity": SEVERITIES[alert.severity],
                "timestamp": rfc3339(alert.starts_at),
                "custom_details": _details(alert, notification),
            },
            "client": "elitemon",
        }
        if link(notification.external_url):
            body["client_url"] = notification.external_url
        if link(alert.generator_url):
            body["links"] = [{"href": alert.generator_url, "text": "Source"}]
        return body

    def deliver(self, notification: Notification, *, timeout_s: float) -> None:
        for request in self.render(notification):
            post(request, timeout_s=timeout_s, secrets=[self._routing_key])

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "type": "pagerduty", "url": redact_url(self._url), "routing_key": "<secret>"}


def _summary(alert: Alert) -> str:
    labels = {key: value for key, value in alert.labels.items() if key not in ("alertname", "severity")}
    text = alert.name + (f" ({label_text(labels)})" if labels else "")
    description = alert.annotations.get("description", "")
    text += f": {description}" if description else ""
    return text if len(text) <= _SUMMARY_CHARS else text[: _SUMMARY_CHARS - 1] + "…"


def _details(alert: Alert, notification: Notification) -> dict[str, object]:
    details: dict[str, object] = {
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "status": alert.status.value,
        "starts_at": rfc3339(alert.starts_at),
        "group_key": notification.group_key,
    }
    if alert.value is not None:  # NaN and infinities are not JSON: PagerDuty would refuse the event
        details["value"] = alert.value if math.isfinite(alert.value) else str(alert.value)
    if alert.ends_at is not None:
        details["ends_at"] = rfc3339(alert.ends_at)
    return details
