"""Alerting benchmark: threshold crossing to notification at the receiver, beside vmalert; evaluation cost.

    python benchmarks/alerts.py            # 30 crossings at a 1 s interval, 10 at 15 s; 1,000 rules x 1,000 series
    python benchmarks/alerts.py --quick    # a small run that checks the benchmark works (< 30 s)

What it measures, all in one run:
- latency, elitemon: a local Ray, an aggregator and the alert evaluator (`start_alerts`) reading a
  rule file `agent.bench_value < 10` per agent, routed with `group_wait: 0s`, `group_interval: 50ms`
  and grouped per agent to a webhook receiver: an HTTP server in this process that stamps every POST
  on arrival. Each crossing has a series of its own (created above the threshold before the clock
  starts); a row below the threshold is handed to a `Producer` (default batching delay, 0.2 s) at a
  random time, the firing notification is awaited, and a row above it is handed over at a random
  moment after that (so neither write is in step with the evaluations), then the resolve. Latency is
  arrival time minus hand-over time, p50/p99/max, for firing and resolve. Expected: the producer's
  batching + on average half an interval until the next evaluation + the evaluation + delivery.
- latency, the peer: VictoriaMetrics (the same samples through `/api/v1/import/prometheus`) and
  vmalert evaluating `bench_value < 10` (`for: 0s`) at the same interval, `-notifier.url` pointing at
  a server in this process that stamps its POSTs to `/api/v2/alerts` (what an Alertmanager receives).
  vmalert resends firing alerts every evaluation, so a crossing counts its first firing POST; a POST
  whose alert has `endsAt` not after its arrival is the resolve. For a fair comparison
  VictoriaMetrics runs with `-search.latencyOffset=0s` (default 30 s: recent samples would be
  invisible to queries for 30 s) and vmalert with `-datasource.queryTimeAlignment=false` (default on:
  query times are rounded down to the interval, which hides samples newer than the rounded time until
  the next evaluation). VictoriaMetrics' own ingestion-to-query delay is measured beside it (new
  samples become searchable when its buffers flush, about every second in 1.79; no flag changes that).
  Alertmanager's grouping is not in the peer's path: vmalert's POST is what is timed.
- evaluation cost: 1,000 rules over 1,000 series (10 agent metrics x 100 agents; each rule reads one
  metric per agent, so 100,000 instance evaluations). Timed, median of `--repeat`, wall and CPU:
  `AlertEngine.evaluate(snapshot)`; `compute_snapshot` from the lookback window's samples
  (1,000 series x 300 s at 1 Hz, as the aggregator returns them); the query of that window through
  the aggregator; one full round of the evaluator actor (`evaluate_now`: query, snapshot, evaluate,
  record). The per-rule cost against the number of series of the signal it reads shows how
  `Snapshot.instances`/`value` scale. The peer: vmalert's own `vmalert_iteration_duration_seconds`
  for the same 1,000 rules over the same samples in VictoriaMetrics; both must fire the same number
  of alerts before any figure is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd
import pyarrow as pa
import ray
from _net import free_port, wait_http

from elitemon.aggregator import start_aggregator
from elitemon.alerts._model import Severity, Status
from elitemon.alerts.evaluator import start_alerts
from elitemon.alerts.expr import parse
from elitemon.alerts.rules import Per, Rule, loads_rules
from elitemon.alerts.signals import KnownNames, Reduce, Signal, SignalSettings, Snapshot, compute_snapshot
from elitemon.alerts.state import AlertEngine
from elitemon.config import StoreConfig
from elitemon.producer import Producer, RaySink
from elitemon.query import select
from elitemon.schema import batch_from_columns

THRESHOLD = 10.0
LOW, HIGH = 3.0, 50.0  # a crossing writes LOW (alert), a recovery HIGH (resolve)
METRIC = "bench_value"
NODE = "127.0.0.1"
PROBE = "bench_probe"

ELITEMON_RULES = """\
settings:
  evaluation_interval: {interval}
alert_rules:
  bench_crossing:
    threshold: "agent.{metric} < {threshold:g}"
    severity: HIGH
    action: "none: a benchmark"
    per: agent
receivers:
  - name: bench
    webhook_configs: [{{url: "{url}/alerts"}}]
route:
  receiver: bench
  group_by: [alertname, agent]
  group_wait: 0s
  group_interval: 50ms
  repeat_interval: 1h
"""

VMALERT_RULES = """\
groups:
  - name: bench
    interval: {interval}
    rules:
      - alert: bench_crossing
        expr: {metric} < {threshold:g}
        for: 0s
"""


# ---------------------------------------------------------------------------------- the receivers


@dataclass(frozen=True)
class Arrival:
    """One alert in a POST that reached a receiver: when (wall clock), which series, which status."""

    at: float
    series: str
    status: Status


def webhook_arrivals(at: float, body: bytes) -> list[Arrival]:
    """elitemon's webhook: Alertmanager's v4 body, every alert with its status."""
    return [Arrival(at, a["labels"]["agent"], Status(a["status"])) for a in json.loads(body)["alerts"]]


def alertmanager_arrivals(at: float, body: bytes) -> list[Arrival]:
    """vmalert's POST to `/api/v2/alerts`: a firing alert ends in the future, a resolved one has ended."""
    return [
        Arrival(at, a["labels"]["agent"], Status.RESOLVED if _rfc3339(a["endsAt"]) <= at else Status.FIRING)
        for a in json.loads(body)
    ]


def no_arrivals(at: float, body: bytes) -> list[Arrival]:
    return []


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)")


def _rfc3339(text: str) -> float:
    """Epoch seconds of an RFC 3339 time with any number of fraction digits (Go writes nine)."""
    whole, fraction, zone = _RFC3339.fullmatch(text).groups()
    zone = "+00:00" if zone == "Z" else zone
    return datetime.fromisoformat(whole + zone).timestamp() + float(fraction or 0)


class Inbox:
    """A local HTTP server that stamps each POST with its arrival time (before reading the body) and
    keeps the alerts it carried, parsed by `parse`."""

    def __init__(self, parse_body: Callable[[float, bytes], list[Arrival]]) -> None:
        self.arrivals: list[Arrival] = []
        self.posts = 0
        self._changed = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(parse_body))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def since(self, index: int) -> list[Arrival]:
        with self._changed:
            return self.arrivals[index:]

    def wait(self, index: int, timeout_s: float) -> None:
        """Return when more than `index` arrivals are kept, or after `timeout_s`."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.arrivals) > index, max(0.0, timeout_s))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _keep(self, arrivals: list[Arrival]) -> None:
        with self._changed:
            self.posts += 1
            self.arrivals.extend(arrivals)
            self._changed.notify_all()

    def _handler(self, parse_body: Callable[[float, bytes], list[Arrival]]) -> type[BaseHTTPRequestHandler]:
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                at = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                inbox._keep(parse_body(at, body))

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


# ---------------------------------------------------------------------------------- crossings


@dataclass
class Crossing:
    """One series' trip below the threshold and back; times are epoch seconds."""

    series: str
    due: float
    crossed: float | None = None  # the row below the threshold was handed over
    fired: float | None = None  # the firing notification arrived
    clear_due: float | None = None
    cleared: float | None = None  # the row above the threshold was handed over
    resolved: float | None = None  # the resolve arrived


@dataclass(frozen=True)
class Target:
    """A system under test: `write(series, value)` hands one sample over and returns when (epoch s)."""

    name: str
    write: Callable[[str, float], float]
    inbox: Inbox
    breakdown: Callable[[], dict]


def series_names(count: int) -> list[str]:
    return [f"c{i}" for i in range(count)]


def run_crossings(
    target: Target, *, count: int, interval_s: float, spacing_s: float, seed: int, timeout_s: float
) -> list[Crossing]:
    """Cross the threshold once per series at random times `spacing_s` apart on average; recover each
    a random part of an interval after its firing arrived; return when every resolve has arrived."""
    rng = np.random.default_rng(seed)
    start = time.time() + 0.2
    offsets = np.sort(rng.uniform(0, count * spacing_s, count))
    crossings = {
        name: Crossing(name, start + offset) for name, offset in zip(series_names(count), offsets, strict=True)
    }
    deadline = start + count * spacing_s + timeout_s
    seen = 0
    while any(c.resolved is None for c in crossings.values()):
        now = time.time()
        if now > deadline:
            done = sum(c.resolved is not None for c in crossings.values())
            raise RuntimeError(f"{target.name}: {done} of {count} crossings resolved within {timeout_s:.0f}s")
        for c in crossings.values():
            if c.crossed is None and now >= c.due:
                c.crossed = target.write(c.series, LOW)
            elif c.cleared is None and c.clear_due is not None and now >= c.clear_due:
                c.cleared = target.write(c.series, HIGH)
        for arrival in target.inbox.since(seen):
            seen += 1
            _note(crossings.get(arrival.series), arrival, interval_s, rng)
        upcoming = [c.due for c in crossings.values() if c.crossed is None]
        upcoming += [c.clear_due for c in crossings.values() if c.cleared is None and c.clear_due is not None]
        target.inbox.wait(seen, min([0.05, *(t - time.time() for t in upcoming)]))
    return list(crossings.values())


def _note(crossing: Crossing | None, arrival: Arrival, interval_s: float, rng: np.random.Generator) -> None:
    if crossing is None:
        return
    if arrival.status is Status.FIRING and crossing.crossed is not None and crossing.fired is None:
        if arrival.at >= crossing.crossed:
            crossing.fired = arrival.at
            crossing.clear_due = arrival.at + rng.uniform(0, interval_s)
    elif arrival.status is Status.RESOLVED and crossing.cleared is not None and crossing.resolved is None:
        if arrival.at >= crossing.cleared:
            crossing.resolved = arrival.at


def latency_figures(crossings: list[Crossing]) -> dict:
    firing = np.array([c.fired - c.crossed for c in crossings])
    resolve = np.array([c.resolved - c.cleared for c in crossings])
    return {
        "crossings": len(crossings),
        "firing_s": _spread(firing),
        "resolve_s": _spread(resolve),
    }


def _spread(values: np.ndarray) -> dict:
    return {
        "p50": float(np.percentile(values, 50)),
        "p99": float(np.percentile(values, 99)),
        "max": float(values.max()),
        "min": float(values.min()),
        "mean": float(values.mean()),
    }


# ---------------------------------------------------------------------------------- elitemon


def _agent_row(series: str, value: float, ts: float) -> dict:
    return {
        "ts": ts,
        "kind": "agent",
        "node": NODE,
        "source": series,
        "generation": 0,
        "metric": METRIC,
        "value": value,
    }


@contextlib.contextmanager
def elitemon_target(
    tmp: Path, name: str, *, interval_s: float, series: list[str], producer_delay_s: float
) -> Iterator[Target]:
    with contextlib.ExitStack() as stack:
        inbox = Inbox(webhook_arrivals)
        stack.callback(inbox.close)
        aggregator = start_aggregator(StoreConfig(data_dir=tmp / name), name=name)
        stack.callback(ray.kill, aggregator, no_restart=True)
        setup = Producer(RaySink(name=name), name="bench-setup")
        now = time.time()
        setup.write_rows("samples", [_agent_row(s, HIGH, now) for s in series])  # every series exists first
        if not setup.close(timeout=30):
            raise RuntimeError("the aggregator did not take the first samples")
        rules = tmp / f"{name}.yaml"
        text = ELITEMON_RULES.format(interval=f"{interval_s:g}s", metric=METRIC, threshold=THRESHOLD, url=inbox.url)
        rules.write_text(text)
        evaluator = start_alerts(rules, aggregator_name=name)
        stack.callback(_stop_evaluator, evaluator)
        producer = Producer(RaySink(name=name), name="bench-crossings", max_delay_s=producer_delay_s)
        stack.callback(producer.close, timeout=10)

        def write(series_name: str, value: float) -> float:
            handed = time.time()
            producer.write_rows("samples", [_agent_row(series_name, value, handed)])
            return handed

        def breakdown() -> dict:
            latencies = np.asarray(producer.stats().latencies_s)
            return {"handover_to_queryable_s": _spread(latencies)} if latencies.size else {}

        yield Target("elitemon", write, inbox, breakdown)


def _stop_evaluator(evaluator) -> None:
    error = ray.get(evaluator.status.remote())["last_error"]
    if error:
        print(f"  (the evaluator reported: {error})", file=sys.stderr)
    ray.kill(evaluator, no_restart=True)


# ---------------------------------------------------------------------------------- the peer


def peer_missing() -> str | None:
    """Why the VictoriaMetrics + vmalert peer cannot run here (None when it can)."""
    missing = [tool for tool in ("victoria-metrics", "vmalert") if shutil.which(tool) is None]
    return f"{' and '.join(missing)} not installed (apt-get install victoria-metrics)" if missing else None


@contextlib.contextmanager
def _process(args: list[str], log: Path, health_url: str) -> Iterator[subprocess.Popen]:
    with log.open("w") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        try:
            wait_http(health_url)
        except RuntimeError as error:
            raise RuntimeError(f"{error}; {args[0]} said: {log.read_text()[-1500:]}") from None
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextlib.contextmanager
def victoria_metrics(tmp: Path, name: str) -> Iterator[int]:
    port = free_port()
    args = [
        "victoria-metrics",
        f"-storageDataPath={tmp / name}",
        f"-httpListenAddr=127.0.0.1:{port}",
        "-search.latencyOffset=0s",
    ]
    with _process(args, tmp / f"{name}.log", f"http://127.0.0.1:{port}/health"):
        yield port


@contextlib.contextmanager
def vmalert(tmp: Path, name: str, *, rules: str, vm_port: int, notifier: str, interval_s: float) -> Iterator[int]:
    port = free_port()
    rule_file = tmp / f"{name}.yaml"
    rule_file.write_text(rules)
    args = [
        "vmalert",
        f"-rule={rule_file}",
        f"-datasource.url=http://127.0.0.1:{vm_port}",
        f"-notifier.url={notifier}",
        f"-httpListenAddr=127.0.0.1:{port}",
        f"-evaluationInterval={interval_s:g}s",
        "-datasource.queryTimeAlignment=false",
    ]
    with _process(args, tmp / f"{name}.log", f"http://127.0.0.1:{port}/health"):
        yield port


def _vm_import(port: int, lines: list[str]) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/import/prometheus", data="\n".join(lines).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        if response.status != 204:
            raise RuntimeError(f"VictoriaMetrics answered {response.status} to an import")


def _vm_query(port: int, query: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode(
        {"query": query, "time": f"{time.time():.3f}"}
    )
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())["data"]["result"]


def _vm_flush(port: int) -> None:
    urllib.request.urlopen(f"http://127.0.0.1:{port}/internal/force_flush", timeout=60).read()


def _vm_wait_series(port: int, selector: str, count: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = _vm_query(port, f"count({selector})")
        found = int(float(result[0]["value"][1])) if result else 0
        if found == count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"VictoriaMetrics shows {found} of {count} series of {selector}")
        time.sleep(0.1)


def vm_visibility(port: int, probes: int, seed: int) -> list[float]:
    """Seconds from an import's start until an instant query returns the new sample, `probes` times."""
    rng = np.random.default_rng(seed)
    delays = []
    for probe in range(probes):
        time.sleep(rng.uniform(0, 1))  # not in step with VictoriaMetrics' flushes
        handed = time.time()
        _vm_import(port, [f'{PROBE}{{probe="x"}} {probe} {int(handed * 1000)}'])
        while True:
            result = _vm_query(port, f'{PROBE}{{probe="x"}}')
            if result and float(result[0]["value"][1]) == probe:
                delays.append(time.time() - handed)
                break
            time.sleep(0.002)
    return delays


@contextlib.contextmanager
def vmalert_target(tmp: Path, name: str, *, interval_s: float, series: list[str], probes: int) -> Iterator[Target]:
    inbox = Inbox(alertmanager_arrivals)
    try:
        with victoria_metrics(tmp, f"{name}-vm") as vm_port:
            # Every series exists before the clock starts (a new one took 8-10 s to become queryable
            # here without the forced flush); the probe's too.
            now_ms = int(time.time() * 1000)
            lines = [f'{METRIC}{{agent="{s}"}} {HIGH} {now_ms}' for s in series]
            _vm_import(vm_port, [*lines, f'{PROBE}{{probe="x"}} -1 {now_ms}'])
            _vm_flush(vm_port)
            _vm_wait_series(vm_port, f'{{__name__=~"{METRIC}|{PROBE}"}}', len(series) + 1)
            rules = VMALERT_RULES.format(interval=f"{interval_s:g}s", metric=METRIC, threshold=THRESHOLD)
            with vmalert(tmp, name, rules=rules, vm_port=vm_port, notifier=inbox.url, interval_s=interval_s):

                def write(series_name: str, value: float) -> float:
                    handed = time.time()
                    _vm_import(vm_port, [f'{METRIC}{{agent="{series_name}"}} {value} {int(handed * 1000)}'])
                    return handed

                def breakdown() -> dict:
                    delays = np.asarray(vm_visibility(vm_port, probes, seed=1)) if probes else np.array([])
                    return {"import_to_queryable_s": _spread(delays)} if delays.size else {}

                yield Target("vmalert", write, inbox, breakdown)
    finally:
        inbox.close()


def bench_latency(system: str, tmp: Path, args: argparse.Namespace, *, interval_s: float, count: int) -> dict:
    series = series_names(count)
    spacing_s = args.spacing or max(1.5, interval_s / 5)
    name = f"{system}-{interval_s:g}s"
    if system == "elitemon":
        target = elitemon_target(
            tmp, f"aggregator-bench-alerts-{interval_s:g}", interval_s=interval_s, series=series,
            producer_delay_s=args.producer_delay,
        )  # fmt: skip
    else:
        target = vmalert_target(tmp, name, interval_s=interval_s, series=series, probes=args.probes)
    with target as running:
        crossings = run_crossings(
            running, count=count, interval_s=interval_s, spacing_s=spacing_s, seed=count, timeout_s=4 * interval_s + 30
        )
        figures = {"system": system, "interval_s": interval_s, **latency_figures(crossings), **running.breakdown()}
    return figures


# ---------------------------------------------------------------------------------- evaluation cost


def cost_samples(agents: int, metrics: int, window_s: int, now: float, seed: int = 0) -> pa.RecordBatch:
    """`agents` x `metrics` series, one sample a second over the last `window_s` seconds."""
    rng = np.random.default_rng(seed)
    per_tick = agents * metrics
    rows = per_tick * window_s
    agent_of_row = np.tile(np.repeat(np.arange(agents), metrics), window_s)
    metric_of_row = np.tile(np.arange(metrics), agents * window_s)
    return batch_from_columns(
        "samples",
        {
            "ts": now - window_s + np.repeat(np.arange(window_s), per_tick).astype(float),
            "kind": ["agent"] * rows,
            "node": [f"10.0.0.{a % 8}" for a in agent_of_row],
            "source": [f"agent-{a}" for a in agent_of_row],
            "generation": np.zeros(rows, dtype=np.int64),
            "metric": [f"m{m}" for m in metric_of_row],
            "value": np.round(rng.uniform(0, 100, rows), 3),
        },
    )


def cost_thresholds(rules: int, metrics: int) -> list[tuple[int, float]]:
    """Rule k reads metric k % metrics and fires above a threshold between 98.0 and 99.8 (about 1%
    of the instances fire)."""
    return [(k % metrics, 98.0 + 0.2 * ((k // metrics) % 10)) for k in range(rules)]


def elitemon_cost_rules(thresholds: list[tuple[int, float]]) -> str:
    lines = ["settings:", "  evaluation_interval: 1h", "alert_rules:"]
    for k, (metric, threshold) in enumerate(thresholds):
        lines += [
            f"  cost_{k}:",
            f'    threshold: "agent.m{metric} > {threshold:.2f}"',
            "    severity: LOW",
            '    action: "none: a benchmark"',
            "    per: agent",
        ]
    return "\n".join(lines) + "\n"


def vmalert_cost_rules(thresholds: list[tuple[int, float]], interval_s: float) -> str:
    lines = ["groups:", "  - name: cost", f"    interval: {interval_s:g}s", "    rules:"]
    for k, (metric, threshold) in enumerate(thresholds):
        lines += [f"      - alert: cost_{k}", f"        expr: agent_m{metric} > {threshold:.2f}"]
    return "\n".join(lines) + "\n"


def _timed(function: Callable[[], object], repeat: int) -> tuple[float, float, object]:
    """Median wall and median thread CPU seconds of `repeat` calls (after one warm-up), and the last result."""
    result = function()
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.thread_time()
        result = function()
        cpus.append(time.thread_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return statistics.median(walls), statistics.median(cpus), result


def bench_cost(tmp: Path, args: argparse.Namespace) -> dict:
    """elitemon's evaluation cost in-process, then one full round of the evaluator actor."""
    now = time.time()
    batch = cost_samples(args.agents, args.metrics, args.window, now)
    thresholds = cost_thresholds(args.rules, args.metrics)
    rule_file = loads_rules(elitemon_cost_rules(thresholds), known_names=KnownNames(), filename="cost.yaml")
    wanted = {name for rule in rule_file.rules for name in rule.expression.names}
    recent = pa.Table.from_batches([batch]).to_pandas()
    empty = recent.iloc[0:0]
    settings = SignalSettings()
    snapshot_s, snapshot_cpu_s, snapshot = _timed(
        lambda: compute_snapshot(recent, empty, empty, now=now, settings=settings, wanted=wanted), args.repeat
    )
    series = sum(len(signal.series) for signal in snapshot.signals.values())
    if series != args.agents * args.metrics:
        raise RuntimeError(f"the snapshot holds {series} series, expected {args.agents * args.metrics}")
    engine = AlertEngine(rule_file.rules)
    evaluate_s, evaluate_cpu_s, evaluation = _timed(lambda: engine.evaluate(snapshot), args.repeat)
    firing = sum(a.status is Status.FIRING for a in evaluation.alerts)
    figures = {
        "rules": args.rules,
        "series": series,
        "instances": args.rules * args.agents,
        "firing": firing,
        "snapshot_s": snapshot_s,
        "snapshot_cpu_s": snapshot_cpu_s,
        "snapshot_rows": batch.num_rows,
        "evaluate_s": evaluate_s,
        "evaluate_cpu_s": evaluate_cpu_s,
    }
    figures.update(_actor_round(tmp, batch, thresholds, args, expected_firing=firing))
    scaling = figures["scaling"] = bench_scaling(args.scaling, rules=args.scaling_rules, repeat=args.repeat)
    if len(scaling) > 1:
        first, last = scaling[0], scaling[-1]
        exponent = np.log(last["per_rule_s"] / first["per_rule_s"]) / np.log(last["series"] / first["series"])
        figures["scaling_exponent"] = float(exponent)
        figures["projected_1000x1000_s"] = float(last["per_rule_s"] * (1000 / last["series"]) ** exponent * 1000)
    return figures


def _actor_round(
    tmp: Path,
    batch: pa.RecordBatch,
    thresholds: list[tuple[int, float]],
    args: argparse.Namespace,
    expected_firing: int,
) -> dict:
    name = "aggregator-bench-alerts-cost"
    aggregator = start_aggregator(StoreConfig(data_dir=tmp / name), name=name)
    producer = Producer(RaySink(name=name), name="bench-cost", max_batch_rows=batch.num_rows)
    producer.write_batch("samples", batch)
    if not producer.close(timeout=120):
        raise RuntimeError("the aggregator did not take the cost samples")
    rules = tmp / "cost.yaml"
    rules.write_text(elitemon_cost_rules(thresholds))
    evaluator = start_alerts(rules, aggregator_name=name, ready_timeout_s=300)
    try:
        selection = select("samples", start=time.time() - SignalSettings().lookback_s)
        query_s, _, _ = _timed(lambda: ray.get(aggregator.rows.remote(selection)).to_pandas(), args.repeat)
        round_s, _, summary = _timed(lambda: ray.get(evaluator.evaluate_now.remote()), args.repeat)
    finally:
        ray.kill(evaluator, no_restart=True)
        ray.kill(aggregator, no_restart=True)
    if summary["firing"] != expected_firing:
        raise RuntimeError(f"the evaluator fires {summary['firing']} alerts, the engine {expected_firing}")
    return {"query_s": query_s, "round_s": round_s}


def bench_scaling(series_counts: list[int], *, rules: int, repeat: int) -> list[dict]:
    """Per-rule evaluation time against the number of series of the one signal the rules read."""
    rng = np.random.default_rng(0)
    results = []
    for count in series_counts:
        series = {
            (("agent", f"agent-{a}"), ("node", f"10.0.0.{a % 8}")): float(v)
            for a, v in enumerate(rng.uniform(0, 100, count))
        }
        snapshot = Snapshot(
            now=time.time(), signals=MappingProxyType({"agent.m0": Signal(MappingProxyType(series), Reduce.MAX)})
        )
        engine = AlertEngine(
            Rule(name=f"r{k}", expression=parse(f"agent.m0 > {99 + k * 0.01:.2f}"), severity=Severity.LOW,
                 action="none", per=Per.AGENT)
            for k in range(rules)
        )  # fmt: skip
        wall, cpu, _ = _timed(functools.partial(engine.evaluate, snapshot), repeat)
        results.append({"series": count, "rules": rules, "per_rule_s": wall / rules, "per_rule_cpu_s": cpu / rules})
    return results


def bench_vmalert_cost(tmp: Path, args: argparse.Namespace, expected_firing: int) -> dict:
    """vmalert's own iteration time for the same rules over the same samples in VictoriaMetrics."""
    now = time.time()
    batch = cost_samples(args.agents, args.metrics, args.window, now)
    columns = batch.to_pydict()
    ms = (batch.column("ts").cast(pa.int64()).to_numpy() // 1000).tolist()  # microseconds -> ms
    lines = [
        f'agent_{metric}{{agent="{source}",node="{node}"}} {value!r} {stamp}'
        for metric, source, node, value, stamp in zip(
            columns["metric"], columns["source"], columns["node"], columns["value"], ms, strict=True
        )
    ]
    thresholds = cost_thresholds(args.rules, args.metrics)
    inbox = Inbox(no_arrivals)
    try:
        with victoria_metrics(tmp, "vm-cost") as vm_port:
            for start in range(0, len(lines), 50_000):
                _vm_import(vm_port, lines[start : start + 50_000])
            _vm_flush(vm_port)
            _vm_wait_series(vm_port, '{__name__=~"agent_m.*"}', args.agents * args.metrics)
            rules = vmalert_cost_rules(thresholds, args.vmalert_interval)
            with vmalert(
                tmp, "vmalert-cost", rules=rules, vm_port=vm_port, notifier=inbox.url, interval_s=args.vmalert_interval
            ) as port:
                metrics = _wait_iterations(
                    port, args.repeat + 1, timeout_s=args.repeat * args.vmalert_interval * 4 + 120
                )
    finally:
        inbox.close()
    if metrics["firing"] != expected_firing:
        raise RuntimeError(f"vmalert fires {metrics['firing']} alerts, elitemon {expected_firing}")
    return metrics


def _wait_iterations(port: int, iterations: int, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
            text = response.read().decode()
        values = _group_metrics(text, "cost")
        if values.get("vmalert_iteration_total", 0) >= iterations:
            firing = sum(
                float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vmalert_alerts_firing{")
            )
            return {
                "iterations": int(values["vmalert_iteration_total"]),
                "iteration_mean_s": values["vmalert_iteration_duration_seconds_sum"]
                / values["vmalert_iteration_duration_seconds_count"],
                "iteration_p50_s": values['vmalert_iteration_duration_seconds{quantile="0.5"}'],
                "missed": int(values.get("vmalert_iteration_missed_total", 0)),
                "firing": int(firing),
            }
        if time.monotonic() > deadline:
            raise RuntimeError(f"vmalert ran {values.get('vmalert_iteration_total', 0)} of {iterations} iterations")
        time.sleep(0.2)


def _group_metrics(text: str, group: str) -> dict[str, float]:
    """vmalert's per-group metrics of `group`, keyed by name (plus the quantile where there is one)."""
    values = {}
    pattern = re.compile(r"(\w+)\{([^}]*)\} (\S+)")
    for line in text.splitlines():
        match = pattern.fullmatch(line)
        if match is None or f'group="{group}"' not in match[2]:
            continue
        quantile = re.search(r'quantile="([^"]+)"', match[2])
        key = f'{match[1]}{{quantile="{quantile[1]}"}}' if quantile else match[1]
        values[key] = float(match[3])
    return values


# ---------------------------------------------------------------------------------- the report


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    vm = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "victoria-metrics"], capture_output=True, text=True, check=False
    ).stdout.split("+")[0] if shutil.which("dpkg-query") else ""  # fmt: skip
    return (
        f"{os.cpu_count()} cores, {memory:.0f} GiB, {platform.system()} {platform.machine()}, Python "
        f"{platform.python_version()}, Ray {ray.__version__}, pyarrow {pa.__version__}, pandas {pd.__version__}, "
        f"VictoriaMetrics/vmalert {vm or 'unknown'}"
    )


def report(latency: list[dict], peer_note: str | None, cost: dict, peer_cost: dict | None, args) -> None:
    print(f"machine: {machine()}")
    print("\ncrossing -> notification at the receiver (arrival - hand-over), seconds")
    print(f"  {'figure':58s} {'mean':>7s} {'p50':>7s} {'p99':>7s} {'max':>7s}")
    for run in latency:
        what = f"{run['system']}, every {run['interval_s']:g} s, {run['crossings']} crossings"
        for kind in ("firing", "resolve"):
            print(f"  {what + ', ' + kind:58s} {_columns(run[f'{kind}_s'])}")
        for key, label in (
            ("handover_to_queryable_s", "of which producer batch -> queryable"),
            ("import_to_queryable_s", "of which import -> queryable (probes)"),
        ):
            if key in run:
                print(f"  {'  ' + label:58s} {_columns(run[key])}")
    if peer_note:
        print(f"  vmalert peer skipped: {peer_note}")
    print(
        f"  (elitemon: producer batching {args.producer_delay:g} s, group_wait 0s, group_interval 50ms; "
        "expected about batching + interval/2 + evaluation + delivery;\n   with the default route add "
        "group_wait (30 s) to firing and up to group_interval (5 m) to resolves, as in Alertmanager)"
    )
    print(
        f"\nevaluation cost: {cost['rules']:,} rules over {cost['series']:,} series "
        f"({args.metrics} metrics x {args.agents} agents, {cost['instances']:,} instances, {cost['firing']:,} firing), "
        f"median of {args.repeat}"
    )
    print(f"  {'figure':58s} {'wall':>9s} {'CPU':>9s}")
    rows = [
        (
            f"compute_snapshot, {cost['snapshot_rows']:,} rows of the lookback",
            cost["snapshot_s"],
            cost["snapshot_cpu_s"],
        ),
        ("AlertEngine.evaluate", cost["evaluate_s"], cost["evaluate_cpu_s"]),
        ("lookback query through the aggregator (+ to_pandas)", cost["query_s"], None),
        ("full evaluator round (evaluate_now, Ray call)", cost["round_s"], None),
    ]
    if peer_cost:
        rows.append(("vmalert iteration, same rules and samples (mean)", peer_cost["iteration_mean_s"], None))
    for label, wall, cpu in rows:
        print(f"  {label:58s} {wall * 1e3:7.1f}ms {'' if cpu is None else f'{cpu * 1e3:7.1f}ms':>9s}")
    if peer_cost:
        print(f"  elitemon round / vmalert iteration: {cost['round_s'] / peer_cost['iteration_mean_s']:.1f}x")
    scaling = cost["scaling"]
    per_rule = "  ".join(f"{s['series']:,}: {s['per_rule_s'] * 1e3:.2f} ms" for s in scaling)
    print(f"  evaluate per rule, by series of the signal it reads (per agent): {per_rule}")
    if "scaling_exponent" in cost:
        print(
            f"  scaling exponent {cost['scaling_exponent']:.2f} (2 = quadratic); 1,000 rules each over one "
            f"1,000-series signal: about {cost['projected_1000x1000_s']:,.0f} s (projected)"
        )


def _columns(spread: dict) -> str:
    return " ".join(f"{spread[key]:7.3f}" for key in ("mean", "p50", "p99", "max"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=1.0, help="evaluation interval, seconds")
    parser.add_argument("--crossings", type=int, default=30)
    parser.add_argument("--slow-interval", type=float, default=15.0, help="a second run at this interval (0: none)")
    parser.add_argument("--slow-crossings", type=int, default=10)
    parser.add_argument("--spacing", type=float, help="mean seconds between crossings (default: max(1.5, interval/5))")
    parser.add_argument("--producer-delay", type=float, default=0.2, help="the producer's max_delay_s (its default)")
    parser.add_argument("--probes", type=int, default=10, help="VictoriaMetrics import-to-queryable probes")
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--window", type=int, default=300, help="seconds of 1 Hz samples in the lookback")
    parser.add_argument("--scaling", type=int, nargs="+", default=[100, 200, 400], help="series counts")
    parser.add_argument("--scaling-rules", type=int, default=20)
    parser.add_argument("--vmalert-interval", type=float, default=5.0, help="vmalert's interval in the cost run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a small run that checks the benchmark works")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.crossings, args.slow_interval, args.probes, args.spacing = 3, 0.0, 1, 0.5
        args.rules, args.agents, args.window, args.repeat = 100, 10, 60, 1
        args.scaling, args.scaling_rules, args.vmalert_interval = [25, 50], 5, 1.0
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    peer_note = peer_missing()
    latency, peer_cost = [], None
    with tempfile.TemporaryDirectory(prefix="elitemon-bench-alerts-") as workdir:
        tmp = Path(workdir)
        runs = [(args.interval, args.crossings)] + (
            [(args.slow_interval, args.slow_crossings)] if args.slow_interval else []
        )
        for interval_s, count in runs:
            for system in ("elitemon", "vmalert") if peer_note is None else ("elitemon",):
                with _phase(f"{system}, {count} crossings at {interval_s:g} s"):
                    latency.append(bench_latency(system, tmp, args, interval_s=interval_s, count=count))
        with _phase("elitemon evaluation cost"):
            cost = bench_cost(tmp, args)
        if peer_note is None:
            with _phase("vmalert evaluation cost"):
                peer_cost = bench_vmalert_cost(tmp, args, expected_firing=cost["firing"])
    report(latency, peer_note, cost, peer_cost, args)
    if args.json:
        args.json.write_text(json.dumps({"latency": latency, "cost": cost, "vmalert_cost": peer_cost}, indent=2))
    ray.shutdown()


@contextlib.contextmanager
def _phase(what: str) -> Iterator[None]:
    """Progress on stderr, so the table on stdout stays clean."""
    started = time.perf_counter()
    yield
    print(f"  {what}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
