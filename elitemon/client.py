"""The Python client: the aggregator's queries from a notebook or a script.

import elitemon
em = elitemon.connect()                       # the running cluster (address="auto")
em.samples(metric="episode_reward_mean", start=time.time() - 600, step=10)  # Arrow table
em.latest(kind="node", as_pandas=True)         # pandas DataFrame
"""

from __future__ import annotations

import numbers
import os
import re
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray

from elitemon import aggregator
from elitemon.producer import Producer, RaySink
from elitemon.query import Aggregation, select
from elitemon.store import Health

#: How long an explicit "host:port" Ray address gets to accept a connection before it is called unreachable.
CONNECT_TIMEOUT_S = 5.0


def ensure_ray(address: str | None = "auto") -> None:
    """Connect this process to Ray unless it already is. Raises ConnectionError with a hint."""
    if ray.is_initialized():
        return
    if address == "auto" and not os.environ.get("RAY_ADDRESS"):
        _refuse_stale_cluster()
    _require_listening(address)
    try:
        ray.init(address=address, namespace=aggregator.NAMESPACE, logging_level="WARNING", log_to_driver=False)
    except ConnectionError as error:
        raise ConnectionError(
            f"no Ray cluster at {address!r} ({error}); start one with `elitemon start` or `ray start --head`"
        ) from None


def _require_listening(address: str | None) -> None:
    """For an address "host:port" (or "ray://host:port"): a ConnectionError unless something accepts a
    connection there within CONNECT_TIMEOUT_S. ray.init retries an unreachable address for minutes,
    saying nothing of its own."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\[\]/]+?)\]?:(\d+)", address or "")
    if match is None:
        return
    host, port = match.group(1), int(match.group(2))
    why = _unreachable(host, port)
    if why is not None:
        raise ConnectionError(
            f"no Ray cluster at {address!r}: nothing answers on {host}:{port} ({why}); check the address, "
            "or start one with `elitemon start` or `ray start --head`"
        )


def _unreachable(host: str, port: int) -> str | None:
    """Why nothing accepted a connection to host:port within CONNECT_TIMEOUT_S; None if something did."""
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        return str(error) or type(error).__name__
    return None


def attach_or_start_local_ray(
    address: str | None, num_cpus: int | None, *, purpose: str, say: Callable[[str], Any] = print
) -> bool:
    """Attach to `address` (default: the running cluster, if any), or start a local Ray in this
    process (`address="local"` always does); True if it was started here, and so is the caller's
    to shut down. `purpose` completes the line said when one is started ("for the demo")."""
    if ray.is_initialized():
        return False
    if address not in (None, "local"):
        ensure_ray(address)
        return False
    if address is None:
        try:
            ensure_ray("auto")
            return False
        except ConnectionError:
            say(f"no running Ray cluster found; starting a local one {purpose}")
    # Ray turns its token authentication on by default for a local cluster started this way.
    ray.init(
        address="local",
        num_cpus=num_cpus,
        namespace=aggregator.NAMESPACE,
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=False,
    )
    return True


def _cluster_record() -> Path:
    """Where Ray records the last cluster started on this machine: `ray_current_cluster` under its
    temporary directory, which is $RAY_TMPDIR if set, else $TMPDIR if set (on Linux), else /tmp
    (Ray's rule, set or empty alike)."""
    if "RAY_TMPDIR" in os.environ:
        temp = os.environ["RAY_TMPDIR"]
    elif sys.platform.startswith("linux") and "TMPDIR" in os.environ:
        temp = os.environ["TMPDIR"]
    else:
        temp = "/tmp" if sys.platform.startswith(("linux", "darwin")) else tempfile.gettempdir()
    return Path(temp) / "ray" / "ray_current_cluster"


def _refuse_stale_cluster(record: Path | None = None) -> None:
    """Ray's "auto" reads the address of the last cluster started on this machine from `record`
    (default: `_cluster_record()`), and waits minutes for it when that cluster is gone: refuse at
    once instead."""
    record = record or _cluster_record()
    try:
        host, _, port = record.read_text().strip().rpartition(":")
    except OSError:
        return  # no record: ray.init says there is no cluster
    if not port.isdigit() or _unreachable(host, int(port)) is not None:
        raise ConnectionError(f"the last Ray cluster started here ({host}:{port}, from {record}) is not running")


def connect(address: str | None = "auto", *, name: str = aggregator.NAME) -> Client:
    """A Client for the aggregator of the Ray cluster at `address`."""
    ensure_ray(address)
    return Client(aggregator.get_aggregator(name=name), name=name)


class Client:
    """Queries return Arrow tables, or pandas DataFrames with `as_pandas=True`.

    Filters: `start`/`end` (epoch seconds or datetimes, end exclusive), `generation` (one, or an
    inclusive (low, high) pair), and any identifier column of the table given one value or a list.
    """

    def __init__(self, handle: Any, *, name: str = aggregator.NAME) -> None:
        self._handle = handle
        self._name = name

    def health(self) -> Health:
        return ray.get(self._handle.health.remote())

    def samples(
        self, *, step: float | None = None, agg: str | Aggregation = "mean", as_pandas: bool = False, **filters: Any
    ) -> Any:
        """Sample rows; with `step` (seconds), one point per series and bucket aggregated by `agg`."""
        selection = select("samples", **filters)
        if step is None:
            return _result(self._handle.rows.remote(selection), as_pandas)
        return _result(self._handle.downsample.remote(selection, step, Aggregation(agg).value), as_pandas)

    def latest(self, *, as_pandas: bool = False, **filters: Any) -> Any:
        """The newest sample of each series matching the filters."""
        return _result(self._handle.latest.remote(select("samples", **filters)), as_pandas)

    def events(self, *, limit: int | None = None, as_pandas: bool = False, **filters: Any) -> Any:
        """Events (filter by `type`, `agent`, `node`, …), oldest first; `limit` keeps the newest."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 0):
            raise ValueError(f"limit: expected a whole number >= 0 or None, got {limit!r}")
        return _result(self._handle.rows.remote(select("events", **filters), limit), as_pandas)

    def configs(self, *, as_pandas: bool = False, **filters: Any) -> Any:
        """Hyperparameter rows (filter by `agent`, `param`, generation, time)."""
        return _result(self._handle.rows.remote(select("configs", **filters)), as_pandas)

    def producer(self, **options: Any) -> Producer:
        """A Producer that writes to this aggregator (see Producer for the options)."""
        return Producer(RaySink(name=self._name, handle=self._handle), **options)


def _result(ref: Any, as_pandas: bool) -> Any:
    table: pa.Table = ray.get(ref)
    return table.to_pandas() if as_pandas else table
