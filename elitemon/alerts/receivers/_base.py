"""What every receiver shares: the contract, the error, one HTTP POST, and the text of an alert.

Rendering and transport are kept apart: each HTTP receiver has a pure `render(notification)` that
returns `HttpRequest`s (tests read them field by field without a network), and `post()` is the
only code that touches a socket. Secrets live only in a receiver's private attributes and in the
requests it renders; `describe()`, `repr()` and every `DeliveryError` message are built from
redacted values, and `post()` scrubs the request's secrets out of anything a server sends back.
"""

from __future__ import annotations

import abc
import http.client
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from elitemon import __version__
from elitemon.alerts._model import Alert, Notification, Status

SECRET = "<secret>"
USER_AGENT = f"elitemon/{__version__}"
_SNIPPET_CHARS = 200
_PIECE_CHARS = 6  # URL path pieces this long are scrubbed on their own; shorter ones ("v2", "hook") are no secret


class DeliveryError(Exception):
    """A notification was not delivered. The message is safe to log: it never holds a secret.

    `retryable` says whether the same request may succeed later (HTTP 5xx and 429, timeouts,
    refused or reset connections) or never will (any other 4xx, a rejected password). `status` is
    the HTTP status or SMTP reply code when there was one; `retry_after_s` is the server's
    `Retry-After`, which the dispatcher honours up to its maximum backoff.
    """

    def __init__(
        self, message: str, *, retryable: bool, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s


class Receiver(abc.ABC):
    """One integration that delivers notifications to one place (a Slack channel, a mailbox, ...).

    `deliver()` returns once the notification was accepted, or raises `DeliveryError`; it does not
    retry (the `Dispatcher` does, with backoff, so that a slow endpoint never blocks the others),
    and it keeps no per-call state on `self`, because several worker threads call it at once.
    `describe()` is safe to show in an API: secrets read `"<secret>"` and URLs that may carry a
    token lose their path (Slack's, webhooks', ntfy topics). `repr()` is built from it.
    """

    name: str

    @abc.abstractmethod
    def deliver(self, notification: Notification, *, timeout_s: float) -> None:
        """Send `notification`, waiting at most about `timeout_s` per network operation."""

    @abc.abstractmethod
    def describe(self) -> dict[str, object]:
        """The receiver's settings with every secret masked."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"


@dataclass(frozen=True)
class HttpRequest:
    """One POST a receiver wants sent. Its repr hides the URL's path and the header values."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def __repr__(self) -> str:
        return f"HttpRequest(url={redact_url(self.url)!r}, headers={sorted(self.headers)!r}, {len(self.body)} bytes)"

    def json(self) -> object:
        """The body parsed as JSON (for tests and debugging)."""
        return json.loads(self.body)


def json_request(url: str, payload: object, *, bearer_token: str | None = None) -> HttpRequest:
    """A POST of `payload` as compact UTF-8 JSON, with an `Authorization: Bearer` header if given."""
    headers = {"Content-Type": "application/json"}
    if bearer_token:
        headers["Authorization"] = f"Bearer {bearer_token}"
    return HttpRequest(url, headers, json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())


def post(request: HttpRequest, *, timeout_s: float, secrets: Iterable[str] = ()) -> int:
    """Send `request`; return the HTTP status (2xx) or raise a `DeliveryError` free of secrets.

    It uses `urllib` rather than `requests`: alert traffic is a few requests a minute, so a
    connection pool buys nothing, and urllib's errors name the reason, not the URL, while
    `requests` puts the URL (a Slack webhook's token) into every connection error. Redirects are
    not followed (a webhook that moved is a configuration error, and urllib would resend a POST as
    a GET). `timeout_s` bounds each socket operation. `secrets` are extra values (a routing key in
    the body) to scrub from any text the server sends back, besides the URL's path and the
    Authorization header.
    """
    scrub = _scrubber(request, secrets)
    target = redact_url(request.url)
    opener = urllib.request.build_opener(_NoRedirect)
    outgoing = urllib.request.Request(
        request.url, data=request.body, headers={"User-Agent": USER_AGENT, **request.headers}, method="POST"
    )
    try:
        with opener.open(outgoing, timeout=timeout_s) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        raise _status_error(exc, target, scrub) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        retryable = not isinstance(reason, ssl.SSLCertVerificationError)
        raise DeliveryError(scrub(f"POST {target}: {reason}"), retryable=retryable) from None
    except (OSError, http.client.HTTPException) as exc:  # timeouts and resets while reading the reply
        raise DeliveryError(scrub(f"POST {target}: {type(exc).__name__}: {exc}"), retryable=True) from None
    except ValueError as exc:  # a URL or header that http.client refuses: retrying cannot fix it
        raise DeliveryError(scrub(f"POST {target}: invalid request: {exc}"), retryable=False) from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises the 3xx as an HTTPError


def _status_error(exc: urllib.error.HTTPError, target: str, scrub: Callable[[str], str]) -> DeliveryError:
    try:
        text = exc.read(_SNIPPET_CHARS * 4).decode("utf-8", "replace")
    except OSError:
        text = ""
    finally:
        exc.close()
    snippet = " ".join(text.split())[:_SNIPPET_CHARS]
    message = f"POST {target}: HTTP {exc.code} {exc.reason}" + (f": {snippet}" if snippet else "")
    retryable = exc.code == 429 or exc.code >= 500
    return DeliveryError(scrub(message), retryable=retryable, status=exc.code, retry_after_s=_retry_after(exc.headers))


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """`Retry-After` in seconds; the HTTP-date form is ignored (none of our services send it)."""
    try:
        value = float((headers or {}).get("Retry-After", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def _scrubber(request: HttpRequest, secrets: Iterable[str]) -> Callable[[str], str]:
    """Scrubs the URL, its path and query, each longer piece of them (a server may echo only the
    token segment), its user info and the parts of it, the Authorization header and its token, and
    `secrets`."""
    parts = urllib.parse.urlsplit(request.url)
    path = urllib.parse.urlunsplit(("", "", parts.path, parts.query, ""))
    pieces = [piece for piece in re.split(r"[/?&=;]", path) if len(piece) >= _PIECE_CHARS]
    user_info = parts.netloc.rpartition("@")[0]
    authorization = request.headers.get("Authorization", "")
    return scrubber(
        [request.url, path, *pieces, user_info, *user_info.split(":"), authorization, authorization.partition(" ")[2]]
        + list(secrets)
    )


def scrubber(secrets: Iterable[str | None]) -> Callable[[str], str]:
    """A function that replaces each of `secrets` (longest first) in a text with `<secret>`.

    Values of one character (a path of "/") are skipped: they are no secret and are everywhere.
    """
    ordered = sorted({value for value in secrets if value and len(value) > 1}, key=len, reverse=True)

    def scrub(text: str) -> str:
        for value in ordered:
            text = text.replace(value, SECRET)
        return text

    return scrub


def redact_url(url: str) -> str:
    """`scheme://host[:port]` followed by `/<secret>` if the URL had a path, query or user info.

    Text that is no absolute URL is all `<secret>`.
    """
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return SECRET
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    hidden = parts.path.strip("/") or parts.query or parts.fragment or parts.username
    return f"{parts.scheme}://{host}{port}" + (f"/{SECRET}" if hidden else "")


def check_url(url: object, *, what: str, owner: str) -> str:
    """`url` if it is an absolute http(s) URL without spaces or user info; the ValueError shows it
    redacted. User info (`https://user:password@host`) is refused: urllib does not send it as
    authentication (it fails the request), and a password there would travel through every error."""
    text = url if isinstance(url, str) else ""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"\s", text):
        shown = redact_url(text) if text else repr(url)
        raise ValueError(f"{owner}: {what} must be an http(s) URL, but got {shown}")
    if "@" in parts.netloc:
        raise ValueError(
            f"{owner}: {what} must not carry user info (user:password@), but got {redact_url(text)};"
            " give credentials in the receiver's own settings"
        )
    return text


def link(url: str) -> str:
    """`url` if it is an http(s) link safe to put into a button or an href, else ""."""
    return url if re.match(r"https?://[^\s<>\"|]+$", url or "") else ""


def rfc3339(ts: float) -> str:
    """Epoch seconds as an RFC 3339 UTC time, fractional seconds trimmed as Go's RFC3339Nano does."""
    text = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return f"{text}Z"


def one_line(text: str) -> str:
    """`text` with every run of whitespace (newlines included) made one space: safe in a header."""
    return " ".join(str(text).split())


def title(notification: Notification) -> str:
    """Alertmanager's default title: `[FIRING:2] resource_exhaustion (node=10.0.0.5)`.

    The name is the group's `alertname` (all names, comma-separated, if the group mixes rules);
    the parentheses hold the other group labels.
    """
    if notification.status is Status.FIRING:
        firing = sum(alert.status is Status.FIRING for alert in notification.alerts)
        head = f"[FIRING:{firing}]"
    else:
        head = "[RESOLVED]"
    name = notification.common_labels.get("alertname") or ", ".join(
        sorted({alert.name for alert in notification.alerts if alert.name})
    )
    others = {key: value for key, value in notification.group_labels.items() if key != "alertname"}
    detail = f" ({label_text(others)})" if others else ""
    return one_line(f"{head} {name}{detail}")


def label_text(labels: Mapping[str, str]) -> str:
    """`key=value` pairs in key order, comma-separated."""
    return ", ".join(f"{key}={value}" for key, value in sorted(labels.items()))


def alert_fields(alert: Alert) -> list[tuple[str, str]]:
    """The facts about one alert that every human-readable receiver shows, in display order.

    Name, severity and status always; value, start and end times when known; the annotations
    (`action` and `description` first, then any others); then the labels that are not already
    shown (all but `alertname` and `severity`). Empty values are left out.
    """
    fields = [("name", alert.name), ("severity", alert.severity.name.lower()), ("status", alert.status.value)]
    fields.append(("value", "" if alert.value is None else f"{alert.value:.6g}"))
    fields.append(("started", rfc3339(alert.starts_at)))
    fields.append(("ended", "" if alert.ends_at is None else rfc3339(alert.ends_at)))
    first = ("action", "description")
    annotations = [key for key in first if key in alert.annotations]
    annotations += [key for key in alert.annotations if key not in first]
    fields += [(key, alert.annotations[key]) for key in annotations]
    labels = {key: value for key, value in alert.labels.items() if key not in ("alertname", "severity")}
    fields.append(("labels", label_text(labels)))
    return [(key, value) for key, value in fields if value]
