"""MonitorController: keeps exactly one NodeMonitor on every alive node, and records node events.

Every `interval_s` it compares Ray's live nodes with its monitors: a new node gets a monitor (pinned
to it, `num_cpus=0`) and a `node_up` event; a node Ray reports dead loses its monitor and yields a
`node_down` event carrying the monitor's last heartbeat. A node that comes back is a new Ray node
(new id) and gets a new monitor and `node_up`. Heartbeats are collected with a short timeout, so a
hung monitor shows as a growing gap rather than a stuck controller: from a new monitor every round
until its first one, then every `heartbeat_poll_s` (the stored `heartbeat` samples are the exact
record; the controller's copy only dates a node_down).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from elitemon import aggregator
from elitemon.collect.monitor import DEFAULT_SEND_INTERVAL_S, NodeMonitor
from elitemon.producer import Producer, RaySink
from elitemon.query import select

CONTROLLER_NAME = "monitor-controller"
DEFAULT_HEARTBEAT_POLL_S = 5.0


def controller_name(aggregator_name: str = aggregator.NAME) -> str:
    """The controller that feeds `aggregator_name`: one per aggregator, so that monitoring for two
    stores (two runs, two tests) never shares a controller or monitors writing to the other store."""
    return CONTROLLER_NAME if aggregator_name == aggregator.NAME else f"{CONTROLLER_NAME}-{aggregator_name}"


log = logging.getLogger(__name__)


@dataclass
class _Watched:
    handle: Any
    node_ip: str
    last_heartbeat: float | None = None


class MonitorController:
    """Reconciles NodeMonitors with the cluster's nodes. Start it with `start_monitoring`."""

    def __init__(
        self,
        *,
        interval_s: float = 1.0,
        sample_interval_s: float = 1.0,
        send_interval_s: float = DEFAULT_SEND_INTERVAL_S,
        heartbeat_poll_s: float = DEFAULT_HEARTBEAT_POLL_S,
        aggregator_name: str = aggregator.NAME,
    ) -> None:
        self._interval_s, self._sample_interval_s = interval_s, sample_interval_s
        self._send_interval_s, self._heartbeat_poll_s = send_interval_s, heartbeat_poll_s
        self._last_poll = float("-inf")
        self._aggregator_name = aggregator_name
        self._events = Producer(RaySink(name=aggregator_name), name="monitor-controller", max_delay_s=0.1)
        self._watched: dict[str, _Watched] = {}
        self._agents_by_ip: dict[str, dict[int, str]] = {}  # what each node's monitor must map
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="elitemon-monitor-controller", daemon=True)
        self._thread.start()

    def nodes(self) -> dict[str, dict]:
        """node id -> {node_ip, last_heartbeat} for every monitored node."""
        with self._lock:
            return {n: {"node_ip": w.node_ip, "last_heartbeat": w.last_heartbeat} for n, w in self._watched.items()}

    def monitor(self, node_id: str) -> Any:
        """The NodeMonitor handle of a node (the Tune callback maps trainer pids through it)."""
        with self._lock:
            watched = self._watched.get(node_id)
        return None if watched is None else watched.handle

    def events_stats(self) -> Any:
        """The ProducerStats of the node events this controller writes (rejects, retries, errors)."""
        return self._events.stats()

    def register_agents(self, node_ip: str, agents_by_pid: dict[int, str]) -> None:
        """Map trainer pids to agents on the node(s) at `node_ip` (what Tune results carry), now and
        for any monitor started there later. Replaces that address's previous mapping."""
        with self._lock:
            self._agents_by_ip[node_ip] = dict(agents_by_pid)
            handles = [w.handle for w in self._watched.values() if w.node_ip == node_ip]
        for handle in handles:
            handle.register_agents.remote(agents_by_pid)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Flush every monitor's rows and the controller's events (e.g. before a run ends)."""
        with self._lock:
            handles = [w.handle for w in self._watched.values()]
        try:
            monitors = ray.get([h.flush.remote(timeout_s) for h in handles], timeout=timeout_s + 5)
        except ray.exceptions.RayError:
            return False
        return all(monitors) and self._events.flush(timeout_s)

    def _run(self) -> None:
        try:
            self._recover()
        except Exception:  # the aggregator may be restarting too; nodes lost meanwhile stay unreported
            log.exception("could not check for nodes lost before this controller started")
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:  # a failed round (GCS briefly away) is retried next round
                log.exception("monitor reconciliation failed")
            self._stop.wait(self._interval_s)

    def _recover(self) -> None:
        """A restarted controller knows no nodes. The store does: nodes whose last node event is a
        node_up. Those still alive are taken up again without a second node_up (their monitors,
        being named, are found again); those that died meanwhile (the controller's own node, say)
        get their node_down now, with the last heartbeat stored. Nodes Ray does not list (another
        cluster's, from an earlier run in the same data directory) are left alone."""
        store = aggregator.get_aggregator(name=self._aggregator_name)
        events = ray.get(store.rows.remote(select("events", type=["node_up", "node_down"]))).to_pylist()
        still_up: dict[str, str] = {}
        for event in events:
            node_id = json.loads(event["payload"])["node_id"]
            if event["type"] == "node_up":
                still_up[node_id] = event["node"]
            else:
                still_up.pop(node_id, None)
        alive = {node["NodeID"]: node["Alive"] for node in ray.nodes()}
        for node_id in still_up.keys() & alive.keys():
            if alive[node_id]:
                self._start_monitor(node_id, still_up[node_id], announce=False)
                continue
            beats = ray.get(store.latest.remote(select("samples", metric="heartbeat", source=node_id)))
            last = max(beats.column("value").to_pylist(), default=None)
            self._event("node_down", node_id, still_up[node_id], {"last_heartbeat": last, "noticed_late": True})

    def reconcile(self) -> None:
        alive = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]}
        with self._lock:
            known = set(self._watched)
        for node_id in alive.keys() - known:
            self._start_monitor(node_id, alive[node_id])
        for node_id in known - alive.keys():
            with self._lock:
                watched = self._watched.pop(node_id)
            self._event("node_down", node_id, watched.node_ip, {"last_heartbeat": watched.last_heartbeat})
        self._collect_heartbeats()

    def _start_monitor(self, node_id: str, node_ip: str, *, announce: bool = True) -> None:
        handle = (
            ray.remote(NodeMonitor)
            .options(
                name=f"node-monitor-{self._aggregator_name}-{node_id}",
                namespace=aggregator.NAMESPACE,
                get_if_exists=True,
                num_cpus=0,
                max_restarts=-1,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            )
            .remote(
                node_id,
                node_ip,
                interval_s=self._sample_interval_s,
                send_interval_s=self._send_interval_s,
                aggregator_name=self._aggregator_name,
            )
        )
        with self._lock:
            self._watched[node_id] = _Watched(handle, node_ip)
            agents = self._agents_by_ip.get(node_ip)
        if agents:
            handle.register_agents.remote(agents)
        if announce:
            self._event("node_up", node_id, node_ip, {})

    def _collect_heartbeats(self) -> None:
        poll_all = time.monotonic() - self._last_poll >= self._heartbeat_poll_s
        if poll_all:
            self._last_poll = time.monotonic()
        with self._lock:
            watched = {n: w for n, w in self._watched.items() if poll_all or w.last_heartbeat is None}
        if not watched:
            return
        refs = {w.handle.heartbeat.remote(): node_id for node_id, w in watched.items()}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=min(1.0, self._interval_s))
        for ref in ready:
            try:
                beat = ray.get(ref)
            except ray.exceptions.RayError:
                continue  # the node is going away; reconcile will see it
            if beat["last_sample"] is not None:
                with self._lock:
                    if refs[ref] in self._watched:
                        self._watched[refs[ref]].last_heartbeat = beat["last_sample"]

    def _event(self, kind: str, node_id: str, node_ip: str, extra: dict) -> None:
        payload = json.dumps({"node_id": node_id, **extra})
        self._events.write_rows("events", [{"type": kind, "node": node_ip, "payload": payload}])
        log.info("%s: %s (%s)", kind, node_ip, node_id)


def start_monitoring(
    *,
    interval_s: float = 1.0,
    sample_interval_s: float = 1.0,
    send_interval_s: float = DEFAULT_SEND_INTERVAL_S,
    aggregator_name: str = aggregator.NAME,
    name: str | None = None,
    detached: bool = False,
) -> Any:
    """Start (or attach to) the controller, which puts a NodeMonitor on every node.

    Keep the returned handle: unless `detached`, Ray ends the controller (and so its monitors)
    once no handle to it is left."""
    options: dict[str, Any] = {
        "name": name or controller_name(aggregator_name),
        "namespace": aggregator.NAMESPACE,
        "get_if_exists": True,
        "num_cpus": 0,
        "max_restarts": -1,
        "max_concurrency": 4,
        # Beside the caller (the head node, for a driver there): a controller on a node that dies
        # would restart elsewhere without knowing that node, and never report it down.
        "scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True),
    }
    if detached:
        options["lifetime"] = "detached"
    return (
        ray.remote(MonitorController)
        .options(**options)
        .remote(
            interval_s=interval_s,
            sample_interval_s=sample_interval_s,
            send_interval_s=send_interval_s,
            aggregator_name=aggregator_name,
        )
    )
