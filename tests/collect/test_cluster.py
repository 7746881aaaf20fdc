"""Node monitors on a multi-node ray.cluster_utils.Cluster: monitors, heartbeats, node_down, node_up,
and the aggregator (with its controller) restarted while a node dies.

The scenario (cluster_scenario.py) needs a Ray of its own, and this process already has the
session's, so it runs in a child process; its exit status and output are the result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCENARIO = Path(__file__).with_name("cluster_scenario.py")


def test_monitors_follow_nodes_that_join_leave_and_return(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCENARIO), str(tmp_path / "data")], capture_output=True, text=True, timeout=280
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(report["first"]) | {report["returning"]} <= set(report["cpu_sources"]), "every node sampled CPU"
    assert [event["node_id"] for event in report["node_down"]] == [report["victim"]]
