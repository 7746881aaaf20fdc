"""The Dispatcher against a real local HTTP server: retries, give-ups, the queue bound, the log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from elitemon.alerts._model import Status
from elitemon.alerts.delivery import DeliveryRecord, Dispatcher, Outcome, RetryPolicy
from elitemon.alerts.receivers import Receiver, SlackReceiver, WebhookReceiver
from tests.alerts.receivers.servers import HOLD, RecordingServer, closed_port, make_alert, make_notification
from tests.conftest import wait_for

FAST = RetryPolicy(initial_backoff_s=0.001, max_backoff_s=0.01)
DONE = (Outcome.DELIVERED, Outcome.FAILED)


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    recording = RecordingServer()
    yield recording
    recording.close()


@pytest.fixture
def make_dispatcher() -> Iterator:
    made: list[Dispatcher] = []

    def make(**options) -> Dispatcher:
        options.setdefault("retry", FAST)
        made.append(Dispatcher(**options))
        return made[-1]

    yield make
    for dispatcher in made:
        dispatcher.close(timeout_s=2)


def hook(server: RecordingServer, name: str = "ops/webhook[0]") -> WebhookReceiver:
    return WebhookReceiver(name, url=server.url + "/hook")


def steps(records: list[DeliveryRecord]) -> list[tuple[int, Outcome, int | None]]:
    return [(record.attempt, record.outcome, record.http_status) for record in records]


def finished(dispatcher: Dispatcher, count: int = 1) -> list[DeliveryRecord]:
    done = [record for record in dispatcher.log() if record.outcome in DONE]
    return done if len(done) >= count else []


@pytest.mark.parametrize("status", [500, 429])
def test_retries_until_delivered_and_logs_every_attempt(server, make_dispatcher, status):
    server.answer(status, status)
    dispatcher = make_dispatcher()
    notification = make_notification()
    dispatcher.submit(hook(server), notification)
    wait_for(lambda: finished(dispatcher), timeout_s=5, what="delivery")
    records = dispatcher.log()
    assert steps(records) == [
        (1, Outcome.RETRYING, status),
        (2, Outcome.RETRYING, status),
        (3, Outcome.DELIVERED, None),
    ]
    assert {(r.receiver, r.group_key, r.status) for r in records} == {
        ("ops/webhook[0]", notification.group_key, Status.FIRING)
    }
    assert f"HTTP {status}" in records[0].error and records[-1].error is None
    assert server.count() == 3 and len({request.body for request in server.requests}) == 1


def test_a_timeout_is_retried_and_the_alert_not_lost(server, make_dispatcher):
    server.answer(HOLD)
    dispatcher = make_dispatcher(timeout_s=0.2)
    dispatcher.submit(hook(server), make_notification())
    wait_for(lambda: finished(dispatcher), timeout_s=5, what="delivery")
    first, last = dispatcher.log()
    assert steps([first, last]) == [(1, Outcome.RETRYING, None), (2, Outcome.DELIVERED, None)]
    assert "timed out" in first.error
    assert server.count() == 2


def test_a_non_retryable_error_stops_at_once(server, make_dispatcher):
    server.answer(400)
    dispatcher = make_dispatcher()
    dispatcher.submit(hook(server), make_notification())
    wait_for(lambda: finished(dispatcher), timeout_s=5, what="failure")
    assert dispatcher.close(timeout_s=2)
    assert steps(dispatcher.log()) == [(1, Outcome.FAILED, 400)]
    assert server.count() == 1


def test_gives_up_after_max_attempts(server, make_dispatcher):
    server.answer(then=503)
    dispatcher = make_dispatcher(retry=RetryPolicy(initial_backoff_s=0.001, max_backoff_s=0.01, max_attempts=3))
    dispatcher.submit(hook(server), make_notification())
    wait_for(lambda: finished(dispatcher), timeout_s=5, what="give-up")
    assert steps(dispatcher.log()) == [(1, Outcome.RETRYING, 503), (2, Outcome.RETRYING, 503), (3, Outcome.FAILED, 503)]


def test_gives_up_once_the_job_is_older_than_max_age(server, make_dispatcher):
    now = [1_000.0]
    policy = RetryPolicy(initial_backoff_s=0.001, max_backoff_s=0.01, max_attempts=1_000_000, max_age_s=300)
    dispatcher = make_dispatcher(retry=policy, clock=lambda: now[0])
    server.answer(then=500)
    dispatcher.submit(hook(server), make_notification())
    wait_for(dispatcher.log, timeout_s=5, what="a first failure")
    now[0] += 301
    last = wait_for(lambda: finished(dispatcher), timeout_s=5, what="give-up")[-1]
    assert (last.outcome, last.ts) == (Outcome.FAILED, 1_301.0)
    assert last.attempt < policy.max_attempts


def test_the_queue_bound_drops_the_oldest_job_and_logs_it(server, make_dispatcher):
    server.answer(HOLD)
    dispatcher = make_dispatcher(workers=1, max_queue=2)
    webhook = hook(server)
    dispatcher.submit(webhook, make_notification(group_key="g0"))  # in flight, held by the server
    wait_for(lambda: server.count() == 1, timeout_s=5, what="the held request")
    for key in ("g1", "g2", "g3"):
        dispatcher.submit(webhook, make_notification(group_key=key))
    (dropped,) = dispatcher.log()
    assert (dropped.group_key, dropped.outcome, dropped.attempt) == ("g1", Outcome.DROPPED, 0)
    assert dropped.error == "queue full (max_queue=2): dropped the oldest job"
    assert dispatcher.counts()[Outcome.DROPPED] == 1 and dispatcher.queued == 2
    server.release()
    delivered = wait_for(lambda: finished(dispatcher, 3), timeout_s=5, what="the rest")
    assert [record.group_key for record in delivered] == ["g0", "g2", "g3"]
    assert [request.json()["groupKey"] for request in server.requests] == ["g0", "g2", "g3"]


def test_a_newer_notification_replaces_a_queued_one_and_never_overtakes_one_in_flight(server, make_dispatcher):
    server.answer(HOLD)
    dispatcher = make_dispatcher(workers=2)
    webhook = hook(server)
    firing = make_notification(group_key="g")
    dispatcher.submit(webhook, firing)
    wait_for(lambda: server.count() == 1, timeout_s=5, what="the held request")
    dispatcher.submit(webhook, make_notification(make_alert(), make_alert(labels={"gpu": "1"}), group_key="g"))
    resolved = make_notification(make_alert(status=Status.RESOLVED, ends_at=1_700_000_100.0), group_key="g")
    dispatcher.submit(webhook, resolved)
    dispatcher.submit(webhook, make_notification(group_key="other"))
    wait_for(lambda: finished(dispatcher), timeout_s=5, what="the other group")
    assert server.count() == 2  # the free worker sent "other", but not "g" while its older one is in flight
    (superseded,) = [record for record in dispatcher.log() if record.outcome is Outcome.DROPPED]
    assert (superseded.group_key, superseded.status) == ("g", Status.FIRING)
    assert superseded.error == "superseded by a newer notification of the group"
    server.release()
    wait_for(lambda: finished(dispatcher, 3), timeout_s=5, what="group g")
    bodies = [request.json() for request in server.requests]
    assert [(body["groupKey"], body["status"]) for body in bodies] == [
        ("g", "firing"),
        ("other", "firing"),
        ("g", "resolved"),
    ]


def test_a_newer_notification_that_replaces_a_queued_one_carries_its_resolves_on(server, make_dispatcher):
    """The router sends a resolve once: the queued notification with b's resolve, replaced by a
    newer one about a and c, left the receiver never told that b resolved."""
    server.answer(HOLD)
    dispatcher = make_dispatcher(workers=1)
    webhook = hook(server)
    a, b, c = (make_alert(labels={"gpu": gpu}) for gpu in "abc")
    dispatcher.submit(webhook, make_notification(a, b, group_key="g"))
    wait_for(lambda: server.count() == 1, timeout_s=5, what="the held request")
    b_resolved = make_alert(labels={"gpu": "b"}, status=Status.RESOLVED, ends_at=1_700_000_100.0)
    dispatcher.submit(webhook, make_notification(a, b_resolved, group_key="g"))
    dispatcher.submit(webhook, make_notification(a, c, group_key="g"))  # replaces the one above, queued
    server.release()
    wait_for(lambda: finished(dispatcher, 2), timeout_s=5, what="group g")
    last = server.requests[-1].json()
    assert [(alert["labels"]["gpu"], alert["status"]) for alert in last["alerts"]] == [
        ("a", "firing"),
        ("c", "firing"),
        ("b", "resolved"),
    ]


def test_close_drains_then_refuses_new_jobs(server, make_dispatcher):
    server.answer(500)
    dispatcher = make_dispatcher()
    for key in ("a", "b", "c"):
        dispatcher.submit(hook(server), make_notification(group_key=key))
    assert dispatcher.close(timeout_s=5)
    assert sorted(r.group_key for r in dispatcher.log() if r.outcome is Outcome.DELIVERED) == ["a", "b", "c"]
    with pytest.raises(RuntimeError, match="closed"):
        dispatcher.submit(hook(server), make_notification())


def test_close_at_its_deadline_logs_what_is_left_as_dropped(server, make_dispatcher):
    server.answer(HOLD)
    dispatcher = make_dispatcher(workers=1)
    dispatcher.submit(hook(server), make_notification(group_key="held"))
    wait_for(lambda: server.count() == 1, timeout_s=5, what="the held request")
    dispatcher.submit(hook(server), make_notification(group_key="waiting"))
    assert not dispatcher.close(timeout_s=0.1)
    (dropped,) = dispatcher.log()
    assert (dropped.group_key, dropped.outcome, dropped.error) == (
        "waiting",
        Outcome.DROPPED,
        "dispatcher closed before delivery",
    )
    server.release()
    wait_for(lambda: finished(dispatcher), timeout_s=5, what="the held job")


def test_on_record_sees_every_record_and_its_errors_are_contained(server, make_dispatcher):
    seen: list[DeliveryRecord] = []

    def on_record(record: DeliveryRecord) -> None:
        seen.append(record)
        raise RuntimeError("the store is down")

    server.answer(500)
    dispatcher = make_dispatcher(on_record=on_record)
    dispatcher.submit(hook(server), make_notification())
    wait_for(lambda: len(seen) == 2, timeout_s=5, what="two records")
    assert seen == dispatcher.log()
    assert seen[-1].as_dict() == {
        "ts": seen[-1].ts,
        "receiver": "ops/webhook[0]",
        "group_key": make_notification().group_key,
        "status": "firing",
        "attempt": 2,
        "outcome": "delivered",
        "http_status": None,
        "error": None,
    }


def test_log_filters_by_receiver_or_integration_and_limits(server, make_dispatcher):
    dispatcher = make_dispatcher()
    for name in ("ops/webhook[0]", "ops/webhook[1]", "dev/webhook[0]"):
        dispatcher.submit(hook(server, name), make_notification())
    wait_for(lambda: finished(dispatcher, 3), timeout_s=5, what="three deliveries")
    assert sorted(r.receiver for r in dispatcher.log(receiver="ops")) == ["ops/webhook[0]", "ops/webhook[1]"]
    assert [r.receiver for r in dispatcher.log(receiver="dev/webhook[0]")] == ["dev/webhook[0]"]
    assert dispatcher.log(limit=1) == dispatcher.log()[-1:]
    assert dispatcher.log(limit=0) == [] and len(dispatcher.log(limit=10)) == 3
    with pytest.raises(ValueError, match="limit"):
        dispatcher.log(limit=-1)


def test_the_slack_token_never_reaches_the_log(server, make_dispatcher):
    token = "T0SECRET/B0SECRET/xoxsecretsecret"
    unreachable = SlackReceiver("ops/slack[0]", api_url=f"http://127.0.0.1:{closed_port()}/services/{token}")
    echoing = SlackReceiver("ops/slack[1]", api_url=f"{server.url}/services/{token}")
    server.answer((403, f"invalid_token /services/{token}".encode()))
    dispatcher = make_dispatcher(retry=RetryPolicy(initial_backoff_s=0.001, max_backoff_s=0.01, max_attempts=2))
    dispatcher.submit(unreachable, make_notification())
    dispatcher.submit(echoing, make_notification())
    wait_for(lambda: finished(dispatcher, 2), timeout_s=5, what="two failures")
    records = dispatcher.log()
    assert {(r.receiver, r.outcome) for r in records if r.outcome in DONE} == {
        ("ops/slack[0]", Outcome.FAILED),
        ("ops/slack[1]", Outcome.FAILED),
    }
    for record in records:
        assert record.error and "SECRET" not in record.error and "secret" in record.error
        assert "SECRET" not in repr(record) and "SECRET" not in str(record.as_dict())


class _BrokenReceiver(Receiver):
    """A receiver with a bug: it raises something other than DeliveryError."""

    name = "ops/broken[0]"

    def deliver(self, notification, *, timeout_s):
        raise KeyError("a bug")

    def describe(self):
        return {"name": self.name}


def test_a_receiver_bug_fails_the_job_without_killing_the_worker(server, make_dispatcher):
    dispatcher = make_dispatcher(workers=1)
    dispatcher.submit(_BrokenReceiver(), make_notification())
    dispatcher.submit(hook(server), make_notification())
    broken, delivered = wait_for(lambda: finished(dispatcher, 2), timeout_s=5, what="both jobs")
    assert (broken.outcome, broken.error) == (Outcome.FAILED, "unexpected KeyError in the receiver")
    assert delivered.outcome is Outcome.DELIVERED


def test_backoff_is_full_jitter_capped_and_honours_retry_after():
    policy = RetryPolicy(initial_backoff_s=0.5, factor=2, max_backoff_s=30, max_attempts=10, max_age_s=300)
    assert policy.delay(1, 0.0) == 0.0
    assert policy.delay(1, 0.999) == pytest.approx(0.4995)
    assert policy.delay(4, 0.5) == pytest.approx(2.0)  # half of 0.5 * 2**3
    assert policy.delay(20, 0.5) == pytest.approx(15.0)  # half of the 30 s cap
    assert policy.delay(1, 0.1, retry_after_s=7) == 7.0
    assert policy.delay(1, 0.1, retry_after_s=600) == 30.0
    assert policy.gives_up(10, 1.0) and policy.gives_up(2, 300.0) and not policy.gives_up(9, 299.0)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"initial_backoff_s": 0}, "initial_backoff_s"),
        ({"initial_backoff_s": 60}, "max_backoff_s"),
        ({"factor": 0.5}, "factor"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_age_s": 0}, "max_age_s"),
    ],
)
def test_bad_retry_policies_are_value_errors(options, match):
    with pytest.raises(ValueError, match=match):
        RetryPolicy(**options)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"workers": 0}, "workers"),
        ({"max_queue": 0}, "max_queue"),
        ({"log_size": 0}, "log_size"),
        ({"timeout_s": 0}, "timeout_s"),
    ],
)
def test_bad_dispatcher_settings_are_value_errors(options, match):
    with pytest.raises(ValueError, match=match):
        Dispatcher(**options)
