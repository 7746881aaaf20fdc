"""examples/attach_to_tune.py, run as a user runs it: with plain `python`, and with `ray job submit`
against a Ray head started for the test. Either way its exploits and results end up in the store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from elitemon.config import StoreConfig
from elitemon.query import select
from elitemon.store import Store
from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = "examples/attach_to_tune.py"
#: 4 perturbation rounds of 4 trials, each in the weaker half with probability 1/2: some exploit.
SMALL = ["--samples", "4", "--iterations", "15"]
#: The examples' own Ray must not inherit the cluster address of the session's.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
#: `python` in a job is the head's: the one of this environment, as for a user whose venv started Ray.
VENV_PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def open_store(data_dir: Path) -> Store:
    """The example's data, read without Ray once the job's aggregator has let go of the directory."""

    def opened() -> Store | None:
        try:
            return Store(StoreConfig(data_dir=data_dir))
        except RuntimeError:  # still locked by the aggregator that is shutting down
            return None

    return wait_for(opened, timeout_s=60, what=f"the aggregator to release {data_dir}")


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


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[tuple[str, dict]]:
    """A token-authenticated Ray head with the job server, on ports no other Ray here uses."""
    dashboard = free_port()
    env = {**CLEAN_ENV, "RAY_AUTH_MODE": "token", "PATH": VENV_PATH}
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block"]
    command += [f"--port={free_port()}", f"--dashboard-port={dashboard}", "--include-dashboard=true"]
    command += [f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}"]
    command += ["--node-ip-address=127.0.0.1", "--num-cpus=2", "--disable-usage-stats"]
    log = (tmp_path / "head.log").open("w")
    head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        head.wait(timeout=60)
        log.close()


def test_runs_under_ray_job_submit(ray_head: tuple[str, dict], tmp_path: Path) -> None:
    address, env = ray_head
    paths = ["--data-dir", str(tmp_path / "data"), "--storage-path", str(tmp_path / "results")]
    submit = [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", address]
    submit += ["--working-dir", ".", "--", "python", EXAMPLE, *SMALL, *paths]

    def submitted() -> subprocess.CompletedProcess | None:
        done = subprocess.run(submit, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        starting = "No available agent" in done.stderr or "Failed to connect" in done.stderr
        if starting:  # the head is still coming up
            time.sleep(1)
            return None
        return done

    done = wait_for(submitted, timeout_s=400, what="the job server to accept the job")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "best trial:" in done.stdout and "succeeded" in done.stdout
    # Under a job, Tune writes pbt_global.txt to the driver's local staging directory, and does not
    # sync it to the results directory before the job ends: the count is checked by the test above.
    check_stored(tmp_path / "data")
