"""The node monitor's sampling round, in this process (no actor): what one failing reading costs."""

from __future__ import annotations

import time
from pathlib import Path

from elitemon.collect.monitor import NodeMonitor
from elitemon.config import StoreConfig
from elitemon.producer import Producer, StoreSink
from elitemon.query import select
from elitemon.store import Store


def test_a_failing_host_reading_still_writes_the_heartbeat(tmp_path: Path, monkeypatch) -> None:
    """The heartbeat came after the host readings, so one that raised (psutil with no network
    counters) took it too, and the node looked dead to node_heartbeat_missing and node_down."""
    store = Store(StoreConfig(data_dir=tmp_path))
    monitor = NodeMonitor("node-a", "10.0.0.1")
    monitor._producer.close(timeout=1)
    monitor._producer = Producer(StoreSink(store))

    def broken(agents=None):
        raise AttributeError("'NoneType' object has no attribute 'bytes_sent'")

    monkeypatch.setattr(monitor._system, "sample", broken)
    now = time.time()
    monitor._sample_once(now)
    assert monitor.flush(timeout=10)
    rows = store.scan(select("samples")).to_pylist()
    assert [(r["metric"], r["value"]) for r in rows] == [("heartbeat", now)]
    store.close()


def test_a_monitor_names_its_nodes_gpu_models_for_their_price(tmp_path: Path, monkeypatch) -> None:
    """Samples are numbers: the models (what `PriceTable.gpu_hour` matches) go in a `gpu_info` event."""
    import json
    import sys

    from elitemon.analytics.cost import gpu_models
    from tests.collect.test_samplers import FakeNvml

    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(count=2, lost=set(), processes={}))
    store = Store(StoreConfig(data_dir=tmp_path))
    monitor = NodeMonitor("node-a", "10.0.0.1")
    monitor._producer.close(timeout=1)
    monitor._producer = Producer(StoreSink(store))
    monitor._announce_gpus()  # what each `run` does first
    assert monitor.flush(timeout=10)
    events = store.scan(select("events")).to_pandas()
    assert list(events["type"]) == ["gpu_info"] and list(events["node"]) == ["10.0.0.1"]
    assert json.loads(events["payload"][0]) == {"models": {"0": "NVIDIA A100-SXM4-80GB", "1": "NVIDIA A100-SXM4-80GB"}}
    assert gpu_models(events) == {"10.0.0.1": "NVIDIA A100-SXM4-80GB"}
    store.close()


def test_a_stop_answered_to_a_cancelled_run_does_not_stop_the_next(ray_session) -> None:
    """A flush cancels the loop and starts it again (a new run token); the reply to a check-in the
    cancelled run sent says "stop" to that run. It stopped the new one after a sample."""
    import ray

    monitor = NodeMonitor("node-a", "10.0.0.1")
    try:
        monitor._run_token, monitor._last_checkin = 2, time.monotonic()  # the new run; no check-in due
        monitor._checkin, monitor._checkin_token = ray.put({"agents": {42: "t1"}, "keep_running": False}), 1
        monitor._check_in()
        assert monitor._agents == {42: "t1"} and not monitor._superseded
        monitor._checkin, monitor._checkin_token = ray.put({"agents": {}, "keep_running": False}), 2
        monitor._check_in()
        assert monitor._superseded, "a stop for this run stops it"
    finally:
        monitor.stop()
