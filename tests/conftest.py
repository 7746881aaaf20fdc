"""Shared fixtures. One real local Ray per test session, started only when a test asks for it."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_tool(name: str) -> str:
    """Path of an executable that .ci/run installs: skip without it locally, fail under CI=true."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (.ci/run installs it)"
        if IN_CI:
            pytest.fail(f"{message}; under CI=true a missing tool is an error, not a skip")
        pytest.skip(message)
    return path


def wait_for(condition: Callable[[], T], *, timeout_s: float = 30.0, what: str = "condition") -> T:
    """Poll `condition` until it returns something truthy, and return that; fail after `timeout_s`.
    The synchronisation for things that happen in other threads, processes or actors."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
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
