"""The Producer against a real Store (through StoreSink) and, for one test, a real aggregator on Ray.

Transport failures are injected with small sink classes written here: they wrap a real StoreSink
and fail, lose acknowledgements or refuse, so every row still goes through the real Store and is
counted there with `Store.scan`.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from elitemon.client import Client
from elitemon.config import StoreConfig
from elitemon.producer import Producer, ProducerClosed, RaySink, StoreSink
from elitemon.query import select
from elitemon.schema import TableName, batch_from_rows
from elitemon.store import Store
from tests.conftest import wait_for

# ---------------------------------------------------------------------------------------- helpers


def _rows(n: int, *, first: int = 0, source: str = "agent-0") -> list[dict]:
    """`n` good sample rows whose generation numbers them, so a lost or doubled row shows."""
    return [
        {"kind": "agent", "source": source, "metric": "reward", "generation": first + i, "value": float(first + i)}
        for i in range(n)
    ]


def _columns(n: int, *, first: int = 0, source: str = "agent-0") -> dict:
    return {
        "kind": ["agent"] * n,
        "source": [source] * n,
        "metric": ["reward"] * n,
        "generation": np.arange(first, first + n),
        "value": np.arange(first, first + n, dtype=np.float64),
    }


def _scan(store: Store, table: str) -> pa.Table:
    """Every row of `table` in the store, from memory and disk."""
    return store.scan(select(table))


def _generations(store: Store) -> list[int]:
    return sorted(_scan(store, "samples").column("generation").to_pylist())


def _spill_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.arrows")) if directory.exists() else []


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(StoreConfig(data_dir=tmp_path / "store"))
    yield store
    store.close()


@pytest.fixture
def make_producer(tmp_path: Path) -> Iterator:
    """Build producers that are always closed at the end (their sender threads stop)."""
    made: list[Producer] = []

    def make(sink, **options) -> Producer:
        options.setdefault("spill_dir", tmp_path / "spill")
        options.setdefault("max_backoff_s", 0.05)
        producer = Producer(sink, **options)
        made.append(producer)
        return producer

    yield make
    for producer in made:
        producer.close(timeout=0.2)


# ------------------------------------------------------------------------ sinks (transport doubles)


def _failed(error: BaseException) -> concurrent.futures.Future:
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_exception(error)
    return future


class FlakySink(StoreSink):
    """Fails the first `failures` submits with a retryable ConnectionError, then delivers.

    `raise_in_submit` raises from `submit` itself (a failed lookup) instead of returning a failed
    future (a failed send)."""

    def __init__(self, store: Store, failures: int, *, raise_in_submit: bool = False) -> None:
        super().__init__(store)
        self._failures_left = failures
        self._raise_in_submit = raise_in_submit
        self._lock = threading.Lock()
        self.submits = 0

    def submit(self, table, batch, producer_id, seq):
        with self._lock:
            self.submits += 1
            fail = self._failures_left > 0
            self._failures_left -= fail
        if fail:
            error = ConnectionError("aggregator restarting")
            if self._raise_in_submit:
                raise error
            return _failed(error)
        return super().submit(table, batch, producer_id, seq)


class LostAckSink(StoreSink):
    """Delivers every batch, but loses the acknowledgement of the first `lose` (a retryable error)."""

    def __init__(self, store: Store, lose: int) -> None:
        super().__init__(store)
        self._lose = lose
        self._lock = threading.Lock()

    def submit(self, table, batch, producer_id, seq):
        future = super().submit(table, batch, producer_id, seq)
        with self._lock:
            lose = self._lose > 0 and future.exception() is None
            self._lose -= lose
        return _failed(OSError("connection reset before the ack arrived")) if lose else future


class RefusingSink(StoreSink):
    """Refuses every batch with a non-retryable error (a bad request)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.submits = 0

    def submit(self, table, batch, producer_id, seq):
        self.submits += 1
        return _failed(ValueError("refused: bad request"))


class SwitchableSink(StoreSink):
    """Down (retryable ConnectionError on every submit) until `up` is set."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.up = threading.Event()
        self.refused = 0

    def submit(self, table, batch, producer_id, seq):
        if not self.up.is_set():
            self.refused += 1
            return _failed(ConnectionError("aggregator down"))
        return super().submit(table, batch, producer_id, seq)


# ---------------------------------------------------------------------------------- delivery


def test_rows_columns_and_batches_each_land_exactly_once(store: Store, make_producer) -> None:
    producer = make_producer(StoreSink(store))
    assert producer.write_rows("samples", _rows(10, first=0)) == 10
    assert producer.write_columns("samples", _columns(20, first=10)) == 20
    assert producer.write_batch(TableName.SAMPLES, batch_from_rows("samples", _rows(30, first=30))) == 30
    assert producer.write_rows("events", [{"type": "exploit", "agent": "a", "source_agent": "b"}]) == 1
    assert producer.write_rows("configs", [{"agent": "a", "param": "lr", "value": 0.01}]) == 1

    assert producer.flush(timeout=10)

    assert _generations(store) == list(range(60))
    assert _scan(store, "events").column("type").to_pylist() == ["exploit"]
    assert _scan(store, "configs").column("value").to_pylist() == [0.01]
    stats = producer.stats()
    assert (stats.rows_written, stats.rows_acked, stats.rows_rejected) == (62, 62, 0)
    assert (stats.unacked_batches, stats.unacked_bytes, stats.failed) == (0, 0, 0)
    assert stats.batches_acked == stats.batches_sent == store.health().batches
    assert stats.latency_p50_s is not None and stats.latency_p50_s >= 0


def test_rows_from_different_sources_share_one_batch(store: Store, make_producer) -> None:
    """Parts with different dictionaries are combined into one batch without mixing up values."""
    producer = make_producer(StoreSink(store), max_batch_rows=1_000, max_delay_s=60)
    producer.write_rows("samples", _rows(3, first=0, source="agent-a"))
    producer.write_columns("samples", _columns(3, first=3, source="agent-b"))
    producer.write_rows(
        "samples", [{"kind": "node", "source": "node-1", "metric": "cpu", "generation": 6, "value": 0.5}]
    )
    assert producer.flush(timeout=10)

    assert store.health().batches == 1
    rows = sorted(_scan(store, "samples").to_pylist(), key=lambda r: r["generation"])
    assert [(r["kind"], r["source"], r["metric"]) for r in rows] == [("agent", "agent-a", "reward")] * 3 + [
        ("agent", "agent-b", "reward")
    ] * 3 + [("node", "node-1", "cpu")]


def test_batches_are_cut_at_max_batch_rows(store: Store, make_producer) -> None:
    producer = make_producer(StoreSink(store), max_batch_rows=100, max_delay_s=60)
    for first in range(0, 1_050, 50):
        producer.write_rows("samples", _rows(50, first=first))
    wait_for(lambda: store.health().batches == 10, what="the ten full batches")
    assert store.health().rows == 1_000  # the last 50 rows wait for a full batch or the delay

    assert producer.flush(timeout=10)  # flush cuts the partial batch
    assert store.health().batches == 11
    assert _generations(store) == list(range(1_050))


def test_a_partial_batch_is_sent_after_max_delay_without_flush(store: Store, make_producer) -> None:
    producer = make_producer(StoreSink(store), max_batch_rows=10_000, max_delay_s=0.05)
    producer.write_rows("samples", _rows(5))
    wait_for(lambda: store.health().rows == 5, timeout_s=5, what="the delayed batch")
    assert store.health().batches == 1
    assert _generations(store) == list(range(5))
    wait_for(lambda: producer.stats().rows_acked == 5, timeout_s=5, what="the acknowledgement")


# ------------------------------------------------------------------------------- validation


def test_bad_rows_are_counted_with_field_and_reason_and_good_rows_land(store: Store, make_producer) -> None:
    producer = make_producer(StoreSink(store))
    rows = _rows(5)
    rows[1]["value"] = float("nan")
    rows[2]["kind"] = "planet"
    rows[3]["source"] = ""
    assert producer.write_rows("samples", rows) == 2
    assert producer.flush(timeout=10)

    stats = producer.stats()
    assert stats.rows_rejected == 3 and stats.rows_written == 5 and stats.rows_acked == 2
    assert stats.rejects["value: NaN"] == 1
    assert stats.rejects["source: empty"] == 1
    assert [n for reason, n in stats.rejects.items() if reason.startswith("kind: unknown kind")] == [1]
    assert _generations(store) == [0, 4]
    assert store.health().rejected_rows == 0, "rejects should be caught locally, never sent"


def test_an_unconvertible_value_rejects_only_its_row(store: Store, make_producer) -> None:
    producer = make_producer(StoreSink(store))
    rows = _rows(4)
    rows[2]["value"] = "abc"
    assert producer.write_rows("samples", rows) == 3
    assert producer.flush(timeout=10)

    stats = producer.stats()
    assert stats.rows_written == 4 and stats.rows_rejected == 1
    assert [reason.split(":")[0] for reason in stats.rejects] == ["value"]
    assert sum(stats.rejects.values()) == 1
    assert _generations(store) == [0, 1, 3]


def test_unconvertible_values_are_counted_under_one_reason(store: Store, make_producer) -> None:
    """The reject reason names the field and what was wrong, not the offending value: otherwise
    every distinct bad value opens a new key in `stats().rejects`, which grows without bound."""
    producer = make_producer(StoreSink(store))
    rows = _rows(4)
    rows[1]["value"] = "abc"
    rows[2]["value"] = "def"
    assert producer.write_rows("samples", rows) == 2
    rejects = producer.stats().rejects
    assert sum(rejects.values()) == 2
    assert len(rejects) == 1, f"one reason expected for two unconvertible values, got {rejects}"


def test_appended_rows_are_checked_together_at_the_cut_and_land_once(store: Store, make_producer) -> None:
    producer = make_producer(StoreSink(store), max_delay_s=0.05)
    rows = _rows(6)
    rows[1]["value"] = float("nan")
    rows[4]["value"] = "abc"  # unconvertible: rejects its row only
    producer.append_rows("samples", rows[:3])
    producer.append_rows("samples", rows[3:])
    wait_for(lambda: store.health().rows == 4, timeout_s=5, what="the appended rows, sent after max_delay_s")
    assert store.health().batches == 1, "appended rows travel in one batch"
    assert _generations(store) == [0, 2, 3, 5]
    wait_for(lambda: producer.stats().rows_acked == 4, timeout_s=5, what="the acknowledgement")
    stats = producer.stats()
    assert stats.rows_written == 6 and stats.rows_rejected == 2 and stats.rejects["value: NaN"] == 1


def test_an_appended_row_whose_ts_cannot_convert_rejects_only_itself(store: Store, make_producer) -> None:
    """A time in nanoseconds given as seconds overflowed the conversion at the cut, and every row
    queued with it was lost uncounted."""
    producer = make_producer(StoreSink(store), max_delay_s=60)  # cut at the flush only
    rows = _rows(4)
    rows[0]["ts"] = time.time()  # the others are stamped when appended
    rows[2]["ts"] = time.time_ns()
    producer.append_rows("samples", rows)
    assert producer.flush(timeout=5)
    assert _generations(store) == [0, 1, 3]
    stats = producer.stats()
    assert stats.rows_written == 4 and stats.rows_rejected == 1
    assert [reason.split(":")[0] for reason in stats.rejects] == ["ts"]


def test_appended_rows_that_cannot_be_converted_at_all_are_counted(store: Store, make_producer) -> None:
    producer = make_producer(StoreSink(store), max_delay_s=60)

    class Unreadable(dict):  # a row whose keys cannot be listed: conversion itself fails
        def __iter__(self):
            raise RuntimeError("unreadable row")

    producer.append_rows("samples", [Unreadable(ts=time.time())])
    assert producer.flush(timeout=5)
    stats = producer.stats()
    assert stats.rows_written == 1 and stats.rows_rejected == 1
    assert list(stats.rejects) == ["rows: could not be converted (RuntimeError('unreadable row'))"]


def test_appended_rows_without_ts_are_stamped_when_appended_not_at_the_cut(store: Store, make_producer) -> None:
    producer = make_producer(StoreSink(store), max_delay_s=60)  # cut at the flush only
    before = time.time()
    producer.append_rows("samples", _rows(2))
    appended = time.time()
    wait_for(lambda: time.time() > appended + 0.05, timeout_s=5, what="the clock to move past the append")
    assert producer.flush(timeout=5)
    stamps = _scan(store, "samples").column("ts").cast(pa.int64()).to_pylist()  # microseconds
    assert len(stamps) == 2 and all(int(before * 1e6) <= ts <= appended * 1e6 for ts in stamps)


def test_appended_rows_all_rejected_leave_nothing_due(store: Store, make_producer) -> None:
    producer = make_producer(StoreSink(store), max_delay_s=0.05)
    producer.append_rows("samples", [{**_rows(1)[0], "source": ""}])
    assert producer.flush(timeout=5)
    assert producer.stats().rows_rejected == 1 and store.health().rows == 0
    producer.write_rows("samples", _rows(2))  # the producer still sends
    assert producer.flush(timeout=5) and store.health().rows == 2


def test_appended_rows_are_cut_at_max_batch_rows(store: Store, make_producer) -> None:
    producer = make_producer(StoreSink(store), max_batch_rows=10, max_delay_s=60)
    producer.append_rows("samples", _rows(25))
    wait_for(lambda: store.health().rows == 25, timeout_s=5, what="batches cut by size, long before max_delay_s")
    assert _generations(store) == list(range(25))


# ---------------------------------------------------------------------------------- retries


@pytest.mark.parametrize("raise_in_submit", [False, True], ids=["failed-future", "raising-submit"])
def test_retryable_failures_are_retried_until_everything_lands_once(
    store: Store, make_producer, raise_in_submit: bool
) -> None:
    sink = FlakySink(store, failures=3, raise_in_submit=raise_in_submit)
    producer = make_producer(sink, max_batch_rows=10, max_in_flight=2)
    for first in range(0, 30, 10):
        producer.write_rows("samples", _rows(10, first=first))
    assert producer.flush(timeout=10)

    assert _generations(store) == list(range(30))
    stats = producer.stats()
    assert stats.retries >= 3
    assert sink.submits == 3 + 3  # three failures, then each of the three batches once
    assert stats.rows_acked == 30 and stats.failed == 0 and stats.unacked_batches == 0
    assert "aggregator restarting" in (stats.last_error or "")
    assert store.health().duplicates == 0 and store.health().batches == 3


def test_a_lost_acknowledgement_is_resent_and_applied_once(store: Store, make_producer) -> None:
    producer = make_producer(LostAckSink(store, lose=1), max_batch_rows=10)
    producer.write_rows("samples", _rows(10, first=0))
    producer.write_rows("samples", _rows(10, first=10))
    assert producer.flush(timeout=10)

    assert _generations(store) == list(range(20)), "a resent batch must not be applied twice"
    stats = producer.stats()
    assert stats.duplicates >= 1 and stats.retries >= 1
    assert stats.rows_acked == 20
    assert store.health().duplicates >= 1 and store.health().batches == 2


def test_a_refused_batch_is_counted_as_failed_and_flush_returns(store: Store, make_producer) -> None:
    sink = RefusingSink(store)
    producer = make_producer(sink, max_batch_rows=10)
    producer.write_rows("samples", _rows(10))
    started = time.monotonic()
    producer.flush(timeout=10)
    assert time.monotonic() - started < 5, "flush waited for a batch that will never be acknowledged"

    stats = producer.stats()
    assert stats.failed == 1
    assert "refused: bad request" in (stats.last_error or "")
    assert sink.submits == 1, "a non-retryable error must not be retried"
    assert (stats.retries, stats.rows_acked, stats.unacked_batches) == (0, 0, 0)
    assert store.health().rows == 0
    started = time.monotonic()
    producer.close(timeout=10)  # and closing does not hang either
    assert time.monotonic() - started < 5


def test_close_gives_up_after_its_timeout_while_the_sink_is_down(store: Store, make_producer) -> None:
    sink = SwitchableSink(store)
    producer = make_producer(sink, max_batch_rows=10)
    producer.write_rows("samples", _rows(10))
    started = time.monotonic()
    assert producer.close(timeout=0.3) is False
    assert time.monotonic() - started < 6
    assert sink.refused >= 1


# ------------------------------------------------------------------------ memory bound and spill


def _spilling_while_down(store: Store, make_producer, spill_dir: Path, batches: int, *, max_in_flight: int):
    """A producer whose every batch (50 rows) spilled (bound: 1 byte) while its sink is down and
    being retried. Returns (sink, producer); set `sink.up` to bring the sink back."""
    sink = SwitchableSink(store)
    producer = make_producer(
        sink, max_batch_rows=50, max_unacked_bytes=1, max_in_flight=max_in_flight, spill_dir=spill_dir
    )
    for first in range(0, batches * 50, 50):
        assert producer.write_rows("samples", _rows(50, first=first)) == 50
    wait_for(lambda: sink.refused >= 2 * max_in_flight, what="the producer to retry against the down sink")
    return sink, producer


def test_batches_over_the_memory_bound_spill_to_disk_and_land_once_later(
    store: Store, make_producer, tmp_path: Path
) -> None:
    spill_dir, batches = tmp_path / "spill", 20
    sink, producer = _spilling_while_down(store, make_producer, spill_dir, batches, max_in_flight=2)

    down = producer.stats()
    assert down.spilled >= batches  # every batch went to disk when it was cut (the bound is 1 byte)
    assert len(_spill_files(spill_dir)) == batches, "every unacknowledged batch should be on disk"
    assert all(f.name.startswith(producer.producer_id) for f in _spill_files(spill_dir))
    assert down.unacked_batches == batches and down.rows_acked == 0
    assert store.health().rows == 0

    sink.up.set()
    assert producer.flush(timeout=20)

    assert _generations(store) == list(range(batches * 50))
    assert store.health().duplicates == 0
    stats = producer.stats()
    assert stats.rows_acked == batches * 50 and stats.retries >= 4 and stats.unacked_batches == 0
    assert _spill_files(spill_dir) == [], "acknowledged batches should have their spill files deleted"


def test_a_failing_spill_refuses_writes_loudly_and_drops_nothing(store: Store, make_producer, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a regular file where the spill directory's parent should be")
    sink = SwitchableSink(store)
    producer = make_producer(sink, max_batch_rows=10, max_unacked_bytes=1, spill_dir=blocker / "spill")

    accepted = 0
    with pytest.raises(OSError, match="max_unacked_bytes") as refused:
        for first in range(0, 500, 10):
            accepted += producer.write_rows("samples", _rows(10, first=first))
    assert f"spilling to {blocker / 'spill'} failed" in str(refused.value)
    assert accepted > 0
    assert producer.stats().rows_written == accepted, "the refused write must not be counted as taken"

    sink.up.set()
    assert producer.flush(timeout=10)
    assert _generations(store) == list(range(accepted)), "rows accepted before the refusal must all land"
    # Once the backlog is acknowledged the producer accepts rows again.
    assert producer.write_rows("samples", _rows(10, first=accepted)) == 10
    assert producer.flush(timeout=10)
    assert _generations(store) == list(range(accepted + 10))


def test_the_spill_has_a_budget_past_which_writes_are_refused(store: Store, make_producer, tmp_path: Path) -> None:
    """While the aggregator is away the spill grew without bound (a monitor on a node for hours)."""
    batch_bytes = batch_from_rows("samples", _rows(10)).nbytes
    sink = SwitchableSink(store)
    producer = make_producer(
        sink, max_batch_rows=10, max_unacked_bytes=1, spill_dir=tmp_path / "spill", max_spill_bytes=3 * batch_bytes
    )
    accepted = 0
    with pytest.raises(OSError, match="the spill budget, max_spill_bytes=") as refused:
        for first in range(0, 500, 10):
            accepted += producer.write_rows("samples", _rows(10, first=first))
    assert "refusing new rows rather than dropping any" in str(refused.value)
    assert sum(f.stat().st_size for f in _spill_files(tmp_path / "spill")) > 0
    assert producer.stats().spilled <= 3

    sink.up.set()
    assert producer.flush(timeout=10)
    assert _generations(store) == list(range(accepted)), "rows accepted before the refusal must all land"
    assert _spill_files(tmp_path / "spill") == []
    assert producer.write_rows("samples", _rows(10, first=accepted)) == 10  # the budget is free again


def test_a_batch_read_back_for_a_failed_send_is_not_counted_twice_against_the_spill(
    store: Store, make_producer, tmp_path: Path
) -> None:
    """A spilled batch read back for a send that failed went back to the queue and was spilled again,
    its bytes counted twice: the budget looked spent with the files well under it."""
    batch_bytes = batch_from_rows("samples", _rows(1)).nbytes
    sink = SwitchableSink(store)
    producer = make_producer(
        sink, max_batch_rows=1, max_unacked_bytes=1, max_in_flight=1, spill_dir=tmp_path / "spill",
        max_spill_bytes=12 * batch_bytes,
    )  # fmt: skip
    for first in range(10):  # ten batches on disk, each read back and retried in turn meanwhile
        assert producer.write_rows("samples", _rows(1, first=first)) == 1
        retried = 2 * (first + 1)
        wait_for(lambda retried=retried: sink.refused >= retried, what="the sender to retry the batch it read back")
    assert producer.stats().spill_failures == 0
    sink.up.set()
    assert producer.flush(timeout=10)
    assert _generations(store) == list(range(10))


def test_a_full_producer_that_drops_counts_what_it_drops(store: Store, make_producer, tmp_path: Path) -> None:
    """For writers that must not stop what they watch (a Tune run, a training loop, a node monitor):
    past both budgets, rows are dropped and counted, not raised."""
    sink = SwitchableSink(store)
    producer = make_producer(sink, max_batch_rows=10, max_unacked_bytes=1, max_spill_bytes=0, when_full="drop")
    accepted = sum(producer.write_rows("samples", _rows(10, first=first)) for first in range(0, 200, 10))
    producer.append_rows("samples", _rows(5, first=1000))
    stats = producer.stats()
    assert 0 < accepted < 200 and stats.rows_dropped == 200 - accepted + 5
    sink.up.set()
    assert producer.flush(timeout=10)
    assert _generations(store) == list(range(accepted)), "rows taken before the budgets were spent all land"


# ----------------------------------------------------------------------------- life cycle


def test_writes_after_close_raise(store: Store, make_producer) -> None:
    producer = make_producer(StoreSink(store))
    producer.write_rows("samples", _rows(3))
    assert producer.close(timeout=10)
    assert _generations(store) == [0, 1, 2]
    with pytest.raises(ProducerClosed, match=producer.producer_id):
        producer.write_rows("samples", _rows(1))
    with pytest.raises(ProducerClosed):
        producer.write_columns("samples", _columns(1))
    with pytest.raises(ProducerClosed):
        producer.write_batch("samples", batch_from_rows("samples", _rows(1)))
    assert store.health().rows == 3


@pytest.mark.parametrize(
    "argument, value",
    [
        ("max_batch_rows", 0),
        ("max_delay_s", 0.0),
        ("max_delay_s", -1.0),
        ("max_in_flight", 0),
        ("max_unacked_bytes", 0),
        ("max_spill_bytes", -1),
        ("when_full", "block"),
    ],
)
def test_constructor_rejects_bad_arguments(store: Store, argument: str, value, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=argument):
        Producer(StoreSink(store), spill_dir=tmp_path, **{argument: value})


def test_unknown_table_is_refused_by_name(store: Store, make_producer) -> None:
    producer = make_producer(StoreSink(store))
    with pytest.raises(ValueError, match="unknown table 'metrics'"):
        producer.write_rows("metrics", _rows(1))


def test_concurrent_writers_share_one_producer(store: Store, make_producer) -> None:
    producer = make_producer(StoreSink(store), max_batch_rows=64, max_delay_s=0.01)
    threads, writes, rows_each = 4, 25, 17

    def write(thread: int) -> int:
        return sum(
            producer.write_rows("samples", _rows(rows_each, first=thread * 10_000 + w * rows_each))
            for w in range(writes)
        )

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        accepted = sum(pool.map(write, range(threads)))
    assert producer.flush(timeout=10)

    expected = sorted(t * 10_000 + i for t in range(threads) for i in range(writes * rows_each))
    assert accepted == len(expected)
    assert _generations(store) == expected


# ------------------------------------------------------------------------------------- Ray


def test_ray_sink_delivers_concurrent_writes_from_threads_once(
    aggregator_handle, aggregator_name: str, tmp_path: Path
) -> None:
    producer = Producer(
        RaySink(name=aggregator_name), max_batch_rows=100, max_delay_s=0.05, spill_dir=tmp_path / "spill"
    )
    threads, writes, rows_each = 3, 20, 50

    def write(thread: int) -> int:
        return sum(
            producer.write_columns(
                "samples", _columns(rows_each, first=thread * 1_000_000 + w * rows_each, source=f"t{thread}")
            )
            for w in range(writes)
        )

    try:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            accepted = sum(pool.map(write, range(threads)))
        assert producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)

    total = threads * writes * rows_each
    assert accepted == total
    generations = Client(aggregator_handle).samples(metric="reward").column("generation").to_numpy()
    expected = np.concatenate([t * 1_000_000 + np.arange(writes * rows_each) for t in range(threads)])
    np.testing.assert_array_equal(np.sort(generations), np.sort(expected))
    stats = producer.stats()
    assert stats.rows_acked == total and stats.failed == 0 and stats.unacked_batches == 0


def test_an_unreadable_spilled_batch_is_counted_as_failed_not_acknowledged(
    store: Store, make_producer, tmp_path: Path
) -> None:
    spill_dir = tmp_path / "spill"
    sink, producer = _spilling_while_down(store, make_producer, spill_dir, 4, max_in_flight=1)
    for path in _spill_files(spill_dir):  # e.g. a temp-dir cleaner removed them
        path.unlink()
    sink.up.set()
    assert not producer.flush(timeout=20), "flush must report that rows were lost"
    stats = producer.stats()
    assert stats.failed >= 1 and "unreadable" in (stats.last_error or "")
    assert stats.unacked_batches == 0


def test_each_producer_gets_a_fresh_id_even_with_the_same_name(store: Store, make_producer) -> None:
    first, second = make_producer(StoreSink(store), name="monitor-7"), make_producer(StoreSink(store), name="monitor-7")
    assert first.producer_id.startswith("monitor-7-") and first.producer_id != second.producer_id
    first.write_rows("samples", _rows(5))
    assert first.flush(timeout=10)
    second.write_rows("samples", _rows(5, first=5))  # seq 0 again, but not a duplicate of first's
    assert second.flush(timeout=10)
    assert _generations(store) == list(range(10))
