"""The shared pieces: post()'s error classification against a real server, titles, times, redaction."""

from __future__ import annotations

import pytest

from elitemon.alerts._model import Status
from elitemon.alerts.receivers import DeliveryError, HttpRequest
from elitemon.alerts.receivers._base import (
    alert_fields,
    check_url,
    json_request,
    post,
    redact_url,
    rfc3339,
    title,
)
from tests.alerts.receivers.servers import HOLD, closed_port, make_alert, make_notification

TOKEN = "tok-0123456789"


def request_to(server, path: str = "/hook") -> HttpRequest:
    return json_request(server.url + path, {"hello": "world"}, bearer_token=TOKEN)


def test_post_sends_the_body_headers_and_a_user_agent(http_server):
    assert post(request_to(http_server), timeout_s=5) == 200
    (received,) = http_server.requests
    assert received.path == "/hook"
    assert received.json() == {"hello": "world"}
    assert received.headers["content-type"] == "application/json"
    assert received.headers["authorization"] == f"Bearer {TOKEN}"
    assert received.headers["user-agent"].startswith("elitemon/")


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (400, False), (401, False), (404, False)]
)
def test_post_classifies_http_statuses(http_server, status, retryable):
    http_server.answer(status)
    with pytest.raises(DeliveryError) as caught:
        post(request_to(http_server), timeout_s=5)
    assert (caught.value.status, caught.value.retryable) == (status, retryable)
    assert caught.value.retry_after_s == (0.0 if status == 429 else None)


def test_post_does_not_follow_redirects(http_server):
    http_server.answer(302)
    with pytest.raises(DeliveryError) as caught:
        post(request_to(http_server), timeout_s=5)
    assert (caught.value.status, caught.value.retryable) == (302, False)
    assert http_server.count() == 1


def test_a_timeout_and_a_refused_connection_are_retryable(http_server):
    http_server.answer(HOLD)
    with pytest.raises(DeliveryError) as caught:
        post(request_to(http_server), timeout_s=0.2)
    assert caught.value.retryable and caught.value.status is None
    with pytest.raises(DeliveryError) as caught:
        post(json_request(f"http://127.0.0.1:{closed_port()}/x", {}), timeout_s=2)
    assert caught.value.retryable and caught.value.status is None


def test_errors_scrub_the_path_the_token_and_extra_secrets_even_when_the_server_echoes_them(http_server):
    echoed = f"no such hook /secret/path?key=abcdef, token {TOKEN}, routing rk-777, id segment-xyz".encode()
    http_server.answer((404, echoed))
    request = json_request(http_server.url + "/secret/path/segment-xyz?key=abcdef", {}, bearer_token=TOKEN)
    with pytest.raises(DeliveryError) as caught:
        post(request, timeout_s=5, secrets=["rk-777"])
    message = str(caught.value)
    assert "HTTP 404" in message and "no such hook" in message
    for secret in ("/secret/path", "abcdef", TOKEN, "rk-777", "segment-xyz"):
        assert secret not in message
    assert TOKEN not in repr(request) and "secret/path" not in repr(request)


def test_user_info_in_a_url_is_scrubbed_from_errors():
    """http.client takes `alice:hunter2@127.0.0.1` for a host and a port, and says so."""
    with pytest.raises(DeliveryError) as caught:
        post(json_request("https://alice:hunter2@127.0.0.1/x", {}), timeout_s=2)
    assert "hunter2" not in str(caught.value) and "alice" not in str(caught.value)


def test_a_receiver_url_with_user_info_is_refused_redacted():
    with pytest.raises(ValueError, match="must not carry user info") as caught:
        check_url("https://alice:hunter2@hooks.example/x", what="url", owner="ops")
    assert "hunter2" not in str(caught.value)


def test_redact_url_keeps_scheme_host_and_port_only():
    assert redact_url("https://hooks.slack.com/services/T0/B0/XYZ") == "https://hooks.slack.com/<secret>"
    assert redact_url("http://user:pw@10.0.0.5:8080/") == "http://10.0.0.5:8080/<secret>"
    assert redact_url("http://ntfy.local:80") == "http://ntfy.local:80"
    assert redact_url("http://[::1]:9/x?y") == "http://[::1]:9/<secret>"


def test_rfc3339_is_utc_with_go_style_fractions():
    assert rfc3339(1_700_000_000.0) == "2023-11-14T22:13:20Z"
    assert rfc3339(1_700_000_000.25) == "2023-11-14T22:13:20.25Z"


def test_title_counts_firing_alerts_and_names_the_other_group_labels():
    firing = make_alert(labels={"node": "10.0.0.5", "gpu": "0"})
    resolved = make_alert(labels={"node": "10.0.0.5", "gpu": "1"}, status=Status.RESOLVED, ends_at=1.7e9 + 60)
    group = {"alertname": "resource_exhaustion", "node": "10.0.0.5"}
    assert title(make_notification(firing, firing, resolved, group_labels=group)) == (
        "[FIRING:2] resource_exhaustion (node=10.0.0.5)"
    )
    assert title(make_notification(resolved, group_labels=group)) == "[RESOLVED] resource_exhaustion (node=10.0.0.5)"
    mixed = make_notification(make_alert("b_rule"), make_alert("a_rule"), group_labels={})
    assert title(mixed) == "[FIRING:2] a_rule, b_rule"


def test_alert_fields_in_display_order_without_empty_ones():
    alert = make_alert(
        labels={"node": "n1"},
        annotations={"runbook": "r", "description": "d", "action": "a"},
        value=0.973456789,
    )
    assert alert_fields(alert) == [
        ("name", "resource_exhaustion"),
        ("severity", "critical"),
        ("status", "firing"),
        ("value", "0.973457"),
        ("started", "2023-11-14T22:13:20Z"),
        ("action", "a"),
        ("description", "d"),
        ("runbook", "r"),
        ("labels", "node=n1"),
    ]
