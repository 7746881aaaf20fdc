"""Monitors follow the cluster's nodes: a real multi-node Ray (ray.cluster_utils.Cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCENARIO = Path(__file__).with_name("cluster_scenario.py")


def test_monitors_follow_nodes_joining_leaving_and_returning(tmp_path: Path) -> None:
    env = {**os.environ, "RAY_ADDRESS": ""}  # its own cluster, never the test session's Ray
    result = subprocess.run(
        [sys.executable, str(SCENARIO), str(tmp_path / "data")], capture_output=True, text=True, timeout=400, env=env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])

    assert set(seen["first"]) <= set(seen["node_up"]), "every node got a monitor and a node_up event"
    assert seen["returning"] in seen["node_up"]
    assert len(seen["node_up"]) == len(set(seen["node_up"])) == 4, "one node_up per node, no repeats"
    [down] = seen["node_down"]
    assert down["node_id"] == seen["victim"]
    assert down["last_heartbeat"] is not None, "node_down carries the last heartbeat"
    assert set(seen["first"]) | {seen["returning"]} <= set(seen["cpu_sources"]), "host samples from every node"
