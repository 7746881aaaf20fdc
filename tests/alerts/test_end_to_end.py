"""End to end on a real local Ray: samples cross a threshold in the store, the evaluator actor fires,
and every receiver (local HTTP servers for Slack, PagerDuty, ntfy and the webhook; a real SMTP server
with STARTTLS and AUTH for email) gets exactly one notification for the group; then the samples
recover and each gets one resolve. The webhook answers 500 first: it is retried and nothing is lost."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from elitemon.producer import Producer, RaySink
from tests.alerts.receivers.conftest import SMTP_PASSWORD, SMTP_USER
from tests.alerts.receivers.servers import RecordingServer, SmtpServer
from tests.conftest import wait_for

SLACK_TOKEN = "T000/B000/slack-secret-token"
PAGERDUTY_KEY = "pd-routing-key-secret"

RULES = """
settings:
  evaluation_interval: 200ms
  external_url: "http://127.0.0.1:9/elitemon"
alert_rules:
  slow_training:
    threshold: "agent.episodes_per_s < 10"
    severity: HIGH
    action: "Look at the trainers"
    per: agent
    description: "{{agent}} trains at {{value:.1f}} episodes/s"
receivers:
  - name: ops
    slack_configs: [{{api_url: "{slack}/services/{slack_token}"}}]
    email_configs:
      - {{to: oncall@example.com, from: {user}, smarthost: "{smtp}", auth_username: {user},
          auth_password: "{password}", require_tls: true, ca_file: "{ca}"}}
    pagerduty_configs: [{{routing_key: "{pd_key}", url: "{pagerduty}/v2/enqueue"}}]
    webhook_configs: [{{url: "{webhook}/alerts"}}]
    ntfy_configs: [{{url: "{ntfy}/elitemon-alerts"}}]
route:
  receiver: ops
  group_by: [alertname]
  group_wait: 300ms
  group_interval: 500ms
  repeat_interval: 1h
"""


@pytest.fixture
def servers(certificate: tuple[Path, Path]) -> Iterator[dict]:
    http = {name: RecordingServer() for name in ("slack", "pagerduty", "webhook", "ntfy")}
    smtp = SmtpServer(certificate, username=SMTP_USER, password=SMTP_PASSWORD)
    yield {**http, "smtp": smtp}
    for server in (*http.values(), smtp):
        server.close()


def _write_rates(aggregator_name: str, rates: dict[str, float]) -> None:
    producer = Producer(RaySink(name=aggregator_name), name="test-trainers")
    now = time.time()
    rows = [
        {"ts": now, "kind": "agent", "node": "127.0.0.1", "source": agent, "generation": 3, "metric": "episodes_per_s",
         "value": rate}
        for agent, rate in rates.items()
    ]  # fmt: skip
    producer.write_rows("samples", rows)
    assert producer.close(timeout=30)


def test_threshold_crossing_notifies_each_receiver_once_then_resolves(
    aggregator_handle, aggregator_name: str, servers: dict, certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    import ray

    from elitemon.alerts.evaluator import start_alerts
    from elitemon.client import Client

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        RULES.format(
            slack=servers["slack"].url,
            slack_token=SLACK_TOKEN,
            smtp=servers["smtp"].smarthost,
            user=SMTP_USER,
            password=SMTP_PASSWORD,
            ca=certificate[0],
            pd_key=PAGERDUTY_KEY,
            pagerduty=servers["pagerduty"].url,
            webhook=servers["webhook"].url,
            ntfy=servers["ntfy"].url,
        )
    )
    servers["webhook"].answer(500)  # the first delivery fails: it must be retried, not lost
    _write_rates(aggregator_name, {"trial_a": 3.0, "trial_b": 4.5, "trial_c": 40.0})
    evaluator = start_alerts(rules, aggregator_name=aggregator_name)
    try:
        # Firing: one notification for the group (two alerts) at each receiver.
        wait_for(lambda: servers["slack"].count() >= 1, timeout_s=30, what="the Slack notification")
        wait_for(lambda: servers["webhook"].count() >= 2, timeout_s=30, what="the webhook's retry")
        wait_for(lambda: len(servers["smtp"].messages) >= 1, timeout_s=30, what="the email")
        wait_for(lambda: servers["ntfy"].count() >= 1 and servers["pagerduty"].count() >= 2, what="ntfy and PagerDuty")
        firing = servers["webhook"].requests[-1].json()
        assert firing["version"] == "4" and firing["status"] == "firing" and firing["receiver"] == "ops"
        assert sorted(a["labels"]["agent"] for a in firing["alerts"]) == ["trial_a", "trial_b"]
        assert firing["alerts"][0]["annotations"]["description"] == "trial_a trains at 3.0 episodes/s"
        assert servers["webhook"].requests[0].json()["alerts"] == firing["alerts"]  # the retry resent it
        triggers = [r.json() for r in servers["pagerduty"].requests]
        assert [t["event_action"] for t in triggers] == ["trigger", "trigger"]
        assert {t["dedup_key"] for t in triggers} == {a["fingerprint"] for a in firing["alerts"]}
        assert "[FIRING:2]" in servers["smtp"].messages[0]["Subject"]

        # Resolved: the rates recover, each receiver hears it once.
        _write_rates(aggregator_name, {"trial_a": 30.0, "trial_b": 25.0})
        wait_for(lambda: servers["webhook"].count() >= 3, timeout_s=30, what="the resolve at the webhook")
        wait_for(lambda: len(servers["smtp"].messages) >= 2 and servers["pagerduty"].count() >= 4, what="resolves")
        wait_for(lambda: servers["slack"].count() >= 2 and servers["ntfy"].count() >= 2, what="resolves")
        assert servers["webhook"].requests[-1].json()["status"] == "resolved"
        assert [r.json()["event_action"] for r in servers["pagerduty"].requests[2:]] == ["resolve", "resolve"]

        # Exactly one notification per flush: no duplicates arrive after a few more evaluations.
        before = {name: servers[name].count() for name in ("slack", "pagerduty", "webhook", "ntfy")}
        ray.get(evaluator.evaluate_now.remote())
        ray.get(evaluator.flush_now.remote())
        assert {name: servers[name].count() for name in before} == {"slack": 2, "pagerduty": 4, "webhook": 3, "ntfy": 2}
        assert len(servers["smtp"].messages) == 2

        # The history is in the store, and the delivery log shows the retry; no secret anywhere.
        assert ray.get(evaluator.flush_events.remote())
        events = Client(aggregator_handle).events(type=["alert_firing", "alert_resolved"], as_pandas=True)
        assert sorted(events["type"]) == ["alert_firing"] * 2 + ["alert_resolved"] * 2
        assert {json.loads(p)["labels"]["agent"] for p in events["payload"]} == {"trial_a", "trial_b"}
        log = ray.get(evaluator.deliveries.remote("ops/webhook[0]"))
        assert [r["outcome"] for r in log][:2] == ["retrying", "delivered"] and log[0]["http_status"] == 500
        exposed = json.dumps([ray.get(evaluator.deliveries.remote()), ray.get(evaluator.receivers.remote())])
        assert SLACK_TOKEN not in exposed and PAGERDUTY_KEY not in exposed and SMTP_PASSWORD not in exposed
        assert ray.get(evaluator.alerts.remote()) == []
    finally:
        ray.kill(evaluator, no_restart=True)
