"""Range-query benchmark: downsample 1,000,000 samples to 1,000 points, beside DuckDB and pyarrow.dataset.

    python benchmarks/query.py

The data: 4 metrics x 1,000,000 samples of one agent, one every millisecond, ingested in 32k-row
batches and sealed into Parquet segments by the store. The query: one metric over the whole range,
1-second buckets, mean (and p99), i.e. 1,000,000 samples in, 1,000 points out. Timed, median of
`--repeat` runs each:
- elitemon, hot: the store's in-memory copy of the sealed segments (what a live dashboard hits);
- elitemon, cold: a freshly opened store (nothing in memory), reading the Parquet segment;
- elitemon through the aggregator actor (Ray call included), hot;
- DuckDB, and pyarrow.dataset + group_by, over the very same Parquet files.
Every result is checked against DuckDB's before any figure is printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import ray

from elitemon import query
from elitemon.aggregator import start_aggregator
from elitemon.client import Client
from elitemon.config import StoreConfig
from elitemon.schema import batch_from_columns
from elitemon.store import Store

METRICS = ("reward", "loss", "entropy", "lr")
BATCH = 32_768


def batches(start_s: float, series: int):
    """The benchmark's samples (`series` per metric, 1 ms apart) as 32k-row batches of one metric each."""
    rng = np.random.default_rng(0)
    for offset in range(0, series, BATCH):
        n = min(BATCH, series - offset)
        for metric in METRICS:
            yield batch_from_columns(
                "samples",
                {
                    "ts": start_s + (offset + np.arange(n)) / 1000.0,
                    "kind": ["agent"] * n,
                    "node": ["node-0"] * n,
                    "source": ["agent-0"] * n,
                    "generation": np.full(n, offset // 1000),
                    "metric": [metric] * n,
                    "value": rng.normal(size=n),
                },
            )


def build(data_dir: Path, start_s: float, series: int) -> Store:
    store = Store(StoreConfig(data_dir=data_dir, seal_bytes=256 << 20, memory_budget_bytes=1 << 30))
    for seq, batch in enumerate(batches(start_s, series)):
        store.ingest("samples", batch, producer_id="bench", seq=seq)
    store.seal()
    return store


def timed(function: Callable[[], object], repeat: int) -> tuple[float, object]:
    function()  # warm up: first touch of files and caches
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def ours(store: Store, start_s: float, end_s: float, agg: str) -> pa.Table:
    selection = query.select("samples", metric="reward", start=start_s, end=end_s)
    return query.downsample(store.scan(selection), step_s=1.0, agg=agg)


def cold_query(data_dir: Path, start_s: float, end_s: float, agg: str) -> pa.Table:
    """A freshly opened store: nothing of the data in memory yet."""
    store = Store(StoreConfig(data_dir=data_dir))
    try:
        return ours(store, start_s, end_s, agg)
    finally:
        store.close()


def duckdb_query(files: list[str], start_s: float, end_s: float, agg: str) -> pa.Table:
    function = {"mean": "avg(value)", "p99": "quantile_cont(value, 0.99)"}[agg]
    sql = f"""
        SELECT time_bucket(INTERVAL 1 second, ts) AS ts, {function} AS value
        FROM read_parquet(?) WHERE metric = 'reward' AND ts >= to_timestamp(?) AND ts < to_timestamp(?)
        GROUP BY 1 ORDER BY 1"""
    return duckdb.sql(sql, params=[files, start_s, end_s]).to_arrow_table()


def dataset_query(files: list[str], start_s: float, end_s: float) -> pa.Table:
    dataset = ds.dataset(files, format="parquet")
    start = pa.scalar(int(start_s * 1e6), pa.timestamp("us", tz="UTC"))
    end = pa.scalar(int(end_s * 1e6), pa.timestamp("us", tz="UTC"))
    rows = dataset.to_table(
        columns=["ts", "value"],
        filter=(pc.field("metric") == "reward") & (pc.field("ts") >= start) & (pc.field("ts") < end),
    )
    bucket = pc.divide(rows.column("ts").cast(pa.int64()), 1_000_000)
    points = rows.append_column("bucket", bucket).group_by("bucket").aggregate([("value", "mean")])
    starts = pc.multiply(points.column("bucket"), 1_000_000).cast(pa.timestamp("us", tz="UTC"))
    return pa.table({"ts": starts, "value": points.column("value_mean")})


def check(name: str, got: pa.Table, reference: pa.Table, points: int) -> None:
    """Same bucket starts and the same values as the reference, or the figures mean nothing."""

    def by_time(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        ts = table.column("ts").cast(pa.int64()).to_numpy()
        order = np.argsort(ts)
        return ts[order], table.column("value").to_numpy()[order]

    got_ts, got_values = by_time(got)
    want_ts, want_values = by_time(reference)
    if got.num_rows != points or not (np.array_equal(got_ts, want_ts) and np.allclose(got_values, want_values)):
        raise AssertionError(f"{name} disagrees with DuckDB ({got.num_rows} rows)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--series", type=int, default=1_000_000, help="samples of the queried series")
    parser.add_argument("--quick", action="store_true", help="a small run that checks the benchmark works")
    args = parser.parse_args()
    if args.quick:
        args.series, args.repeat = 65_536, 2
    start_s = float(int(time.time()) - 7200)
    end_s = start_s + args.series / 1000
    points = args.series // 1000 + (args.series % 1000 > 0)
    with tempfile.TemporaryDirectory(prefix="elitemon-query-") as tmp:
        data_dir = Path(tmp) / "data"
        hot = build(data_dir, start_s, args.series)
        files = sorted(str(p) for p in (data_dir / "segments").rglob("*.parquet"))
        figures: dict[str, dict[str, float]] = {}
        references = {}
        for agg in ("mean", "p99"):
            t_duck, references[agg] = timed(lambda agg=agg: duckdb_query(files, start_s, end_s, agg), args.repeat)
            t_hot, result = timed(lambda agg=agg: ours(hot, start_s, end_s, agg), args.repeat)
            check(f"elitemon hot {agg}", result, references[agg], points)
            figures[agg] = {"duckdb": t_duck, "hot": t_hot}
        hot.close()  # a data directory has one store at a time
        for agg in ("mean", "p99"):
            t_cold, result = timed(lambda agg=agg: cold_query(data_dir, start_s, end_s, agg), args.repeat)
            check(f"elitemon cold {agg}", result, references[agg], points)
            figures[agg]["cold"] = t_cold
        mean_reference = duckdb_query(files, start_s, end_s, "mean")
        t_dataset, result = timed(lambda: dataset_query(files, start_s, end_s), args.repeat)
        check("pyarrow.dataset", result, mean_reference, points)
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        config = StoreConfig(data_dir=Path(tmp) / "actor", seal_bytes=256 << 20)
        client = Client(start_aggregator(config, name="aggregator-query-bench"), name="aggregator-query-bench")
        producer = client.producer(max_batch_rows=BATCH)
        for batch in batches(start_s, args.series):
            producer.write_batch("samples", batch)
        producer.close()
        t_actor, result = timed(
            lambda: client.samples(metric="reward", start=start_s, end=end_s, step=1.0), args.repeat
        )
        check("elitemon actor", result, mean_reference, points)
        ray.shutdown()
    stored = args.series * len(METRICS)
    print(f"downsample {args.series:,} samples -> {points:,} points (of {stored:,} stored), median of {args.repeat}")
    for agg, t in figures.items():
        print(
            f"  {agg:<5} elitemon hot {t['hot'] * 1e3:7.1f} ms   cold {t['cold'] * 1e3:7.1f} ms   "
            f"DuckDB {t['duckdb'] * 1e3:7.1f} ms   DuckDB/elitemon-hot {t['duckdb'] / t['hot']:.2f}x   "
            f"DuckDB/elitemon-cold {t['duckdb'] / t['cold']:.2f}x"
        )
    print(f"  mean  pyarrow.dataset + group_by {t_dataset * 1e3:7.1f} ms")
    print(f"  mean  elitemon through the aggregator actor (Ray call included) {t_actor * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
