"""PagerDuty Events API v2: one event per alert, field by field, and the routing key kept secret."""

from __future__ import annotations

import pytest

from elitemon.alerts._model import Severity, Status
from elitemon.alerts.receivers import DeliveryError, PagerDutyReceiver
from elitemon.alerts.receivers._pagerduty import EVENTS_URL
from tests.alerts.receivers.servers import make_alert, make_notification

ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"


def receiver(url: str = EVENTS_URL) -> PagerDutyReceiver:
    return PagerDutyReceiver("ops/pagerduty[0]", routing_key=ROUTING_KEY, url=url)


def test_one_event_per_alert_field_by_field():
    firing = make_alert(
        labels={"node": "10.0.0.5"},
        annotations={"description": "GPU memory at 97%", "action": "add nodes"},
        value=0.97,
        generator_url="http://elitemon:8265/rules/x",
    )
    resolved = make_alert(labels={"node": "10.0.0.6"}, status=Status.RESOLVED, ends_at=1_700_000_060.0)
    notification = make_notification(firing, resolved, external_url="http://elitemon:8265")
    first, second = (request.json() for request in receiver().render(notification))
    assert first == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": firing.fingerprint,
        "payload": {
            "summary": "resource_exhaustion (node=10.0.0.5): GPU memory at 97%",
            "source": "10.0.0.5",
            "severity": "critical",
            "timestamp": "2023-11-14T22:13:20Z",
            "custom_details": {
                "labels": {"alertname": "resource_exhaustion", "node": "10.0.0.5", "severity": "critical"},
                "annotations": {"action": "add nodes", "description": "GPU memory at 97%"},
                "status": "firing",
                "starts_at": "2023-11-14T22:13:20Z",
                "group_key": notification.group_key,
                "value": 0.97,
            },
        },
        "client": "elitemon",
        "client_url": "http://elitemon:8265",
        "links": [{"href": "http://elitemon:8265/rules/x", "text": "Source"}],
    }
    assert second["event_action"] == "resolve"
    assert second["dedup_key"] == resolved.fingerprint != firing.fingerprint
    assert second["payload"]["custom_details"]["ends_at"] == "2023-11-14T22:14:20Z"
    assert "links" not in second


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        (Severity.CRITICAL, "critical"),
        (Severity.HIGH, "error"),
        (Severity.MEDIUM, "warning"),
        (Severity.LOW, "info"),
        (Severity.INFO, "info"),
    ],
)
def test_severity_mapping(severity, expected):
    (request,) = receiver().render(make_notification(make_alert(severity=severity.name)))
    assert request.json()["payload"]["severity"] == expected
    assert request.json()["payload"]["source"] == "elitemon"


def test_deliver_posts_every_event(http_server):
    http_server.answer(202, 202)
    notification = make_notification(make_alert(labels={"gpu": "0"}), make_alert(labels={"gpu": "1"}))
    receiver(http_server.url + "/v2/enqueue").deliver(notification, timeout_s=5)
    assert [r.path for r in http_server.requests] == ["/v2/enqueue", "/v2/enqueue"]
    assert [r.json()["dedup_key"] for r in http_server.requests] == [a.fingerprint for a in notification.alerts]


def test_the_routing_key_is_in_no_repr_describe_or_error(http_server):
    http_server.answer((400, f'{{"status":"invalid event","routing_key":"{ROUTING_KEY}"}}'.encode()))
    pagerduty = receiver(http_server.url + "/v2/enqueue")
    with pytest.raises(DeliveryError) as caught:
        pagerduty.deliver(make_notification(), timeout_s=5)
    assert (caught.value.status, caught.value.retryable) == (400, False)
    assert "invalid event" in str(caught.value)
    assert pagerduty.describe()["routing_key"] == "<secret>"
    for text in (str(caught.value), repr(pagerduty), str(pagerduty.describe())):
        assert ROUTING_KEY not in text
    # A proxy's URL may carry a token too: describe() redacts it as every receiver does.
    proxied = receiver("https://proxy.example/v2/enqueue?token=T0KEN")
    assert proxied.describe()["url"] == "https://proxy.example/<secret>" and "T0KEN" not in repr(proxied)


def test_an_empty_routing_key_is_a_value_error():
    with pytest.raises(ValueError, match="routing_key"):
        PagerDutyReceiver("p", routing_key=" ")
