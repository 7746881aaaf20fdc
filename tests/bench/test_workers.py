"""Holomorphic workers: their checks and monitor without Ray, then real actors reporting into a store."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from elitemon.analytics.anomaly import RobustDetector
from elitemon.bench.holomorphic import gpu_unavailable_reason
from elitemon.bench.workers import (
    HolomorphicProcessingMonitor,
    HolomorphicWorker,
    WorkerConfig,
    start_workers,
)
from tests.conftest import wait_for

GPU_MISSING = gpu_unavailable_reason()
SMALL = WorkerConfig(frame_size=256, batch_frames=8, backend="cpu", report_interval_s=0.2)


class _Rows:
    """A stand-in producer that keeps what it is given."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict]] = {"samples": [], "events": []}

    def write_rows(self, table: str, rows: list[dict]) -> int:
        self.rows[table] += rows
        return len(rows)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> bool:
        return True


# ------------------------------------------------------------------------------ without Ray


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("frame_size", 63),
        ("frame_size", 2),
        ("batch_frames", 0),
        ("signal", "sine"),
        ("backend", "tpu"),
        ("threads", -1),
        ("threads", True),
        ("report_interval_s", 0),
        ("report_interval_s", math.nan),
        ("anomaly_window", 3),
        ("anomaly_min_history", 1),
    ],
)
def test_bad_config_values_are_refused_naming_them(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        WorkerConfig(**{name: value})


def test_the_monitor_turns_a_rate_into_bench_samples() -> None:
    monitor = HolomorphicProcessingMonitor("worker-a", "10.0.0.5")
    report = monitor.observe(1_000.0, 50_000_000, 0.5, {"gpu_memory_used_bytes": 2e9})
    by_metric = {row["metric"]: row for row in report.samples}
    assert by_metric["holomorphic_throughput"]["value"] == 1e8
    assert by_metric["bytes_per_s"]["value"] == 20 * 1e8  # 4 B read + 16 B written a sample
    assert by_metric["gpu_memory_used_bytes"]["value"] == 2e9
    assert {(r["kind"], r["source"], r["node"], r["ts"]) for r in report.samples} == {
        ("bench", "worker-a", "10.0.0.5", 1_000.0)
    }
    assert report.events == []
    with pytest.raises(ValueError, match="seconds"):
        monitor.observe(1_001.0, 10, 0.0)


def test_the_monitor_flags_a_throughput_collapse_with_an_anomaly_event() -> None:
    monitor = HolomorphicProcessingMonitor("worker-a", "10.0.0.5", detector=RobustDetector(window=30, min_history=10))
    rates = 100e6 + np.random.default_rng(0).normal(0, 1e6, 30)
    reports = [monitor.observe(1_000.0 + i, rate, 1.0) for i, rate in enumerate(rates)]
    assert not any(report.events for report in reports), "steady throughput is not anomalous"
    collapse = monitor.observe(1_030.0, 20e6, 1.0)
    (event,) = collapse.events
    assert event["type"] == "anomaly" and event["node"] == "10.0.0.5" and event["ts"] == 1_030.0
    payload = json.loads(event["payload"])
    assert payload["worker"] == "worker-a" and payload["metric"] == "holomorphic_throughput"
    assert payload["value"] == 20e6 and payload["severity"] == "critical"
    lower, upper = payload["band"]
    assert lower < payload["expected"] < upper and payload["value"] < lower
    assert payload["expected"] == pytest.approx(100e6, rel=0.02)


def test_a_worker_runs_and_reports_without_ray() -> None:
    rows = _Rows()
    config = WorkerConfig(frame_size=64, batch_frames=4, backend="cpu", report_interval_s=0.001)
    worker = HolomorphicWorker("solo", config, producer=rows)
    assert worker.warm_up() < 1e-5
    result = worker.run(batches=40)
    assert (result.batches, result.samples, result.backend) == (40, 40 * 4 * 64, "cpu")
    assert result.samples_per_s > 0 and result.bytes_per_s == 20 * result.samples_per_s and result.stored
    throughput = [r for r in rows.rows["samples"] if r["metric"] == "holomorphic_throughput"]
    assert len(throughput) == result.reports >= 1
    assert worker.info()["unavailable"] is None and worker.info()["threads"] == 1


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "exactly one"),
        ({"duration_s": 1.0, "batches": 2}, "exactly one"),
        ({"duration_s": -1.0}, "duration_s"),
        ({"duration_s": math.nan}, "duration_s"),
        ({"batches": 0}, "batches"),
        ({"batches": 1.5}, "batches"),
        ({"batches": 1, "start_at": time.time() + 1e6}, "start_at"),
    ],
)
def test_bad_run_arguments_are_refused_naming_them(arguments: dict, message: str) -> None:
    worker = HolomorphicWorker("solo", WorkerConfig(frame_size=64, batch_frames=2, backend="cpu"), producer=_Rows())
    with pytest.raises(ValueError, match=message):
        worker.run(**arguments)


def test_start_workers_checks_its_arguments_before_starting_anything() -> None:
    cpu_only = [{"Alive": True, "NodeID": "n1", "Resources": {"CPU": 2.0}}]
    one_gpu = [{"Alive": True, "NodeID": "n1", "Resources": {"CPU": 2.0, "GPU": 1.0}}]
    for arguments, message in (
        ({"count": 0}, "count"),
        ({"use_gpu": "yes"}, "use_gpu"),
        ({"num_cpus": -1}, "num_cpus"),
        ({"use_gpu": True, "nodes": cpu_only}, "no alive node"),
        ({"count": 2, "use_gpu": True, "nodes": one_gpu}, "count=2"),
        # A head started with --num-cpus=0 cannot hold a worker: it was pinned there, and never placed.
        ({"use_gpu": False, "nodes": [{"Alive": True, "NodeID": "n0", "Resources": {}}]}, "has 1.0 CPU"),
    ):
        with pytest.raises(ValueError, match=message):
            start_workers(**arguments)


# ------------------------------------------------------------------------------ real Ray actors


@pytest.fixture(scope="module")
def bench_store(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object]]:
    import ray

    from elitemon.aggregator import start_aggregator
    from elitemon.client import Client
    from elitemon.config import StoreConfig

    name = f"aggregator-test-{uuid.uuid4().hex[:8]}"
    data_dir: Path = tmp_path_factory.mktemp("bench") / "data"
    handle = start_aggregator(StoreConfig(data_dir=data_dir), name=name)
    yield name, Client(handle, name=name)
    ray.kill(handle, no_restart=True)


@pytest.fixture(scope="module")
def cpu_worker(bench_store: tuple[str, object]) -> Iterator[object]:
    import ray

    name, _ = bench_store
    (handle,) = start_workers(1, use_gpu=False, num_cpus=0.25, config=SMALL, aggregator_name=name, prefix="test")
    yield handle
    ray.kill(handle, no_restart=True)


def test_a_cpu_worker_reports_throughput_that_is_queryable_in_the_store(bench_store, cpu_worker) -> None:
    import ray

    _, client = bench_store
    assert ray.get(cpu_worker.warm_up.remote()) < 1e-5
    result = ray.get(cpu_worker.run.remote(duration_s=0.7))
    assert result.worker_id == "test-cpu0" and result.backend == "cpu" and result.samples_per_s > 0
    assert result.reports >= 3 and result.stored

    def stored():
        rows = client.samples(kind="bench", source=result.worker_id, as_pandas=True)
        return [rows] if (rows["metric"] == "holomorphic_throughput").sum() >= result.reports else None

    (rows,) = wait_for(stored, timeout_s=30, what="the worker's throughput samples")
    throughput = rows[rows["metric"] == "holomorphic_throughput"]
    assert (throughput["value"] > 0).all()
    assert set(throughput["node"]) == {ray.util.get_node_ip_address()}
    assert (rows["metric"] == "bytes_per_s").sum() == len(throughput)


def test_bad_arguments_give_value_error_and_the_actor_stays_usable(cpu_worker) -> None:
    import ray

    with pytest.raises(ValueError, match="duration_s"):
        ray.get(cpu_worker.run.remote(duration_s=-1))
    with pytest.raises(ValueError, match="nbytes"):
        ray.get(cpu_worker.copy_bandwidth.remote(3))
    assert ray.get(cpu_worker.run.remote(batches=3)).batches == 3
    assert ray.get(cpu_worker.copy_bandwidth.remote(4 << 20, 2)) > 0


@pytest.mark.skipif(GPU_MISSING is not None, reason=f"no GPU: {GPU_MISSING}")
def test_a_gpu_worker_checks_its_kernel_and_reports_gpu_memory(bench_store) -> None:
    import ray

    name, client = bench_store
    config = WorkerConfig(frame_size=4096, batch_frames=256, report_interval_s=0.2)
    (handle,) = start_workers(1, use_gpu=True, num_cpus=0.25, config=config, aggregator_name=name, prefix="test")
    try:
        assert ray.get(handle.info.remote())["unavailable"] is None
        assert ray.get(handle.warm_up.remote()) < 1e-5
        result = ray.get(handle.run.remote(duration_s=1.0))
        assert result.backend == "gpu" and result.samples_per_s > 0
        assert ray.get(handle.copy_bandwidth.remote()) > result.bytes_per_s / 10
    finally:
        ray.kill(handle, no_restart=True)
    (rows,) = wait_for(
        lambda: [t.to_pandas()] if (t := client.latest(kind="bench", source=result.worker_id)).num_rows else None,
        what="the GPU worker's samples",
    )
    metrics = dict(zip(rows["metric"], rows["value"], strict=True))
    assert metrics["gpu_memory_used_bytes"] > 256 * 4096 * 4
    assert metrics["holomorphic_throughput"] > 0
