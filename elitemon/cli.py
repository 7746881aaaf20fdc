"""`elitemon` on the command line: start, status, query, stop, demo, report, bench, alerts.

`elitemon start` attaches to the Ray cluster at `--address` (default: the running one), or starts a
local head node with `ray start --head` when there is none, and creates the aggregator there as a
detached actor, so it keeps running after the command returns.

`elitemon demo` runs a monitored PBT job on the running cluster, or on a local Ray that lives only
as long as the command (started in-process, so no Ray processes are left behind).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv
import ray

from elitemon import __version__, aggregator
from elitemon.alerts import commands as alert_commands
from elitemon.alerts import expr
from elitemon.client import Client, attach_or_start_local_ray, connect, ensure_ray
from elitemon.config import MIN_MEMORY_BUDGET_BYTES, StoreConfig
from elitemon.query import Aggregation
from elitemon.schema import ID_COLUMNS, Kind
from elitemon.store import make_data_dir

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|TiB)?$", re.IGNORECASE)
_UNIT_BYTES = {None: 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
#: The `ray` command of this interpreter's environment, found even when that environment's bin
#: directory is not on PATH (as with `.venv/bin/elitemon start`).
_RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]
#: Every identifier column of any table, each a `--name` filter flag.
_FILTERS = tuple(dict.fromkeys(column for columns in ID_COLUMNS.values() for column in columns))


def parse_duration(text: str) -> float:
    """Seconds in '90', '30s', '5m', '1h30m', '1d', '250ms', '0.5h': the rule file's grammar."""
    try:
        return expr.parse_duration(text)
    except expr.ExpressionError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 30s, 5m, 1h30m)") from None


def parse_size(text: str) -> int:
    """Bytes in '1GiB', '512MiB', '1048576'."""
    match = _SIZE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 512MiB, 1GiB)")
    unit = match.group(2).lower() if match.group(2) else None
    return int(float(match.group(1)) * _UNIT_BYTES[unit])


def parse_memory_budget(text: str) -> int:
    """A size (`parse_size`) a store can run in: at least MIN_MEMORY_BUDGET_BYTES."""
    size = parse_size(text)
    if size < MIN_MEMORY_BUDGET_BYTES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is below the smallest memory budget, {MIN_MEMORY_BUDGET_BYTES >> 20}MiB"
        )
    return size


def parse_count(text: str) -> int:
    """A non-negative integer."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a non-negative integer: {text!r}")
    return value


#: How `parse_time` reads a time, for the help texts: an ISO time without an offset would be local
#: time to ISO 8601, and is UTC here, as the store's times are.
_TIME_FORMS = "epoch seconds, or ISO 8601; without an offset, UTC"


def parse_time(text: str) -> float:
    """Epoch seconds from epoch seconds or an ISO 8601 time (UTC unless it says otherwise)."""
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise argparse.ArgumentTypeError(f"not a time: {text!r} (epoch seconds or ISO 8601)")
        return seconds
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (epoch seconds or ISO 8601)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_generations(text: str) -> tuple[int | None, int | None]:
    """'5' -> (5, 5); '3:9' -> (3, 9); ':9' and '3:' are open-ended."""
    low, sep, high = text.partition(":")
    try:
        bounds = (int(low), int(low)) if not sep else ((int(low) if low else None), (int(high) if high else None))
    except ValueError:
        bounds = (-1, -1)
    if any(b is not None and b < 0 for b in bounds):
        raise argparse.ArgumentTypeError(f"not a generation or range: {text!r} (examples: 5, 3:9, 10:)")
    return bounds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elitemon", description="Monitoring and analytics for PBT on Ray.")
    parser.add_argument("--version", action="version", version=f"elitemon {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    start = commands.add_parser("start", help="start (or attach to) the aggregator")
    _address(start, "Ray cluster to use (default: the running one, else a local one is started)")
    start.add_argument(
        "--data-dir", help="where the store keeps its data (default: $ELITEMON_DATA_DIR or ~/.elitemon/data)"
    )
    start.add_argument("--memory-budget", type=parse_memory_budget, default=None, help="memory budget, e.g. 1GiB")
    start.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray this command starts")
    start.add_argument("--smoke", action="store_true", help="write and read back a small data set to check the path")

    status = commands.add_parser("status", help="print the aggregator's health")
    _address(status, "Ray cluster to use (default: the running one)")
    status.add_argument("--json", action="store_true", help="print JSON")

    stop = commands.add_parser("stop", help="stop the aggregator (its data stays on disk)")
    _address(stop, "Ray cluster to use (default: the running one)")
    stop.add_argument("--ray", action="store_true", help="also stop the local Ray (`ray stop`)")

    query = commands.add_parser("query", help="print a query's result")
    query.add_argument("what", choices=["samples", "latest", "events", "configs"])
    _address(query, "Ray cluster to use (default: the running one)")
    for name in _FILTERS:
        flag = f"--{name.replace('_', '-')}"
        query.add_argument(flag, dest=name, action="append", help=f"{name} to keep (repeatable)")
    since_or_start = query.add_mutually_exclusive_group()
    since_or_start.add_argument("--since", type=parse_duration, help="only the last DURATION (e.g. 10m)")
    since_or_start.add_argument("--start", type=parse_time, help=f"from this time ({_TIME_FORMS})")
    query.add_argument("--end", type=parse_time, help=f"until this time, exclusive ({_TIME_FORMS})")
    query.add_argument("--generation", type=parse_generations, help="one generation or LOW:HIGH")
    query.add_argument("--step", type=parse_duration, help="downsample samples to this step (e.g. 30s)")
    aggregations = [a.value for a in Aggregation]
    query.add_argument("--agg", choices=aggregations, default=None, help="aggregation for --step (default: mean)")
    query.add_argument("--limit", type=parse_count, default=None, help="print only the last N rows of the result")
    query.add_argument("--format", choices=["table", "csv", "json"], default="table")

    # Defaults are DemoSettings' (None: not given), so that `elitemon --help` need not import Tune.
    demo = commands.add_parser("demo", help="run a monitored PBT job of Q-learning agents (about 2 minutes)")
    _address(demo, "Ray cluster to use (default: the running one, else a local one for the demo; 'local': a new one)")
    demo.add_argument(
        "--data-dir", help="where the store keeps its data (default: $ELITEMON_DATA_DIR or ~/.elitemon/data)"
    )
    demo.add_argument("--agents", type=int, help="population size (default: 8)")
    demo.add_argument("--iterations", type=int, help="training iterations per agent (default: about 2 minutes' worth)")
    demo.add_argument("--time-budget", type=parse_duration, help="end the run after DURATION even if unfinished")
    demo.add_argument("--env", help="Taxi-v4 (default), FrozenLake-v1 or FrozenLake8x8-v1 (Gymnasium)")
    demo.add_argument("--target", type=float, help="mean return that counts as solved (default: Gymnasium's)")
    demo.add_argument("--seed", type=int, help="seed of the initial population and of the agents (default: 0)")
    demo.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray this command starts")

    report = commands.add_parser("report", help="write a self-contained HTML report of the run")
    _address(report, "Ray cluster whose aggregator to read (default: the running one, else the data directory)")
    report.add_argument("--data-dir", help="read this data directory in place, without Ray or its lock")
    report.add_argument("--out", default="report.html", help="the HTML file to write (default: report.html)")
    report.add_argument("--metric", help="the score metric (default: mean_return, or the one agent metric it can be)")
    report.add_argument("--target", type=float, help="score that counts as solved: adds target achievement")
    report.add_argument("--start", type=parse_time, help=f"only rows from this time on ({_TIME_FORMS})")

    bench = commands.add_parser("bench", help="run the benchmark suite, scored (benchmarks/run_suite.py)")
    from elitemon.bench.suite import add_arguments as add_bench_arguments  # light: the suite loads when run

    add_bench_arguments(bench)

    alert_commands.add_parser(commands, parse_duration=parse_duration, add_address=_address)
    return parser


def _address(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--address", default=None, help=text)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        commands = {
            "start": _start,
            "status": _status,
            "stop": _stop,
            "query": _query,
            "demo": _demo,
            "report": _report,
            "bench": _bench,
            "alerts": _alerts,
        }
        return commands[args.command](args)
    # OSError: ConnectionError, and files the user named (a report --out in a missing directory).
    except (OSError, ValueError, subprocess.CalledProcessError, ray.exceptions.RayError) as error:
        print(f"elitemon: {error}", file=sys.stderr)
        return 2


def _alerts(args: argparse.Namespace) -> int:
    return alert_commands.run(args, connect=lambda address: ensure_ray(address or "auto"))


def _start(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {}
    if args.data_dir:
        options["data_dir"] = args.data_dir
    if args.memory_budget:
        options["memory_budget_bytes"] = args.memory_budget
    config = StoreConfig(**options)
    _connect_or_start_ray(args.address, args.num_cpus, config.data_dir)
    handle = aggregator.start_aggregator(config, detached=True)
    client = Client(handle)
    health = client.health()
    if args.data_dir and Path(health.data_dir) != config.data_dir:
        print(
            f"elitemon: an aggregator was already running with data dir {health.data_dir}; attached to it "
            f"(--data-dir {config.data_dir} ignored; `elitemon stop` first to change it)",
            file=sys.stderr,
        )
    print(f"elitemon aggregator running on Ray at {ray.get_runtime_context().gcs_address}")
    print(f"  data dir: {health.data_dir}   rows: {health.rows}   segments: {health.segments}")
    return _smoke(client) if args.smoke else 0


def _connect_or_start_ray(address: str | None, num_cpus: int | None, data_dir: Path) -> None:
    """Connect to `address`, else to the running cluster, else start a local one (`ray start
    --head`, which outlives this command) for an aggregator over `data_dir`."""
    if ray.is_initialized():
        return
    if address is not None:
        ensure_ray(address)
        return
    try:
        ensure_ray("auto")
        return
    except ConnectionError:
        pass
    # Made first: a data dir refused after the cluster had started would leave that cluster running.
    make_data_dir(data_dir)
    # Loopback only: a cluster this command starts for one machine should not listen on the network.
    command = [*_RAY_CLI, "start", "--head", "--disable-usage-stats", "--node-ip-address=127.0.0.1"]
    if num_cpus is not None:
        command.append(f"--num-cpus={num_cpus}")
    print("no running Ray cluster found; starting a local one: ray", " ".join(command[len(_RAY_CLI) :]))
    # Ray's servers listen on every interface whatever the node address, so require its token
    # authentication (the token goes to ~/.ray, where drivers on this machine find it).
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    ensure_ray("auto")


def _smoke(client: Client, agents: int = 64, metrics: int = 16, steps: int = 50) -> int:
    """Write agents × metrics × steps samples, read them back, and say whether all arrived. They are
    of kind "smoke", so that neither reports nor alerts of the store count them as agents."""
    run = uuid.uuid4().hex[:8]
    now = time.time()
    producer = client.producer()
    started = time.perf_counter()
    for step in range(steps):
        n = agents * metrics
        producer.write_columns(
            "samples",
            {
                "ts": np.full(n, now - steps + step),
                "kind": [Kind.SMOKE.value] * n,
                "node": ["smoke"] * n,
                "source": [f"smoke-{run}-agent-{i // metrics}" for i in range(n)],
                "generation": np.full(n, step),
                "metric": [f"metric_{i % metrics}" for i in range(n)],
                "value": np.random.default_rng(step).normal(size=n),
            },
        )
    acknowledged = producer.close(timeout=60)
    elapsed = time.perf_counter() - started
    sources = [f"smoke-{run}-agent-{i}" for i in range(agents)]
    rows = client.samples(source=sources, start=now - steps - 1).num_rows
    points = client.samples(source=sources[:1], metric="metric_0", start=now - steps - 1, step=10, agg="mean")
    expected = agents * metrics * steps
    print(f"smoke: wrote {expected} samples in {elapsed:.2f}s, read back {rows}")
    print(_render(points, "table"))
    if not acknowledged or rows != expected:
        print("smoke: FAILED, some samples did not arrive", file=sys.stderr)
        return 1
    print("smoke: OK")
    return 0


def _status(args: argparse.Namespace) -> int:
    health = connect(args.address or "auto").health()
    fields = dataclasses.asdict(health)
    if args.json:
        print(json.dumps(fields, indent=2))
    else:
        width = max(len(k) for k in fields)
        for key, value in fields.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    if args.ray and args.address:  # refused before anything is stopped
        raise ValueError("--ray stops the local Ray only; stop a remote cluster with `ray down`")
    ensure_ray(args.address or "auto")
    try:
        ray.kill(aggregator.get_aggregator(), no_restart=True)
        print("elitemon aggregator stopped; its data stays on disk")
    except aggregator.AggregatorNotFound as error:
        if not args.ray:
            raise
        print(f"elitemon: {error}", file=sys.stderr)
    if args.ray:
        ray.shutdown()
        subprocess.run([*_RAY_CLI, "stop"], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print("local Ray stopped")
    return 0


def _query(args: argparse.Namespace) -> int:
    client = connect(args.address or "auto")
    filters: dict[str, Any] = {name: getattr(args, name) for name in _FILTERS if getattr(args, name)}
    start = time.time() - args.since if args.since is not None else args.start
    bounds = {"start": start, "end": args.end, "generation": args.generation}
    filters.update({key: value for key, value in bounds.items() if value is not None})
    if args.step is not None and args.what != "samples":
        raise ValueError("--step applies to `query samples` only")
    if args.agg is not None and args.step is None:
        raise ValueError("--agg needs --step")
    if args.what == "latest":
        result = client.latest(**filters)
    elif args.what == "samples":
        result = client.samples(step=args.step, agg=args.agg or "mean", **filters)
    elif args.what == "events":
        result = client.events(limit=args.limit, **filters)
    else:
        result = client.configs(**filters)
    if args.limit is not None:
        result = result.slice(max(0, result.num_rows - args.limit))
    print(_render(result, args.format))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from elitemon.demo import DemoSettings, run_demo  # imports Tune and Gymnasium: only for this command

    given = {
        "agents": args.agents,
        "iterations": args.iterations,
        "time_budget_s": args.time_budget,
        "env_id": args.env,
        "target": args.target,
        "seed": args.seed,
    }
    settings = DemoSettings(**{k: v for k, v in given.items() if v is not None})  # checked before Ray starts
    # Tune's file loggers warn "Remote file not found: .../result.json" when a paused trial resumes
    # before its log was copied to storage (often, under PBT); harmless, and the store has the results.
    logging.getLogger("ray.tune.logger.logger").setLevel(logging.ERROR)
    started_ray = attach_or_start_local_ray(args.address, args.num_cpus, purpose="for the demo")
    try:
        summary = run_demo(settings, data_dir=args.data_dir and Path(args.data_dir))
    finally:
        if started_ray:
            ray.shutdown()
    print(summary.render())
    if args.data_dir and Path(summary.data_dir) != StoreConfig(data_dir=args.data_dir).data_dir:
        print(
            f"elitemon: an aggregator was already running with data dir {summary.data_dir}; the demo used it "
            f"(--data-dir {args.data_dir} ignored)",
            file=sys.stderr,
        )
    return 0


def _report(args: argparse.Namespace) -> int:
    from elitemon.htmlreport import build_report, load_run  # imports matplotlib: only for this command

    directory = Path(args.out).parent
    if not directory.is_dir():  # before the report is computed, not after
        raise ValueError(f"--out: no directory {str(directory)!r} to write {args.out!r} into")
    run = load_run(data_dir=args.data_dir, address=args.address, start=args.start)
    page = build_report(
        run.samples, run.events, run.configs, score_metric=args.metric, target=args.target, source=f"from {run.source}"
    )
    Path(args.out).write_text(page, encoding="utf-8")
    print(f"report written to {args.out} ({len(page.encode()) / 1024:.0f} KiB, from {run.source})")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from elitemon.bench.suite import run_from_args

    return run_from_args(args)


def _render(table: pa.Table, fmt: str) -> str:
    """A result as an aligned text table, CSV or JSON lines."""
    if fmt == "csv":
        sink = pa.BufferOutputStream()
        pyarrow.csv.write_csv(_plain(table), sink)
        return sink.getvalue().to_pybytes().decode().rstrip("\n")
    if fmt == "json":
        return "\n".join(json.dumps(row, default=str) for row in table.to_pylist())
    if table.num_rows == 0:
        return "(no rows)"
    return table.to_pandas().to_string(index=False)


def _plain(table: pa.Table) -> pa.Table:
    """Dictionary columns decoded to strings (CSV writers want plain types)."""
    columns = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns]
    return pa.table(columns, names=table.column_names)


if __name__ == "__main__":
    sys.exit(main())
