"""Notification receivers (Slack, email, PagerDuty, webhook, ntfy) and their Alertmanager-like config.

`build_receivers` turns a list of receivers, each fanning out to integrations, into
`{receiver name: (integration, ...)}`. Each integration is its own `Receiver` with its own name,
`"{receiver}/{kind}[{index}]"` (`ops/slack[0]`, `ops/email[1]`), and the router submits one
delivery job per integration. Integrations are kept apart rather than wrapped in one composite
receiver so that each is retried on its own: when PagerDuty is down, Slack is not posted again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import NamedTuple

from elitemon.alerts.receivers._base import DeliveryError, HttpRequest, Receiver
from elitemon.alerts.receivers._email import EmailReceiver
from elitemon.alerts.receivers._ntfy import NtfyReceiver
from elitemon.alerts.receivers._pagerduty import PagerDutyReceiver
from elitemon.alerts.receivers._slack import SlackReceiver
from elitemon.alerts.receivers._webhook import WebhookReceiver

__all__ = [
    "DeliveryError",
    "EmailReceiver",
    "HttpRequest",
    "NtfyReceiver",
    "PagerDutyReceiver",
    "Receiver",
    "SlackReceiver",
    "WebhookReceiver",
    "build_receivers",
]

_ENV_REFERENCE = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Kind(NamedTuple):
    short: str
    factory: Callable[..., Receiver]
    keys: Mapping[str, str]  # config key -> constructor keyword
    required: frozenset[str]


_KINDS = {
    "slack_configs": _Kind("slack", SlackReceiver, {"api_url": "api_url"}, frozenset({"api_url"})),
    "email_configs": _Kind(
        "email",
        EmailReceiver,
        {
            "to": "to",
            "from": "sender",
            "smarthost": "smarthost",
            "auth_username": "username",
            "auth_password": "password",
            "require_tls": "require_tls",
            "ca_file": "ca_file",
            "tls_verify": "tls_verify",
        },
        frozenset({"to", "from", "smarthost"}),
    ),
    "pagerduty_configs": _Kind(
        "pagerduty", PagerDutyReceiver, {"routing_key": "routing_key", "url": "url"}, frozenset({"routing_key"})
    ),
    "webhook_configs": _Kind(
        "webhook",
        WebhookReceiver,
        {"url": "url", "max_alerts": "max_alerts", "bearer_token": "bearer_token"},
        frozenset({"url"}),
    ),
    "ntfy_configs": _Kind("ntfy", NtfyReceiver, {"url": "url", "bearer_token": "bearer_token"}, frozenset({"url"})),
}


def build_receivers(config: list[dict], *, environ: Mapping[str, str] | None = None) -> dict[str, tuple[Receiver, ...]]:
    """`{name: (integration, ...)}` from Alertmanager-like receiver config.

    Each entry is `{"name": ..., "slack_configs": [...], "email_configs": [...], ...}`; a receiver
    with no integrations is allowed (it discards, like Alertmanager's "null" receiver). Any string
    value may use `${VAR}`, expanded from `environ` (default: this process's environment, so under
    Ray the variable must be set where this runs); a missing variable is a ValueError naming the
    receiver and the variable. Unknown keys, missing required keys, duplicate names and bad values
    are ValueErrors naming the receiver and the key, never a secret's value.
    """
    environ = os.environ if environ is None else environ
    if not isinstance(config, list):
        raise ValueError(f"receivers must be a list of receivers, but got {type(config).__name__}")
    receivers: dict[str, tuple[Receiver, ...]] = {}
    for index, entry in enumerate(config):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise ValueError(f"receiver #{index} needs a non-empty string 'name'")
        if name in receivers:
            raise ValueError(f"receiver {name!r} is defined twice")
        receivers[name] = _integrations(name, _expand(entry, name, environ))
    return receivers


def _integrations(name: str, entry: dict) -> tuple[Receiver, ...]:
    integrations: list[Receiver] = []
    for key, configs in entry.items():
        if key == "name":
            continue
        kind = _KINDS.get(key)
        if kind is None:
            raise ValueError(f"receiver {name!r}: unknown key {key!r}; expected one of {sorted(_KINDS)}")
        if not isinstance(configs, list):
            raise ValueError(f"receiver {name!r}: {key} must be a list, but got {type(configs).__name__}")
        for index, settings in enumerate(configs):
            integrations.append(_integration(f"{name}/{kind.short}[{index}]", kind, settings))
    return tuple(integrations)


def _integration(full_name: str, kind: _Kind, settings: object) -> Receiver:
    if not isinstance(settings, dict):
        raise ValueError(f"receiver {full_name!r}: each entry must be a mapping, but got {type(settings).__name__}")
    unknown = sorted(set(settings) - set(kind.keys))
    if unknown:
        raise ValueError(f"receiver {full_name!r}: unknown key {unknown[0]!r}; expected some of {sorted(kind.keys)}")
    missing = sorted(kind.required - set(settings))
    if missing:
        raise ValueError(f"receiver {full_name!r}: missing required key {missing[0]!r}")
    return kind.factory(full_name, **{kind.keys[key]: value for key, value in settings.items()})


def _expand(value: object, receiver: str, environ: Mapping[str, str]) -> object:
    """`value` with `${VAR}` replaced in every string, at any depth of lists and dicts."""
    if isinstance(value, dict):
        return {key: _expand(item, receiver, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, receiver, environ) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        variable = match.group(1)
        if not _ENV_NAME.fullmatch(variable):
            raise ValueError(f"receiver {receiver!r}: {match.group(0)!r} is not a valid environment variable name")
        if variable not in environ:
            raise ValueError(f"receiver {receiver!r}: environment variable {variable} is not set")
        return environ[variable]

    return _ENV_REFERENCE.sub(substitute, value)
