"""A generic webhook that receives exactly Alertmanager's webhook body, version 4.

So anything written for Alertmanager (alertmanager-webhook-logger, Grafana OnCall's Alertmanager
integration, a team's own handler) works unchanged. Times are RFC 3339 UTC; an alert that has not
resolved has `endsAt` "0001-01-01T00:00:00Z", Go's zero time, as Alertmanager sends it.
"""

from __future__ import annotations

from elitemon.alerts._model import Alert, Notification
from elitemon.alerts.receivers._base import HttpRequest, Receiver, check_url, json_request, post, redact_url, rfc3339

ZERO_TIME = "0001-01-01T00:00:00Z"


class WebhookReceiver(Receiver):
    """POSTs the Alertmanager v4 JSON body to `url`, optionally with `Authorization: Bearer`.

    `max_alerts` > 0 sends only the first that many alerts and counts the rest in
    `truncatedAlerts`; 0 sends all. The URL's path is treated as a secret (many webhook services
    put their token there).
    """

    def __init__(self, name: str, *, url: str, max_alerts: int = 0, bearer_token: str | None = None) -> None:
        if isinstance(max_alerts, bool) or not isinstance(max_alerts, int) or max_alerts < 0:
            raise ValueError(f"{name}: max_alerts must be an integer >= 0 (0 = all), but got {max_alerts!r}")
        self.name = name
        self._url = check_url(url, what="url", owner=name)
        self._max_alerts = max_alerts
        self._bearer_token = bearer_token or None

    def render(self, notification: Notification) -> HttpRequest:
        """The POST whose body is `payload(notification, max_alerts)`."""
        body = payload(notification, max_alerts=self._max_alerts)
        return json_request(self._url, body, bearer_token=self._bearer_token)

    def deliver(self, notification: Notification, *, timeout_s: float) -> None:
        post(self.render(notification), timeout_s=timeout_s)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type": "webhook",
            "url": redact_url(self._url),
            "max_alerts": self._max_alerts,
            "bearer_token": "<secret>" if self._bearer_token else None,
        }


def payload(notification: Notification, *, max_alerts: int = 0) -> dict[str, object]:
    """Alertmanager's webhook body, version 4, for `notification`."""
    alerts = notification.alerts[:max_alerts] if max_alerts else notification.alerts
    return {
        "version": "4",
        "groupKey": notification.group_key,
        "truncatedAlerts": len(notification.alerts) - len(alerts),
        "status": notification.status.value,
        "receiver": notification.receiver,
        "groupLabels": dict(notification.group_labels),
        "commonLabels": dict(notification.common_labels),
        "commonAnnotations": dict(notification.common_annotations),
        "externalURL": notification.external_url,
        "alerts": [_alert(alert) for alert in alerts],
    }


def _alert(alert: Alert) -> dict[str, object]:
    return {
        "status": alert.status.value,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": rfc3339(alert.starts_at),
        "endsAt": ZERO_TIME if alert.ends_at is None else rfc3339(alert.ends_at),
        "generatorURL": alert.generator_url,
        "fingerprint": alert.fingerprint,
    }
