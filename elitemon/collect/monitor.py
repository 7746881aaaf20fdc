"""NodeMonitor: one actor per node, sampling the host (and its GPUs) every `interval_s` into the store
(in one batch every `send_interval_s`).

Rows: `kind="node"` with `node` = the node's IP (what Tune results call `node_ip`) and `source` = the
Ray node id (unique even when several nodes share an IP, as in a local test cluster); `kind="gpu"`
per GPU; `kind="agent"` for trainer processes mapped to agents with `register_agents`. Each round also
writes a `heartbeat` sample (its value: the epoch seconds it was taken), which is what the
`node_heartbeat_missing` alert and the controller's node_down events read.
"""

from __future__ import annotations

import logging
import threading
import time

from elitemon import aggregator
from elitemon.collect._gpu import GpuSampler
from elitemon.collect._system import SystemSampler
from elitemon.producer import Producer, RaySink

log = logging.getLogger(__name__)

#: Samples are taken every `interval_s` but sent in one batch per `send_interval_s`: on a node whose
#: CPUs train, each Ray call costs the trainers more than taking the samples does (measured with
#: benchmarks/overhead.py), and 5 s is well inside any dashboard refresh or alert `for`.
DEFAULT_SEND_INTERVAL_S = 5.0


class NodeMonitor:
    """Samples its node in a background thread; created by the MonitorController, not directly."""

    def __init__(
        self,
        node_id: str,
        node_ip: str,
        *,
        interval_s: float = 1.0,
        send_interval_s: float = DEFAULT_SEND_INTERVAL_S,
        aggregator_name: str = aggregator.NAME,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, but got {interval_s=}.")
        if send_interval_s <= 0:
            raise ValueError(f"send_interval_s must be positive, but got {send_interval_s=}.")
        self._node_id, self._node_ip, self._interval_s = node_id, node_ip, interval_s
        self._producer = Producer(
            RaySink(name=aggregator_name),
            name=f"monitor-{node_id[:12]}",
            max_delay_s=max(interval_s, send_interval_s),
        )
        self._system = SystemSampler(node_ip, node_id, time.time)
        self._gpu, self.gpu_status = GpuSampler.open(node_ip)
        log.info("node monitor on %s: %s", node_ip, self.gpu_status)  # said once, then carries on
        self._agents: dict[int, str] = {}
        self._last_sample: float | None = None
        self._last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="elitemon-node-monitor", daemon=True)
        self._thread.start()

    def register_agents(self, agents_by_pid: dict[int, str]) -> None:
        """Map trainer process ids on this node to agent ids (replaces the previous mapping)."""
        self._agents = dict(agents_by_pid)

    def heartbeat(self) -> dict:
        """What the controller records: who this is, when it last sampled, and its GPU status."""
        return {
            "node_id": self._node_id,
            "node_ip": self._node_ip,
            "last_sample": self._last_sample,
            "gpu": self.gpu_status,
            "last_error": self._last_error,
        }

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row sampled so far is stored."""
        return self._producer.flush(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._producer.close(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.time()
            try:
                self._sample_once(started)
            except Exception as error:  # a failed reading must not end monitoring
                self._last_error = repr(error)
                log.exception("node monitor on %s: sampling failed", self._node_ip)
            self._stop.wait(max(0.0, self._interval_s - (time.time() - started)))

    def _sample_once(self, now: float) -> None:
        agents = self._agents
        rows = self._system.sample(agents)
        if self._gpu is not None:
            rows += self._gpu.sample(now, agents)
        rows.append(
            {
                "ts": now,
                "kind": "node",
                "node": self._node_ip,
                "source": self._node_id,
                "metric": "heartbeat",
                "value": now,
            }
        )
        self._producer.append_rows("samples", rows)  # converted and checked once per batch
        self._last_sample = now
