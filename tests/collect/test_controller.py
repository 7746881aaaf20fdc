"""The monitor controller inside the aggregator: it resumes after the aggregator restarts, without
announcing the node twice, and stays stopped once stopped."""

from __future__ import annotations

import json
import os

import pytest
import ray

from elitemon.client import Client
from elitemon.collect import start_monitoring
from elitemon.collect.controller import MonitorSettings
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
    start_monitoring(interval_s=0.5, sample_interval_s=0.5, heartbeat_poll_s=0.5, aggregator_name=aggregator_name)
    node = ray.get_runtime_context().get_node_id()
    wait_for(lambda: node in _heartbeating(aggregator_handle), timeout_s=60, what="a heartbeat")
    first = ray.get(aggregator_handle.node_monitor.remote(node))
    ray.kill(first, no_restart=True)

    def replaced() -> bool:
        monitor = ray.get(aggregator_handle.node_monitor.remote(node))
        return (
            monitor is not None
            and monitor._actor_id != first._actor_id
            and ray.get(monitor.heartbeat.remote())["last_sample"]
        )

    wait_for(replaced, timeout_s=60, what="a new monitor sampling")
    assert _node_ups(Client(aggregator_handle, name=aggregator_name), node) == 1


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
