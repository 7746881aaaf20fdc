"""AlertEvaluator: the actor that evaluates a rule file against the store and notifies.

Every `evaluation_interval` (15 s by default, `settings.evaluation_interval` in the rule file) it
queries the aggregator for what the rules read (the lookback window of samples, each monitor's
newest heartbeat, the score metric when a rule reads the stall), steps the alert state machine,
writes each change as an `alert_firing` or `alert_resolved` event, and flushes the router whenever
a notification is due (which need not coincide with an evaluation: `group_wait` counts from the
first alert).

The history is the store's: `elitemon alerts list --history` and `Client.events(type=[...])` read
those events. After a restart, the actor reads them back, and alerts whose last event is
`alert_firing` fire on from their original start, so a restart neither loses a resolve nor repeats a
`for` wait. Silences and acknowledgements are events too (`silence`, written at creation and at
expiry, and `alert_acknowledged`), stored before the command that makes them returns, and read back
the same way. So is each notification handed to a receiver (`alert_notification`: the group and
the alerts it was told fire, Alertmanager's notification log): after a restart a group sends only
what changed, or its repeat once `repeat_interval` has passed, rather than everything again. The
delivery log (attempts and outcomes) lives in the actor's memory and is lost with it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import ray

from elitemon import aggregator
from elitemon.alerts._model import Alert, Notification, Status
from elitemon.alerts.routing import Matcher
from elitemon.alerts.rules import RuleFile, load_rules, loads_rules
from elitemon.alerts.service import AlertService, problems
from elitemon.alerts.signals import KnownNames, Snapshot, compute_snapshot
from elitemon.alerts.silences import Acknowledgement, Silence
from elitemon.alerts.state import Change
from elitemon.analytics.cost import gpu_models
from elitemon.producer import Producer, RaySink
from elitemon.query import select

log = logging.getLogger(__name__)

DEFAULT_RULES_PATH = Path(__file__).with_name("default_rules.yaml")
#: A rule file travels to the actor compressed, inside Ray's 100 KB limit for inline arguments.
MAX_RULES_ZLIB_BYTES = 90_000
FIRING, RESOLVED = "alert_firing", "alert_resolved"
SILENCE, ACKNOWLEDGED = "silence", "alert_acknowledged"
NOTIFIED = "alert_notification"
#: How long a silence or acknowledgement command waits for its event to be stored.
COMMAND_STORE_TIMEOUT_S = 10.0
#: How long one evaluation waits for the aggregator's answers, all its queries together. An
#: aggregator that hangs fails that round (`status()`: `failed_evaluations`, `last_error`) rather
#: than the evaluator: the next round tries again, and notifications already due go out meanwhile.
#: Prometheus's rule evaluations have a query timeout for the same reason (`query.timeout`, 2 min).
QUERY_TIMEOUT_S = 30.0


def evaluator_name(aggregator_name: str = aggregator.NAME) -> str:
    """The evaluator of the store `aggregator_name` (one per store, like the monitor controller)."""
    return "alerts" if aggregator_name == aggregator.NAME else f"alerts-{aggregator_name}"


def read_rule_file(path: str | Path | None = None) -> RuleFile:
    """Load and fully check a rule file (the default one when `path` is None): rules, settings,
    receivers, route, inhibition. Raises ValueError listing every problem with its line."""
    rule_file = load_rules(path or DEFAULT_RULES_PATH, known_names=KnownNames())
    found = problems(rule_file)
    if found:
        raise ValueError("\n".join(str(problem) for problem in found))
    return rule_file


class AlertEvaluator:
    """Evaluates a rule file (its zlib-compressed bytes) in a background thread; made by `start_alerts`."""

    def __init__(
        self, rules_zlib: bytes, *, filename: str = "rules.yaml", aggregator_name: str = aggregator.NAME
    ) -> None:
        text = zlib.decompress(rules_zlib).decode()
        rule_file = loads_rules(text, known_names=KnownNames(), filename=filename)
        self._service = AlertService(rule_file)
        self._aggregator = aggregator.get_aggregator(name=aggregator_name)
        self._producer = Producer(RaySink(name=aggregator_name), name="alerts", max_delay_s=0.2)
        # Commands have a producer of their own: its flush confirms their events alone, where the
        # alerts' would also report an alert event refused since its previous flush.
        self._commands = Producer(RaySink(name=aggregator_name), name="alerts-commands")
        self._interval_s = self._service.settings.evaluation_interval_s
        # One evaluation at a time, its queries and its step in order. The queries are made outside
        # `_lock`, which guards the alert state: reads and notifications never wait for the store.
        self._evaluating = threading.Lock()
        self._lock = threading.Lock()  # one state change (step and record) or flush at a time
        self._stats: dict[str, Any] = {
            "started_at": time.time(),
            "evaluations": 0,
            "failed_evaluations": 0,
            "notifications": 0,
            "last_error": None,
            "signal_errors": {},
        }
        self._restore()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="elitemon-alerts", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        next_evaluation = time.time()
        while not self._stop.is_set():
            try:
                if time.time() >= next_evaluation:
                    next_evaluation = time.time() + self._interval_s
                    self.evaluate_now()
                else:
                    self.flush_now()
            except Exception as error:  # a failed round (aggregator restarting) is retried next round
                self._stats["failed_evaluations"] += 1
                self._stats["last_error"] = repr(error)
                log.exception("alert evaluation failed")
                # A round that waited QUERY_TIMEOUT_S (past the next evaluation) still sends what is
                # due, and the next round waits an interval: else failed rounds would follow one
                # another, and no due notification would go out while the aggregator hangs.
                next_evaluation = max(next_evaluation, time.time() + self._interval_s)
                self._flush_quietly()
            due = self._service.router.next_due()
            wake_at = next_evaluation if due is None else min(next_evaluation, due)
            self._wake.wait(max(0.0, wake_at - time.time()))
            self._wake.clear()

    def evaluate_now(self) -> dict:
        """Evaluate every rule now, record the changes and send what is due; returns a summary.
        Raises ray's GetTimeoutError when the aggregator has not answered within QUERY_TIMEOUT_S."""
        with self._evaluating:
            snapshot = self._snapshot()
            with self._lock:
                evaluation = self._service.evaluate(snapshot)
                self._record(evaluation.changes)
                sent = self._service.flush()
                self._record_sent(sent)
                self._stats["evaluations"] += 1
                self._stats["notifications"] += len(sent)
                self._stats["signal_errors"] = dict(snapshot.errors)
                self._stats["last_evaluation"] = snapshot.now
        return {
            "firing": sum(a.status is Status.FIRING for a in evaluation.alerts),
            "changes": [_change_row(change) for change in evaluation.changes],
            "notifications": len(sent),
        }

    def _flush_quietly(self) -> None:
        try:
            self.flush_now()
        except Exception:
            log.exception("sending due notifications failed")

    def flush_now(self) -> int:
        """Send the notifications that are due now; returns how many."""
        with self._lock:
            sent = self._service.flush()
            self._record_sent(sent)
            self._stats["notifications"] += len(sent)
        return len(sent)

    # ------------------------------------------------------------------ queries and commands

    def alerts(self) -> list[dict]:
        """Pending and firing alert instances, firing first.

        Read between state changes, never inside one: a state shown here has had its change
        recorded, so `flush_events` after it puts that change in the store. (Read mid-change, a
        resolve could show before its event was written, and the flush find nothing to wait for.)
        It does not wait for an evaluation's queries to the aggregator."""
        with self._lock:
            return [
                {
                    "alertname": i.rule,
                    "state": i.state.value,
                    "labels": dict(i.labels),
                    "value": i.value,
                    "active_since": i.active_since,
                    "fired_at": i.fired_at,
                    "fingerprint": i.fingerprint,
                    "silenced_by": self._service.silences.is_silenced(_probe(i.labels)),
                }
                for i in self._service.engine.instances()
            ]

    def silence(
        self,
        matchers: Sequence[str],
        *,
        ends_at: float,
        created_by: str,
        comment: str,
        starts_at: float | None = None,
    ) -> str:
        """Add a silence (Alertmanager matchers such as `node="10.0.0.5"`); returns its id."""
        parsed = [Matcher.parse(text) for text in matchers]
        silence_id = self._service.silences.add(
            parsed, ends_at=ends_at, created_by=created_by, comment=comment, starts_at=starts_at
        )
        self._wake.set()
        self._store_command(SILENCE, _silence_payload(self._service.silences.get(silence_id)), f"silence {silence_id}")
        return silence_id

    def expire_silence(self, silence_id: str) -> None:
        self._service.silences.expire(silence_id)
        expired = self._service.silences.get(silence_id)
        self._store_command(SILENCE, _silence_payload(expired), f"the expiry of silence {silence_id}")

    def silences(self, active_only: bool = False) -> list[dict]:
        now = time.time()
        return [
            {**_silence_payload(s), "state": s.state(now).name.lower()}
            for s in self._service.silences.list(active_only=active_only)
        ]

    def acknowledge(self, fingerprint: str, by: str, comment: str, until: float | None = None) -> None:
        """Stop repeat notifications of a firing alert until it resolves (or `until`)."""
        ack = self._service.acks.acknowledge(fingerprint, by, comment, until=until)
        self._store_command(ACKNOWLEDGED, dataclasses.asdict(ack), f"the acknowledgement of {fingerprint}")

    def acknowledgements(self) -> list[dict]:
        """The acknowledgements in force, oldest first: fingerprint, by, comment, at, until."""
        return [dataclasses.asdict(ack) for ack in self._service.acks.list()]

    def deliveries(self, receiver: str | None = None, limit: int | None = None) -> list[dict]:
        """The delivery log, oldest first: receiver, attempt, outcome, HTTP status, error."""
        return [record.as_dict() for record in self._service.dispatcher.log(receiver, limit)]

    def receivers(self) -> dict[str, list[dict]]:
        """Each receiver's integrations, secrets masked."""
        return {name: [i.describe() for i in integrations] for name, integrations in self._service.receivers.items()}

    def status(self) -> dict:
        return {
            **self._stats,
            "rules": [rule.name for rule in self._service.rule_file.rules],
            "interval_s": self._interval_s,
            "queued_deliveries": self._service.dispatcher.queued,
            "producer_rejects": dict(self._producer.stats().rejects),
        }

    def flush_events(self, timeout_s: float = 10.0) -> bool:
        """Wait until the recorded alert events are in the store."""
        return self._producer.flush(timeout_s)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self._service.close()
        self._producer.close(timeout=10)
        self._commands.close(timeout=10)

    # ------------------------------------------------------------------ internals

    def _snapshot(self) -> Snapshot:
        now = time.time()
        deadline = time.monotonic() + QUERY_TIMEOUT_S
        settings = self._service.settings.signals
        wanted = self._service.signal_names
        recent = self._rows(select("samples", start=now - settings.lookback_s), deadline)
        heartbeats = self._latest(select("samples", metric="heartbeat"), deadline)
        scores = (
            self._rows(select("samples", kind="agent", metric=settings.score_metric), deadline)
            if "no_improvement_for_generations" in wanted
            else recent.iloc[0:0]
        )
        models = gpu_models(self._rows(select("events", type="gpu_info"), deadline)) if "hourly_cost" in wanted else {}
        return compute_snapshot(
            recent, heartbeats, scores, now=now, settings=settings, wanted=wanted, gpu_models=models
        )

    def _rows(self, selection, deadline: float | None = None) -> pd.DataFrame:
        """The selected rows, waiting until `deadline` (time.monotonic()) or QUERY_TIMEOUT_S from now."""
        deadline = time.monotonic() + QUERY_TIMEOUT_S if deadline is None else deadline
        return ray.get(self._aggregator.rows.remote(selection), timeout=_left(deadline)).to_pandas()

    def _latest(self, selection, deadline: float) -> pd.DataFrame:
        return ray.get(self._aggregator.latest.remote(selection), timeout=_left(deadline)).to_pandas()

    def _record(self, changes: Sequence[Change]) -> None:
        if changes:
            self._producer.write_rows("events", [_change_row(change) for change in changes])

    def _record_sent(self, notifications: Sequence[Notification]) -> None:
        """Each notification handed to its receiver, as Alertmanager's notification log keeps it: the
        group and the alerts it was told fire, so a restart does not notify them again."""
        now = time.time()  # the service's clock
        rows = [
            {
                "ts": now,
                "type": NOTIFIED,
                "payload": json.dumps(
                    {
                        "receiver": n.receiver,
                        "group_key": n.group_key,
                        "firing": [a.fingerprint for a in n.alerts if a.status is Status.FIRING],
                        "at": now,
                    }
                ),
            }
            for n in notifications
        ]
        if rows:
            self._producer.write_rows("events", rows)

    def _store_command(self, kind: str, payload: dict, what: str) -> None:
        """Record a silence or acknowledgement (`what` it is, for the error), and wait until it is
        stored: a restart right after the command returns must not lose it. A ConnectionError if the
        store does not confirm it (the change is in force, and its event still queued)."""
        self._commands.write_rows("events", [{"ts": time.time(), "type": kind, "payload": json.dumps(payload)}])
        if not self._commands.flush(COMMAND_STORE_TIMEOUT_S):
            raise ConnectionError(
                f"{what} is in force, but the store did not confirm it within {COMMAND_STORE_TIMEOUT_S} s;"
                " until it does, a restart of the evaluator would lose it"
            )

    def _replay(self, kind: str, restore: Callable[[dict], None]) -> None:
        """`restore` each `kind` event's payload (the stores resolve their order). One that cannot be
        read (not written by this actor) is logged and skipped: it must not stop the restart."""
        for payload in self._rows(select("events", type=kind))["payload"]:
            try:
                restore(json.loads(payload))
            except (TypeError, ValueError, KeyError):
                log.warning("skipping a %s event that cannot be read: %.200r", kind, payload)

    def _restore(self) -> None:
        """Fire on the alerts whose last recorded event is `alert_firing`, and put back the silences
        and acknowledgements as last recorded (see the module docstring)."""
        self._replay(SILENCE, lambda record: self._service.silences.restore(Silence(**record)))
        self._replay(ACKNOWLEDGED, lambda record: self._service.acks.restore(Acknowledgement(**record)))
        events = self._rows(select("events", type=[FIRING, RESOLVED]))
        last: dict[str, dict] = {}
        for kind, payload in zip(events["type"], events["payload"], strict=True):
            record = json.loads(payload)
            last[record["fingerprint"]] = {**record, "type": kind}
        rules = {rule.name for rule in self._service.rule_file.rules}
        firing = [
            Alert(
                labels=r["labels"],
                annotations=r["annotations"],
                status=Status.FIRING,
                starts_at=r["starts_at"],
                value=r["value"],
            )
            for r in last.values()
            if r["type"] == FIRING and r["labels"].get("alertname") in rules
        ]
        self._service.engine.restore(firing, now=time.time())
        self._service.router.ingest(firing)
        notified: dict[str, dict] = {}  # the latest notification of each group

        def keep_latest(record: dict) -> None:
            group_key, at, fingerprints = record["group_key"], float(record["at"]), list(record["firing"])
            if group_key not in notified or at >= notified[group_key]["at"]:
                notified[group_key] = {"at": at, "firing": fingerprints}

        self._replay(NOTIFIED, keep_latest)
        for group_key, record in notified.items():
            self._service.router.restore_notified(group_key, record["firing"], record["at"])


def _silence_payload(silence: Silence) -> dict:
    """A silence as plain data, its matchers as text: what its event stores and the listing shows."""
    return {**dataclasses.asdict(silence), "matchers": [str(m) for m in silence.matchers]}


def _change_row(change: Change) -> dict:
    alert = change.alert
    payload = {
        "alertname": alert.name,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "value": alert.value,
        "starts_at": alert.starts_at,
        "ends_at": alert.ends_at,
        "fingerprint": alert.fingerprint,
    }
    return {
        "ts": alert.ends_at if alert.ends_at is not None else alert.starts_at,
        "type": FIRING if alert.status is Status.FIRING else RESOLVED,
        "agent": alert.labels.get("agent"),
        "node": alert.labels.get("node"),
        "payload": json.dumps(payload),
    }


def _left(deadline: float) -> float:
    """Seconds until `deadline` (time.monotonic()), at least 0: a timeout for ray.get."""
    return max(0.0, deadline - time.monotonic())


def _probe(labels) -> Alert:
    return Alert(labels=labels, annotations={}, status=Status.FIRING, starts_at=0.0)


def start_alerts(
    rules: str | Path | None = None,
    *,
    aggregator_name: str = aggregator.NAME,
    name: str | None = None,
    detached: bool = False,
    ready_timeout_s: float = 60.0,
) -> Any:
    """Check the rule file here (errors raise in the caller, with lines), then start (or attach
    to) the evaluator beside the aggregator. Keep the handle unless `detached`."""
    path = Path(rules) if rules is not None else DEFAULT_RULES_PATH
    read_rule_file(path)
    # Constructor arguments over Ray's inline limit go to the object store, owned by this driver:
    # once a short-lived driver (the CLI) exits, the detached actor could no longer restart.
    rules_zlib = zlib.compress(path.read_bytes(), 9)
    if len(rules_zlib) > MAX_RULES_ZLIB_BYTES:
        raise ValueError(f"{path}: {len(rules_zlib):,} bytes compressed, over {MAX_RULES_ZLIB_BYTES:,}: split it")
    handle = (
        ray.remote(AlertEvaluator)
        .options(
            name=name or evaluator_name(aggregator_name),
            namespace=aggregator.NAMESPACE,
            get_if_exists=True,
            num_cpus=0,
            max_restarts=-1,
            max_concurrency=4,
            lifetime="detached" if detached else None,
        )
        .remote(rules_zlib, filename=path.name, aggregator_name=aggregator_name)
    )
    ray.get(handle.status.remote(), timeout=ready_timeout_s)
    return handle
