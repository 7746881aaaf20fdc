"""Slack: the Block Kit body field by field, its limits, and the webhook URL kept secret."""

from __future__ import annotations

import pytest

from elitemon.alerts._model import Status
from elitemon.alerts.receivers import DeliveryError, SlackReceiver
from elitemon.alerts.receivers._slack import MAX_ALERTS
from tests.alerts.receivers.servers import closed_port, make_alert, make_notification

SLACK_TOKEN = "T0000/B0000/XXXXXXXXsecretXXXX"


def receiver(base: str = "https://hooks.slack.com") -> SlackReceiver:
    return SlackReceiver("ops/slack[0]", api_url=f"{base}/services/{SLACK_TOKEN}")


def notification(**kwargs):
    alert = make_alert(
        labels={"node": "10.0.0.5"},
        annotations={"action": "add nodes", "description": "GPU memory <97%> & rising"},
        value=0.97,
        generator_url="http://elitemon:8265/rules/x",
    )
    return make_notification(
        alert,
        group_labels={"alertname": "resource_exhaustion", "node": "10.0.0.5"},
        external_url="http://elitemon:8265",
        **kwargs,
    )


def test_blocks_header_section_and_button():
    body = receiver().render(notification()).json()
    header, section, actions = body["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "[FIRING:1] resource_exhaustion (node=10.0.0.5)"},
    }
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert section["text"]["text"].split("\n") == [
        "*resource_exhaustion*",
        "*Severity:* critical",
        "*Status:* firing",
        "*Value:* 0.97",
        "*Started:* 2023-11-14T22:13:20Z",
        "*Action:* add nodes",
        "*Description:* GPU memory &lt;97%&gt; &amp; rising",
        "*Labels:* node=10.0.0.5",
        "<http://elitemon:8265/rules/x|View source>",
    ]
    assert actions == {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "Open in elitemon"},
                "url": "http://elitemon:8265",
            }
        ],
    }
    assert body["text"].split("\n") == [
        "[FIRING:1] resource_exhaustion (node=10.0.0.5)",
        "resource_exhaustion (critical): GPU memory <97%> & rising",
    ]


def test_resolved_header_and_no_button_without_a_valid_link():
    alert = make_alert(status=Status.RESOLVED, ends_at=1_700_000_100.0, generator_url="javascript:alert(1)")
    body = receiver().render(make_notification(alert, external_url="not a url")).json()
    assert body["blocks"][0]["text"]["text"] == "[RESOLVED] resource_exhaustion"
    assert [block["type"] for block in body["blocks"]] == ["header", "section"]
    assert "javascript" not in body["blocks"][1]["text"]["text"]


def test_stays_within_slack_limits():
    alerts = [
        make_alert("a" * 300, labels={"i": str(i)}, annotations={"description": "x" * 5000})
        for i in range(MAX_ALERTS + 5)
    ]
    body = receiver().render(make_notification(*alerts)).json()
    blocks = body["blocks"]
    assert len(blocks[0]["text"]["text"]) == 150
    sections = [block for block in blocks if block["type"] == "section"]
    assert len(sections) == MAX_ALERTS
    assert all(len(block["text"]["text"]) <= 3000 for block in sections)
    assert blocks[-1] == {"type": "context", "elements": [{"type": "mrkdwn", "text": "… and 5 more alerts"}]}


def test_deliver_posts_to_the_webhook(http_server):
    receiver(http_server.url).deliver(notification(), timeout_s=5)
    (received,) = http_server.requests
    assert received.path == f"/services/{SLACK_TOKEN}"
    assert received.json() == receiver().render(notification()).json()


def test_the_token_is_in_no_repr_describe_or_error(http_server):
    slack = receiver(http_server.url)
    assert slack.describe() == {"name": "ops/slack[0]", "type": "slack", "api_url": f"{http_server.url}/<secret>"}
    http_server.answer((404, f"no_service for /services/{SLACK_TOKEN}".encode()))
    with pytest.raises(DeliveryError) as answered:
        slack.deliver(notification(), timeout_s=5)
    unreachable = receiver(f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(DeliveryError) as refused:
        unreachable.deliver(notification(), timeout_s=2)
    assert refused.value.retryable and not answered.value.retryable
    texts = [repr(slack), str(slack.describe()), str(answered.value), str(refused.value), repr(unreachable)]
    texts += [repr(slack.render(notification()))]
    for text in texts:
        assert "secret" in text or "127.0.0.1" in text
        assert SLACK_TOKEN not in text and "XXXXXXXX" not in text
