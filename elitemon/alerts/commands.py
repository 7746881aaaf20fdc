"""`elitemon alerts ...`: check a rule file, run the evaluator, list alerts, silence, acknowledge.

`check` needs no Ray: it loads the file, checks every section, and prints each problem as
`FILE:LINE:COLUMN: ...`, the way compilers do, so editors jump to it. The other subcommands talk to
the running evaluator (`start` runs it, detached, beside the aggregator).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from elitemon.aggregator import NAMESPACE
from elitemon.alerts.evaluator import DEFAULT_RULES_PATH, FIRING, RESOLVED, evaluator_name, start_alerts
from elitemon.alerts.rules import RuleFileError, load_rules
from elitemon.alerts.service import problems
from elitemon.alerts.signals import KnownNames


def add_parser(commands: Any, *, parse_duration: Callable[[str], float], add_address: Callable) -> None:
    """Add `alerts` and its subcommands to the `elitemon` parser's subcommands."""
    alerts = commands.add_parser("alerts", help="alert rules: check, start, list, silence, acknowledge")
    sub = alerts.add_subparsers(dest="alerts_command", required=True)

    check = sub.add_parser("check", help="validate a rule file (errors point at FILE:LINE:COLUMN)")
    check.add_argument("rules", nargs="?", default=str(DEFAULT_RULES_PATH), help="rule file (default: the shipped one)")

    start = sub.add_parser("start", help="start the evaluator beside the aggregator (detached)")
    start.add_argument("rules", nargs="?", default=None, help="rule file (default: the shipped one)")

    listing = sub.add_parser("list", help="pending and firing alerts (or, with --history, past ones)")
    listing.add_argument("--history", action="store_true", help="firing/resolved events from the store")
    listing.add_argument("--limit", type=int, default=50, help="with --history: the newest N events")

    silence = sub.add_parser("silence", help="silence alerts matching MATCHERs, e.g. 'node=\"10.0.0.5\"'")
    silence.add_argument("matchers", nargs="*", help="Alertmanager matchers: name=value, name!=value, =~, !~")
    silence.add_argument("--duration", type=parse_duration, default=3600.0, help="how long (default: 1h)")
    silence.add_argument("--author", help="who silences (required)")
    silence.add_argument("--comment", help="why (required)")
    silence.add_argument("--expire", metavar="ID", help="end the silence ID now instead")
    silence.add_argument("--list", action="store_true", help="list the silences instead")

    ack = sub.add_parser("ack", help="acknowledge a firing alert: no repeats until it resolves")
    ack.add_argument("fingerprint", help="the alert's fingerprint (see `elitemon alerts list`)")
    ack.add_argument("--author", required=True)
    ack.add_argument("--comment", required=True)

    deliveries = sub.add_parser("deliveries", help="the delivery log: receiver, attempt, outcome, error")
    deliveries.add_argument("--receiver", help="a receiver (`ops`) or one integration (`ops/slack[0]`)")
    deliveries.add_argument("--limit", type=int, default=50)

    stop = sub.add_parser("stop", help="stop the evaluator")
    for parser in (start, listing, silence, ack, deliveries, stop):
        add_address(parser, "Ray cluster to use (default: the running one)")
    for parser in (listing, silence, ack, deliveries):
        parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace, *, connect: Callable[[str | None], None]) -> int:
    """Run `elitemon alerts <args.alerts_command>`; `connect` joins the Ray cluster."""
    if args.alerts_command == "check":
        return _check(Path(args.rules))
    connect(getattr(args, "address", None))
    if args.alerts_command == "start":
        handle = start_alerts(args.rules, detached=True)
        status = ray.get(handle.status.remote())
        print(f"alert evaluator running: {len(status['rules'])} rules every {status['interval_s']:g} s")
        return 0
    if args.alerts_command == "list" and args.history:  # the store's: no evaluator needed
        return _print(args, _history(args.limit))
    evaluator = _evaluator()
    if args.alerts_command == "list":
        return _print(args, ray.get(evaluator.alerts.remote()))
    if args.alerts_command == "silence":
        return _silence(args, evaluator)
    if args.alerts_command == "ack":
        ray.get(evaluator.acknowledge.remote(args.fingerprint, args.author, args.comment))
        print(f"acknowledged {args.fingerprint}")
        return 0
    if args.alerts_command == "deliveries":
        return _print(args, ray.get(evaluator.deliveries.remote(args.receiver, args.limit)))
    ray.get(evaluator.stop.remote())
    ray.kill(evaluator, no_restart=True)
    print("alert evaluator stopped")
    return 0


def _check(path: Path) -> int:
    try:
        rule_file = load_rules(path, known_names=KnownNames())
    except RuleFileError as error:
        print(error, file=sys.stderr)
        return 1
    except OSError as error:
        print(f"{path}: {error.strerror}", file=sys.stderr)
        return 1
    found = problems(rule_file)
    for problem in found:
        print(problem, file=sys.stderr)
    if found:
        return 1
    names = ", ".join(rule.name for rule in rule_file.rules)
    print(f"{path}: {len(rule_file.rules)} rules OK ({names})")
    return 0


def _evaluator() -> Any:
    try:
        return ray.get_actor(evaluator_name(), namespace=NAMESPACE)
    except ValueError:
        raise ValueError("no alert evaluator is running (start it with `elitemon alerts start`)") from None


def _silence(args: argparse.Namespace, evaluator: Any) -> int:
    if args.list:
        return _print(args, ray.get(evaluator.silences.remote()))
    if args.expire:
        ray.get(evaluator.expire_silence.remote(args.expire))
        print(f"silence {args.expire} expired")
        return 0
    if not args.matchers or not args.author or not args.comment:
        raise ValueError("a silence needs at least one matcher, --author and --comment")
    silence_id = ray.get(
        evaluator.silence.remote(
            args.matchers, ends_at=time.time() + args.duration, created_by=args.author, comment=args.comment
        )
    )
    print(silence_id)
    return 0


def _history(limit: int) -> list[dict]:
    from elitemon.client import connect

    events = connect(None).events(type=[FIRING, RESOLVED], limit=limit, as_pandas=True)
    return [
        {"ts": ts.isoformat(), "type": kind, **json.loads(payload)}
        for ts, kind, payload in zip(events["ts"], events["type"], events["payload"], strict=True)
    ]


def _print(args: argparse.Namespace, rows: list[dict]) -> int:
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("(none)")
    for row in rows:
        print("  ".join(f"{key}={_short(key, value)}" for key, value in row.items() if value not in (None, [], {})))
    return 0


#: The fields of listed rows that hold epoch seconds (printed as UTC times; a value is a value).
_TIME_FIELDS = frozenset({"active_since", "fired_at", "starts_at", "ends_at", "at", "until", "ts"})


def _short(key: str, value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}={v}" for k, v in value.items()) + "}"
    if key in _TIME_FIELDS and isinstance(value, int | float) and not isinstance(value, bool):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
    return str(value)
