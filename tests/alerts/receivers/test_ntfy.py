"""ntfy: message body, Title/Priority/Tags/Click headers, token, and the topic kept secret."""

from __future__ import annotations

import base64

import pytest

from elitemon.alerts._model import Severity, Status
from elitemon.alerts.receivers import NtfyReceiver
from tests.alerts.receivers.servers import make_alert, make_notification

TOKEN = "tk_ntfy_access_token_1234"


def receiver(url: str = "http://ntfy.local/private-topic-xyz", token: str | None = TOKEN) -> NtfyReceiver:
    return NtfyReceiver("ops/ntfy[0]", url=url, bearer_token=token)


def test_headers_and_body():
    alert = make_alert(
        labels={"node": "n1"},
        annotations={"description": "GPU memory at 97%"},
        generator_url="http://elitemon:8265/rules/x",
    )
    request = receiver().render(make_notification(alert, group_labels={"alertname": "resource_exhaustion"}))
    assert request.url == "http://ntfy.local/private-topic-xyz"
    assert dict(request.headers) == {
        "Title": "[FIRING:1] resource_exhaustion",
        "Priority": "5",
        "Tags": "rotating_light,critical",
        "Content-Type": "text/plain; charset=utf-8",
        "Click": "http://elitemon:8265/rules/x",
        "Authorization": f"Bearer {TOKEN}",
    }
    assert request.body.decode().split("\n") == [
        "resource_exhaustion (critical, firing)",
        "started: 2023-11-14T22:13:20Z",
        "description: GPU memory at 97%",
        "labels: node=n1",
    ]


@pytest.mark.parametrize(
    ("severities", "priority"),
    [(["critical", "low"], "5"), (["HIGH"], "4"), (["medium", "info"], "3"), (["low"], "2"), (["info"], "2")],
)
def test_priority_follows_the_worst_firing_alert(severities, priority):
    alerts = [make_alert(severity=s, labels={"i": str(i)}) for i, s in enumerate(severities)]
    request = receiver().render(make_notification(*alerts))
    assert request.headers["Priority"] == priority
    worst = max((Severity.parse(s) for s in severities), key=lambda severity: severity.value)
    assert request.headers["Tags"] == f"rotating_light,{worst.name.lower()}"


def test_a_resolved_notification_is_low_priority_and_has_no_click_or_token_when_unset():
    alert = make_alert(status=Status.RESOLVED, ends_at=1_700_000_100.0)
    request = receiver(token=None).render(make_notification(alert))
    assert (request.headers["Priority"], request.headers["Tags"]) == ("2", "white_check_mark")
    assert "Click" not in request.headers and "Authorization" not in request.headers


def test_a_non_ascii_title_is_rfc2047_encoded_and_a_long_body_cut():
    alert = make_alert("überlast", annotations={"description": "ä" * 5000})
    request = receiver().render(make_notification(alert, group_labels={}))
    title = request.headers["Title"]
    assert title.startswith("=?UTF-8?B?") and title.endswith("?=")
    assert base64.b64decode(title[10:-2]).decode() == "[FIRING:1] überlast"
    assert len(request.body) <= 4000
    assert request.body.decode().endswith("…")


def test_deliver_posts_to_the_topic(http_server):
    receiver(http_server.url + "/alerts-topic").deliver(make_notification(), timeout_s=5)
    (received,) = http_server.requests
    assert received.path == "/alerts-topic"
    assert received.headers["title"] == "[FIRING:1] resource_exhaustion"
    assert received.headers["priority"] == "5"
    assert received.headers["authorization"] == f"Bearer {TOKEN}"
    assert received.body.startswith(b"resource_exhaustion (critical, firing)")


def test_describe_and_repr_hide_token_and_topic():
    ntfy = receiver()
    assert ntfy.describe() == {
        "name": "ops/ntfy[0]",
        "type": "ntfy",
        "url": "http://ntfy.local/<secret>",
        "bearer_token": "<secret>",
    }
    assert TOKEN not in repr(ntfy) and "private-topic" not in repr(ntfy)


def test_a_url_without_topic_is_a_value_error():
    with pytest.raises(ValueError, match="topic"):
        NtfyReceiver("n", url="http://ntfy.local/")
