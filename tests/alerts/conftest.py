"""Fixtures shared by the alert tests: a self-signed TLS certificate for 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.alerts.receivers.servers import write_certificate


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_certificate(tmp_path_factory.mktemp("tls"))
