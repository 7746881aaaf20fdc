"""build_receivers: Alertmanager-like config to named integrations, ${VAR} expansion, and errors."""

from __future__ import annotations

import pytest

from elitemon.alerts.receivers import (
    EmailReceiver,
    NtfyReceiver,
    PagerDutyReceiver,
    SlackReceiver,
    WebhookReceiver,
    build_receivers,
)
from tests.alerts.receivers.servers import make_notification

ENV = {
    "SLACK_URL": "https://hooks.slack.com/services/T1/B1/slacksecret",
    "SMTP_PASSWORD": "smtp-secret-pw",
    "PD_KEY": "pd-secret-key",
    "HOOK_TOKEN": "hook-secret-token",
    "NTFY_HOST": "ntfy.local",
}
CONFIG = [
    {
        "name": "ops",
        "slack_configs": [{"api_url": "${SLACK_URL}"}, {"api_url": "https://hooks.slack.com/services/T2/B2/other"}],
        "email_configs": [
            {
                "to": ["oncall@example.com"],
                "from": "elitemon@example.com",
                "smarthost": "mail.example.com:587",
                "auth_username": "elitemon",
                "auth_password": "${SMTP_PASSWORD}",
                "require_tls": True,
            }
        ],
        "pagerduty_configs": [{"routing_key": "${PD_KEY}", "url": "http://127.0.0.1:9/v2/enqueue"}],
        "webhook_configs": [{"url": "http://hooks.local/x", "max_alerts": 0, "bearer_token": "${HOOK_TOKEN}"}],
        "ntfy_configs": [{"url": "http://${NTFY_HOST}/topic"}],
    },
    {"name": "blackhole"},
]


def test_each_integration_is_its_own_named_receiver():
    receivers = build_receivers(CONFIG, environ=ENV)
    assert list(receivers) == ["ops", "blackhole"]
    assert receivers["blackhole"] == ()
    ops = receivers["ops"]
    assert [r.name for r in ops] == [
        "ops/slack[0]",
        "ops/slack[1]",
        "ops/email[0]",
        "ops/pagerduty[0]",
        "ops/webhook[0]",
        "ops/ntfy[0]",
    ]
    kinds = [SlackReceiver, SlackReceiver, EmailReceiver, PagerDutyReceiver, WebhookReceiver, NtfyReceiver]
    assert [type(r) for r in ops] == kinds
    assert ops[5].describe()["url"] == "http://ntfy.local/<secret>"


def test_environment_values_are_expanded_and_never_shown():
    ops = build_receivers(CONFIG, environ=ENV)["ops"]
    assert ops[3].render(make_notification())[0].json()["routing_key"] == "pd-secret-key"
    shown = " ".join(repr(r) + str(r.describe()) for r in ops)
    for secret in ("slacksecret", "smtp-secret-pw", "pd-secret-key", "hook-secret-token", "other"):
        assert secret not in shown
    assert "<secret>" in shown


def test_a_missing_variable_names_the_receiver_and_the_variable():
    with pytest.raises(ValueError, match=r"receiver 'ops': environment variable PD_KEY is not set"):
        build_receivers(CONFIG, environ={key: value for key, value in ENV.items() if key != "PD_KEY"})


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ([{"name": "ops", "slack_config": []}], r"receiver 'ops': unknown key 'slack_config'"),
        (
            [{"name": "ops", "slack_configs": [{"api_url": "https://h/x", "channel": "#a"}]}],
            r"receiver 'ops/slack\[0\]': unknown key 'channel'",
        ),
        (
            [{"name": "ops", "email_configs": [{"to": "a@b.c", "from": "x@b.c"}]}],
            r"receiver 'ops/email\[0\]': missing required key 'smarthost'",
        ),
        ([{"name": "ops"}, {"name": "ops"}], r"receiver 'ops' is defined twice"),
        ([{"slack_configs": []}], r"receiver #0 needs a non-empty string 'name'"),
        ([{"name": "ops", "webhook_configs": {"url": "http://h/x"}}], r"webhook_configs must be a list"),
        (
            [{"name": "ops", "webhook_configs": [{"url": "http://h/x", "max_alerts": -1}]}],
            r"ops/webhook\[0\]: max_alerts",
        ),
        ([{"name": "ops", "ntfy_configs": [{"url": "${NOT VALID}"}]}], r"not a valid environment variable name"),
    ],
)
def test_config_errors_name_the_receiver_and_the_key(config, match):
    with pytest.raises(ValueError, match=match):
        build_receivers(config, environ=ENV)


def test_a_bad_secret_value_is_not_echoed():
    config = [{"name": "ops", "slack_configs": [{"api_url": "hooks.slack.com/services/T/B/notaurl"}]}]
    with pytest.raises(ValueError, match="api_url must be an http") as caught:
        build_receivers(config, environ={})
    assert "notaurl" not in str(caught.value)
