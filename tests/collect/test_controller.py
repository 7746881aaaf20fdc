"""The monitor controller inside the aggregator: it resumes after the aggregator restarts, without
announcing the node twice, and stays stopped once stopped; it starts a killed or restarted monitor's
sampling loop again and keeps it sampling across a flush; a monitor whose readings fail still checks
in; and the controller learns which process trains which agent from the stored `pid` samples, for
the monitors' check-ins."""

from __future__ import annotations

import json
import os
import time

import pyarrow as pa
import pytest
import ray

from elitemon.client import Client
from elitemon.collect import start_monitoring
from elitemon.collect.controller import MonitorController, MonitorSettings
from elitemon.collect.monitor import NodeMonitor
from elitemon.producer import Producer, RaySink
from elitemon.reporting import Reporter
from elitemon.schema import batch_from_rows
from tests.conftest import wait_for


def _answering(call):
    """The call's result, or None while the aggregator restarts."""
    try:
        return ray.get(call(), timeout=10)
    except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
        return None


def _restart(aggregator) -> None:
    """Kill the aggregator and wait for its next incarnation (a kill is asynchronous: the old one
    may still answer a call or two)."""
    pid = ray.get(aggregator.__ray_call__.remote(lambda self: os.getpid()))
    ray.kill(aggregator, no_restart=False)
    wait_for(
        lambda: _answering(lambda: aggregator.__ray_call__.remote(lambda self: os.getpid())) not in (None, pid),
        timeout_s=90,
        what="the restarted aggregator",
    )


def _heartbeating(aggregator) -> dict:
    nodes = _answering(aggregator.monitored_nodes.remote) or {}
    return {node: seen for node, seen in nodes.items() if seen["last_heartbeat"] is not None}


def test_monitoring_resumes_after_a_restart_and_stays_stopped(aggregator_handle, aggregator_name: str) -> None:
    start_monitoring(interval_s=0.5, sample_interval_s=0.5, aggregator_name=aggregator_name)
    started, running = ray.get(aggregator_handle.start_monitoring.remote(MonitorSettings()))
    assert not started and running.sample_interval_s == 0.5, "already monitoring, with the first settings"
    node = ray.get_runtime_context().get_node_id()
    wait_for(lambda: node in _heartbeating(aggregator_handle), timeout_s=60, what="a heartbeat")

    _restart(aggregator_handle)
    wait_for(lambda: node in _heartbeating(aggregator_handle), timeout_s=90, what="a heartbeat after the restart")
    client = Client(aggregator_handle, name=aggregator_name)
    ups = [json.loads(p) for p in client.events(type="node_up").column("payload").to_pylist()]
    assert [up["node_id"] for up in ups] == [node], "one node_up, not a second one from the restart"
    assert ups[0]["settings"]["sample_interval_s"] == 0.5, "the settings a restart resumes with"

    assert ray.get(aggregator_handle.stop_monitoring.remote())
    assert ray.get(aggregator_handle.monitored_nodes.remote()) == {}
    _restart(aggregator_handle)
    assert ray.get(aggregator_handle.monitored_nodes.remote()) == {}, "stopped on purpose: not resumed"


def test_settings_must_be_positive() -> None:
    with pytest.raises(ValueError, match="sample_interval_s: must be a positive"):
        MonitorSettings(sample_interval_s=0)


def _heartbeat_after(aggregator, node: str, moment: float) -> bool:
    beat = _heartbeating(aggregator).get(node, {}).get("last_heartbeat")
    return beat is not None and beat > moment


def _dead(actor) -> bool:
    try:
        ray.get(actor.__ray_ready__.remote(), timeout=10)
    except ray.exceptions.ActorDiedError:
        return True
    except ray.exceptions.RayError:
        pass
    return False


def _node_ups(client: Client, node: str) -> int:
    payloads = [json.loads(p) for p in client.events(type="node_up").column("payload").to_pylist()]
    return sum(up["node_id"] == node for up in payloads)


def test_a_killed_monitor_is_replaced_without_a_second_node_up(aggregator_handle, aggregator_name: str) -> None:
    start_monitoring(interval_s=0.5, sample_interval_s=0.5, checkin_interval_s=0.5, aggregator_name=aggregator_name)
    node = ray.get_runtime_context().get_node_id()
    wait_for(lambda: node in _heartbeating(aggregator_handle), timeout_s=60, what="a heartbeat")
    first = ray.get(aggregator_handle.node_monitor.remote(node))
    ray.kill(first, no_restart=True)
    killed_at = time.time()

    def replaced() -> bool:
        monitor = ray.get(aggregator_handle.node_monitor.remote(node))
        return (
            monitor is not None
            and monitor._actor_id != first._actor_id
            and _heartbeat_after(aggregator_handle, node, killed_at)
        )

    wait_for(replaced, timeout_s=60, what="a new monitor sampling")
    assert _node_ups(Client(aggregator_handle, name=aggregator_name), node) == 1


def test_a_restarted_monitor_samples_again_and_flush_keeps_it_sampling(aggregator_handle, aggregator_name: str) -> None:
    start_monitoring(interval_s=0.5, sample_interval_s=0.5, checkin_interval_s=0.5, aggregator_name=aggregator_name)
    node = ray.get_runtime_context().get_node_id()
    wait_for(lambda: node in _heartbeating(aggregator_handle), timeout_s=60, what="a heartbeat")
    monitor = ray.get(aggregator_handle.node_monitor.remote(node))
    ray.kill(monitor, no_restart=False)  # Ray restarts it; its sampling loop must be started again
    killed_at = time.time()
    wait_for(lambda: _heartbeat_after(aggregator_handle, node, killed_at), timeout_s=90, what="sampling again")
    restarted = ray.get(aggregator_handle.node_monitor.remote(node))
    assert restarted._actor_id == monitor._actor_id, "restarted, not replaced"

    flushed_at = time.time()
    assert ray.get(aggregator_handle.flush_monitors.remote(), timeout=30)
    client = Client(aggregator_handle, name=aggregator_name)
    stored = client.samples(kind="node", metric="heartbeat", source=node).column("value").to_pylist()
    assert max(stored) > killed_at, "the flush stored what the restarted monitor sampled"
    wait_for(lambda: _heartbeat_after(aggregator_handle, node, flushed_at + 1), timeout_s=30, what="a sample after")


class _BrokenSensors(NodeMonitor):
    """A node monitor whose every reading fails (a sensor gone bad)."""

    def _sample_once(self, now: float) -> None:
        raise OSError("the sensors are gone")


def test_a_monitor_whose_readings_fail_still_checks_in_and_hears_to_stop(aggregator_handle, aggregator_name) -> None:
    # The aggregator is not monitoring, so the first check-in it gets answers "stop": the loop
    # ends only if it checks in, and it must although every reading fails.
    node = ray.get_runtime_context().get_node_id()
    monitor = ray.remote(_BrokenSensors).options(num_cpus=0).remote(node, "127.0.0.1", aggregator_name=aggregator_name)
    try:
        ray.get(monitor.run.remote(1), timeout=60)
    finally:
        ray.kill(monitor)


def test_a_monitor_maps_the_process_an_agent_reports_and_forgets_it_when_the_trial_ends(
    aggregator_handle, aggregator_name: str
) -> None:
    start_monitoring(sample_interval_s=0.5, checkin_interval_s=0.5, aggregator_name=aggregator_name)
    node_ip = ray.util.get_node_ip_address()
    reporter = Reporter(Producer(RaySink(name=aggregator_name), name="trainer", max_delay_s=0.05))
    reporter.report("agent-driver", 1, {"pid": os.getpid(), "score": 1.0}, node=node_ip)  # as Tune results carry
    client = Client(aggregator_handle, name=aggregator_name)

    def stored_agents() -> set[str]:
        assert ray.get(aggregator_handle.flush_monitors.remote(), timeout=30)
        return set(client.samples(kind="agent", metric="process_rss_bytes").column("source").to_pylist())

    wait_for(lambda: "agent-driver" in stored_agents(), timeout_s=60, what="this process's RSS under its agent")

    def checkin(node_ip: str, run: int | None = None) -> dict:
        """What a monitor on `node_ip` would be told; no node of this id is monitored: a stray one."""
        return ray.get(aggregator_handle.monitor_checkin.remote("stray", node_ip, {"last_sample": None, "run": run}))

    assert checkin(node_ip) == {"agents": {os.getpid(): "agent-driver"}, "keep_running": False}, "told to end"
    assert checkin("10.9.9.9")["agents"] == {}, "only its node's"

    reporter.producer.write_rows("events", [{"type": "trial_complete", "agent": "agent-driver", "payload": "{}"}])
    assert reporter.producer.flush(30)
    assert checkin(node_ip)["agents"] == {}, "forgotten at the trial's end"
    reporter.producer.close()


def _samples(rows: list[tuple[str, str, str, str, float]]) -> pa.RecordBatch:
    columns = ("kind", "node", "source", "metric", "value")
    return batch_from_rows("samples", [dict(zip(columns, row, strict=True)) for row in rows], now=1.0e9)


def test_trainers_are_learned_from_pid_samples_replaced_forgotten_and_bounded(tmp_path, monkeypatch) -> None:
    from elitemon.collect import controller as module
    from elitemon.config import StoreConfig
    from elitemon.store import Store

    store = Store(StoreConfig(data_dir=tmp_path))
    monitoring = MonitorController(store, "aggregator", MonitorSettings())

    def agents(node_ip: str) -> dict[int, str]:
        return monitoring.checkin("node", node_ip, {"last_sample": None, "run": None})["agents"]

    monitoring.learn_trainers(
        "samples",
        _samples(
            [
                ("agent", "10.0.0.1", "a", "pid", 101.0),
                ("agent", "10.0.0.2", "b", "pid", 201.0),
                ("agent", "10.0.0.1", "c", "score", 7.0),  # not a pid
                ("node", "10.0.0.1", "n1", "pid", 301.0),  # not an agent's
            ]
        ),
    )
    assert agents("10.0.0.1") == {101: "a"}
    assert agents("10.0.0.2") == {201: "b"}

    monitoring.learn_trainers("samples", _samples([("agent", "10.0.0.1", "b", "pid", 102.0)]))  # b moved
    assert agents("10.0.0.1") == {101: "a", 102: "b"}
    assert agents("10.0.0.2") == {}

    ended = batch_from_rows("events", [{"type": "trial_error", "agent": "a", "payload": "{}"}], now=1.0e9)
    monitoring.learn_trainers("events", ended)
    assert agents("10.0.0.1") == {102: "b"}

    monkeypatch.setattr(module, "MAX_TRAINERS", 2)
    monitoring.learn_trainers(
        "samples", _samples([("agent", "10.0.0.1", "c", "pid", 103.0), ("agent", "10.0.0.1", "d", "pid", 104.0)])
    )
    assert agents("10.0.0.1") == {103: "c", 104: "d"}, "b, oldest, went"
    store.close()


def test_a_process_trains_one_agent_and_an_ended_agents_late_rows_are_ignored(tmp_path) -> None:
    """A reused actor's process moved from a to b: when b ended, the pid fell back to a, which no
    longer ran there. And a result's pid row stored after its trial's end (the tables of one writer
    reach the store in no fixed order) mapped the ended trial again, for good."""
    from elitemon.config import StoreConfig
    from elitemon.store import Store

    store = Store(StoreConfig(data_dir=tmp_path))
    monitoring = MonitorController(store, "aggregator", MonitorSettings())

    def agents() -> dict[int, str]:
        return monitoring.checkin("node", "10.0.0.1", {"last_sample": None, "run": None})["agents"]

    def pid(agent: str, value: float, at: float) -> pa.RecordBatch:
        return batch_from_rows("samples", [{"ts": at, "kind": "agent", "node": "10.0.0.1", "source": agent,
                                            "metric": "pid", "value": value}])  # fmt: skip

    def end(agent: str, at: float) -> pa.RecordBatch:
        return batch_from_rows("events", [{"ts": at, "type": "trial_complete", "agent": agent, "payload": "{}"}])

    monitoring.learn_trainers("samples", pid("a", 5000.0, 1.0e9))
    monitoring.learn_trainers("samples", pid("b", 5000.0, 1.0e9 + 10))  # the actor, reused for b
    assert agents() == {5000: "b"}
    monitoring.learn_trainers("events", end("b", 1.0e9 + 20))
    assert agents() == {}, "the pid fell back to a"

    monitoring.learn_trainers("events", end("c", 1.0e9 + 30))
    monitoring.learn_trainers("samples", pid("c", 6000.0, 1.0e9 + 29))  # c's last result, stored late
    assert agents() == {}, "an ended trial was mapped again by its own last result"
    monitoring.learn_trainers("samples", pid("c", 6001.0, 1.0e9 + 40))  # Tune restarted c: mapped again
    assert agents() == {6001: "c"}
    store.close()


def test_a_new_aggregator_on_old_data_waits_to_be_asked_then_announces_nothing_twice(ray_session, tmp_path) -> None:
    from elitemon.aggregator import start_aggregator
    from elitemon.config import StoreConfig

    config = StoreConfig(data_dir=tmp_path / "data")
    node = ray.get_runtime_context().get_node_id()
    first = start_aggregator(config, name="aggregator-test-first-run")
    start_monitoring(interval_s=0.5, sample_interval_s=0.5, aggregator_name="aggregator-test-first-run")
    wait_for(lambda: node in _heartbeating(first), timeout_s=60, what="a heartbeat")
    ray.get(first.flush_monitors.remote())
    ray.kill(first, no_restart=True)  # the run ends without stopping monitoring
    wait_for(lambda: _dead(first), timeout_s=30, what="the first aggregator's end")

    second = start_aggregator(config, name="aggregator-test-second-run")
    try:
        assert ray.get(second.monitored_nodes.remote()) == {}, "a new aggregator does not resume by itself"
        start_monitoring(interval_s=0.5, sample_interval_s=0.5, aggregator_name="aggregator-test-second-run")
        wait_for(lambda: node in _heartbeating(second), timeout_s=60, what="a heartbeat")
        assert _node_ups(Client(second, name="aggregator-test-second-run"), node) == 1, "the node was up already"
    finally:
        ray.kill(second, no_restart=True)
