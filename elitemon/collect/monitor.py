"""NodeMonitor: one actor per node, sampling the host (and its GPUs) every `interval_s` into the store
(in one batch every `send_interval_s`).

Rows: `kind="node"` with `node` = the node's IP (what Tune results call `node_ip`) and `source` = the
Ray node id (unique even when several nodes share an IP, as in a local test cluster); `kind="gpu"`
per GPU; `kind="agent"` for the trainer processes of its node that the aggregator maps to agents.
Each round also writes a `heartbeat` sample (its value: the epoch seconds it was taken), which is
what the `node_heartbeat_missing` alert and the controller's node_down events read.

The sampling loop is the actor's one long task, `run`, on its main thread. That is for cost: while
an actor's main thread is idle, Ray's core worker wakes it every 10 ms to check for signals (a
hard-coded period), 6 ms of CPU a second on this project's 2-core test machine; a main thread busy
in `run` pays none of it (measured: the monitor's process, sampling every second, uses about 4.5
ms/s this way and 11 with the loop in a thread beside an idle main thread). Nothing can call
the monitor while `run` runs, so it talks first: every `checkin_interval_s` it checks in with the
aggregator (its heartbeat out; its node's trainer processes, and whether this loop is still the one
wanted, back), and whoever started `run` cancels it (`ray.cancel`) to reach `flush` or `stop`; the
loop sees a cancel within CANCEL_POLL_S. A loop the controller no longer knows (a lost reference,
a `run` started again after a transient error) ends at its next check-in, so a newer one can start.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import ray

from elitemon import aggregator
from elitemon.collect._gpu import GpuSampler
from elitemon.collect._system import SystemSampler
from elitemon.producer import Producer, RaySink

log = logging.getLogger(__name__)

#: Samples are taken every `interval_s` but sent in one batch per `send_interval_s`: on a node whose
#: CPUs train, each Ray call costs the trainers more than taking the samples does (measured with
#: benchmarks/overhead.py), and 5 s is well inside any dashboard refresh or alert `for`.
DEFAULT_SEND_INTERVAL_S = 5.0
#: How often a monitor checks in with the aggregator: how old a node's last heartbeat there can be,
#: and how long a new trainer process can go unmapped.
DEFAULT_CHECKIN_INTERVAL_S = 5.0
#: How often the sampling loop looks for a cancel (Ray does not interrupt a running actor task): a
#: flush waits at most this long. Four wake-ups a second cost well under 0.5 ms of CPU.
CANCEL_POLL_S = 0.25
#: The event a monitor writes at the start of each run on a node with GPUs: their models.
GPU_INFO = "gpu_info"


class NodeMonitor:
    """Samples its node while `run` runs; created (and run) by the MonitorController, not directly."""

    def __init__(
        self,
        node_id: str,
        node_ip: str,
        *,
        interval_s: float = 1.0,
        send_interval_s: float = DEFAULT_SEND_INTERVAL_S,
        checkin_interval_s: float = DEFAULT_CHECKIN_INTERVAL_S,
        aggregator_name: str = aggregator.NAME,
    ) -> None:
        for name, value in (
            ("interval_s", interval_s),
            ("send_interval_s", send_interval_s),
            ("checkin_interval_s", checkin_interval_s),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, but got {value}.")
        self._node_id, self._node_ip, self._interval_s = node_id, node_ip, interval_s
        self._checkin_interval_s, self._aggregator_name = checkin_interval_s, aggregator_name
        self._producer = Producer(
            RaySink(name=aggregator_name),
            name=f"monitor-{node_id[:12]}",
            max_delay_s=max(interval_s, send_interval_s),
            when_full="drop",  # an aggregator away for long costs samples (counted), not the monitor
        )
        self._system = SystemSampler(node_ip, node_id, time.time)
        self._gpu, gpu_status = GpuSampler.open(node_ip)
        log.info("node monitor on %s: %s", node_ip, gpu_status)  # said once, then carries on
        self._agents: dict[int, str] = {}
        self._last_sample: float | None = None
        self._run_token: int | None = None  # which `run` this is, as the controller numbered it
        self._superseded = False  # a check-in said the controller wants another `run`, not this one
        self._aggregator: Any = None  # looked up at the first check-in (a named handle outlives restarts)
        self._checkin: Any = None  # the check-in in flight: its reply is read on a later round
        self._checkin_token: int | None = None  # the run it was sent for
        self._last_checkin = float("-inf")

    def run(self, token: int) -> None:
        """Sample every `interval_s` until cancelled or superseded; check in every
        `checkin_interval_s` (and after the first sample, so that the controller hears from a new
        monitor at once). `token` numbers this run for the controller's check-in replies."""
        context = ray.get_runtime_context()
        self._run_token, self._superseded, self._last_checkin = token, False, float("-inf")
        self._announce_gpus()
        # Scheduled on the monotonic clock: a wall clock stepped back (NTP) would stop sampling and
        # check-ins until it caught up again. The rows are stamped with the wall clock.
        next_sample = time.monotonic()
        while not (context.is_canceled() or self._superseded):
            if time.monotonic() >= next_sample:
                next_sample = time.monotonic() + self._interval_s
                # Neither a failed reading nor a failed check-in ends monitoring, and one does not
                # skip the other: a monitor whose readings fail still hears that it should stop.
                try:
                    self._sample_once(time.time())
                except Exception:
                    log.exception("node monitor on %s: sampling failed", self._node_ip)
                try:
                    self._check_in()
                except Exception:
                    log.exception("node monitor on %s: check-in failed", self._node_ip)
            time.sleep(max(0.0, min(CANCEL_POLL_S, next_sample - time.monotonic())))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row sampled so far is stored."""
        return self._producer.flush(timeout)

    def stop(self) -> None:
        """Store what was sampled; the monitor takes no more samples (its `run` was cancelled)."""
        self._producer.close(timeout=10)

    def _sample_once(self, now: float) -> None:
        """One round of rows. A sampler that fails loses its own rows only: the heartbeat is always
        written, since `node_heartbeat_missing` and the controller's node_down read it, and a live
        node whose disk or GPU readings fail must not look dead."""
        agents, rows = self._agents, []
        for name, sample in (("host", lambda: self._system.sample(agents)), ("GPU", lambda: self._gpu_rows(now))):
            try:
                rows += sample()
            except Exception:
                log.exception("node monitor on %s: %s readings failed", self._node_ip, name)
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

    def _announce_gpus(self) -> None:
        """A `gpu_info` event naming the node's GPU models (NVML index -> name): samples are numbers,
        and the price of a GPU hour is by model (`PriceTable.gpu_hour`). None on a node without."""
        if self._gpu is not None:
            payload = {"models": {str(index): name for index, name in self._gpu.models.items()}}
            row = {"type": GPU_INFO, "node": self._node_ip, "payload": json.dumps(payload)}
            self._producer.append_rows("events", [row])

    def _gpu_rows(self, now: float) -> list[dict]:
        return self._gpu.sample(now, self._agents) if self._gpu is not None else []

    def _check_in(self) -> None:
        """Take the reply of the last check-in if it has come (the node's trainer processes, and
        whether to go on), and send the next when due. Never waits: an aggregator that is away
        delays the mapping, not the samples."""
        if self._checkin is not None:
            ready, _ = ray.wait([self._checkin], timeout=0)
            if not ready:
                return
            try:
                reply = ray.get(ready[0])
                self._agents = reply["agents"]
                # "Stop" is about the run that asked: one sent before a flush restarted the loop
                # answers for the cancelled run, and would stop this one after a sample.
                if self._checkin_token == self._run_token:
                    self._superseded = not reply["keep_running"]
            except ray.exceptions.RayError as error:  # restarting, or gone: the next one may reach it
                log.warning("node monitor on %s: check-in failed: %s", self._node_ip, error)
                if isinstance(error, ray.exceptions.ActorDiedError):
                    self._aggregator = None  # dead for good: look up whichever runs under the name
            self._checkin = None
        if time.monotonic() - self._last_checkin < self._checkin_interval_s:
            return
        self._last_checkin = time.monotonic()
        report = {"last_sample": self._last_sample, "pid": os.getpid(), "run": self._run_token}
        try:
            self._aggregator = self._aggregator or aggregator.get_aggregator(name=self._aggregator_name)
        except aggregator.AggregatorNotFound as error:
            log.warning("node monitor on %s: %s", self._node_ip, error)
            return
        self._checkin = self._aggregator.monitor_checkin.remote(self._node_id, self._node_ip, report)
        self._checkin_token = self._run_token
