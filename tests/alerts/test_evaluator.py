"""The evaluator actor across a restart: a firing alert is taken up again from the store's events,
so the restart neither fires it a second time nor loses its resolve."""

from __future__ import annotations

import json
import time
from pathlib import Path

from elitemon.producer import Producer, RaySink
from tests.conftest import wait_for

RULES = """
settings:
  evaluation_interval: 200ms
alert_rules:
  loss_high:
    threshold: "agent.loss > 5"
    severity: MEDIUM
    action: "Lower the learning rate"
    per: agent
"""


def _write_loss(aggregator_name: str, value: float) -> None:
    producer = Producer(RaySink(name=aggregator_name), name="test-evaluator")
    row = {"ts": time.time(), "kind": "agent", "node": "n1", "source": "a1", "metric": "loss", "value": value}
    producer.write_rows("samples", [row])
    assert producer.close(timeout=30)


def test_a_restarted_evaluator_takes_up_firing_alerts(aggregator_handle, aggregator_name: str, tmp_path: Path) -> None:
    import ray

    from elitemon.alerts.evaluator import start_alerts
    from elitemon.client import Client

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    client = Client(aggregator_handle)
    evaluator = start_alerts(rules, aggregator_name=aggregator_name)
    try:
        _write_loss(aggregator_name, 9.0)
        (alert,) = wait_for(
            lambda: [a for a in ray.get(evaluator.alerts.remote()) if a["state"] == "firing"], what="the alert"
        )
        assert ray.get(evaluator.flush_events.remote())

        started = ray.get(evaluator.status.remote())["started_at"]
        ray.kill(evaluator, no_restart=False)  # the actor restarts and rebuilds its state
        wait_for(lambda: _started_after(ray, evaluator, started), timeout_s=60, what="the evaluator to restart")
        (again,) = ray.get(evaluator.alerts.remote())
        assert again["state"] == "firing" and again["fingerprint"] == alert["fingerprint"]
        assert again["fired_at"] == alert["fired_at"]
        ray.get(evaluator.evaluate_now.remote())
        assert ray.get(evaluator.flush_events.remote())
        events = client.events(type=["alert_firing", "alert_resolved"], as_pandas=True)
        assert list(events["type"]) == ["alert_firing"]  # not fired a second time

        _write_loss(aggregator_name, 1.0)
        wait_for(lambda: ray.get(evaluator.alerts.remote()) == [], timeout_s=30, what="the resolve")
        assert ray.get(evaluator.flush_events.remote())
        events = client.events(type=["alert_firing", "alert_resolved"], as_pandas=True)
        assert list(events["type"]) == ["alert_firing", "alert_resolved"]
        assert len({json.loads(p)["fingerprint"] for p in events["payload"]}) == 1
    finally:
        ray.kill(evaluator, no_restart=True)


def _started_after(ray, evaluator, started: float) -> bool:
    try:
        return ray.get(evaluator.status.remote(), timeout=5)["started_at"] > started
    except ray.exceptions.RayError:  # still restarting
        return False
