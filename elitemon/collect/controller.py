"""MonitorController: keeps exactly one NodeMonitor on every alive node, and records node events.

It runs inside the aggregator's process (a thread, started by `start_monitoring`, or by a restarted
aggregator that was monitoring), not as an actor of its own: every Ray actor process costs about
6 ms of CPU a second even when idle (its core worker wakes every 10 ms to check for signals), which
on a 2-CPU node is 0.3% of the machine, a third of monitoring's whole budget. The aggregator is
where node events are stored anyway, and if its node goes, nothing is recorded until it returns,
with or without a controller elsewhere.

Every `interval_s` it compares Ray's live nodes with its monitors: a new node gets a monitor (pinned
to it, `num_cpus=0`, its sampling loop `run` started) and a `node_up` event; a node Ray reports dead
loses its monitor and yields a `node_down` event carrying the monitor's last heartbeat. A node that
comes back is a new Ray node (new id) and gets a new monitor and `node_up`. Monitors check in every
`checkin_interval_s` with their heartbeat, and get their node's trainer processes back, so a hung
monitor shows as a growing gap rather than a stuck controller. Each `run` the controller starts is
numbered; a check-in from any other is told to end (a loop whose reference was lost, or one that
outlived a transient error after which the controller started another). A `run` that ends without
being cancelled says the monitor died: Ray restarted it (`run` is started again) or it is gone
(another monitor is started, without a node_up).

An aggregator that Ray restarts resumes monitoring by itself (`MonitorController.resume`): the
stored node events say which nodes were up and with which settings. Any new controller takes over
from the store's node events (`_recover`), so a node is announced once per Ray node, and a node
that died while nobody watched still gets its node_down.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from elitemon import aggregator
from elitemon._arrow import sort_by
from elitemon.collect.monitor import DEFAULT_CHECKIN_INTERVAL_S, DEFAULT_SEND_INTERVAL_S, NodeMonitor
from elitemon.producer import Producer, StoreSink
from elitemon.query import select
from elitemon.store import Store

log = logging.getLogger(__name__)

#: Trainer processes remembered (one per agent, its latest): far more agents than any population
#: trains at once; past it the agent heard from least recently is forgotten.
MAX_TRAINERS = 10_000


@dataclass(frozen=True)
class MonitorSettings:
    """How often the controller reconciles (`interval_s`), and monitors sample, send and check in.
    Stored with every node_up, so that a restarted aggregator resumes with the same settings."""

    interval_s: float = 1.0
    sample_interval_s: float = 1.0
    send_interval_s: float = DEFAULT_SEND_INTERVAL_S
    checkin_interval_s: float = DEFAULT_CHECKIN_INTERVAL_S

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: must be a positive number of seconds, got {value!r}")


@dataclass
class _Watched:
    handle: Any
    node_ip: str
    run: Any  # the ObjectRef of the monitor's sampling loop: resolves only when it ends
    token: int  # the number of that loop, which its check-ins carry
    last_heartbeat: float | None = None
    pid: int | None = None  # of the monitor's process, as its last check-in said


class MonitorController:
    """Reconciles NodeMonitors with the cluster's nodes, in a thread of the aggregator's process."""

    def __init__(self, store: Store, aggregator_name: str, settings: MonitorSettings) -> None:
        self._store, self._aggregator_name, self.settings = store, aggregator_name, settings
        self._events = Producer(StoreSink(store), name="monitor-controller", max_delay_s=0.1)
        self._watched: dict[str, _Watched] = {}
        self._trainers = TrainerMap()
        self._tokens = itertools.count(1)  # numbers the monitors' `run`s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="elitemon-monitor-controller", daemon=True)

    @classmethod
    def resume(cls, store: Store, aggregator_name: str) -> MonitorController | None:
        """For an aggregator that Ray restarted: the controller it had, or None. It had one when
        some node whose last stored node event is a node_up is still listed by Ray (alive or dead;
        nodes Ray does not list are another cluster's, from an earlier run in the same data
        directory); it resumes with the settings the latest such node_up recorded."""
        still_up = _nodes_last_up(store)
        listed = still_up.keys() & {node["NodeID"] for node in ray.nodes()}
        if not listed:
            return None
        stored = still_up[max(listed, key=lambda n: still_up[n]["ts"])]["settings"]
        known = MonitorSettings.__dataclass_fields__.keys()  # node_ups of older versions may carry others
        settings = MonitorSettings(**{name: value for name, value in stored.items() if name in known})
        controller = cls(store, aggregator_name, settings)
        controller.start()
        return controller

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop reconciling and end every monitor, after their rows and the node events are stored."""
        self._stop.set()
        self._thread.join(timeout_s)
        with self._lock:  # after _stop is set, _start_monitor adds no more monitors
            watched = list(self._watched.values())
            self._watched.clear()
            for monitor in watched:
                ray.cancel(monitor.run, recursive=False)  # not its check-in in flight
        handles = [w.handle for w in watched]
        # Each monitor's stop (after its loop ends) stores what it sampled, then it is ended. All
        # are waited for: one dead monitor must not cut the others' stop short.
        outcomes = _each([handle.stop.remote() for handle in handles], timeout_s + 5)
        if any(isinstance(outcome, Exception) for outcome in outcomes):
            log.warning("a node monitor did not stop cleanly; its last samples may be lost")
        for handle in handles:
            ray.kill(handle, no_restart=True)
        # So that a restart of the aggregator does not resume what was stopped on purpose.
        self._events.write_rows("events", [{"type": "monitoring_stopped", "payload": "{}"}])
        self._events.close(timeout=timeout_s)

    def nodes(self) -> dict[str, dict]:
        """node id -> {node_ip, last_heartbeat, pid (of its monitor)} for every monitored node."""
        with self._lock:
            return {
                n: {"node_ip": w.node_ip, "last_heartbeat": w.last_heartbeat, "pid": w.pid}
                for n, w in self._watched.items()
            }

    def monitor(self, node_id: str) -> Any:
        """The NodeMonitor handle of a node."""
        with self._lock:
            watched = self._watched.get(node_id)
        return None if watched is None else watched.handle

    def events_stats(self) -> Any:
        """The ProducerStats of the node events this controller writes (rejects, retries, errors)."""
        return self._events.stats()

    def learn_trainers(self, table: str, batch: pa.RecordBatch) -> None:
        """Which process trains which agent, learned from rows as they are stored: an agent's `pid`
        sample (Tune reports `pid` and `node_ip` with every result; `elitemon.report` callers may
        too) maps that process on that node to the agent, replacing the agent's earlier process (a
        reused actor moves between trials); a `trial_complete` or `trial_error` event forgets it.
        Past MAX_TRAINERS agents, the one heard from least recently is forgotten."""
        if table == "samples" and {"ts", "kind", "metric", "source", "node", "value"} <= set(batch.schema.names):
            rows = _rows_where(batch, metric="pid", kind="agent")
            learned = [
                (agent, (node, int(pid)), at)
                for at, agent, node, pid in zip(rows["ts"], rows["source"], rows["node"], rows["value"], strict=True)
                if agent and node and pid is not None and math.isfinite(pid) and pid > 0
            ]
            with self._lock:
                for agent, trainer, at in learned:
                    self._trainers.learn(agent, trainer, at)
        elif table == "events" and {"ts", "type", "agent"} <= set(batch.schema.names):
            ended = _rows_where(batch, type=["trial_complete", "trial_error"])
            with self._lock:
                for agent, at in zip(ended["agent"], ended["ts"], strict=True):
                    if agent:
                        self._trainers.end(agent, at)

    def checkin(self, node_id: str, node_ip: str, report: dict) -> dict:
        """A monitor's check-in (`report`: last_sample, pid, run): record its heartbeat and process
        id; return `agents`, which trainer process on its node trains which agent, and
        `keep_running`, False unless its `run` is the one this controller started last."""
        with self._lock:
            watched = self._watched.get(node_id)
            current = watched is not None and report["run"] == watched.token
            if current and report["last_sample"] is not None:
                watched.last_heartbeat, watched.pid = report["last_sample"], report["pid"]
            agents = self._trainers.on(node_ip)
        return {"agents": agents, "keep_running": current}

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Flush every monitor's rows and the controller's events (e.g. before a run ends). Each
        monitor's loop is cancelled, its `flush` runs, and its loop starts again: it takes no
        samples for up to CANCEL_POLL_S plus the time its rows take to be stored."""
        with self._lock:
            flushed = []
            for monitor in self._watched.values():
                ray.cancel(monitor.run, recursive=False)  # not its check-in in flight
                flushed.append(monitor.handle.flush.remote(timeout_s))
                self._start_run(monitor)
        outcomes = _each(flushed, timeout_s + self.settings.sample_interval_s + 5)
        return all(outcome is True for outcome in outcomes) and self._events.flush(timeout_s)

    def _run(self) -> None:
        try:
            self._recover()
        except Exception:  # the first reconcile still covers every live node (announcing it again)
            log.exception("could not read which nodes were up before this controller started")
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:  # a failed round (GCS briefly away) is retried next round
                log.exception("monitor reconciliation failed")
            self._stop.wait(self.settings.interval_s)

    def _recover(self) -> None:
        """Take over from an earlier controller of this store (before a restart, or a run that ended
        without stopping it): nodes whose last node event is a node_up and that Ray lists alive get
        a monitor without a second node_up; those Ray lists dead get their node_down now, with the
        last heartbeat stored (`noticed_late`)."""
        still_up = _nodes_last_up(self._store)
        if not still_up:
            return
        alive = {node["NodeID"]: node["Alive"] for node in ray.nodes()}
        for node_id in still_up.keys() & alive.keys():
            node_ip = still_up[node_id]["node"]
            if alive[node_id]:
                self._start_monitor(node_id, node_ip, announce=False)
            else:
                last = self._last_heartbeat(node_id, None)
                self._event("node_down", node_id, node_ip, {"last_heartbeat": last, "noticed_late": True})

    def reconcile(self) -> None:
        alive = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]}
        with self._lock:
            known = set(self._watched)
        for node_id in alive.keys() - known:
            self._start_monitor(node_id, alive[node_id])
        for node_id in known - alive.keys():
            with self._lock:
                watched = self._watched.pop(node_id)
            last = self._last_heartbeat(node_id, watched.last_heartbeat)
            self._event("node_down", node_id, watched.node_ip, {"last_heartbeat": last})
        self._check_runs()

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
                enable_task_events=False,  # as the aggregator's: its calls are bookkeeping, not the user's tasks
            )
            .remote(
                node_id,
                node_ip,
                interval_s=self.settings.sample_interval_s,
                send_interval_s=self.settings.send_interval_s,
                checkin_interval_s=self.settings.checkin_interval_s,
                aggregator_name=self._aggregator_name,
            )
        )
        with self._lock:
            if self._stop.is_set():  # stop() has collected the monitors to end: this one would leak
                ray.kill(handle, no_restart=True)
                return
            token = next(self._tokens)
            self._watched[node_id] = _Watched(handle, node_ip, handle.run.remote(token), token)
        if announce:
            self._event("node_up", node_id, node_ip, {"settings": asdict(self.settings)})

    def _check_runs(self) -> None:
        """A monitor's loop ends when it is cancelled (and then replaced at once), superseded, or
        its actor died: Ray restarted it, or the call failed in transit (start the loop again; a
        loop still running is superseded at its next check-in), or it is gone for good (replace
        it)."""
        with self._lock:
            runs = {w.run: node_id for node_id, w in self._watched.items()}
        if not runs:
            return
        ended, _ = ray.wait(list(runs), num_returns=len(runs), timeout=0)
        for run in ended:
            node_id = runs[run]
            try:
                ray.get(run)
            except ray.exceptions.ActorDiedError:
                self._replace_dead_monitor(node_id)
                continue
            except ray.exceptions.RayError:
                pass  # restarted (or cancelled by a flush that has replaced it already: checked below)
            with self._lock:
                watched = self._watched.get(node_id)
                if watched is not None and watched.run == run:
                    self._start_run(watched)

    def _start_run(self, watched: _Watched) -> None:
        """Start (again) a monitor's sampling loop, under a new number. Call with the lock held."""
        watched.token = next(self._tokens)
        watched.run = watched.handle.run.remote(watched.token)

    def _replace_dead_monitor(self, node_id: str) -> None:
        """A monitor died on a node Ray still lists alive (killed, or a dying one handed back by
        name): start another, without a second node_up. A dead node is left to reconcile."""
        if not any(node["NodeID"] == node_id and node["Alive"] for node in ray.nodes()):
            return
        with self._lock:
            watched = self._watched.pop(node_id, None)
        if watched is not None:
            log.warning("node monitor on %s (%s) died; starting another", watched.node_ip, node_id)
            self._start_monitor(node_id, watched.node_ip, announce=False)

    def _last_heartbeat(self, node_id: str, checked_in: float | None) -> float | None:
        """The node's latest heartbeat: the stored samples' or the last one its monitor checked in
        with (newer when its last batch never arrived), whichever is later."""
        beats = self._store.scan(select("samples", metric="heartbeat", source=node_id))
        return max([*beats.column("value").to_pylist(), *([] if checked_in is None else [checked_in])], default=None)

    def _event(self, kind: str, node_id: str, node_ip: str, extra: dict) -> None:
        payload = json.dumps({"node_id": node_id, **extra})
        self._events.write_rows("events", [{"type": kind, "node": node_ip, "payload": payload}])
        log.info("%s: %s (%s)", kind, node_ip, node_id)


def _each(refs: Iterable[Any], timeout_s: float) -> list[Any]:
    """Each task's result, or the exception it raised, or TimeoutError: waiting for all of them up to
    `timeout_s` together (a `ray.get` of the list returns at the first error, the others unfinished)."""
    refs = list(refs)
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s) if refs else ([], [])
    done = set(ready)
    outcomes: list[Any] = []
    for ref in refs:
        try:
            outcomes.append(ray.get(ref, timeout=0) if ref in done else TimeoutError(f"not done in {timeout_s} s"))
        except ray.exceptions.RayError as error:
            outcomes.append(error)
    return outcomes


class TrainerMap:
    """Which process (node IP, pid) trains which agent; bounded to MAX_TRAINERS agents, the one
    heard from least recently forgotten first.

    A process trains one agent at a time: learning an agent there unmaps the one before (a reused
    actor moved on; when the new trial ends, the pid must not fall back to the old). Rows of one
    writer reach the store in no fixed order across tables, so a result's `pid` row can be stored
    after its trial's end: an ended agent's rows stamped before its end are ignored, later ones
    (Tune restarting it) map it again."""

    def __init__(self) -> None:
        self._agents: OrderedDict[str, tuple[str, int]] = OrderedDict()  # oldest first
        self._processes: dict[tuple[str, int], str] = {}
        self._ended: OrderedDict[str, Any] = OrderedDict()  # agent -> when it ended

    def learn(self, agent: str, trainer: tuple[str, int], at: Any) -> None:
        ended = self._ended.get(agent)
        if ended is not None:
            if at <= ended:
                return
            del self._ended[agent]
        self._unmap(self._processes.get(trainer))
        self._unmap(agent)
        self._agents[agent] = trainer
        self._processes[trainer] = agent
        while len(self._agents) > MAX_TRAINERS:
            self._unmap(next(iter(self._agents)))

    def end(self, agent: str, at: Any) -> None:
        self._unmap(agent)
        self._ended[agent] = max(at, self._ended.get(agent, at))
        self._ended.move_to_end(agent)
        while len(self._ended) > MAX_TRAINERS:
            self._ended.popitem(last=False)

    def on(self, node_ip: str) -> dict[int, str]:
        """pid -> agent for the trainer processes on `node_ip`."""
        return {pid: agent for agent, (node, pid) in self._agents.items() if node == node_ip}

    def _unmap(self, agent: str | None) -> None:
        trainer = self._agents.pop(agent, None) if agent is not None else None
        if trainer is not None and self._processes.get(trainer) == agent:
            del self._processes[trainer]


def _rows_where(batch: pa.RecordBatch, **equal: str | list[str]) -> dict[str, list]:
    """The batch's rows whose columns hold the given values, as lists by column (few rows: it
    looks at the dictionaries first, so a batch without the values costs next to nothing)."""
    mask = None
    for column, values in equal.items():
        value_set = pa.array(values if isinstance(values, list) else [values], pa.string())
        array = batch.column(column)
        if pa.types.is_dictionary(array.type) and not pc.any(pc.is_in(array.dictionary, value_set)).as_py():
            return {name: [] for name in batch.schema.names}
        matches = pc.is_in(array, value_set)
        mask = matches if mask is None else pc.and_(mask, matches)
    return batch.filter(mask).to_pydict()


def _nodes_last_up(store: Store) -> dict[str, dict]:
    """node id -> {node, ts, settings} for the nodes whose last stored node event is a node_up, and
    that were not up when monitoring was last stopped."""
    kinds = ["node_up", "node_down", "monitoring_stopped"]
    events = sort_by(store.scan(select("events", type=kinds)), ("ts",)).to_pylist()
    still_up: dict[str, dict] = {}
    for event in events:
        payload = json.loads(event["payload"])
        if event["type"] == "monitoring_stopped":
            still_up.clear()
        elif event["type"] == "node_up":
            settings = payload.get("settings", {})  # node_ups written before settings were stored have none
            still_up[payload["node_id"]] = {"node": event["node"], "ts": event["ts"], "settings": settings}
        else:
            still_up.pop(payload["node_id"], None)
    return still_up


def start_monitoring(
    *,
    interval_s: float = 1.0,
    sample_interval_s: float = 1.0,
    send_interval_s: float = DEFAULT_SEND_INTERVAL_S,
    checkin_interval_s: float = DEFAULT_CHECKIN_INTERVAL_S,
    aggregator_name: str = aggregator.NAME,
) -> Any:
    """Have the running aggregator put a NodeMonitor on every node; returns the aggregator's handle,
    whose `monitored_nodes`, `node_monitor`, `flush_monitors` and
    `stop_monitoring` reach the controller. If the aggregator already monitors its nodes, that goes
    on with the settings it has (a warning says so when they differ from these). Monitoring lasts
    until `stop_monitoring` or the aggregator's end; an aggregator that Ray restarts resumes it."""
    settings = MonitorSettings(interval_s, sample_interval_s, send_interval_s, checkin_interval_s)
    handle = aggregator.get_aggregator(name=aggregator_name)
    _, running = ray.get(handle.start_monitoring.remote(settings))
    if running != settings:
        log.warning("node monitoring was already running with %s; keeping those, not %s", running, settings)
    return handle
