"""Fixtures: a recording HTTP server, a TLS certificate for 127.0.0.1, an SMTP server using it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alerts.receivers.servers import RecordingServer, SmtpServer, write_certificate

SMTP_USER = "alerts@example.com"
SMTP_PASSWORD = "s3cret-smtp-password"


@pytest.fixture
def http_server() -> Iterator[RecordingServer]:
    server = RecordingServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def smtp_server(certificate: tuple[Path, Path]) -> Iterator[SmtpServer]:
    server = SmtpServer(certificate, username=SMTP_USER, password=SMTP_PASSWORD)
    yield server
    server.close()
