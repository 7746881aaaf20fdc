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
    assert not ray.get(aggregator_handle.start_monitoring.remote(MonitorSettings())), "already monitoring"
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
