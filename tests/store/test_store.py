"""The Store: exactly-once ingest, sealing, recovery, retention, the memory budget and health."""

from __future__ import annotations

import dataclasses
import math
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from elitemon.config import MiB, StoreConfig
from elitemon.query import select
from elitemon.schema import SCHEMAS, TIMESTAMP, TableName, batch_from_columns
from elitemon.store import DirectoryInUse, Store, StoreBusy

T0 = 1_700_000_000.0


# ------------------------------------------------------------------------------------ helpers


class FakeClock:
    """A wall clock that moves only when told to."""

    def __init__(self, now: float = T0 + 3600) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_config(tmp_path: Path, **overrides) -> StoreConfig:
    settings = dict(data_dir=tmp_path / "data", fsync="never", retention_s=None)
    settings.update(overrides)
    return StoreConfig(**settings)


def open_store(tmp_path: Path, clock: FakeClock | None = None, **overrides) -> Store:
    return Store(make_config(tmp_path, **overrides), clock=clock or FakeClock())


def samples(first: int, rows: int, *, ts0: float = T0, metric: str = "util") -> pa.RecordBatch:
    """`rows` samples, a millisecond apart from `ts0`, whose generation numbers first, first+1, ...
    identify them uniquely. Built straight in Arrow: the budget test makes a lot of them."""
    ids = np.arange(first, first + rows)

    def identifier(values: list[str], codes: np.ndarray) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(values))

    zeros = np.zeros(rows, dtype=np.int32)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(int(ts0 * 1_000_000) + ids * 1000).cast(TIMESTAMP),
            identifier(["gpu"], zeros),
            identifier(["node0", "node1", "node2"], (ids % 3).astype(np.int32)),
            identifier(["monitor"], zeros),
            pa.array(ids, pa.int64()),
            identifier([metric], zeros),
            pa.array(ids / 7),
        ],
        schema=SCHEMAS[TableName.SAMPLES],
    )


def frame(data: pa.Table | pa.RecordBatch) -> pd.DataFrame:
    """A canonical, sorted pandas frame of samples rows, for comparing stores."""
    table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_dictionary(column.type):
            column = column.cast(pa.string())
        elif pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        columns[name] = column
    df = pa.table(columns).to_pandas()
    return df.sort_values(list(df.columns)).reset_index(drop=True)


def all_rows(store: Store) -> pd.DataFrame:
    return frame(store.scan(select("samples")))


def generations(store: Store) -> list[int]:
    return sorted(store.scan(select("samples")).column("generation").to_pylist())


def assert_same_rows(store: Store, *batches: pa.RecordBatch) -> None:
    expected = frame(pa.Table.from_batches(batches)) if batches else frame(samples(0, 0))
    pd.testing.assert_frame_equal(all_rows(store), expected)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# ------------------------------------------------------------------------------------ exactly once


def test_same_producer_and_seq_twice_is_applied_once(tmp_path, clock):
    store = open_store(tmp_path, clock)
    first = store.ingest("samples", samples(0, 10), producer_id="p", seq=0)
    second = store.ingest("samples", samples(0, 10), producer_id="p", seq=0)
    assert (first.accepted, first.duplicate) == (10, False)
    assert (second.accepted, second.duplicate) == (0, True)
    health = store.health()
    assert (health.rows, health.batches, health.duplicates) == (10, 1, 1)
    assert_same_rows(store, samples(0, 10))


def test_duplicate_is_detected_by_key_not_content(tmp_path, clock):
    store = open_store(tmp_path, clock)
    store.ingest("samples", samples(0, 10), producer_id="p", seq=0)
    ack = store.ingest("samples", samples(100, 5), producer_id="p", seq=0)
    assert ack.duplicate
    assert_same_rows(store, samples(0, 10))


def test_different_producers_with_same_seq_are_both_applied(tmp_path, clock):
    store = open_store(tmp_path, clock)
    a = store.ingest("samples", samples(0, 10), producer_id="a", seq=0)
    b = store.ingest("samples", samples(10, 10), producer_id="b", seq=0)
    assert not a.duplicate and not b.duplicate
    health = store.health()
    assert (health.rows, health.producers, health.duplicates) == (20, 2, 0)
    assert_same_rows(store, samples(0, 10), samples(10, 10))


def test_out_of_order_seqs_are_all_applied_then_all_duplicates(tmp_path, clock):
    store = open_store(tmp_path, clock)
    order = [3, 0, 2, 5, 1, 4]
    acks = [store.ingest("samples", samples(seq * 10, 10), producer_id="p", seq=seq) for seq in order]
    assert [a.duplicate for a in acks] == [False] * 6
    again = [store.ingest("samples", samples(seq * 10, 10), producer_id="p", seq=seq) for seq in range(6)]
    assert [a.duplicate for a in again] == [True] * 6
    assert store.health().duplicates == 6
    assert generations(store) == list(range(60))


def test_batch_of_only_rejected_rows_still_consumes_its_seq(tmp_path, clock):
    store = open_store(tmp_path, clock)
    bad = batch_from_columns(
        "samples", {"ts": [T0], "kind": ["gpu"], "source": ["s"], "metric": ["m"], "value": [math.nan]}
    )
    ack = store.ingest("samples", bad, producer_id="p", seq=0)
    assert (ack.accepted, ack.rejected, ack.reasons) == (0, 1, {"value: NaN": 1})
    assert store.ingest("samples", bad, producer_id="p", seq=0).duplicate
    assert store.health().rejected_rows == 1  # not counted again for the duplicate


@pytest.mark.parametrize("producer_id, seq", [("", 0), (7, 0), ("p", -1), ("p", 1.5), ("p", True), ("p", "3")])
def test_bad_producer_or_seq_is_refused(tmp_path, clock, producer_id, seq):
    store = open_store(tmp_path, clock)
    with pytest.raises(ValueError, match="producer_id" if producer_id in ("", 7) else "seq"):
        store.ingest("samples", samples(0, 1), producer_id=producer_id, seq=seq)
    assert store.health().rows == 0
    store.close()
    assert open_store(tmp_path, clock).health().rows == 0  # nothing logged that would stop a reopen


def test_a_numpy_integer_seq_is_a_seq(tmp_path, clock):
    store = open_store(tmp_path, clock)
    store.ingest("samples", samples(0, 1), producer_id="p", seq=np.int64(3))
    store.close()
    assert open_store(tmp_path, clock).ingest("samples", samples(0, 1), producer_id="p", seq=3).duplicate


def test_future_rows_are_judged_by_the_store_clock(tmp_path):
    clock = FakeClock(T0)
    store = open_store(tmp_path, clock, max_future_s=60)
    ack = store.ingest("samples", samples(0, 1, ts0=T0 + 120), producer_id="p", seq=0)
    assert ack.rejected == 1
    clock.now = T0 + 100
    ack = store.ingest("samples", samples(0, 1, ts0=T0 + 120), producer_id="p", seq=1)
    assert ack.accepted == 1


# ------------------------------------------------------------------------------------ seal, recovery


def test_seal_then_reopen_gives_the_same_rows(tmp_path, clock):
    store = open_store(tmp_path, clock)
    batches = [samples(0, 50), samples(50, 30, metric="mem"), samples(80, 20)]
    for seq, batch in enumerate(batches):
        store.ingest("samples", batch, producer_id="p", seq=seq)
    before = all_rows(store)
    segments = store.seal()
    assert [s.rows for s in segments] == [100]
    assert all(s.path(tmp_path / "data").exists() for s in segments)
    assert store.seal() == []  # nothing left to seal
    pd.testing.assert_frame_equal(all_rows(store), before)  # from the cache
    store.close()

    reopened = open_store(tmp_path, clock)
    health = reopened.health()
    assert (health.rows, health.segments, health.unsealed_rows, health.rows_in_memory) == (100, 1, 0, 0)
    pd.testing.assert_frame_equal(all_rows(reopened), before)  # from Parquet
    assert_same_rows(reopened, *batches)


def three_tables() -> dict[str, pa.RecordBatch]:
    """A batch for each table, with optional columns absent (all null) or partly null."""
    return {
        "samples": batch_from_columns(
            "samples",
            {
                "ts": [T0, T0 + 1],
                "kind": ["node", "bench"],
                "source": ["s", "s"],
                "metric": ["m", "m"],
                "value": [1, 2],
            },
        ),
        "events": batch_from_columns(
            "events",
            {"ts": [T0, T0 + 2], "type": ["exploit", "explore"], "agent": ["a1", None], "payload": ['{"x": 1}', None]},
        ),
        "configs": batch_from_columns(
            "configs", {"ts": [T0], "agent": ["a1"], "param": ["optimizer"], "generation": [3], "text": ["adam"]}
        ),
    }


def table_rows(store: Store, table: str) -> list[dict]:
    return sorted(store.scan(select(table)).to_pylist(), key=lambda row: (row["ts"], repr(row)))


@pytest.mark.parametrize("seal", [True, False], ids=["sealed", "logged"])
def test_every_table_survives_reopen(tmp_path, clock, seal):
    store = open_store(tmp_path, clock)
    batches = three_tables()
    for seq, (table, batch) in enumerate(batches.items()):
        assert store.ingest(table, batch, producer_id="p", seq=seq).accepted == batch.num_rows
    before = {table: table_rows(store, table) for table in batches}
    if seal:
        assert sorted(s.table.value for s in store.seal()) == sorted(batches)
    store.close()
    reopened = open_store(tmp_path, clock)
    assert reopened.health().segments == (3 if seal else 0)
    for table, batch in batches.items():
        assert table_rows(reopened, table) == before[table]
        assert len(before[table]) == batch.num_rows


def test_concurrent_producers_with_resends_and_background_seals(tmp_path, clock):
    """Threads ingest (and re-send) while the worker seals: every batch applied exactly once."""
    store = open_store(tmp_path, clock, memory_budget_bytes=16 * MiB, seal_bytes=64 << 10)
    store.start(period_s=0.001)
    producers, batches, rows = 4, 40, 200
    errors: list[BaseException] = []

    def produce(index: int) -> None:
        try:
            for seq in range(batches):
                batch = samples((index * batches + seq) * rows, rows)
                for _ in range(2 if seq % 3 == 0 else 1):  # every third batch is sent twice
                    store.ingest("samples", batch, producer_id=f"p{index}", seq=seq)
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    store.close()
    assert not errors, errors
    health = store.health()
    assert health.last_error is None
    assert health.batches == producers * batches
    assert health.duplicates == producers * len(range(0, batches, 3))
    assert health.segments > 0
    assert generations(store) == list(range(producers * batches * rows))
    assert generations(open_store(tmp_path, clock)) == list(range(producers * batches * rows))


def test_unsealed_rows_are_recovered_from_the_log_after_close(tmp_path, clock):
    store = open_store(tmp_path, clock)
    store.ingest("samples", samples(0, 40), producer_id="p", seq=0)
    store.ingest("samples", samples(40, 40), producer_id="q", seq=0)
    store.close()

    reopened = open_store(tmp_path, clock)
    health = reopened.health()
    assert (health.rows, health.segments, health.unsealed_rows) == (80, 0, 80)
    assert health.producers == 2
    assert_same_rows(reopened, samples(0, 40), samples(40, 40))
    assert reopened.ingest("samples", samples(0, 40), producer_id="q", seq=0).duplicate


def test_recovery_without_close_reads_what_was_acknowledged(tmp_path, clock):
    """A store that is never closed (a killed process) still left every acked batch in the log."""
    store = open_store(tmp_path, clock)
    for seq in range(3):
        store.ingest("samples", samples(seq * 10, 10), producer_id="p", seq=seq)
    store._dir_lock.close()  # what the death of its process does; nothing else is released
    reopened = open_store(tmp_path, clock)
    assert generations(reopened) == list(range(30))


def test_the_log_is_replayed_in_the_order_batches_were_acknowledged(tmp_path, clock, monkeypatch):
    """One producer writing to two tables, in order, leaves no gap; replayed table by table, its
    samples' seqs would sit above a long gap (the events'), which the bookkeeping closes after
    MAX_GAP_WINDOW, and the events' batches were then dropped as duplicates."""
    from elitemon.store import _sequences

    monkeypatch.setattr(_sequences, "MAX_GAP_WINDOW", 8)
    event = batch_from_columns("events", {"ts": [T0], "type": ["exploit"], "agent": ["a"]})
    store = open_store(tmp_path, clock)
    for i in range(20):
        store.ingest("samples", samples(i, 1), producer_id="p", seq=2 * i)
        store.ingest("events", event, producer_id="p", seq=2 * i + 1)
    store.close()
    reopened = open_store(tmp_path, clock)
    assert generations(reopened) == list(range(20))
    assert reopened.scan(select("events")).num_rows == 20


def test_a_second_store_on_the_same_directory_is_refused(tmp_path, clock):
    store = open_store(tmp_path, clock)
    with pytest.raises(DirectoryInUse, match="in use by another elitemon store"):
        open_store(tmp_path, clock)
    store.close()
    open_store(tmp_path, clock).close()  # free again once closed


def test_recovery_after_seal_and_more_ingest_has_no_duplicates(tmp_path, clock):
    store = open_store(tmp_path, clock)
    for seq in range(5):
        store.ingest("samples", samples(seq * 10, 10), producer_id="p", seq=seq)
    store.seal()
    for seq in range(5, 10):
        store.ingest("samples", samples(seq * 10, 10), producer_id="p", seq=seq)
    store.close()

    reopened = open_store(tmp_path, clock)
    health = reopened.health()
    assert (health.rows, health.segments, health.unsealed_rows) == (100, 1, 50)
    assert generations(reopened) == list(range(100))
    # Seq 2 is known from the manifest's sequences, seq 7 from the log replay.
    assert reopened.ingest("samples", samples(20, 10), producer_id="p", seq=2).duplicate
    assert reopened.ingest("samples", samples(70, 10), producer_id="p", seq=7).duplicate
    assert not reopened.ingest("samples", samples(100, 10), producer_id="p", seq=10).duplicate
    assert generations(reopened) == list(range(110))


def test_repeated_reopen_seal_cycles_never_duplicate(tmp_path, clock):
    """Replayed log generations must be retired by the next seal, and survive reopens until then."""
    expected: list[int] = []
    seq = 0
    for cycle in range(4):
        store = open_store(tmp_path, clock)
        assert generations(store) == expected, f"cycle {cycle}"
        for _ in range(3):
            store.ingest("samples", samples(seq * 10, 10), producer_id="p", seq=seq)
            expected += list(range(seq * 10, seq * 10 + 10))
            seq += 1
        if cycle % 2:
            store.seal()
        store.close()
    final = open_store(tmp_path, clock)
    assert generations(final) == expected
    final.seal()  # the replayed rows go to a segment; their log generations go away
    final.close()
    again = open_store(tmp_path, clock)
    assert generations(again) == expected
    assert again.health().unsealed_rows == 0
    assert all(again.ingest("samples", samples(0, 1), producer_id="p", seq=s).duplicate for s in range(seq))


def test_sequences_of_replayed_batches_survive_a_seal_and_reopen(tmp_path, clock):
    store = open_store(tmp_path, clock)
    store.ingest("samples", samples(0, 10), producer_id="p", seq=0)
    store.close()
    reopened = open_store(tmp_path, clock)  # seq 0 known only from the log
    reopened.ingest("samples", samples(10, 10), producer_id="q", seq=0)
    reopened.seal()  # the log is retired; the manifest must now carry p:0
    reopened.close()
    final = open_store(tmp_path, clock)
    assert final.ingest("samples", samples(0, 10), producer_id="p", seq=0).duplicate
    assert generations(final) == list(range(20))


def test_orphan_segment_files_are_removed_on_reopen(tmp_path, clock):
    store = open_store(tmp_path, clock)
    store.ingest("samples", samples(0, 10), producer_id="p", seq=0)
    (segment,) = store.seal()
    store.close()
    data_dir = tmp_path / "data"
    folder = segment.path(data_dir).parent
    orphan = folder / "000000099999.parquet"
    orphan.write_bytes(b"half a parquet file")
    torn = folder / "000000000001.tmp"
    torn.write_bytes(b"torn")

    reopened = open_store(tmp_path, clock)
    assert not orphan.exists()
    assert not torn.exists()
    assert segment.path(data_dir).exists()
    assert generations(reopened) == list(range(10))


# ------------------------------------------------------------------------------------ retention


def test_retention_deletes_only_segments_older_than_the_period(tmp_path):
    clock = FakeClock(T0)
    store = open_store(tmp_path, clock, retention_s=100.0)
    store.ingest("samples", samples(0, 10, ts0=T0 - 1000), producer_id="p", seq=0)
    (old,) = store.seal()
    store.ingest("samples", samples(10, 10, ts0=T0 - 10), producer_id="p", seq=1)
    (new,) = store.seal()
    data_dir = tmp_path / "data"

    assert store.apply_retention() == [old]
    assert not old.path(data_dir).exists()
    assert new.path(data_dir).exists()
    health = store.health()
    assert (health.segments, health.rows) == (1, 10)
    assert generations(store) == list(range(10, 20))
    assert store.apply_retention() == []

    store.close()
    reopened = open_store(tmp_path, clock, retention_s=100.0)  # the deletion is in the manifest
    assert generations(reopened) == list(range(10, 20))

    clock.now = T0 + 200  # now the newer segment has expired too, through maintain()
    reopened.maintain()
    assert not new.path(data_dir).exists()
    assert reopened.health().segments == 0
    assert generations(reopened) == []


def test_retention_keeps_a_segment_whose_newest_row_is_recent(tmp_path):
    clock = FakeClock(T0)
    store = open_store(tmp_path, clock, retention_s=100.0)
    batch = pa.concat_batches([samples(0, 5, ts0=T0 - 1000), samples(5, 5, ts0=T0 - 50)])
    store.ingest("samples", batch, producer_id="p", seq=0)
    (segment,) = store.seal()
    assert store.apply_retention() == []
    assert segment.path(tmp_path / "data").exists()
    assert generations(store) == list(range(10))


def test_no_retention_keeps_everything(tmp_path):
    clock = FakeClock(T0)
    store = open_store(tmp_path, clock, retention_s=None)
    store.ingest("samples", samples(0, 5, ts0=1.0), producer_id="p", seq=0)
    store.seal()
    clock.now = T0 + 1e9
    assert store.apply_retention() == []
    assert generations(store) == list(range(5))


# ------------------------------------------------------------------------------------ memory budget


BUDGET = 16 * MiB


def ingest_three_budgets(store: Store, batch_rows: int = 20_000) -> tuple[int, list[int]]:
    """Ingest about three memory budgets of samples; returns (rows accepted, bytes_in_memory after
    each ingest)."""
    accepted, seq, total_bytes, in_memory = 0, 0, 0, []
    while total_bytes < 3 * BUDGET:
        batch = samples(seq * batch_rows, batch_rows)
        accepted += store.ingest("samples", batch, producer_id="p", seq=seq).accepted
        total_bytes += batch.nbytes
        seq += 1
        in_memory.append(store.health().bytes_in_memory)
    return accepted, in_memory


def test_over_budget_ingest_seals_to_disk_and_loses_no_acknowledged_row(tmp_path, clock):
    store = open_store(tmp_path, clock, memory_budget_bytes=BUDGET, seal_bytes=1 * MiB)
    accepted, _ = ingest_three_budgets(store)
    store.maintain()
    health = store.health()
    assert health.bytes_in_memory <= BUDGET
    assert health.segments >= 3
    assert health.rows == accepted
    assert health.rows_in_memory < health.rows  # some segments are only on disk now
    scanned = np.sort(store.scan(select("samples")).column("generation").to_numpy())
    np.testing.assert_array_equal(scanned, np.arange(accepted))  # each acknowledged row, once


def test_memory_stays_within_budget_after_every_ingest(tmp_path, clock):
    """StoreConfig: cached segments are evicted when the budget needs the room."""
    store = open_store(tmp_path, clock, memory_budget_bytes=BUDGET, seal_bytes=1 * MiB)
    _, in_memory = ingest_three_budgets(store)
    over = [(index, size) for index, size in enumerate(in_memory) if size > BUDGET]
    assert not over, f"bytes_in_memory above the {BUDGET} budget after ingests (index, bytes): {over[:5]}"


def test_config_bounds_are_checked(tmp_path):
    with pytest.raises(ValueError, match="memory_budget_bytes"):
        make_config(tmp_path, memory_budget_bytes=8 * MiB)
    with pytest.raises(ValueError, match="seal_bytes"):
        make_config(tmp_path, memory_budget_bytes=16 * MiB, seal_bytes=9 * MiB)
    # Unset, the seal size fits the budget: a small budget alone is a valid configuration.
    assert make_config(tmp_path, memory_budget_bytes=100 * MiB).seal_threshold_bytes == 50 * MiB
    assert make_config(tmp_path).seal_threshold_bytes == 64 * MiB
    # A copy with a smaller budget gets that budget's default, not the original's 64 MiB (refused).
    smaller = dataclasses.replace(make_config(tmp_path), memory_budget_bytes=32 * MiB)
    assert smaller.seal_threshold_bytes == 16 * MiB
    assert (
        dataclasses.replace(
            make_config(tmp_path, seal_bytes=4 * MiB), memory_budget_bytes=32 * MiB
        ).seal_threshold_bytes
        == 4 * MiB
    )
    with pytest.raises(ValueError, match="retention_s"):
        make_config(tmp_path, retention_s=0)
    for name in ("seal_age_s", "fsync_interval_s", "retention_s", "max_future_s"):
        for value in (math.inf, math.nan):
            with pytest.raises(ValueError, match=f"{name} must be a finite number"):
                make_config(tmp_path, **{name: value})
    with pytest.raises(
        ValueError, match=r"fsync must be one of \['always', 'interval', 'never'\], but got 'sometimes'"
    ):
        make_config(tmp_path, fsync="sometimes")
    for name, value in (("memory_budget_bytes", math.inf), ("memory_budget_bytes", None), ("seal_bytes", 1.5)):
        with pytest.raises(
            ValueError, match=f"{name} must be a whole number"
        ):  # was blamed on seal_bytes, or a TypeError
            make_config(tmp_path, **{name: value})
    assert make_config(tmp_path, memory_budget_bytes=2e9).memory_budget_bytes == 2_000_000_000  # whole, if a float
    with pytest.raises(ValueError, match="seal_age_s must be a number of seconds"):
        make_config(tmp_path, seal_age_s=None)


# ------------------------------------------------------------------------------------ maintenance


def test_maintain_seals_by_age(tmp_path, clock):
    store = open_store(tmp_path, clock, seal_age_s=60.0)
    store.ingest("samples", samples(0, 10), producer_id="p", seq=0)
    store.maintain()
    assert store.health().segments == 0  # young and small: not sealed

    store = open_store(tmp_path / "aged", clock, seal_age_s=0.01)
    store.ingest("samples", samples(0, 10), producer_id="p", seq=0)
    deadline = time.monotonic() + 5.0
    while store.health().segments == 0 and time.monotonic() < deadline:
        store.maintain()
        time.sleep(0.005)
    health = store.health()
    assert (health.segments, health.unsealed_rows, health.rows) == (1, 0, 10)


def test_maintain_seals_by_size(tmp_path, clock):
    store = open_store(tmp_path, clock, seal_bytes=1 * MiB, seal_age_s=3600.0)
    batch = samples(0, 40_000)
    assert batch.nbytes >= 1 * MiB
    store.ingest("samples", batch, producer_id="p", seq=0)
    assert store.health().segments == 1  # sealed within ingest: no background worker


def test_background_worker_seals_by_age(tmp_path, clock):
    store = open_store(tmp_path, clock, seal_age_s=0.01)
    store.start(period_s=0.005)
    try:
        store.ingest("samples", samples(0, 10), producer_id="p", seq=0)
        deadline = time.monotonic() + 5.0
        while store.health().segments == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert store.health().segments == 1
    finally:
        store.close()
    assert generations(open_store(tmp_path, clock)) == list(range(10))


# ------------------------------------------------------------------------------------ health


def test_health_reports_rows_rejects_duplicates_segments_and_last_seal(tmp_path):
    clock = FakeClock(T0 + 1234.5)
    store = open_store(tmp_path, clock)
    health = store.health()
    assert (health.rows, health.segments, health.batches, health.last_seal) == (0, 0, 0, None)
    assert health.data_dir == str(tmp_path / "data")

    mixed = batch_from_columns(
        "samples",
        {
            "ts": [T0] * 5,
            "kind": ["gpu", "gpu", "gpu", "toaster", "gpu"],
            "source": ["s", "", "s", "s", "s"],
            "metric": ["m"] * 5,
            "value": [1.0, 2.0, math.nan, 4.0, 5.0],
        },
    )
    ack = store.ingest("samples", mixed, producer_id="p", seq=0)
    assert (ack.accepted, ack.rejected) == (2, 3)
    store.ingest("samples", mixed, producer_id="p", seq=0)
    store.ingest("samples", samples(0, 10), producer_id="q", seq=0)

    health = store.health()
    assert health.rows == health.unsealed_rows == health.rows_in_memory == 12
    assert health.batches == 2
    assert health.duplicates == 1
    assert health.rejected_rows == 3
    assert set(health.rejects) == {
        "source: empty",
        "value: NaN",
        next(k for k in health.rejects if k.startswith("kind: unknown kind")),
    }
    assert all(count == 1 for count in health.rejects.values())
    assert health.producers == 2
    assert health.wal_bytes > 0
    assert health.bytes_in_memory > 0
    assert health.last_error is None

    clock.now = T0 + 2000.0
    store.seal()
    health = store.health()
    assert health.segments == 1
    assert health.last_seal == T0 + 2000.0
    assert health.rows == 12 and health.unsealed_rows == 0
    assert health.bytes_on_disk > 0
    assert health.bytes_on_disk == sum(p.stat().st_size for p in (tmp_path / "data" / "segments").rglob("*.parquet"))


def test_scan_reads_one_table_and_honours_the_selection(tmp_path, clock):
    store = open_store(tmp_path, clock)
    store.ingest("samples", samples(0, 100), producer_id="p", seq=0)
    store.seal()
    store.ingest("samples", samples(100, 100, metric="mem"), producer_id="p", seq=1)
    events = batch_from_columns("events", {"ts": [T0], "type": ["exploit"]})
    store.ingest("events", events, producer_id="p", seq=2)
    assert store.scan(select("events")).column("type").to_pylist() == ["exploit"]
    assert store.scan(select("configs")).num_rows == 0
    window = store.scan(select("samples", start=T0 + 0.050, end=T0 + 0.150))  # half sealed, half hot
    assert sorted(window.column("generation").to_pylist()) == list(range(50, 150))
    mem = store.scan(select("samples", metric="mem", generation=(120, None)))
    assert sorted(mem.column("generation").to_pylist()) == list(range(120, 200))


# ------------------------------------------------------------------------ failures while writing


def test_a_store_that_cannot_seal_refuses_with_store_busy_and_applies_nothing(tmp_path, clock):
    store = open_store(tmp_path, clock, memory_budget_bytes=16 * MiB, seal_bytes=1 * MiB)
    blocker = tmp_path / "data" / "segments"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the segments directory belongs: every seal fails")
    seq, busy = 0, None
    while busy is None and seq < 1_000:
        try:
            store.ingest("samples", samples(seq * 20_000, 20_000), producer_id="p", seq=seq)
            seq += 1
        except StoreBusy as error:
            busy = error
    assert busy is not None, "ingest should refuse once unsealed data reaches half the budget"
    assert "sealing failed" in str(busy) and "seal failed" in (store.health().last_error or "")
    assert store.health().rows == seq * 20_000, "the refused batch was not applied"
    blocker.unlink()
    store.ingest("samples", samples(seq * 20_000, 20_000), producer_id="p", seq=seq)  # the retry
    assert generations(store) == list(range((seq + 1) * 20_000))
    assert store.health().segments >= 1


def test_a_failed_log_write_abandons_its_generation_and_loses_nothing_acknowledged(tmp_path, clock):
    store = open_store(tmp_path, clock)
    store.ingest("samples", samples(0, 10), producer_id="p", seq=0)
    wrong_shape = pa.RecordBatch.from_pydict({"x": [1]})
    with pytest.raises(pa.ArrowInvalid):  # the log refuses a batch of the wrong schema
        store._wal.append(TableName.SAMPLES, wrong_shape, "p", 99)
    store.ingest("samples", samples(10, 10), producer_id="p", seq=1)
    store._dir_lock.close()  # die without closing
    assert generations(open_store(tmp_path, clock)) == list(range(20))
    assert len(list((tmp_path / "data" / "wal").iterdir())) == 2, "the second batch went to a new generation"


def test_a_relative_data_dir_is_made_absolute_where_it_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = StoreConfig(data_dir="relative/data")
    assert config.data_dir == tmp_path / "relative" / "data"
    monkeypatch.chdir("/")  # as an actor's worker would, in its own directory
    assert pickle.loads(pickle.dumps(config)).data_dir == tmp_path / "relative" / "data"


def test_a_failed_fsync_closes_every_descriptor_and_syncs_the_others(tmp_path, monkeypatch):
    """What the store's fsync (by policy, at maintenance and close) does with its duplicated
    descriptors: one that failed left the rest open and unsynced."""
    import os

    from elitemon.store._wal import fsync_all

    handles = [os.open(tmp_path / f"f{i}", os.O_CREAT | os.O_WRONLY) for i in range(3)]
    synced: list[int] = []

    def failing_first(fd: int) -> None:
        synced.append(fd)
        if len(synced) == 1:
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_first)
    with pytest.raises(OSError, match="Input/output error"):
        fsync_all(handles)
    assert synced == handles
    for fd in handles:
        with pytest.raises(OSError):  # EBADF: closed
            os.fstat(fd)


def test_close_waits_for_a_seal_in_progress(tmp_path, clock):
    """A seal that an ingest thread started (at half the budget) must end before the directory lock
    goes: a new store's orphan cleanup would otherwise delete the segment being written."""
    store = open_store(tmp_path, clock)
    store.ingest("samples", samples(0, 10), producer_id="p", seq=0)
    inside, release = threading.Event(), threading.Event()
    publish = store._publish

    def held_publish(pending):
        inside.set()
        release.wait(timeout=30)
        return publish(pending)

    store._publish = held_publish
    sealing = threading.Thread(target=store.seal)
    sealing.start()
    assert inside.wait(timeout=30), "the seal did not start"
    closing = threading.Thread(target=store.close)
    closing.start()
    closing.join(timeout=0.5)  # a window for a close that does not wait
    assert closing.is_alive(), "close let the directory go while a seal was writing"
    release.set()
    sealing.join(timeout=30)
    closing.join(timeout=30)
    reopened = open_store(tmp_path, clock)
    assert reopened.health().segments == 1 and generations(reopened) == list(range(10))
