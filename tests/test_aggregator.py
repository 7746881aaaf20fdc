"""The Aggregator actor on a real local Ray: concurrent producers, a kill mid-stream, bad rows."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import ray

from elitemon.aggregator import AggregatorNotFound, get_aggregator, start_aggregator
from elitemon.client import Client
from elitemon.config import StoreConfig
from elitemon.producer import Producer, RaySink
from elitemon.schema import batch_from_rows
from elitemon.store import DirectoryInUse, Store, _store
from tests.conftest import wait_for


@ray.remote(num_cpus=0.25)
def _produce(name: str, producer_index: int, rows: int, batch_rows: int) -> dict:
    """Write `rows` samples whose generation encodes (producer, row), so duplicates show."""
    producer = Producer(RaySink(name=name), max_batch_rows=batch_rows, max_delay_s=0.05)
    now = time.time()
    for start in range(0, rows, batch_rows):
        n = min(batch_rows, rows - start)
        producer.write_columns(
            "samples",
            {
                "ts": np.full(n, now),
                "kind": ["agent"] * n,
                "source": [f"agent-{producer_index}"] * n,
                "generation": producer_index * 1_000_000 + np.arange(start, start + n),
                "metric": ["reward"] * n,
                "value": np.ones(n),
            },
        )
    assert producer.close(timeout=120), "producer could not deliver everything"
    stats = producer.stats()
    return {"acked": stats.rows_acked, "retries": stats.retries}


def test_kill_mid_stream_loses_and_duplicates_nothing(ray_session, aggregator_name: str, tmp_path: Path) -> None:
    handle = start_aggregator(StoreConfig(data_dir=tmp_path, seal_bytes=2 << 20), name=aggregator_name)
    producers, rows_each = 4, 50_000
    tasks = [_produce.remote(aggregator_name, i, rows_each, 1_000) for i in range(producers)]
    wait_for(lambda: ray.get(handle.health.remote()).rows > 40_000, timeout_s=60, what="the stream to be under way")
    ray.kill(handle, no_restart=False)
    results = ray.get(tasks, timeout=180)

    client = Client(get_aggregator(name=aggregator_name), name=aggregator_name)
    generations = client.samples(metric="reward").column("generation").to_numpy()
    expected = np.concatenate([i * 1_000_000 + np.arange(rows_each) for i in range(producers)])
    assert len(generations) == producers * rows_each
    assert len(np.unique(generations)) == len(generations), "a row was applied twice"
    np.testing.assert_array_equal(np.sort(generations), np.sort(expected))
    assert sum(r["acked"] for r in results) == producers * rows_each
    assert sum(r["retries"] for r in results) > 0, "the kill should have forced resends"
    ray.kill(client._handle, no_restart=True)


def test_bad_rows_are_rejected_with_reason_and_good_rows_land(aggregator_handle) -> None:
    batch = batch_from_rows(
        "samples",
        [
            {"kind": "agent", "source": "a", "metric": "m", "value": 1.0},
            {"kind": "agent", "source": "a", "metric": "m", "value": float("inf")},
            {"kind": "planet", "source": "a", "metric": "m", "value": 2.0},
            {"kind": "agent", "source": "a", "metric": "m", "value": 3.0},
        ],
    )
    ack = ray.get(aggregator_handle.ingest.remote("samples", batch, "p", 0))
    assert (ack.accepted, ack.rejected) == (2, 2)
    assert ack.reasons["value: infinite"] == 1
    assert any(reason.startswith("kind: unknown kind") for reason in ack.reasons)
    health = ray.get(aggregator_handle.health.remote())
    assert health.rejected_rows == 2 and health.rows == 2
    assert sorted(Client(aggregator_handle).samples().column("value").to_pylist()) == [1.0, 3.0]


def test_aggregator_survives_a_malformed_request(aggregator_handle) -> None:
    with pytest.raises(ray.exceptions.RayTaskError, match="unknown table"):
        ray.get(aggregator_handle.ingest.remote("nonsense", pa.record_batch({"x": [1]}), "p", 0))
    assert ray.get(aggregator_handle.health.remote()).rows == 0  # still answering


def test_second_start_attaches_to_the_same_actor(aggregator_handle, aggregator_name: str, tmp_path: Path) -> None:
    again = start_aggregator(StoreConfig(data_dir=tmp_path / "elsewhere"), name=aggregator_name)
    ray.get(again.ingest.remote("samples", batch_from_rows("samples", [_row(1.0)]), "p", 0))
    assert ray.get(aggregator_handle.health.remote()).rows == 1


def test_get_aggregator_names_the_missing_actor(ray_session) -> None:
    with pytest.raises(AggregatorNotFound, match="elitemon start"):
        get_aggregator(name="no-such-aggregator")


def test_client_queries_return_arrow_and_pandas(aggregator_handle) -> None:
    now = time.time()
    rows = [_row(float(i), ts=now - 60 + i, source=f"agent-{i % 2}") for i in range(60)]
    ray.get(aggregator_handle.ingest.remote("samples", batch_from_rows("samples", rows), "p", 0))
    client = Client(aggregator_handle)
    points = client.samples(step=30, agg="count", source="agent-0")
    assert isinstance(points, pa.Table) and sum(points.column("value").to_pylist()) == 30
    latest = client.latest(as_pandas=True)
    assert sorted(latest["value"]) == [58.0, 59.0]
    assert client.events().num_rows == 0


def _row(value: float, *, ts: float | None = None, source: str = "agent-0") -> dict:
    row = {"kind": "agent", "source": source, "metric": "reward", "value": value}
    if ts is not None:
        row["ts"] = ts
    return row


def test_a_data_dir_that_cannot_be_used_is_refused_before_the_actor_starts(
    ray_session, aggregator_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_store, "DATA_DIR_WAIT_S", 0.2)  # the holder below never lets go
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    with pytest.raises(NotADirectoryError, match=f"data dir {a_file / 'data'} cannot be created: Not a directory"):
        start_aggregator(StoreConfig(data_dir=a_file / "data"), name=aggregator_name)
    held = Store(StoreConfig(data_dir=tmp_path / "held"))
    try:
        with pytest.raises(DirectoryInUse, match="in use by another elitemon store"):
            start_aggregator(StoreConfig(data_dir=tmp_path / "held"), name=aggregator_name)
    finally:
        held.close()
    with pytest.raises(AggregatorNotFound):
        get_aggregator(name=aggregator_name)  # no actor was left behind under the name
