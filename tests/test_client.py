"""The client's refusal, at once, of a Ray address where nothing listens: one the user gave, or the
cluster that Ray's address record names but that is gone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from ray._common.utils import get_ray_address_file

from elitemon.client import _cluster_record, _refuse_stale_cluster, _require_listening


def _closed_port() -> int:
    """A port nothing listens on once the probe is closed."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_record_of_a_dead_cluster_is_refused_at_once(tmp_path: Path) -> None:
    port = _closed_port()
    record = tmp_path / "ray_current_cluster"
    record.write_text(f"127.0.0.1:{port}")
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}.*not running"):
        _refuse_stale_cluster(record)


def test_a_record_of_a_listening_cluster_passes(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        record = tmp_path / "ray_current_cluster"
        record.write_text(f"127.0.0.1:{server.getsockname()[1]}")
        _refuse_stale_cluster(record)


def test_no_record_leaves_the_answer_to_ray(tmp_path: Path) -> None:
    _refuse_stale_cluster(tmp_path / "absent")


def test_the_record_is_read_where_ray_writes_it(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    monkeypatch.delenv("TMPDIR", raising=False)
    assert _cluster_record() == Path("/tmp/ray/ray_current_cluster")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    assert _cluster_record() == tmp_path / "tmp" / "ray" / "ray_current_cluster"
    assert _cluster_record() == Path(get_ray_address_file(None))  # Ray's own reading, which "auto" uses
    monkeypatch.setenv("TMPDIR", "")  # set but empty: still Ray's choice
    assert _cluster_record() == Path(get_ray_address_file(None)) == Path("ray/ray_current_cluster")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "ray-tmp"))
    assert _cluster_record() == tmp_path / "ray-tmp" / "ray" / "ray_current_cluster"
    assert _cluster_record() == Path(get_ray_address_file(None))


@pytest.mark.parametrize("form", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}"])
def test_an_address_where_nothing_listens_is_refused_at_once(form: str) -> None:
    address = form.format(port=_closed_port())
    with pytest.raises(ConnectionError, match=f"no Ray cluster at '{address}': nothing answers on 127.0.0.1:"):
        _require_listening(address)


def test_an_address_that_listens_and_the_named_ones_are_left_to_ray() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        _require_listening(f"127.0.0.1:{server.getsockname()[1]}")
    for address in ("auto", "local", None):
        _require_listening(address)


def test_the_cli_says_so_instead_of_waiting_on_ray() -> None:
    """In a fresh process (this one's Ray is up already): ray.init alone retried such an address for
    minutes without a word."""
    address = f"127.0.0.1:{_closed_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "elitemon.cli", "status", "--address", address],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    assert done.returncode == 2, done.stderr
    assert f"elitemon: no Ray cluster at '{address}': nothing answers" in done.stderr


@pytest.mark.parametrize("limit", [-1, 2.5, True])
def test_a_bad_events_limit_is_refused_before_asking(limit) -> None:
    """A negative limit silently returned no events."""
    from elitemon.client import Client

    with pytest.raises(ValueError, match="limit: expected a whole number >= 0"):
        Client(handle=None).events(limit=limit)  # refused here: the handle is never used
