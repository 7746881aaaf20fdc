"""Real local servers for the receiver and delivery tests, and builders for alerts.

`RecordingServer` is a ThreadingHTTPServer on 127.0.0.1 that records every POST and answers from a
script (statuses, a held answer that outlasts the client's timeout, then 200). `SmtpServer` is
aiosmtpd with STARTTLS and AUTH, trusting a self-signed certificate for 127.0.0.1.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import threading
from collections import deque
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from elitemon.alerts._model import Alert, Notification, Status

HOLD = "hold"  # answer only once released (a client with a short timeout gives up first)

STARTS_AT = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def make_alert(
    name: str = "resource_exhaustion",
    *,
    severity: str = "critical",
    status: Status = Status.FIRING,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    starts_at: float = STARTS_AT,
    ends_at: float | None = None,
    value: float | None = None,
    generator_url: str = "",
) -> Alert:
    return Alert(
        labels={"alertname": name, "severity": severity, **(labels or {})},
        annotations=annotations or {},
        status=status,
        starts_at=starts_at,
        ends_at=ends_at,
        value=value,
        generator_url=generator_url,
    )


def make_notification(
    *alerts: Alert,
    receiver: str = "ops",
    group_key: str = '{}:{alertname="resource_exhaustion"}',
    group_labels: dict[str, str] | None = None,
    external_url: str = "",
) -> Notification:
    return Notification(
        receiver=receiver,
        group_key=group_key,
        group_labels=group_labels if group_labels is not None else {"alertname": "resource_exhaustion"},
        alerts=alerts or (make_alert(),),
        external_url=external_url,
    )


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


class RecordingServer:
    """Records POSTs; answers each from `answer(...)`'s script, then with `then` (200)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._script: deque[int | str | tuple[int, bytes]] = deque()
        self._then: int = 200
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def answer(self, *responses: int | str | tuple[int, bytes], then: int = 200) -> None:
        """Answer the next requests with `responses` (a status, HOLD, or (status, body)), then `then`."""
        with self._lock:
            self._script.extend(responses)
            self._then = then

    def release(self) -> None:
        """Let held requests answer (200)."""
        self._released.set()

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def close(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    def _next(self, received: Received) -> int | str | tuple[int, bytes]:
        with self._lock:
            self.requests.append(received)
            return self._script.popleft() if self._script else self._then

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {name.lower(): value for name, value in self.headers.items()}
                response = owner._next(Received(self.path, headers, body))
                if response == HOLD:
                    owner._released.wait(10)
                    response = 200
                status, text = response if isinstance(response, tuple) else (response, b"ok")
                try:
                    self.send_response(status)
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                except OSError:  # the client gave up on a held request
                    pass

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


def write_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA) and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


class _PortZeroController(Controller):
    """aiosmtpd's Controller on an OS-chosen port (it would otherwise probe port 0)."""

    def _trigger_server(self) -> None:
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpServer:
    """A real SMTP server on 127.0.0.1 keeping each message; STARTTLS and AUTH when given a cert."""

    def __init__(
        self, cert: tuple[Path, Path] | None = None, *, username: str = "", password: str = "", refuse: str = ""
    ) -> None:
        self.messages: list[EmailMessage] = []
        self._refuse = refuse  # a recipient answered 550
        self.envelopes: list[tuple[str, list[str]]] = []
        options: dict[str, object] = {}
        if cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*cert)
            options.update(tls_context=context, require_starttls=True)
        if username:
            options.update(authenticator=self._authenticator(username, password), auth_require_tls=True)
        self._controller = _PortZeroController(self, hostname="127.0.0.1", port=0, **options)
        self._controller.start()

    @property
    def smarthost(self) -> str:
        return f"127.0.0.1:{self._controller.port}"

    def close(self) -> None:
        self._controller.stop()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        if address == self._refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"

    @staticmethod
    def _authenticator(username: str, password: str):
        def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
            ok = isinstance(auth_data, LoginPassword) and auth_data == LoginPassword(
                username.encode(), password.encode()
            )
            return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

        return authenticate
