"""Ingest benchmark: concurrent producers into the aggregator, persistence on, beside VictoriaMetrics.

    python benchmarks/ingest.py                      # local Ray, 4 producers, 8M samples
    ray job submit --working-dir . -- python benchmarks/ingest.py --address auto

What it measures, all in one run:
- elitemon: samples/s from N producer actors (64 agents x 16 metrics each tick) into the aggregator
  actor with its write-ahead log and sealing on, counted from the start signal until every batch is
  acknowledged (an acknowledged row is in the log and queryable);
- p50/p99 ingest-to-queryable latency: from the moment rows are handed to the producer until the
  acknowledgement of their batch (the aggregator makes rows queryable before it acknowledges);
- bytes per sample in memory (Arrow hot buffer) and on disk (Parquet segments, after a final seal);
- the peer: when `victoria-metrics` is installed, the same samples from the same number of producer
  actors to a VictoriaMetrics server on a loopback port, Influx line protocol over HTTP, bodies
  rendered before the clock starts (which favours the peer), counted until every POST returned 204.
  It prints elitemon's rate over VictoriaMetrics'.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray
from _net import free_port, wait_http

from elitemon.aggregator import start_aggregator
from elitemon.config import StoreConfig
from elitemon.producer import Producer, RaySink
from elitemon.schema import SCHEMAS, TIMESTAMP, TableName

AGGREGATOR = "aggregator-bench"
#: Rows per batch sent. A Ray call costs about a millisecond of CPU here whatever its size, so
#: large batches matter: 2k-row calls moved 2.4M rows/s to a do-nothing actor, 131k-row calls 24M.
BATCH_ROWS = 131_072


def _dictionary(values: list[str], indices: np.ndarray) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(indices.astype(np.int32)), pa.array(values))


@ray.remote(num_cpus=0)
class LoadProducer:
    """One producer process: `ticks` rounds of agents x metrics samples, written `per_write` ticks at a time."""

    def __init__(self, index: int, agents: int, metrics: int, ticks: int, per_write: int) -> None:
        self.index, self.agents, self.metrics, self.ticks, self.per_write = index, agents, metrics, ticks, per_write
        rows = agents * metrics * per_write
        self.rows_per_write = rows
        self.values = np.random.default_rng(index).normal(size=rows * 16)
        per_tick = agents * metrics
        agent_of_row = np.tile(np.repeat(np.arange(agents), metrics), per_write)
        metric_of_row = np.tile(np.arange(metrics), agents * per_write)
        self.tick_of_row = np.repeat(np.arange(per_write), per_tick)
        self.source = _dictionary([f"p{index}-agent-{a}" for a in range(agents)], agent_of_row)
        self.metric = _dictionary([f"metric_{m}" for m in range(metrics)], metric_of_row)
        self.kind = _dictionary(["agent"], np.zeros(rows))
        self.node = _dictionary([f"node-{index}"], np.zeros(rows))
        self.bodies: list[bytes] = []

    def _batch(self, write: int, start_us: int) -> pa.RecordBatch:
        tick0 = write * self.per_write
        ts = start_us + (tick0 + self.tick_of_row) * 1000
        offset = (write * 7919) % (len(self.values) - self.rows_per_write)
        return pa.RecordBatch.from_arrays(
            [
                pa.array(ts).cast(TIMESTAMP),
                self.kind,
                self.node,
                self.source,
                pa.array(tick0 + self.tick_of_row),
                self.metric,
                pa.array(self.values[offset : offset + self.rows_per_write]),
            ],
            schema=SCHEMAS[TableName.SAMPLES],
        )

    def run_elitemon(self, start_us: int, rate: float | None = None) -> dict:
        """Write everything as fast as possible, or paced at `rate` samples/s (for latency)."""
        producer = Producer(RaySink(name=AGGREGATOR), max_batch_rows=BATCH_ROWS, max_delay_s=0.05, max_in_flight=4)
        started = time.perf_counter()
        for write in range(self.ticks // self.per_write):
            if rate is not None:
                due = started + write * self.rows_per_write / rate
                time.sleep(max(0.0, due - time.perf_counter()))  # pacing the load, not synchronising
            producer.write_batch("samples", self._batch(write, start_us))
        delivered = producer.close(timeout=600)
        elapsed = time.perf_counter() - started
        stats = producer.stats()
        return {"elapsed": elapsed, "delivered": delivered, "acked": stats.rows_acked, "latencies": stats.latencies_s}

    def prepare_vm(self, start_us: int) -> int:
        """Render the same samples as Influx line protocol, one line per agent and tick, in
        request bodies of BATCH_ROWS samples (the batch size elitemon's producers send)."""
        writes_per_body = max(1, BATCH_ROWS // self.rows_per_write)
        self.bodies, lines = [], []
        for write in range(self.ticks // self.per_write):
            batch = self._batch(write, start_us)
            # Python floats: repr of a numpy float64 is "np.float64(...)", not a number.
            values = batch.column(6).to_numpy().reshape(self.per_write, self.agents, self.metrics).tolist()
            for t in range(self.per_write):
                ts_ns = (start_us + (write * self.per_write + t) * 1000) * 1000
                for a in range(self.agents):
                    fields = ",".join(f"metric_{m}={values[t][a][m]!r}" for m in range(self.metrics))
                    lines.append(f"pbt,agent=p{self.index}-agent-{a},node=node-{self.index} {fields} {ts_ns}")
            if (write + 1) % writes_per_body == 0:
                self.bodies.append("\n".join(lines).encode())
                lines = []
        if lines:
            self.bodies.append("\n".join(lines).encode())
        return sum(len(b) for b in self.bodies)

    def value_sum(self) -> float:
        """The sum of every value this producer sends: checks that the peer stored the same data."""
        writes = self.ticks // self.per_write
        return float(sum(self._batch(w, 0).column(6).to_numpy().sum() for w in range(writes)))

    def run_vm(self, port: int) -> dict:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        started = time.perf_counter()
        for body in self.bodies:
            connection.request("POST", "/write", body=body, headers={"Content-Type": "text/plain"})
            response = connection.getresponse()
            response.read()
            if response.status != 204:
                raise RuntimeError(f"VictoriaMetrics answered {response.status}")
        elapsed = time.perf_counter() - started
        connection.close()
        return {"elapsed": elapsed}


def bench_elitemon(args: argparse.Namespace, data_dir: Path, rate: float | None = None) -> dict:
    """One run into a fresh aggregator; `rate` paces the producers (total samples/s)."""
    handle = start_aggregator(StoreConfig(data_dir=data_dir), name=AGGREGATOR)
    producers = _producers(args)
    start_us = int((time.time() - 3600) * 1e6)
    per_producer = None if rate is None else rate / args.producers
    started = time.perf_counter()
    results = ray.get([p.run_elitemon.remote(start_us, per_producer) for p in producers])
    wall = time.perf_counter() - started
    total = sum(r["acked"] for r in results)
    expected = args.producers * args.ticks * args.agents * args.metrics
    if total != expected or not all(r["delivered"] for r in results):
        raise RuntimeError(f"elitemon acknowledged {total} of {expected} samples")
    health = ray.get(handle.health.remote())
    bytes_in_memory_per_sample = health.bytes_in_memory / max(1, health.rows_in_memory)
    ray.get(handle.seal.remote())
    sealed = ray.get(handle.health.remote())
    latencies = np.concatenate([np.asarray(r["latencies"]) for r in results])
    ray.kill(handle, no_restart=True)
    for producer in producers:
        ray.kill(producer)
    return {
        "samples": total,
        "seconds": wall,
        "samples_per_s": total / wall,
        "latency_p50_ms": float(np.percentile(latencies, 50) * 1e3),
        "latency_p99_ms": float(np.percentile(latencies, 99) * 1e3),
        "bytes_per_sample_memory": bytes_in_memory_per_sample,
        "bytes_per_sample_disk": sealed.bytes_on_disk / max(1, sealed.rows),
    }


def bench_victoria_metrics(args: argparse.Namespace, data_dir: Path) -> dict | None:
    binary = shutil.which("victoria-metrics")
    if binary is None:
        print("victoria-metrics is not installed (apt-get install victoria-metrics): peer skipped")
        return None
    port = free_port()
    server = subprocess.Popen(
        [binary, f"-storageDataPath={data_dir}", f"-httpListenAddr=127.0.0.1:{port}", "-search.latencyOffset=0s"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        producers = _producers(args)
        start_us = int((time.time() - 3600) * 1e6)
        ray.get([p.prepare_vm.remote(start_us) for p in producers])
        started = time.perf_counter()
        ray.get([p.run_vm.remote(port) for p in producers])
        wall = time.perf_counter() - started
        expected = args.producers * args.ticks * args.agents * args.metrics
        stored = int(_vm_stored(port, "count_over_time"))
        total = _vm_stored(port, "sum_over_time")
        sent = sum(ray.get([p.value_sum.remote() for p in producers]))
        if not np.isclose(total, sent, rtol=1e-6):
            raise RuntimeError(f"VictoriaMetrics stored values summing to {total}, but {sent} were sent")
        for producer in producers:
            ray.kill(producer)
        return {"samples": expected, "stored": stored, "seconds": wall, "samples_per_s": expected / wall}
    finally:
        server.terminate()
        server.wait(timeout=30)


def _vm_stored(port: int, function: str) -> float:
    """`function` over every sample VictoriaMetrics holds, after forcing its buffers to storage."""
    urllib.request.urlopen(f"http://127.0.0.1:{port}/internal/force_flush", timeout=60).read()
    query = f'sum({function}({{__name__=~"pbt_.*"}}[2h]))'
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query, "time": str(time.time())})
    deadline = time.monotonic() + 30
    while True:
        body = json.loads(urllib.request.urlopen(url, timeout=60).read())
        result = body["data"]["result"]
        if result or time.monotonic() > deadline:
            return float(result[0]["value"][1]) if result else 0.0
        time.sleep(0.2)


def _producers(args: argparse.Namespace) -> list:
    producers = [
        LoadProducer.remote(i, args.agents, args.metrics, args.ticks, args.per_write) for i in range(args.producers)
    ]
    ray.get([p.__ray_ready__.remote() for p in producers])
    return producers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default=None, help="Ray address (default: start a local Ray)")
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--agents", type=int, default=64)
    parser.add_argument("--metrics", type=int, default=16)
    parser.add_argument("--ticks", type=int, default=1952, help="ticks per producer (x agents x metrics samples)")
    parser.add_argument("--per-write", type=int, default=8, help="ticks per producer write call")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of each system; medians reported")
    parser.add_argument("--paced-rate", type=float, default=1_000_000, help="total samples/s of the latency run")
    parser.add_argument("--quick", action="store_true", help="a small run that checks the benchmark works")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.ticks, args.per_write, args.repeat = 64, 8, 1
    args.ticks -= args.ticks % args.per_write
    ray.init(
        address=args.address or "local",  # a Ray of its own unless told: never a stale one
        num_cpus=None if args.address else args.producers + 1,
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=False,
    )
    ours, peers = [], []
    with tempfile.TemporaryDirectory(prefix="elitemon-bench-") as tmp:
        for run in range(args.repeat):
            ours.append(bench_elitemon(args, Path(tmp) / f"elitemon-{run}"))
            peer = bench_victoria_metrics(args, Path(tmp) / f"victoria-metrics-{run}")
            if peer:
                peers.append(peer)
        paced = bench_elitemon(args, Path(tmp) / "elitemon-paced", rate=args.paced_rate)
    figures = _report(args, ours, peers, paced)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    ray.shutdown()


def _report(args: argparse.Namespace, ours: list[dict], peers: list[dict], paced: dict) -> dict:
    rate = float(np.median([r["samples_per_s"] for r in ours]))
    runs = ", ".join(f"{r['samples_per_s']:,.0f}" for r in ours)
    print(
        f"elitemon ingest: {args.producers} producers x {args.agents} agents x {args.metrics} metrics, "
        f"{ours[0]['samples']:,} samples a run, persistence on, median of {len(ours)}"
    )
    print(f"  rate                       {rate:>14,.0f} samples/s   (runs: {runs})")
    print(f"  bytes/sample in memory     {ours[-1]['bytes_per_sample_memory']:>14.1f}")
    print(f"  bytes/sample on disk       {ours[-1]['bytes_per_sample_disk']:>14.2f}")
    print(
        f"  ingest-to-queryable at {args.paced_rate:,.0f} samples/s: "
        f"p50 {paced['latency_p50_ms']:.1f} ms, p99 {paced['latency_p99_ms']:.1f} ms"
    )
    print(f"  (saturated runs queue: p50 {ours[-1]['latency_p50_ms']:.0f} ms, p99 {ours[-1]['latency_p99_ms']:.0f} ms)")
    figures: dict = {"elitemon": ours, "elitemon_paced": paced, "victoria_metrics": peers}
    if peers:
        peer_rate = float(np.median([p["samples_per_s"] for p in peers]))
        peer_runs = ", ".join(f"{p['samples_per_s']:,.0f}" for p in peers)
        print(f"VictoriaMetrics: same samples and producers, Influx line protocol pre-rendered, median of {len(peers)}")
        print(f"  rate                       {peer_rate:>14,.0f} samples/s   (runs: {peer_runs})")
        print(f"  samples it stored          {peers[-1]['stored']:>14,} of {peers[-1]['samples']:,}")
        figures["ratio"] = rate / peer_rate
        print(f"elitemon / VictoriaMetrics   {figures['ratio']:>14.2f}x")
    return figures


if __name__ == "__main__":
    main()
