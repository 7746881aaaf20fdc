"""The generic webhook: Alertmanager's version-4 body, field by field, sent to a real server."""

from __future__ import annotations

import pytest

from elitemon.alerts._model import Status
from elitemon.alerts.receivers import WebhookReceiver
from elitemon.alerts.receivers._webhook import payload
from tests.alerts.receivers.servers import make_alert, make_notification

TOKEN = "webhook-bearer-42"


def two_alerts():
    firing = make_alert(
        labels={"node": "10.0.0.5", "gpu": "0"},
        annotations={"action": "add nodes", "description": "GPU memory at 97%"},
        value=0.97,
        generator_url="http://elitemon:8265/rules/resource_exhaustion",
    )
    resolved = make_alert(labels={"node": "10.0.0.5", "gpu": "1"}, status=Status.RESOLVED, ends_at=1_700_000_090.5)
    return make_notification(
        firing,
        resolved,
        group_key='{}:{alertname="resource_exhaustion", node="10.0.0.5"}',
        group_labels={"alertname": "resource_exhaustion", "node": "10.0.0.5"},
        external_url="http://elitemon:8265",
    )


def test_body_is_alertmanager_version_4_field_by_field():
    notification = two_alerts()
    firing, resolved = notification.alerts
    assert payload(notification) == {
        "version": "4",
        "groupKey": '{}:{alertname="resource_exhaustion", node="10.0.0.5"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "ops",
        "groupLabels": {"alertname": "resource_exhaustion", "node": "10.0.0.5"},
        "commonLabels": {"alertname": "resource_exhaustion", "node": "10.0.0.5", "severity": "critical"},
        "commonAnnotations": {},
        "externalURL": "http://elitemon:8265",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "resource_exhaustion", "gpu": "0", "node": "10.0.0.5", "severity": "critical"},
                "annotations": {"action": "add nodes", "description": "GPU memory at 97%"},
                "startsAt": "2023-11-14T22:13:20Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://elitemon:8265/rules/resource_exhaustion",
                "fingerprint": firing.fingerprint,
            },
            {
                "status": "resolved",
                "labels": {"alertname": "resource_exhaustion", "gpu": "1", "node": "10.0.0.5", "severity": "critical"},
                "annotations": {},
                "startsAt": "2023-11-14T22:13:20Z",
                "endsAt": "2023-11-14T22:14:50.5Z",
                "generatorURL": "",
                "fingerprint": resolved.fingerprint,
            },
        ],
    }
    assert len(firing.fingerprint) == 16


def test_max_alerts_keeps_the_first_and_counts_the_rest():
    body = payload(two_alerts(), max_alerts=1)
    assert body["truncatedAlerts"] == 1
    assert [alert["status"] for alert in body["alerts"]] == ["firing"]
    assert payload(two_alerts(), max_alerts=5)["truncatedAlerts"] == 0


def test_resolved_group_status():
    alert = make_alert(status=Status.RESOLVED, ends_at=1_700_000_100.0)
    assert payload(make_notification(alert))["status"] == "resolved"


def test_deliver_posts_the_body_with_the_bearer_token(http_server):
    receiver = WebhookReceiver("ops/webhook[0]", url=http_server.url + "/alerts", max_alerts=1, bearer_token=TOKEN)
    receiver.deliver(two_alerts(), timeout_s=5)
    (received,) = http_server.requests
    assert received.path == "/alerts"
    assert received.headers["authorization"] == f"Bearer {TOKEN}"
    assert received.headers["content-type"] == "application/json"
    assert received.json() == payload(two_alerts(), max_alerts=1)


def test_describe_and_repr_hide_the_token_and_the_path():
    receiver = WebhookReceiver("ops/webhook[0]", url="https://hooks.example.com/T0K3N/path", bearer_token=TOKEN)
    assert receiver.describe() == {
        "name": "ops/webhook[0]",
        "type": "webhook",
        "url": "https://hooks.example.com/<secret>",
        "max_alerts": 0,
        "bearer_token": "<secret>",
    }
    for text in (repr(receiver), str(receiver.describe())):
        assert TOKEN not in text and "T0K3N" not in text


@pytest.mark.parametrize("max_alerts", [-1, 1.5, True, "3"])
def test_bad_max_alerts_is_a_value_error_naming_it(max_alerts):
    with pytest.raises(ValueError, match="max_alerts"):
        WebhookReceiver("w", url="http://h/x", max_alerts=max_alerts)


def test_bad_url_is_a_value_error_that_hides_its_path():
    with pytest.raises(ValueError, match="url must be an http") as caught:
        WebhookReceiver("w", url="ftp://h/T0K3N")
    assert "T0K3N" not in str(caught.value)
