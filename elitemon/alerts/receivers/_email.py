"""Email over SMTP with STARTTLS: a readable text part and an HTML table per alert.

TLS is required by default: a server that does not offer STARTTLS gets nothing, and credentials are
never sent over a connection that is not encrypted, even with `require_tls=False` (STARTTLS is
still used whenever the server offers it). Implicit TLS (SMTPS on port 465) is not supported; use
the submission port, 587. `ca_file` trusts a private CA; `tls_verify=False` turns certificate checks
off, for tests and closed networks only.

SMTP reply codes decide retrying as HTTP statuses do: 4xx is temporary (retry), 5xx permanent (a
wrong password, 535, is never retried: it would only lock the account).
"""

from __future__ import annotations

import email.utils
import html
import os
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage

from elitemon.alerts._model import Alert, Notification
from elitemon.alerts.receivers._base import (
    DeliveryError,
    Receiver,
    alert_fields,
    link,
    one_line,
    scrubber,
    title,
)

_TABLE = 'border="1" cellpadding="4" cellspacing="0" style="border-collapse:collapse;margin-bottom:16px"'


class EmailReceiver(Receiver):
    """Sends one multipart/alternative message per notification to `to` through `smarthost`."""

    def __init__(
        self,
        name: str,
        *,
        to: str | Sequence[str],
        sender: str,
        smarthost: str,
        username: str | None = None,
        password: str | None = None,
        require_tls: bool = True,
        ca_file: str | os.PathLike | None = None,
        tls_verify: bool = True,
    ) -> None:
        recipients = to.split(",") if isinstance(to, str) else to
        strings = isinstance(recipients, list | tuple) and all(isinstance(each, str) for each in recipients)
        self._to = [address.strip() for address in recipients if address.strip()] if strings else []
        if not self._to:
            raise ValueError(f"{name}: to must name at least one address, but got {to!r}")
        if not isinstance(sender, str) or "@" not in sender:
            raise ValueError(f"{name}: from must be an email address, but got {sender!r}")
        for flag, value in (("require_tls", require_tls), ("tls_verify", tls_verify)):
            if not isinstance(value, bool):
                raise ValueError(f"{name}: {flag} must be true or false, but got {value!r}")
        if ca_file is not None and not isinstance(ca_file, str | os.PathLike):
            raise ValueError(f"{name}: ca_file must be a path, but got {ca_file!r}")
        if ca_file is not None and not os.path.isfile(ca_file):
            raise ValueError(f"{name}: ca_file {os.fspath(ca_file)!r} is not a file")
        if bool(username) != bool(password):
            raise ValueError(f"{name}: auth_username and auth_password must be given together")
        self.name = name
        self._sender = sender
        self._host, self._port = _host_port(smarthost, name)
        self._username = username or None
        self._password = password or None
        self._require_tls = require_tls
        self._ca_file = os.fspath(ca_file) if ca_file is not None else None
        self._tls_verify = tls_verify

    def render(self, notification: Notification) -> EmailMessage:
        """The message without transport headers (Date, Message-ID), which `deliver` adds."""
        message = EmailMessage()
        message["Subject"] = title(notification)
        message["From"] = self._sender
        message["To"] = ", ".join(self._to)
        message.set_content(_text(notification))
        message.add_alternative(_html(notification), subtype="html")
        return message

    def deliver(self, notification: Notification, *, timeout_s: float) -> None:
        message = self.render(notification)
        message["Date"] = email.utils.formatdate(usegmt=True)
        message["Message-ID"] = email.utils.make_msgid(domain=self._sender.rpartition("@")[2])
        try:
            refused = self._send(message, timeout_s)
        except DeliveryError:
            raise
        except OSError as exc:  # smtplib's, ssl's and socket errors are all OSErrors
            raise self._error(exc) from None
        if refused:
            where = f"SMTP {self._host}:{self._port}"
            raise DeliveryError(f"{where}: some recipients refused: {_replies(refused)}", retryable=False)

    def _error(self, exc: OSError) -> DeliveryError:
        """The DeliveryError for a failed SMTP session: reply codes 4xx retry, 5xx do not."""
        where = f"SMTP {self._host}:{self._port}"
        scrub = scrubber([self._password])
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            codes = [code for code, _ in exc.recipients.values()]
            retryable = all(400 <= code < 500 for code in codes)
            text = f"{where}: all recipients refused: {_replies(exc.recipients)}"
            return DeliveryError(text, retryable=retryable, status=max(codes))
        if isinstance(exc, smtplib.SMTPResponseException):  # includes a wrong password (535)
            reply = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
            text = scrub(f"{where}: {type(exc).__name__}: {exc.smtp_code} {one_line(str(reply))}")
            return DeliveryError(text, retryable=400 <= exc.smtp_code < 500, status=exc.smtp_code)
        if isinstance(exc, smtplib.SMTPNotSupportedError):  # e.g. no AUTH mechanism we speak
            return DeliveryError(scrub(f"{where}: {exc}"), retryable=False)
        if isinstance(exc, ssl.SSLCertVerificationError):  # a configuration error: waiting will not fix it
            return DeliveryError(f"{where}: TLS certificate not trusted: {exc.verify_message}", retryable=False)
        # refused, reset, timed out, disconnected: the server may come back
        return DeliveryError(scrub(f"{where}: {type(exc).__name__}: {exc}"), retryable=True)

    def _send(self, message: EmailMessage, timeout_s: float) -> dict:
        # "localhost" as the EHLO name, as Alertmanager's default: smtplib would look up this host's
        # FQDN, which can take seconds where reverse DNS is broken
        with smtplib.SMTP(self._host, self._port, local_hostname="localhost", timeout=timeout_s) as smtp:
            smtp.ehlo()
            encrypted = smtp.has_extn("starttls")
            if encrypted:
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
            elif self._require_tls:
                raise DeliveryError(f"SMTP {self._host}:{self._port}: server does not offer STARTTLS", retryable=False)
            if self._username:
                if not encrypted:
                    raise DeliveryError(
                        f"SMTP {self._host}:{self._port}: refusing to send credentials without TLS", retryable=False
                    )
                smtp.login(self._username, self._password)
            return smtp.send_message(message)

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self._ca_file)
        if not self._tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type": "email",
            "to": list(self._to),
            "from": self._sender,
            "smarthost": f"{self._host}:{self._port}",
            "auth_username": self._username,
            "auth_password": "<secret>" if self._password else None,
            "require_tls": self._require_tls,
            "ca_file": self._ca_file,
            "tls_verify": self._tls_verify,
        }


def _host_port(smarthost: object, name: str) -> tuple[str, int]:
    """("host", port) from "host:port" or "[v6]:port"; a port is required, as in Alertmanager."""
    host, _, port = smarthost.rpartition(":") if isinstance(smarthost, str) else ("", "", "")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{name}: smarthost must be host:port, but got {smarthost!r}")
    return host, int(port)


def _replies(refused: dict) -> str:
    return "; ".join(f"{address}: {code}" for address, (code, _) in sorted(refused.items()))


def _text(notification: Notification) -> str:
    blocks = [title(notification)]
    for alert in notification.alerts:
        lines = [f"{key}: {value}" for key, value in alert_fields(alert)]
        if link(alert.generator_url):
            lines.append(f"source: {alert.generator_url}")
        blocks.append("\n".join(lines))
    if link(notification.external_url):
        blocks.append(f"Open in elitemon: {notification.external_url}")
    return "\n\n".join(blocks) + "\n"


def _html(notification: Notification) -> str:
    parts = [f"<html><body>\n<h2>{html.escape(title(notification))}</h2>"]
    parts += [_table(alert) for alert in notification.alerts]
    if link(notification.external_url):
        parts.append(f'<p><a href="{html.escape(notification.external_url)}">Open in elitemon</a></p>')
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _table(alert: Alert) -> str:
    rows = [
        f'<tr><th align="left">{html.escape(key)}</th><td>{html.escape(value)}</td></tr>'
        for key, value in alert_fields(alert)
    ]
    if link(alert.generator_url):
        url = html.escape(alert.generator_url)
        rows.append(f'<tr><th align="left">source</th><td><a href="{url}">{url}</a></td></tr>')
    return f"<table {_TABLE}>\n" + "\n".join(rows) + "\n</table>"
