"""The evaluator actor across a restart: a firing alert is taken up again from the store's events,
so the restart neither fires it a second time nor loses its resolve; silences and acknowledgements
come back too."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
import zlib
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


def _write_event(aggregator_name: str, kind: str, payload: str) -> None:
    producer = Producer(RaySink(name=aggregator_name), name="test-evaluator-events")
    producer.write_rows("events", [{"ts": time.time(), "type": kind, "payload": payload}])
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
        # Silences and acknowledgements are stored before their command returns, and come back too.
        kept = ray.get(
            evaluator.silence.remote(['agent="a1"'], ends_at=time.time() + 3600, created_by="ana", comment="c")
        )
        ended = ray.get(
            evaluator.silence.remote(['agent="a2"'], ends_at=time.time() + 3600, created_by="ana", comment="c")
        )
        ray.get(evaluator.expire_silence.remote(ended))
        ray.get(evaluator.acknowledge.remote(alert["fingerprint"], "ana", "on it"))
        silences, acks = ray.get(evaluator.silences.remote()), ray.get(evaluator.acknowledgements.remote())
        # Not the evaluator's, skipped and not fatal: not JSON, and times that are text.
        _write_event(aggregator_name, "silence", "{not json")
        text_times = {"id": "x", "matchers": ['a="b"'], "starts_at": "1", "ends_at": "2", "created_by": "a"}
        _write_event(aggregator_name, "silence", json.dumps({**text_times, "comment": "c"}))

        started = ray.get(evaluator.status.remote())["started_at"]
        ray.kill(evaluator, no_restart=False)  # the actor restarts and rebuilds its state
        wait_for(lambda: _started_after(ray, evaluator, started), timeout_s=60, what="the evaluator to restart")
        (again,) = ray.get(evaluator.alerts.remote())
        assert again["state"] == "firing" and again["fingerprint"] == alert["fingerprint"]
        assert again["fired_at"] == alert["fired_at"]
        assert ray.get(evaluator.silences.remote()) == silences and [s["state"] for s in silences] == [
            "active",
            "expired",
        ]
        assert [s["id"] for s in silences] == [kept, ended]
        assert ray.get(evaluator.acknowledgements.remote()) == acks and acks[0]["fingerprint"] == alert["fingerprint"]
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


def test_an_alert_state_is_shown_only_once_its_change_is_recorded(aggregator_handle, aggregator_name: str) -> None:
    """`alerts()` read in the middle of an evaluation showed a resolve whose event was not yet
    written, so a `flush_events` right after it had nothing to wait for (this test's flake, once)."""
    from elitemon.alerts.evaluator import AlertEvaluator

    # In this process, to hold an evaluation between its state change and its record. The loop
    # evaluates once at start, then not for an hour.
    evaluator = AlertEvaluator(zlib.compress(RULES.replace("200ms", "1h").encode()), aggregator_name=aggregator_name)
    try:
        _write_loss(aggregator_name, 9.0)
        wait_for(lambda: evaluator.evaluate_now()["firing"] == 1, what="the alert to fire")
        _write_loss(aggregator_name, 1.0)

        inside, release, recorded = threading.Event(), threading.Event(), []
        record = evaluator._record

        def held_record(changes) -> None:
            inside.set()
            release.wait(timeout=30)
            record(changes)
            recorded.append(len(changes))

        evaluator._record = held_record
        evaluation = threading.Thread(target=evaluator.evaluate_now)
        evaluation.start()
        assert inside.wait(timeout=30), "the evaluation did not reach its record"
        seen: list = []
        reader = threading.Thread(target=lambda: seen.append((evaluator.alerts(), list(recorded))))
        reader.start()
        reader.join(timeout=1.0)  # a window for a read that does not wait for the evaluation
        release.set()
        evaluation.join(timeout=30)
        reader.join(timeout=30)
        ((alerts, recorded_when_read),) = seen
        assert alerts == [] and recorded_when_read == [1], "the resolve showed before its event was recorded"
    finally:
        evaluator.stop()


class _SilentAggregator:
    """Stands in for an aggregator that has hung: it takes queries and never answers them."""

    def __init__(self) -> None:
        self.queries = 0

    async def rows(self, selection) -> None:
        import asyncio

        self.queries += 1
        await asyncio.Event().wait()

    async def query_count(self) -> int:
        return self.queries


def test_a_hung_aggregator_fails_the_evaluation_but_not_the_evaluator(
    aggregator_handle, aggregator_name: str, monkeypatch
) -> None:
    """While the aggregator does not answer, the alerts can still be listed and due notifications
    sent; the evaluation gives up at QUERY_TIMEOUT_S, and the next one finds the store again."""
    import ray

    from elitemon.alerts import evaluator as evaluator_module

    monkeypatch.setattr(evaluator_module, "QUERY_TIMEOUT_S", 10.0)
    evaluator = evaluator_module.AlertEvaluator(
        zlib.compress(RULES.replace("200ms", "1h").encode()), aggregator_name=aggregator_name
    )
    silent = ray.remote(_SilentAggregator).options(max_concurrency=4).remote()
    try:
        _write_loss(aggregator_name, 9.0)
        wait_for(lambda: evaluator.evaluate_now()["firing"] == 1, what="the alert to fire")

        store, evaluator._aggregator = evaluator._aggregator, silent
        failures: list[Exception] = []

        def evaluate() -> None:
            try:
                evaluator.evaluate_now()
            except Exception as error:  # what the evaluation raised is the finding
                failures.append(error)

        evaluation = threading.Thread(target=evaluate)
        evaluation.start()
        wait_for(lambda: ray.get(silent.query_count.remote()) == 1, what="the evaluation to query")
        reads: list = []
        reader = threading.Thread(target=lambda: reads.append((evaluator.alerts(), evaluator.flush_now())))
        reader.start()
        reader.join(timeout=5.0)
        assert reads, "listing the alerts or sending notifications waited for the aggregator"
        assert evaluation.is_alive(), "the evaluation was over before the reads returned"
        ((listed, sent),) = reads
        assert [a["state"] for a in listed] == ["firing"] and sent == 0

        evaluation.join(timeout=60)
        assert not evaluation.is_alive(), "the evaluation waited past QUERY_TIMEOUT_S"
        assert [type(error) for error in failures] == [ray.exceptions.GetTimeoutError]

        evaluator._aggregator = store
        _write_loss(aggregator_name, 1.0)
        wait_for(lambda: evaluator.evaluate_now()["firing"] == 0, what="the resolve, with the store back")
    finally:
        evaluator.stop()
        ray.kill(silent)


class _RefusingAlertEvents(RaySink):
    """The aggregator's sink, except that it refuses for good every batch holding an alert event."""

    def submit(self, table, batch, producer_id, seq):
        if "alert_firing" in batch.column("type").to_pylist():
            refused: concurrent.futures.Future = concurrent.futures.Future()
            refused.set_exception(ValueError("refused for this test"))
            return refused
        return super().submit(table, batch, producer_id, seq)

    def is_retryable(self, error: BaseException) -> bool:
        return not isinstance(error, ValueError) and super().is_retryable(error)


def test_a_command_is_confirmed_by_its_own_event_alone(aggregator_handle, aggregator_name: str) -> None:
    """An alert event the store refused does not make a later silence look unconfirmed: the
    command's flush answers for the command's event."""
    from elitemon.alerts.evaluator import AlertEvaluator
    from elitemon.client import Client

    evaluator = AlertEvaluator(zlib.compress(RULES.replace("200ms", "1h").encode()), aggregator_name=aggregator_name)
    try:
        evaluator._producer.close()
        evaluator._producer = Producer(_RefusingAlertEvents(name=aggregator_name), name="alerts-refused")
        _write_loss(aggregator_name, 9.0)
        wait_for(lambda: evaluator.evaluate_now()["firing"] == 1, what="the alert to fire")
        wait_for(lambda: evaluator._producer.stats().failed == 1, what="the alert event to be refused")

        silence_id = evaluator.silence(['agent="a1"'], ends_at=time.time() + 3600, created_by="ana", comment="c")
        stored = Client(aggregator_handle).events(type=["silence"], as_pandas=True)
        assert [json.loads(p)["id"] for p in stored["payload"]] == [silence_id]
    finally:
        evaluator.stop()


def test_a_restarted_evaluator_does_not_notify_what_it_had_notified(aggregator_handle, aggregator_name: str) -> None:
    """Each notification handed to a receiver is an `alert_notification` event; a restarted
    evaluator reads them back and does not send a group the same firing alerts again."""
    from elitemon.alerts.evaluator import AlertEvaluator

    rules = RULES.replace("200ms", "1h") + "route: {receiver: ops, group_wait: 0s, repeat_interval: 4h}\n"
    rules += "receivers: [{name: ops}]\n"

    def evaluator() -> AlertEvaluator:
        return AlertEvaluator(zlib.compress(rules.encode()), aggregator_name=aggregator_name)

    first = evaluator()
    try:
        _write_loss(aggregator_name, 9.0)
        # (Its loop also evaluates once, at start: the count is the actor's, whoever evaluated.)
        wait_for(lambda: first.evaluate_now() and first.status()["notifications"] == 1, what="the notification")
        assert first.flush_events()
    finally:
        first.stop()
    second = evaluator()  # what a restart builds: its constructor reads the store back
    try:
        assert second.evaluate_now()["firing"] == 1
        second.flush_now()
        assert second.status()["notifications"] == 0, "the restart notified the same alert again"
    finally:
        second.stop()


def test_due_notifications_go_out_while_the_aggregator_hangs(
    aggregator_handle, aggregator_name: str, monkeypatch
) -> None:
    """Each failed round ended past the next evaluation's time, so failed rounds followed one another
    and the loop never got to send what was due."""
    import ray

    from elitemon.alerts import evaluator as evaluator_module

    monkeypatch.setattr(evaluator_module, "QUERY_TIMEOUT_S", 0.5)  # over the 200 ms interval, as 30 s is over 15 s
    rules = RULES + "route: {receiver: ops, group_wait: 2s, repeat_interval: 1h}\nreceivers: [{name: ops}]\n"
    _write_loss(aggregator_name, 9.0)
    evaluator = evaluator_module.AlertEvaluator(zlib.compress(rules.encode()), aggregator_name=aggregator_name)
    silent = ray.remote(_SilentAggregator).options(max_concurrency=8).remote()
    try:
        wait_for(lambda: [a["state"] for a in evaluator.alerts()] == ["firing"], what="the alert to fire")
        evaluator._aggregator = silent  # before its group_wait ends: the notification comes due in the hang
        wait_for(lambda: evaluator.status()["failed_evaluations"] >= 2, what="rounds failing on the hung aggregator")
        wait_for(lambda: evaluator.status()["notifications"] == 1, timeout_s=15, what="the due notification")
    finally:
        evaluator.stop()
        ray.kill(silent)
