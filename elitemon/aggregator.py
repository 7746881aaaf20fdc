"""The Aggregator actor: the one Store of a Ray cluster, behind a named, restartable actor.

It is created with `get_if_exists=True` under the name `aggregator` in namespace `elitemon`, so every
driver (the CLI, a Tune callback, a notebook) attaches to the same one. It restarts forever
(`max_restarts=-1`) and rebuilds itself from the data directory, which is why it is pinned to the
node that first created it: its segments and log live on that node's disk.

The actor is threaded, with separate thread pools for ingest, queries and control (Ray concurrency
groups); the Store guards its own state. Methods stay thin; the work is in `Store`, `elitemon.query`
and, for node monitoring, the `MonitorController` that runs in this process once `start_monitoring`
asks for it, or at once when Ray restarts an aggregator that was monitoring (see
`elitemon.collect.controller` for why here and not in an actor of its own).
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from elitemon import query
from elitemon._arrow import sort_by
from elitemon.config import StoreConfig
from elitemon.query import Selection
from elitemon.store import Ack, Health, Store, check_data_dir

if TYPE_CHECKING:
    from elitemon.collect.controller import MonitorSettings

log = logging.getLogger(__name__)

NAMESPACE = "elitemon"
NAME = "aggregator"
#: Separate thread pools, so that ingest blocked by back-pressure never starves health checks and
#: queries, a slow query never holds up ingest, a monitor flush (which waits on every node monitor)
#: holds up neither, and the node monitors' check-ins never wait behind a flush or a stop.
CONCURRENCY_GROUPS = {"ingest": 4, "query": 4, "control": 2, "checkin": 1}
#: Arrow's allocator (mimalloc) returns freed pages to the OS almost at once by default; at ingest
#: rates every batch then faults fresh pages in again, and the kernel time spent on that was half
#: of all CPU time in benchmarks/ingest.py. Keeping freed pages for a second removes it.
ALLOCATOR_ENV = {"MIMALLOC_PURGE_DELAY": "1000"}


class Aggregator:
    """Ingest and queries over one Store. Create it with `start_aggregator`, not directly."""

    def __init__(self, config: StoreConfig) -> None:
        from elitemon.collect.controller import MonitorController

        self._store = Store(config)
        self._store.start()
        context = ray.get_runtime_context()
        self._name = context.get_actor_name() or NAME
        self._monitoring: MonitorController | None = None
        self._monitoring_lock = threading.Lock()  # two concurrent start_monitoring calls start one controller
        try:
            with warnings.catch_warnings():  # Ray's own property reads its deprecated `actor_id`
                warnings.simplefilter("ignore", DeprecationWarning)
                restarted = context.was_current_actor_reconstructed
            if restarted:
                self._monitoring = MonitorController.resume(self._store, self._name)
        except Exception:  # the store must come up regardless; `start_monitoring` can start it again
            log.exception("could not resume node monitoring after a restart")

    @ray.method(concurrency_group="ingest")
    def ingest(self, table: str, batch: pa.RecordBatch, producer_id: str, seq: int) -> Ack:
        ack = self._store.ingest(table, batch, producer_id=producer_id, seq=seq)
        monitoring = self._monitoring
        if monitoring is not None and not ack.duplicate:
            try:  # the node monitors' trainer maps come from the results; stored data never waits on it
                monitoring.learn_trainers(table, batch)
            except Exception:
                log.exception("could not read trainer processes from a %s batch", table)
        return ack

    @ray.method(concurrency_group="query")
    def health(self) -> Health:
        return self._store.health()

    def seal(self) -> int:
        """Seal now (normally size and age decide); returns the number of new segments."""
        return len(self._store.seal())

    @ray.method(concurrency_group="query")
    def rows(self, selection: Selection, limit: int | None = None) -> pa.Table:
        """The selected rows of any table, oldest first."""
        data = sort_by(self._store.scan(selection), ("ts",))
        return data if limit is None else data.slice(max(0, data.num_rows - limit))

    @ray.method(concurrency_group="query")
    def downsample(self, selection: Selection, step_s: float, agg: str) -> pa.Table:
        return query.downsample(self._store.scan(selection), step_s=step_s, agg=agg)

    @ray.method(concurrency_group="query")
    def latest(self, selection: Selection) -> pa.Table:
        return query.latest(self._store.scan(selection))

    @ray.method(concurrency_group="control")
    def start_monitoring(self, settings: MonitorSettings) -> tuple[bool, MonitorSettings]:
        """Put a NodeMonitor on every node from now on. Returns whether this call started it (False:
        this aggregator already monitors its nodes, and nothing changes) and the settings in force."""
        from elitemon.collect.controller import MonitorController

        with self._monitoring_lock:
            if self._monitoring is not None:
                return False, self._monitoring.settings
            self._monitoring = MonitorController(self._store, self._name, settings)
            self._monitoring.start()
            return True, settings

    @ray.method(concurrency_group="control")
    def stop_monitoring(self) -> bool:
        """End the node monitors (their rows so far are stored first); False when there were none.
        Stored node events are left as they are: no node_down is written for nodes still alive."""
        with self._monitoring_lock:
            if self._monitoring is None:
                return False
            self._monitoring.stop()
            self._monitoring = None
            return True

    @ray.method(concurrency_group="control")
    def monitored_nodes(self) -> dict[str, dict]:
        """node id -> {node_ip, last_heartbeat, pid (of its monitor)}; empty when nodes are not monitored."""
        monitoring = self._monitoring  # read once: stop_monitoring may clear it meanwhile
        return {} if monitoring is None else monitoring.nodes()

    @ray.method(concurrency_group="control")
    def node_monitor(self, node_id: str) -> Any:
        """A node's NodeMonitor handle, or None."""
        monitoring = self._monitoring
        return None if monitoring is None else monitoring.monitor(node_id)

    @ray.method(concurrency_group="checkin")
    def monitor_checkin(self, node_id: str, node_ip: str, report: dict) -> dict:
        """A node monitor's heartbeat (`report`: last_sample, pid, run); returns which trainer process
        on its node trains which agent (`agents`), and whether its loop should go on (`keep_running`:
        not when nodes are not monitored, or the controller started another since)."""
        monitoring = self._monitoring
        if monitoring is None:
            return {"agents": {}, "keep_running": False}
        return monitoring.checkin(node_id, node_ip, report)

    @ray.method(concurrency_group="control")
    def flush_monitors(self, timeout_s: float = 10.0) -> bool:
        """Wait until every node monitor's rows and every node event so far are stored."""
        monitoring = self._monitoring
        return True if monitoring is None else monitoring.flush(timeout_s)

    @ray.method(concurrency_group="control")
    def monitoring_events_stats(self) -> Any:
        """The ProducerStats of the controller's node events, or None when not monitoring."""
        monitoring = self._monitoring
        return None if monitoring is None else monitoring.events_stats()


def start_aggregator(
    config: StoreConfig | None = None,
    *,
    name: str = NAME,
    namespace: str = NAMESPACE,
    detached: bool = False,
    ready_timeout_s: float = 60.0,
) -> Any:
    """Create the aggregator on this node, or return the one already running under `name`.

    `detached=True` lets it outlive the calling driver (what `elitemon start` wants); otherwise it
    ends with the job that created it. Waits until it answers, so the caller can ingest at once.
    A data directory that cannot be created, or that another store holds, is an OSError here
    (checked from this process, which shares the actor's node, unless it is a Ray Client).
    """
    config = config or StoreConfig()
    if not _running(name, namespace) and not ray.util.client.ray.is_connected():
        # Else the actor's creation fails on it, and the reason arrives as a dead actor's traceback.
        check_data_dir(config.data_dir)
    options: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "get_if_exists": True,
        "max_restarts": -1,
        "num_cpus": 0,
        "scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False),
        "runtime_env": {"env_vars": ALLOCATOR_ENV},
        # Ingests and check-ins are bookkeeping: as task events each would be sent to the GCS and
        # listed in Ray's dashboard among the user's tasks, thousands an hour, at a CPU cost there.
        "enable_task_events": False,
    }
    if detached:
        options["lifetime"] = "detached"
    handle = ray.remote(concurrency_groups=CONCURRENCY_GROUPS)(Aggregator).options(**options).remote(config)
    ray.get(handle.health.remote(), timeout=ready_timeout_s)
    return handle


def _running(name: str, namespace: str) -> bool:
    try:
        ray.get_actor(name, namespace=namespace)
    except ValueError:
        return False
    return True


class AggregatorNotFound(ValueError):
    """No aggregator is running under the name asked for."""


def get_aggregator(*, name: str = NAME, namespace: str = NAMESPACE) -> Any:
    """The running aggregator's handle; raises AggregatorNotFound with a hint when there is none."""
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        raise AggregatorNotFound(
            f"no elitemon aggregator named {name!r} in namespace {namespace!r}; start one with `elitemon start`"
        ) from None
