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
