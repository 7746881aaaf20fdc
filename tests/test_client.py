"""The client's refusal of a cluster that Ray's address record names but that is gone."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from elitemon.client import _refuse_stale_cluster


def test_a_record_of_a_dead_cluster_is_refused_at_once(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
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
