"""ntfy push notifications: the message as the body, the rest in ntfy's headers.

On a public ntfy server the topic name is the only thing that keeps a topic private, so the URL's
path is treated as a secret, like a token. HTTP headers must be Latin-1, so a title with other
characters is sent RFC 2047-encoded, which ntfy decodes; the body is cut to fit ntfy's 4096-byte
message limit (a longer body would arrive as an attachment instead of a message).
"""

from __future__ import annotations

import base64
import urllib.parse

from elitemon.alerts._model import Notification, Severity, Status
from elitemon.alerts.receivers._base import (
    HttpRequest,
    Receiver,
    alert_fields,
    check_url,
    link,
    one_line,
    post,
    redact_url,
    title,
)

PRIORITIES = {Severity.CRITICAL: "5", Severity.HIGH: "4", Severity.MEDIUM: "3"}
DEFAULT_PRIORITY = "2"
_BODY_BYTES = 4000


class NtfyReceiver(Receiver):
    """Publishes to one ntfy topic, `url` = `{server}/{topic}`, with an optional access token.

    Priority follows the worst firing alert (CRITICAL 5 "urgent", HIGH 4, MEDIUM 3, otherwise 2),
    so a resolved notification, which has no firing alert, arrives at priority 2 and wakes no one.
    """

    def __init__(self, name: str, *, url: str, bearer_token: str | None = None) -> None:
        self.name = name
        self._url = check_url(url, what="url", owner=name)
        if not urllib.parse.urlsplit(self._url).path.strip("/"):
            raise ValueError(f"{name}: url must name a topic, {{server}}/{{topic}}, but got {redact_url(self._url)!r}")
        self._bearer_token = bearer_token or None

    def render(self, notification: Notification) -> HttpRequest:
        """The POST to the topic: title, priority, tags and click link as headers, text as body."""
        firing = [alert for alert in notification.alerts if alert.status is Status.FIRING]
        worst = max((alert.severity for alert in firing), key=lambda severity: severity.value, default=None)
        headers = {
            "Title": _header_text(title(notification)),
            "Priority": PRIORITIES.get(worst, DEFAULT_PRIORITY),
            "Tags": f"rotating_light,{worst.name.lower()}" if worst else "white_check_mark",
            "Content-Type": "text/plain; charset=utf-8",
        }
        sources = [notification.external_url] + [alert.generator_url for alert in notification.alerts]
        click = next((url for url in sources if link(url) and url.isascii()), "")
        if click:
            headers["Click"] = click
        if self._bearer_token:
            headers["Authorization"] = f"Bearer {self._bearer_token}"
        return HttpRequest(self._url, headers, _body(notification))

    def deliver(self, notification: Notification, *, timeout_s: float) -> None:
        post(self.render(notification), timeout_s=timeout_s)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type": "ntfy",
            "url": redact_url(self._url),
            "bearer_token": "<secret>" if self._bearer_token else None,
        }


def _body(notification: Notification) -> bytes:
    blocks = []
    for alert in notification.alerts:
        lines = [f"{alert.name} ({alert.severity.name.lower()}, {alert.status.value})"]
        lines += [f"{key}: {value}" for key, value in alert_fields(alert) if key not in ("name", "severity", "status")]
        blocks.append("\n".join(lines))
    data = "\n\n".join(blocks).encode()
    if len(data) <= _BODY_BYTES:
        return data
    return data[: _BODY_BYTES - 3].decode("utf-8", "ignore").encode() + "…".encode()


def _header_text(text: str) -> str:
    """`text` on one line, RFC 2047-encoded when it is not ASCII (ntfy decodes that form)."""
    text = one_line(text)
    if text.isascii():
        return text
    return f"=?UTF-8?B?{base64.b64encode(text.encode()).decode()}?="
