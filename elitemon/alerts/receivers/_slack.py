"""Slack incoming webhooks: a Block Kit message with a plain-text fallback.

The webhook URL is itself the credential (anyone holding it can post), so it is never shown: not in
`describe()`, not in errors. Slack refuses a whole message (HTTP 400 `invalid_blocks`) if one block
breaks its limits, which would lose the notification for good, so `render` keeps within them: a
header of at most 150 characters, sections of at most 3000, at most `MAX_ALERTS` sections, and a
button only for a valid http(s) link.
"""

from __future__ import annotations

from elitemon.alerts._model import Alert, Notification
from elitemon.alerts.receivers._base import (
    HttpRequest,
    Receiver,
    alert_fields,
    check_url,
    json_request,
    link,
    post,
    redact_url,
    title,
)

MAX_ALERTS = 20
_HEADER_CHARS = 150
_SECTION_CHARS = 3000


class SlackReceiver(Receiver):
    """Posts to one Slack incoming webhook (`https://hooks.slack.com/services/...`)."""

    def __init__(self, name: str, *, api_url: str) -> None:
        self.name = name
        self._api_url = check_url(api_url, what="api_url", owner=name)

    def render(self, notification: Notification) -> HttpRequest:
        """The webhook POST: a header, a section per alert, a link button, and a `text` fallback."""
        heading = title(notification)
        shown = notification.alerts[:MAX_ALERTS]
        blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": _clip(heading, _HEADER_CHARS)}}]
        blocks += [_section(alert) for alert in shown]
        hidden = len(notification.alerts) - len(shown)
        if hidden:
            more = {"type": "mrkdwn", "text": f"… and {hidden} more alert{'s' * (hidden > 1)}"}
            blocks.append({"type": "context", "elements": [more]})
        url = link(notification.external_url)
        if url:
            button = {"type": "button", "text": {"type": "plain_text", "text": "Open in elitemon"}, "url": url}
            blocks.append({"type": "actions", "elements": [button]})
        return json_request(self._api_url, {"text": _fallback(heading, notification), "blocks": blocks})

    def deliver(self, notification: Notification, *, timeout_s: float) -> None:
        post(self.render(notification), timeout_s=timeout_s)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "type": "slack", "api_url": redact_url(self._api_url)}


def _section(alert: Alert) -> dict:
    lines = [f"*{_escape(alert.name)}*"]
    lines += [f"*{key.capitalize()}:* {_escape(value)}" for key, value in alert_fields(alert) if key != "name"]
    source = link(alert.generator_url)
    if source:
        lines.append(f"<{source}|View source>")
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip("\n".join(lines), _SECTION_CHARS)}}


def _fallback(heading: str, notification: Notification) -> str:
    """What notifications and old clients show: the title and one line per alert."""
    lines = [heading]
    for alert in notification.alerts[:MAX_ALERTS]:
        description = alert.annotations.get("description", "")
        lines.append(f"{alert.name} ({alert.severity.name.lower()})" + (f": {description}" if description else ""))
    return _clip("\n".join(lines), _SECTION_CHARS)


def _escape(text: str) -> str:
    """Slack's mrkdwn escaping: only `&`, `<` and `>` are special."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
