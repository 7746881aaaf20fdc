"""Reliable delivery: a bounded queue, a few worker threads, retries with backoff, a delivery log.

The router hands the `Dispatcher` one job per (integration, notification) and returns at once; a
slow or failing endpoint then delays only its own jobs. What happens to every job is written to the
delivery log, so "why did nobody get paged?" has an answer.
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from elitemon.alerts._model import Notification, Status
from elitemon.alerts.receivers._base import DeliveryError, Receiver

logger = logging.getLogger(__name__)

_Key = tuple[str, str]  # (integration name, group key)


class Outcome(enum.Enum):
    """What one delivery attempt, or the queue, did with a job."""

    DELIVERED = "delivered"
    RETRYING = "retrying"  # the attempt failed and another is scheduled
    FAILED = "failed"  # given up: not retryable, or out of attempts or time
    DROPPED = "dropped"  # never finished: the queue was full, a newer notification replaced it, or closed


_LEVELS = {
    Outcome.DELIVERED: logging.DEBUG,
    Outcome.RETRYING: logging.INFO,
    Outcome.FAILED: logging.WARNING,
    Outcome.DROPPED: logging.WARNING,
}


@dataclass(frozen=True)
class DeliveryRecord:
    """One line of the delivery log. `error` is the DeliveryError's message, which holds no secret."""

    ts: float
    receiver: str
    group_key: str
    status: Status
    attempt: int
    outcome: Outcome
    http_status: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict (enums as their values), for the store and the HTTP API."""
        return {
            "ts": self.ts,
            "receiver": self.receiver,
            "group_key": self.group_key,
            "status": self.status.value,
            "attempt": self.attempt,
            "outcome": self.outcome.value,
            "http_status": self.http_status,
            "error": self.error,
        }


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by attempts and by the job's age.

    The wait before attempt n+1 is uniform in [0, min(max_backoff_s, initial_backoff_s *
    factor**(n-1))] (full jitter, so that many jobs failing together do not retry together), or the
    server's Retry-After if that is longer, still capped at max_backoff_s. A job is given up after
    `max_attempts` attempts, or at the first failure once it is `max_age_s` old.
    """

    initial_backoff_s: float = 0.5
    factor: float = 2.0
    max_backoff_s: float = 30.0
    max_attempts: int = 10
    max_age_s: float = 300.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_backoff_s <= self.max_backoff_s:
            raise ValueError(
                "need 0 < initial_backoff_s <= max_backoff_s, but got "
                f"initial_backoff_s={self.initial_backoff_s!r}, max_backoff_s={self.max_backoff_s!r}"
            )
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, but got factor={self.factor!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, but got max_attempts={self.max_attempts!r}")
        if self.max_age_s <= 0:
            raise ValueError(f"max_age_s must be > 0, but got max_age_s={self.max_age_s!r}")

    def delay(self, attempt: int, uniform: float, retry_after_s: float | None = None) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based); `uniform` is a draw in [0, 1)."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * self.factor ** (attempt - 1))
        return max(uniform * ceiling, min(retry_after_s or 0.0, self.max_backoff_s))

    def gives_up(self, attempt: int, age_s: float) -> bool:
        """Whether a job that failed attempt `attempt` at age `age_s` gets no more attempts."""
        return attempt >= self.max_attempts or age_s >= self.max_age_s


class Dispatcher:
    """Delivers (integration, notification) jobs on `workers` threads, retrying, and logs every step.

    The queue holds at most `max_queue` jobs (waiting ones and ones waiting for a retry; not the
    ones being sent). At the limit, the oldest queued job (earliest submitted) is dropped, counted
    in `counts()[Outcome.DROPPED]`, and logged with outcome DROPPED, so the newest news gets through.
    A queue holds at most one job per (integration, group): a notification is the group's whole
    state, so a newer one replaces a queued older one (logged as DROPPED, "superseded"), and the
    two are never sent at once, so a retried "firing" cannot arrive after its "resolved".

    `clock` stamps records and measures a job's age (inject a fake one to age jobs past
    `max_age_s`); backoff waits are real time on a Condition, so tests pass tiny backoffs rather
    than sleeping. `on_record(record)` is called, from a worker thread, for every record (to write
    it to the store too); its exceptions are logged and ignored. `rng` draws the jitter.

    Use: `for integration in receivers[n.receiver]: dispatcher.submit(integration, n)` for each
    notification `n` the router flushes (`receivers` from `build_receivers`), and `close()` (or a
    `with` block) at shutdown, which also ends the worker threads.
    """

    def __init__(
        self,
        *,
        workers: int = 2,
        max_queue: int = 1000,
        retry: RetryPolicy | None = None,
        timeout_s: float = 10.0,
        log_size: int = 1000,
        clock: Callable[[], float] = time.time,
        on_record: Callable[[DeliveryRecord], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        for label, value in (("workers", workers), ("max_queue", max_queue), ("log_size", log_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be an integer >= 1, but got {value!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, but got {timeout_s=}")
        self._retry = retry or RetryPolicy()
        self._max_queue = max_queue
        self._timeout_s = timeout_s
        self._clock = clock
        self._on_record = on_record
        self._rng = rng or random.Random()
        self._cond = threading.Condition()
        self._jobs: dict[_Key, _Job] = {}  # queued, one per key
        self._heap: list[tuple[float, int, _Key]] = []  # (due, seq, key); entries of replaced jobs are skipped
        self._busy: set[_Key] = set()  # keys being sent right now
        self._log: deque[DeliveryRecord] = deque(maxlen=log_size)
        self._counts: Counter[Outcome] = Counter()
        self._seq = 0
        self._closed = False  # no new jobs
        self._stopped = False  # workers exit
        self._threads = [
            threading.Thread(target=self._run, name=f"elitemon-delivery-{index}", daemon=True)
            for index in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, receiver: Receiver, notification: Notification) -> None:
        """Queue `notification` for `receiver`; returns at once. RuntimeError after `close()`."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the dispatcher is closed")
            self._seq += 1
            job = _Job(self._seq, receiver, notification, submitted=self._clock(), due=time.monotonic())
            records = self._enqueue(job)
        self._emit(records)

    def log(self, receiver: str | None = None, limit: int | None = None) -> list[DeliveryRecord]:
        """The last `limit` records (all kept if None), oldest first.

        `receiver` is an integration name (`ops/slack[0]`) or a receiver name (`ops`), which
        matches all of its integrations.
        """
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit must be an integer >= 0 or None, but got {limit!r}")
        with self._cond:
            records = list(self._log)
        if receiver is not None:
            records = [r for r in records if receiver in (r.receiver, r.receiver.rpartition("/")[0])]
        return records if limit is None else records[max(0, len(records) - limit) :]

    def counts(self) -> dict[Outcome, int]:
        """How many records of each outcome were written since the start (the log only keeps the last)."""
        with self._cond:
            return {outcome: self._counts[outcome] for outcome in Outcome}

    @property
    def queued(self) -> int:
        """Jobs waiting to be sent or retried (not those being sent)."""
        with self._cond:
            return len(self._jobs)

    def close(self, timeout_s: float = 30.0) -> bool:
        """Take no more jobs, deliver the queued ones (retries included) for up to `timeout_s`, stop.

        Jobs still queued at the deadline are logged as DROPPED. Returns whether all were finished.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._closed = True
            while (self._jobs or self._busy) and (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(remaining)
            drained = not self._jobs and not self._busy
            self._stopped = True
            leftovers = sorted(self._jobs.values(), key=lambda job: job.seq)
            self._jobs.clear()
            self._heap.clear()
            records = [
                self._record(job, Outcome.DROPPED, error="dispatcher closed before delivery") for job in leftovers
            ]
            self._cond.notify_all()
        self._emit(records)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return drained

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self) -> None:
        while (job := self._take()) is not None:
            self._emit(self._attempt(job))

    def _take(self) -> _Job | None:
        """The next due job whose key is not being sent, waiting for one; None once stopped."""
        with self._cond:
            while not self._stopped:
                job, wait_s = self._pop_ready()
                if job is not None:
                    return job
                self._cond.wait(wait_s)
            return None

    def _pop_ready(self) -> tuple[_Job | None, float | None]:
        now = time.monotonic()
        skipped = []
        try:
            while self._heap:
                due, seq, key = self._heap[0]
                job = self._jobs.get(key)
                if job is None or job.seq != seq:  # dropped or replaced since
                    heapq.heappop(self._heap)
                elif key in self._busy:  # an older notification of the group is being sent
                    skipped.append(heapq.heappop(self._heap))
                elif due > now:
                    return None, due - now
                else:
                    heapq.heappop(self._heap)
                    del self._jobs[key]
                    self._busy.add(key)
                    return job, None
            return None, None
        finally:
            for entry in skipped:
                heapq.heappush(self._heap, entry)

    def _attempt(self, job: _Job) -> list[DeliveryRecord]:
        job.attempts += 1
        try:
            job.receiver.deliver(job.notification, timeout_s=self._timeout_s)
        except DeliveryError as exc:
            failure: DeliveryError | None = exc
        except Exception as exc:  # a bug in a receiver: log it, never retry it, keep the worker alive
            logger.exception("receiver %s failed unexpectedly", job.receiver.name)
            failure = DeliveryError(f"unexpected {type(exc).__name__} in the receiver", retryable=False)
        else:
            failure = None
        with self._cond:
            self._busy.discard(job.key)
            self._cond.notify_all()
            if failure is None:
                return [self._record(job, Outcome.DELIVERED)]
            return self._after_failure(job, failure)

    def _after_failure(self, job: _Job, failure: DeliveryError) -> list[DeliveryRecord]:
        if self._stopped:
            return [self._record(job, Outcome.DROPPED, failure, error=f"dispatcher closed; last error: {failure}")]
        if not failure.retryable or self._retry.gives_up(job.attempts, self._clock() - job.submitted):
            return [self._record(job, Outcome.FAILED, failure)]
        job.due = time.monotonic() + self._retry.delay(job.attempts, self._rng.random(), failure.retry_after_s)
        return [self._record(job, Outcome.RETRYING, failure), *self._enqueue(job)]

    def _enqueue(self, job: _Job) -> list[DeliveryRecord]:
        """Queue `job` (new or retried) under the one-per-key and `max_queue` rules; the DROPPED records."""
        queued = self._jobs.get(job.key)
        if queued is not None:
            older, job = sorted((queued, job), key=lambda each: each.seq)
            job.notification = _with_resolves_of(older.notification, job.notification)
            records = [self._record(older, Outcome.DROPPED, error="superseded by a newer notification of the group")]
            if job is queued:
                return records
        elif len(self._jobs) >= self._max_queue:
            oldest = min([*self._jobs.values(), job], key=lambda each: each.seq)
            error = f"queue full (max_queue={self._max_queue}): dropped the oldest job"
            records = [self._record(oldest, Outcome.DROPPED, error=error)]
            if oldest is job:
                return records
            del self._jobs[oldest.key]
        else:
            records = []
        self._jobs[job.key] = job
        heapq.heappush(self._heap, (job.due, job.seq, job.key))
        self._cond.notify_all()
        return records

    def _record(
        self, job: _Job, outcome: Outcome, failure: DeliveryError | None = None, *, error: str | None = None
    ) -> DeliveryRecord:
        """Append a record for `job` to the log (the caller holds the lock)."""
        record = DeliveryRecord(
            ts=self._clock(),
            receiver=job.receiver.name,
            group_key=job.notification.group_key,
            status=job.notification.status,
            attempt=job.attempts,
            outcome=outcome,
            http_status=failure.status if failure is not None else None,
            error=error if error is not None else (str(failure) if failure is not None else None),
        )
        self._log.append(record)
        self._counts[outcome] += 1
        return record

    def _emit(self, records: list[DeliveryRecord]) -> None:
        """Log `records` and pass them to `on_record`, outside the lock."""
        for record in records:
            level = _LEVELS[record.outcome]
            logger.log(
                level,
                "%s %s for %s (attempt %d): %s",
                record.outcome.name,
                record.status.value,
                record.receiver,
                record.attempt,
                record.error or "ok",
            )
            if self._on_record is None:
                continue
            try:
                self._on_record(record)
            except Exception:
                logger.exception("on_record failed for a delivery record of %s", record.receiver)


def _with_resolves_of(older: Notification, newer: Notification) -> Notification:
    """`newer` plus the resolved alerts `older` carried that `newer` does not mention. A notification
    is not the group's whole state: the router sends a resolve once, so a newer notification that
    replaces a queued one must carry its resolves on, or the receiver never hears of them."""
    mentioned = {alert.fingerprint for alert in newer.alerts}
    carried = tuple(a for a in older.alerts if a.status is Status.RESOLVED and a.fingerprint not in mentioned)
    return dataclasses.replace(newer, alerts=newer.alerts + carried) if carried else newer


class _Job:
    """A notification on its way to one integration; `seq` orders jobs by submission."""

    __slots__ = ("seq", "receiver", "notification", "submitted", "due", "attempts")

    def __init__(self, seq: int, receiver: Receiver, notification: Notification, *, submitted: float, due: float):
        self.seq = seq
        self.receiver = receiver
        self.notification = notification
        self.submitted = submitted
        self.due = due
        self.attempts = 0

    @property
    def key(self) -> _Key:
        return (self.receiver.name, self.notification.group_key)
