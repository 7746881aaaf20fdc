"""A multi-node check of the node monitors on ray.cluster_utils.Cluster: three nodes, one removed,
one added, the aggregator (and the controller in it) restarted as the node goes; it fails unless
every node gets a monitor and one node_up, the removed one exactly one node_down with its last
heartbeat, and the new one a node_up. It needs a Ray of its own, so test_cluster.py runs it in a child process; by hand:

    python tests/collect/cluster_scenario.py /tmp/elitemon-cluster-check

The victim is never the driver's node: the aggregator is pinned there (as on a real head node), and
its store is what the restarted aggregator's controller recovers from (which nodes were up). The
nodes of a local Cluster share one IP, and a driver joins whichever raylet has its IP, so "the
driver's node" is any of them."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from elitemon.aggregator import start_aggregator
from elitemon.client import Client
from elitemon.collect import start_monitoring
from elitemon.config import StoreConfig


def wait_for(condition, timeout_s: float, what: str, explain=lambda: ""):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = condition()
        except ray.exceptions.ActorUnavailableError:  # the aggregator is restarting
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout_s}s waiting for {what}; {explain()}")


def node_events(client: Client, kind: str) -> list[dict]:
    return [json.loads(p) for p in client.events(type=kind).column("payload").to_pylist()]


def heartbeat_sources(client: Client) -> set[str]:
    return set(client.latest(kind="node", metric="heartbeat").column("source").to_pylist())


def main(data_dir: Path) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=cluster.address, namespace="elitemon", logging_level="WARNING", log_to_driver=False)
    store = start_aggregator(StoreConfig(data_dir=data_dir))
    client = Client(store)
    start_monitoring(interval_s=0.5, sample_interval_s=0.5)
    first = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    wait_for(lambda: first <= heartbeat_sources(client), 90, "a heartbeat from every node")

    driver_node = ray.get_runtime_context().get_node_id()
    removed = next(worker for worker in workers if worker.node_id != driver_node)
    victim = removed.node_id
    # The aggregator restarts while the node dies: its new controller must still report the node,
    # once, and take the others up again without a second node_up.
    ray.kill(store, no_restart=False)
    cluster.remove_node(removed)

    def state() -> str:  # what the next look at a failure needs
        alive = {n["NodeID"][:8]: n["Alive"] for n in ray.nodes()}
        watched = {k[:8]: v["last_heartbeat"] for k, v in ray.get(store.monitored_nodes.remote(), timeout=10).items()}
        stats = ray.get(store.monitoring_events_stats.remote(), timeout=10)
        events = client.events().column("type").to_pylist()
        return f"alive {alive}; controller watches {watched}; its events {stats}; stored {events}"

    wait_for(lambda: any(e["node_id"] == victim for e in node_events(client, "node_down")), 90, "node_down", state)
    returning = cluster.add_node(num_cpus=1).node_id
    wait_for(lambda: returning in heartbeat_sources(client), 90, "the returning node's heartbeat")

    cpu = client.latest(kind="node", metric="cpu_percent")
    up = [e["node_id"] for e in node_events(client, "node_up")]
    down = node_events(client, "node_down")
    problems = []
    if not first | {returning} <= set(up) or len(up) != len(set(up)):
        problems.append(f"node_up events {up} should name each node once")
    if [d["node_id"] for d in down] != [victim] or down[0]["last_heartbeat"] is None:
        problems.append(f"node_down events {down} should name only {victim}, with a heartbeat")
    print(
        json.dumps(
            {
                "first": sorted(first),
                "victim": victim,
                "returning": returning,
                "node_up": [e["node_id"] for e in node_events(client, "node_up")],
                "node_down": node_events(client, "node_down"),
                "cpu_sources": cpu.column("source").to_pylist(),
            }
        )
    )
    ray.shutdown()
    cluster.shutdown()
    if problems:
        raise SystemExit("; ".join(problems))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
