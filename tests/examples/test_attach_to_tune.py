"""examples/attach_to_tune.py, run as a user runs it: with plain `python`, and with `ray job submit`
against a Ray head started for the test. Either way its exploits and results end up in the store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from elitemon.query import select
from tests.conftest import CLEAN_ENV, open_store, submit_job

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = "examples/attach_to_tune.py"
#: 4 perturbation rounds of 4 trials, each in the weaker half with probability 1/2: some exploit.
SMALL = ["--samples", "4", "--iterations", "15"]


def check_stored(data_dir: Path, pbt_global: Path | None = None) -> None:
    """The run's results, hyperparameters and exploits are in the store (one exploit event per line
    of `pbt_global`, where Tune synced that file to the results directory)."""
    store = open_store(data_dir)
    try:
        exploits = store.scan(select("events", type="exploit"))
        if pbt_global is not None:
            assert exploits.num_rows == len(pbt_global.read_text().splitlines())
        assert exploits.num_rows > 0, "PBT exploited at least once in 15 iterations"
        scores = store.scan(select("samples", metric="score"))
        assert scores.num_rows >= 4 * 15, "every trial reported every iteration"
        params = set(store.scan(select("configs")).column("param").to_pylist())
        assert params == {"lr", "momentum"}
    finally:
        store.close()


def test_runs_with_plain_python(tmp_path: Path) -> None:
    paths = ["--data-dir", str(tmp_path / "data"), "--storage-path", str(tmp_path / "results")]
    done = subprocess.run(
        [sys.executable, EXAMPLE, *SMALL, *paths],
        cwd=REPO,
        env={**CLEAN_ENV, "RAY_ADDRESS": "local"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "best trial:" in done.stdout
    check_stored(tmp_path / "data", tmp_path / "results" / "attach_to_tune" / "pbt_global.txt")


def test_runs_under_ray_job_submit(ray_head: tuple[str, dict], tmp_path: Path) -> None:
    address, env = ray_head
    paths = ["--data-dir", str(tmp_path / "data"), "--storage-path", str(tmp_path / "results")]
    done = submit_job(address, env, ["python", EXAMPLE, *SMALL, *paths])
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "best trial:" in done.stdout and "succeeded" in done.stdout
    # Under a job, Tune writes pbt_global.txt to the driver's local staging directory, and does not
    # sync it to the results directory before the job ends: the count is checked by the test above.
    check_stored(tmp_path / "data")
    listed = subprocess.run(
        [sys.executable, "-m", "ray.scripts.scripts", "list", "tasks", "--address", address]
        + ["--format", "json", "--limit", "10000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr[-3000:]
    names = {task["name"] for task in json.loads(listed.stdout)}
    assert any(name.endswith(".train") for name in names), f"the trainers' tasks are listed: {sorted(names)}"
    assert not any("Aggregator" in name or "NodeMonitor" in name for name in names), (
        "elitemon's bookkeeping calls stay out of Ray's task list"
    )
