"""Fixtures: a recording HTTP server, an SMTP server using the TLS certificate of tests/alerts/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alerts.receivers.servers import RecordingServer, SmtpServer

SMTP_USER = "alerts@example.com"
SMTP_PASSWORD = "s3cret-smtp-password"


@pytest.fixture
def http_server() -> Iterator[RecordingServer]:
    server = RecordingServer()
    yield server
    server.close()


@pytest.fixture
def smtp_server(certificate: tuple[Path, Path]) -> Iterator[SmtpServer]:
    server = SmtpServer(certificate, username=SMTP_USER, password=SMTP_PASSWORD)
    yield server
    server.close()
