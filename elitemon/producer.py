"""The producer client: how everything that writes gets rows into the aggregator, exactly once.

Callers hand it rows, columns or Arrow batches and return at once. The producer checks the rows
(rejects are counted with their reason, the good rows kept), buffers them per table, cuts a batch
when `max_batch_rows` are buffered or `max_delay_s` has passed, numbers it `(producer_id, seq)` and
sends it without waiting. A batch is kept until the aggregator acknowledges it; a failed send
(aggregator restarting, node lost) is retried with backoff, and the aggregator drops any copy it had
already applied. Unacknowledged batches are bounded by `max_unacked_bytes` in memory; past that the
newest unsent ones are spilled to Arrow IPC files under `spill_dir`, up to `max_spill_bytes`, and
read back when their turn comes. If the spill fails or its budget is spent, new rows are refused:
`write_*` raises (`when_full="raise"`, the default), or, for writers that must not stop what they
watch (the Tune callback, `elitemon.report`, node monitors: `when_full="drop"`), the rows are
dropped, counted in `stats().rows_dropped` and logged. Never silently.

The transport is a `Sink`: anything whose `submit` returns a `concurrent.futures.Future` of an Ack.
`RaySink` sends to the aggregator actor; `StoreSink` writes to an in-process Store.
"""

from __future__ import annotations

import concurrent.futures
import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import ray
import ray.exceptions

from elitemon import aggregator
from elitemon.config import GiB, MiB
from elitemon.schema import (
    SCHEMAS,
    SchemaError,
    TableName,
    batch_from_columns,
    batch_from_rows,
    table_name,
    validate,
)
from elitemon.store import Ack, Store, StoreBusy

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Where a producer's batches go."""

    def submit(self, table: TableName, batch: pa.RecordBatch, producer_id: str, seq: int) -> concurrent.futures.Future:
        """Start sending; the future resolves to the Ack or raises."""

    def is_retryable(self, error: BaseException) -> bool:
        """True when the send may succeed later (transport or restart), False for a bad request."""


class StoreSink:
    """Writes to a Store in this process (tests, single-process tools)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def submit(self, table: TableName, batch: pa.RecordBatch, producer_id: str, seq: int) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(self._store.ingest(table, batch, producer_id=producer_id, seq=seq))
        except Exception as error:
            future.set_exception(error)
        return future

    def is_retryable(self, error: BaseException) -> bool:
        return isinstance(error, (StoreBusy, OSError))


class RaySink:
    """Sends to the aggregator actor, looking it up (again) whenever the handle is gone.

    Transport failures and restarts are retryable; an exception raised *inside* the aggregator
    (a RayTaskError) is not, since the same batch would fail the same way.
    """

    def __init__(
        self, *, name: str = aggregator.NAME, namespace: str = aggregator.NAMESPACE, handle: Any = None
    ) -> None:
        self._name = name
        self._namespace = namespace
        self._handle = handle

    def submit(self, table: TableName, batch: pa.RecordBatch, producer_id: str, seq: int) -> concurrent.futures.Future:
        if self._handle is None:
            self._handle = aggregator.get_aggregator(name=self._name, namespace=self._namespace)
        return self._handle.ingest.remote(table.value, batch, producer_id, seq).future()

    def is_retryable(self, error: BaseException) -> bool:
        if isinstance(error, ray.exceptions.RayTaskError):
            # The aggregator ran and raised: retry only what can pass (busy, or a failed disk write);
            # a malformed request would fail the same way forever.
            return isinstance(error.cause, (StoreBusy, OSError))
        if isinstance(error, aggregator.AggregatorNotFound) or (
            isinstance(error, ray.exceptions.RayActorError)
            and not isinstance(error, ray.exceptions.ActorUnavailableError)
        ):
            self._handle = None  # dead for good or never found: look it up again on the next send
        return isinstance(error, (ray.exceptions.RayError, aggregator.AggregatorNotFound, ConnectionError))


@dataclass
class _Outgoing:
    """One numbered batch on its way; `batch` is None while it is spilled to `spill_path`."""

    seq: int
    table: TableName
    rows: int
    nbytes: int
    batch: pa.RecordBatch | None
    created: float
    spill_path: Path | None = None
    attempts: int = 0
    not_before: float = 0.0


@dataclass(frozen=True)
class ProducerStats:
    """Counters of one producer. Latencies are enqueue-to-acknowledgement, over recent batches."""

    producer_id: str
    rows_written: int
    rows_acked: int
    rows_rejected: int
    rows_dropped: int  # refused while full, with when_full="drop"
    rejects: dict[str, int]
    batches_sent: int
    batches_acked: int
    retries: int
    duplicates: int
    spilled: int
    spill_failures: int
    unacked_batches: int
    unacked_bytes: int
    failed: int
    last_error: str | None
    latency_p50_s: float | None
    latency_p99_s: float | None
    latencies_s: tuple[float, ...] = field(default=(), repr=False)


class ProducerClosed(RuntimeError):
    """Raised by writes after close()."""


class Producer:
    """Batches, numbers, sends and retries rows until the aggregator has them. Thread-safe."""

    def __init__(
        self,
        sink: Sink,
        *,
        name: str | None = None,
        max_batch_rows: int = 20_000,
        max_batch_bytes: int = 16 * MiB,
        max_delay_s: float = 0.2,
        max_in_flight: int = 4,
        max_unacked_bytes: int = 64 * MiB,
        spill_dir: str | Path | None = None,
        max_spill_bytes: int = 1 * GiB,
        when_full: str = "raise",
        max_backoff_s: float = 5.0,
        clock=time.monotonic,
    ) -> None:
        if max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be at least 1, but got {max_batch_rows=}.")
        if max_batch_bytes < 1:
            raise ValueError(f"max_batch_bytes must be positive, but got {max_batch_bytes=}.")
        if max_delay_s <= 0:
            raise ValueError(f"max_delay_s must be positive, but got {max_delay_s=}.")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, but got {max_in_flight=}.")
        if max_unacked_bytes < 1:
            raise ValueError(f"max_unacked_bytes must be positive, but got {max_unacked_bytes=}.")
        if max_spill_bytes < 0:
            raise ValueError(f"max_spill_bytes must not be negative, but got {max_spill_bytes=}.")
        if when_full not in ("raise", "drop"):
            raise ValueError(f"when_full must be 'raise' or 'drop', but got {when_full=}.")
        # Sequence numbers restart at 0 with every producer, so its id must be new every time: a
        # restarted writer reusing an old id would have its batches dropped as duplicates.
        self.producer_id = f"{name}-{uuid.uuid4().hex[:12]}" if name else uuid.uuid4().hex
        self._sink = sink
        self._max_batch_rows = max_batch_rows
        self._max_batch_bytes = max_batch_bytes
        self._max_delay_s = max_delay_s
        self._max_in_flight = max_in_flight
        self._max_unacked_bytes = max_unacked_bytes
        self._max_backoff_s = max_backoff_s
        self._spill_dir = Path(spill_dir) if spill_dir else None  # default: a private temp dir
        self._max_spill_bytes = max_spill_bytes
        self._drop_when_full = when_full == "drop"
        self._spill_bytes = 0  # of the batches spilled and not yet acknowledged (their files exist)
        self._clock = clock
        self._lock = threading.Condition()
        self._buffers: dict[TableName, list[pa.RecordBatch]] = {t: [] for t in TableName}
        self._buffered_rows: dict[TableName, int] = {t: 0 for t in TableName}
        self._buffered_bytes: dict[TableName, int] = {t: 0 for t in TableName}
        self._buffer_since: dict[TableName, float | None] = {t: None for t in TableName}
        self._raw: dict[TableName, list[Mapping[str, Any]]] = {t: [] for t in TableName}  # append_rows'
        self._queue: deque[_Outgoing] = deque()
        self._in_flight: dict[int, tuple[_Outgoing, concurrent.futures.Future]] = {}
        self._sending: dict[int, _Outgoing] = {}  # taken off the queue, being submitted
        self._memory_bytes = 0
        self._next_seq = 0
        self._closed = False
        self._counts: Counter[str] = Counter()
        self._rejects: Counter[str] = Counter()
        self._latencies: deque[float] = deque(maxlen=10_000)
        self._last_error: str | None = None
        self._last_spill_error: str | None = None
        self._activity = threading.Event()
        self._failures_reported = 0
        self._thread = threading.Thread(target=self._run, name=f"elitemon-producer-{self.producer_id[:8]}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ writing

    def write_rows(self, table: str | TableName, rows: Sequence[Mapping[str, Any]]) -> int:
        """Queue row dicts; returns how many were accepted (rejects are counted in stats)."""
        table = table_name(table)
        good, reasons = _checked_rows(table, rows)
        return self._accept(table, len(rows), good, reasons)

    def append_rows(self, table: str | TableName, rows: Sequence[Mapping[str, Any]]) -> None:
        """Queue row dicts to be converted and checked later, all together, when their batch is cut
        (after `max_delay_s`, at `flush`, or at `max_batch_rows`). One conversion per batch instead
        of one per call costs a small fraction per row (a Tune result is about 30 rows; converting
        and checking them alone took most of the callback's time): for writers called on every
        step. The price: rejects show in `stats()` after the cut instead of in a return value. A row
        without `ts` is stamped now, when it happened, not at the cut up to `max_delay_s` later
        (rows of several results would share one time, and an event could precede an earlier one)."""
        table = table_name(table)
        stamp = time.time()
        with self._lock:
            self._raise_if_closed()
            if self._refused_as_full(len(rows)):
                return
            self._raw[table].extend(row if "ts" in row else {**row, "ts": stamp} for row in rows)
            self._start_deadline(table)
            if len(self._raw[table]) >= self._max_batch_rows:
                self._cut(table)
                self._wake()

    def write_columns(self, table: str | TableName, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> int:
        """Queue equal-length columns; raises SchemaError (naming the field) if one cannot convert."""
        table = table_name(table)
        return self.write_batch(table, batch_from_columns(table, columns))

    def write_batch(self, table: str | TableName, batch: pa.RecordBatch) -> int:
        """Queue an Arrow batch of `table`; bad rows are rejected, good ones kept."""
        table = table_name(table)
        checked = validate(table, batch)
        return self._accept(table, batch.num_rows, checked.good, checked.reasons)

    def _accept(self, table: TableName, written: int, good: pa.RecordBatch, reasons: Mapping[str, int]) -> int:
        with self._lock:
            self._raise_if_closed()
            if self._refused_as_full(written):
                return 0
            self._counts["rows_written"] += written
            self._count_rejects(reasons)
            if good.num_rows:
                self._add_to_buffer(table, good)
                self._start_deadline(table)
                if (
                    self._buffered_rows[table] >= self._max_batch_rows
                    or self._buffered_bytes[table] >= self._max_batch_bytes
                ):
                    self._cut(table)
                    self._wake()
        return good.num_rows

    def _raise_if_closed(self) -> None:
        if self._closed:
            raise ProducerClosed(f"producer {self.producer_id} is closed")

    def _add_to_buffer(self, table: TableName, good: pa.RecordBatch) -> None:
        self._buffers[table].append(good)
        self._buffered_rows[table] += good.num_rows
        self._buffered_bytes[table] += good.nbytes

    def _start_deadline(self, table: TableName) -> None:
        if self._buffer_since[table] is None:
            self._buffer_since[table] = self._clock()
            self._wake()  # the sender learns the new deadline

    def _convert_appended(self, table: TableName) -> None:
        """Convert and check the rows `append_rows` queued for `table` (under the lock)."""
        rows, self._raw[table] = self._raw[table], []
        if not rows:
            return
        try:
            good, reasons = _checked_rows(table, rows)
        except Exception as error:  # not a SchemaError (a value whose conversion itself fails): the
            # rows are gone from the queue, so they are counted as rejects rather than lost unseen
            log.exception("producer %s: %d appended rows could not be converted", self.producer_id, len(rows))
            self._counts["rows_written"] += len(rows)
            self._count_rejects({f"rows: could not be converted ({error!r})": len(rows)})
            return
        self._counts["rows_written"] += len(rows)
        self._count_rejects(reasons)
        if good.num_rows:
            self._add_to_buffer(table, good)

    def _count_rejects(self, reasons: Mapping[str, int]) -> None:
        for reason, count in reasons.items():
            self._rejects[reason] += count
            self._counts["rows_rejected"] += count

    # ------------------------------------------------------------------ flushing

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything buffered and wait until the aggregator has answered for all of it.

        Returns False on `timeout`, or when a batch was refused for good since the previous flush
        (its rows are lost to the store: `stats().failed` and `last_error` say why).
        """
        deadline = None if timeout is None else self._clock() + timeout
        with self._lock:
            for table in TableName:
                self._cut(table)
            self._wake()
            while self._queue or self._sending or self._in_flight:
                remaining = None if deadline is None else deadline - self._clock()
                if remaining is not None and remaining <= 0:
                    return False
                self._lock.wait(0.05 if remaining is None else min(0.05, remaining))
            refused = self._counts["failed"] - self._failures_reported
            self._failures_reported = self._counts["failed"]
        return refused == 0

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush, then stop the sender. Returns False if some batches were still unacknowledged
        or were refused; unacknowledged ones are lost with the producer (their spill files too)."""
        flushed = self.flush(timeout)
        with self._lock:
            self._closed = True
            unacked = list(self._queue) + [o for o, _ in self._in_flight.values()]
        self._wake()
        self._thread.join(timeout=5)
        for outgoing in unacked:
            if outgoing.spill_path is not None:
                outgoing.spill_path.unlink(missing_ok=True)
        if self._spill_dir is not None and self._spill_dir.name.startswith(_PRIVATE_SPILL_PREFIX):
            shutil.rmtree(self._spill_dir, ignore_errors=True)
        return flushed

    def stats(self) -> ProducerStats:
        with self._lock:
            latencies = tuple(self._latencies)
            unacked = [*self._queue, *self._sending.values(), *(o for o, _ in self._in_flight.values())]
            return ProducerStats(
                producer_id=self.producer_id,
                rows_written=self._counts["rows_written"],
                rows_acked=self._counts["rows_acked"],
                rows_rejected=self._counts["rows_rejected"],
                rows_dropped=self._counts["rows_dropped"],
                rejects=dict(self._rejects),
                batches_sent=self._counts["batches_sent"],
                batches_acked=self._counts["batches_acked"],
                retries=self._counts["retries"],
                duplicates=self._counts["duplicates"],
                spilled=self._counts["spilled"],
                spill_failures=self._counts["spill_failures"],
                unacked_batches=len(unacked),
                unacked_bytes=sum(o.nbytes for o in unacked),
                failed=self._counts["failed"],
                last_error=self._last_error,
                latency_p50_s=float(np.percentile(latencies, 50)) if latencies else None,
                latency_p99_s=float(np.percentile(latencies, 99)) if latencies else None,
                latencies_s=latencies,
            )

    # ------------------------------------------------------------------ internals (hold _lock)

    def _cut(self, table: TableName) -> None:
        """Turn the table's buffered rows into one numbered outgoing batch."""
        self._convert_appended(table)
        parts = self._buffers[table]
        if not parts:
            self._buffer_since[table] = None  # (appended rows that were all rejected)
            return
        created = self._buffer_since[table] or self._clock()
        combined = pa.Table.from_batches(parts, SCHEMAS[table]).combine_chunks()
        self._buffers[table] = []
        self._buffered_rows[table] = 0
        self._buffered_bytes[table] = 0
        self._buffer_since[table] = None
        for batch in combined.to_batches(max_chunksize=self._max_batch_rows):
            outgoing = _Outgoing(self._next_seq, table, batch.num_rows, batch.nbytes, batch, created)
            self._next_seq += 1
            self._queue.append(outgoing)
            self._memory_bytes += outgoing.nbytes
        self._spill_over_budget()

    def _spill_over_budget(self) -> None:
        """Past the memory bound, move the newest queued batches to disk (sent last anyway)."""
        for outgoing in reversed(self._queue):
            if self._memory_bytes <= self._max_unacked_bytes:
                return
            if outgoing.batch is None:
                continue
            if outgoing.spill_path is not None:  # read back for a send that failed: its file is still there
                outgoing.batch = None
                self._memory_bytes -= outgoing.nbytes
                continue
            if self._spill_bytes + outgoing.nbytes > self._max_spill_bytes:
                self._last_spill_error = f"the spill budget, max_spill_bytes={self._max_spill_bytes}, is spent"
                self._counts["spill_failures"] += 1
                return
            try:
                if self._spill_dir is None:  # private (0700) and removed on close
                    self._spill_dir = Path(tempfile.mkdtemp(prefix=_PRIVATE_SPILL_PREFIX))
                outgoing.spill_path = _spill(self._spill_dir, self.producer_id, outgoing)
            except OSError as error:
                self._last_spill_error = f"spill failed: {error!r}"
                self._counts["spill_failures"] += 1
                return
            outgoing.batch = None
            self._memory_bytes -= outgoing.nbytes
            self._spill_bytes += outgoing.nbytes
            self._counts["spilled"] += 1

    def _refused_as_full(self, rows: int) -> bool:
        """Whether `rows` new rows are refused because memory is past its bound and the spill failed
        or is spent: raises OSError, or with `when_full="drop"` counts them and returns True."""
        if not (self._counts["spill_failures"] and self._memory_bytes > self._max_unacked_bytes):
            return False
        reason = (
            f"producer {self.producer_id}: {self._memory_bytes} unacknowledged bytes exceed "
            f"max_unacked_bytes and spilling to {self._spill_dir} failed ({self._last_spill_error})"
        )
        if not self._drop_when_full:
            raise OSError(f"{reason}; refusing new rows rather than dropping any")
        self._counts["rows_dropped"] += rows
        if self._counts["drops"] % 1000 == 0:  # the first, then every thousandth: a long outage is one line a while
            log.warning("%s; dropping new rows (%d so far)", reason, self._counts["rows_dropped"])
        self._counts["drops"] += 1
        return True

    def _run(self) -> None:
        """The sender loop. Submitting happens outside the lock: a Ray submit serialises megabytes
        and may look the actor up, and writers must not wait for that."""
        while True:
            ready: list[_Outgoing] = []
            idle_s: float | None = _IDLE_RECHECK_S
            with self._lock:
                try:
                    self._cut_due()
                    self._collect()
                    ready = self._take_ready()
                    idle_s = self._idle_seconds()
                except Exception as error:  # keep the sender alive: the data stays queued
                    self._last_error = f"sender: {error!r}"
                    log.exception("elitemon producer %s: sender step failed", self.producer_id)
                self._lock.notify_all()
                if self._closed and not ready:
                    return
            submitted = [(outgoing, self._submit(outgoing)) for outgoing in ready]
            with self._lock:
                for outgoing, future in submitted:
                    del self._sending[outgoing.seq]
                    self._in_flight[outgoing.seq] = (outgoing, future)
                    future.add_done_callback(self._wake)
            if not submitted:
                self._activity.wait(idle_s)
                self._activity.clear()

    def _idle_seconds(self) -> float | None:
        """How long the sender may sleep: until the oldest buffer is due or a backoff ends, capped
        at `_IDLE_RECHECK_S`; None (until woken) when only a write or an answer can give it work.
        Sleeping to a deadline instead of polling keeps an idle producer (one in every monitor)
        from waking 20 times a second on a CPU the trainers need."""
        due = [since + self._max_delay_s for since in self._buffer_since.values() if since is not None]
        if self._queue and len(self._in_flight) < self._max_in_flight:
            due.append(self._queue[0].not_before)
        if not due:
            return None
        return min(_IDLE_RECHECK_S, max(0.0, min(due) - self._clock()))

    def _cut_due(self) -> None:
        now = self._clock()
        for table, since in self._buffer_since.items():
            if since is not None and now - since >= self._max_delay_s:
                self._cut(table)

    def _collect(self) -> None:
        for seq, (outgoing, future) in list(self._in_flight.items()):
            if not future.done():
                continue
            del self._in_flight[seq]
            error = future.exception()
            if error is None:
                self._acknowledged(outgoing, future.result())
            elif self._sink.is_retryable(error):
                outgoing.attempts += 1
                backoff = 0.05 * 2 ** min(outgoing.attempts, 16)
                outgoing.not_before = self._clock() + min(self._max_backoff_s, backoff)
                self._counts["retries"] += 1
                self._last_error = repr(error)
                self._queue.appendleft(outgoing)
            else:
                self._counts["failed"] += 1
                self._last_error = repr(error)
                self._forget(outgoing)
                log.error("batch %s:%d refused by the aggregator: %r", self.producer_id, seq, error)

    def _acknowledged(self, outgoing: _Outgoing, ack: Ack) -> None:
        self._counts["batches_acked"] += 1
        if ack.duplicate:  # applied before a lost acknowledgement; rows were checked locally
            self._counts["duplicates"] += 1
            self._counts["rows_acked"] += outgoing.rows
        else:
            self._counts["rows_acked"] += ack.accepted
        self._count_rejects(ack.reasons)
        self._latencies.append(self._clock() - outgoing.created)
        self._forget(outgoing)

    def _forget(self, outgoing: _Outgoing) -> None:
        if outgoing.batch is not None:
            self._memory_bytes -= outgoing.nbytes
        if outgoing.spill_path is not None:
            outgoing.spill_path.unlink(missing_ok=True)
            self._spill_bytes -= outgoing.nbytes

    def _take_ready(self) -> list[_Outgoing]:
        """Move the batches that may be sent now from the queue to `_sending`, read back from
        disk if spilled. A spill file that cannot be read is a lost batch: counted as failed."""
        ready = []
        now = self._clock()
        while self._queue and len(self._in_flight) + len(ready) < self._max_in_flight:
            outgoing = self._queue[0]
            if outgoing.not_before > now:
                break
            if outgoing.batch is None:
                try:
                    outgoing.batch = _unspill(outgoing.spill_path)  # type: ignore[arg-type]
                except OSError as error:
                    self._queue.popleft()
                    self._counts["failed"] += 1
                    self._last_error = f"spilled batch {outgoing.seq} unreadable: {error!r}"
                    self._forget(outgoing)
                    log.error("elitemon producer %s: %s", self.producer_id, self._last_error)
                    continue
                self._memory_bytes += outgoing.nbytes
            self._queue.popleft()
            self._sending[outgoing.seq] = outgoing
            self._counts["batches_sent"] += 1
            ready.append(outgoing)
        return ready

    def _submit(self, outgoing: _Outgoing) -> concurrent.futures.Future:
        try:
            return self._sink.submit(outgoing.table, outgoing.batch, self.producer_id, outgoing.seq)
        except Exception as error:  # e.g. the aggregator cannot be looked up yet: retried
            future: concurrent.futures.Future = concurrent.futures.Future()
            future.set_exception(error)
            return future

    def _wake(self, _future: concurrent.futures.Future | None = None) -> None:
        """Wake the sender; never takes the lock (it runs on Ray's callback thread)."""
        self._activity.set()


def _checked_rows(table: TableName, rows: Sequence[Mapping[str, Any]]) -> tuple[pa.RecordBatch, Counter[str]]:
    """Convert and check row dicts: the good rows as a batch, and the rejects counted by reason.
    A row that cannot convert at all is rejected with its field and reason; the others are kept."""
    try:
        checked = validate(table, batch_from_rows(table, rows))
        return checked.good, Counter(checked.reasons)
    except SchemaError:
        pass
    good, bad = [], Counter()
    for row in rows:  # the slow path, for a list with an unconvertible row
        try:
            batch_from_rows(table, [row])
            good.append(row)
        except SchemaError as error:
            bad[f"{error.field}: {error.reason}"] += 1
    checked = validate(table, batch_from_rows(table, good))
    return checked.good, bad + Counter(checked.reasons)


_PRIVATE_SPILL_PREFIX = "elitemon-spill-"
#: The longest the sender sleeps while something waits on the clock (a safety net for clocks that
#: jump; deadlines normally wake it earlier).
_IDLE_RECHECK_S = 1.0


def _spill(directory: Path, producer_id: str, outgoing: _Outgoing) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{producer_id}-{outgoing.seq}.arrows"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, outgoing.batch.schema) as writer:
        writer.write_batch(outgoing.batch)
    return path


def _unspill(path: Path) -> pa.RecordBatch:
    with pa.OSFile(str(path), "rb") as source:
        return pa.ipc.open_stream(source).read_next_batch()
