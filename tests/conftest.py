"""Shared fixtures. One real local Ray per test session, started only when a test asks for it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")

IN_CI = os.environ.get("CI", "").lower() == "true"
REPO = Path(__file__).resolve().parents[1]
#: A Ray started by a test must not inherit the cluster address of the session's.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
#: `python` in a job is the head's: the one of this environment, as for a user whose venv started Ray.
VENV_PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def require_tool(name: str) -> str:
    """Path of an executable that .ci/run installs: skip without it locally, fail under CI=true."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (.ci/run installs it)"
        if IN_CI:
            pytest.fail(f"{message}; under CI=true a missing tool is an error, not a skip")
        pytest.skip(message)
    return path


def wait_for(
    condition: Callable[[], T], *, timeout_s: float = 30.0, what: str = "condition", poll_s: float = 0.01
) -> T:
    """Poll `condition` every `poll_s` until it returns something truthy, and return that; fail after
    `timeout_s`. The synchronisation for things that happen in other threads, processes or actors."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    import ray

    ray.init(
        address="local",  # always a fresh one: never a cluster some earlier run left registered
        num_cpus=4,
        namespace="elitemon",
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=False,
        configure_logging=False,
    )
    yield
    ray.shutdown()


@pytest.fixture
def aggregator_name() -> str:
    """A fresh aggregator name per test, so tests never share a store."""
    return f"aggregator-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def aggregator_handle(ray_session: None, aggregator_name: str, tmp_path: Path) -> Iterator[object]:
    import ray

    from elitemon.aggregator import start_aggregator
    from elitemon.config import StoreConfig

    handle = start_aggregator(StoreConfig(data_dir=tmp_path / "data"), name=aggregator_name)
    yield handle
    ray.kill(handle, no_restart=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


def submit_job(address: str, env: dict, command: list[str], timeout_s: float = 400) -> subprocess.CompletedProcess:
    """`ray job submit --working-dir . -- COMMAND` from the repository, retried while the head's job
    server is still coming up; returns the finished submission."""
    submit = [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", address]
    submit += ["--working-dir", ".", "--", *command]

    def submitted() -> subprocess.CompletedProcess | None:
        done = subprocess.run(submit, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        if "No available agent" in done.stderr or "Failed to connect" in done.stderr:
            time.sleep(1)  # the head is still coming up
            return None
        return done

    return wait_for(submitted, timeout_s=timeout_s, what="the job server to accept the job")


def open_store(data_dir: Path):
    """A store's data read without Ray, once the aggregator that held it (a job's, say) has let go."""
    from elitemon.config import StoreConfig
    from elitemon.store import DirectoryInUse, Store

    def opened() -> Store | None:
        try:
            return Store(StoreConfig(data_dir=data_dir))
        except DirectoryInUse:  # still locked by the aggregator that is shutting down
            return None

    return wait_for(opened, timeout_s=60, what=f"the aggregator to release {data_dir}")


def store_frame(table: str, rows: list[dict]):
    """Rows as the store hands them out (categorical identifiers, UTC microsecond timestamps), so
    that analytics tests feed their functions what a query would."""
    import pyarrow as pa

    from elitemon.schema import batch_from_rows

    return pa.Table.from_batches([batch_from_rows(table, rows)]).to_pandas()
