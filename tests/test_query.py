"""Queries (select, Store.scan, downsample, latest) checked against plain pandas on the same data.

The data set is one random `samples` table: several kinds, nodes (some null), sources, metrics and
generations (some null), timestamps spread over ten minutes in no particular order, every timestamp
distinct. Part of it is sealed to Parquet by one Store; a fresh Store then opens the directory (so
those rows are read from disk, not from a cache), seals some more (kept in its cache) and holds the
rest in its hot buffer. Every query runs over all three at once.
"""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from elitemon.config import StoreConfig
from elitemon.query import Aggregation, downsample, latest, select
from elitemon.schema import SCHEMAS, TableName
from elitemon.store import Store

T0 = 1_700_000_000
SPAN_S = 600
ROWS = 6000
KINDS = ["agent", "node", "gpu", "bench"]
NODES = ["n0", "n1", "n2", None]
SOURCES = ["monitor", "callback", "bench"]
METRICS = ["util", "mem", "loss", "reward", "temp"]
ID_COLUMNS = ["kind", "node", "source", "metric"]
NULL = "<null>"  # stands for a null node where pandas would otherwise drop or mis-sort it


# ------------------------------------------------------------------------------------ helpers


def random_samples(rng: np.random.Generator, rows: int) -> pa.Table:
    """A samples table in random order with distinct timestamps (so 'last' has no ties)."""
    schema = SCHEMAS[TableName.SAMPLES]
    offsets = rng.choice(SPAN_S * 1_000_000, size=rows, replace=False)  # microseconds, distinct
    generation = rng.integers(0, 12, rows)

    def identifiers(choices: list[str | None]) -> pa.Array:
        return pa.array([choices[i] for i in rng.integers(0, len(choices), rows)]).dictionary_encode()

    return pa.table(
        {
            "ts": pa.array(T0 * 1_000_000 + offsets, pa.int64()).cast(schema.field("ts").type),
            "kind": identifiers(KINDS),
            "node": identifiers(NODES),
            "source": identifiers(SOURCES),
            "generation": pa.array(generation, pa.int64(), mask=rng.random(rows) < 0.1),
            "metric": identifiers(METRICS),
            "value": pa.array(np.round(rng.normal(50, 20, rows), 3)),
        },
        schema=schema,
    )


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Identifiers as strings (null node -> NULL), ts as int64 microseconds, in pandas."""
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_dictionary(column.type):
            column = column.cast(pa.string()).fill_null(NULL)
        elif pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        columns[name] = column
    df = pa.table(columns).to_pandas()
    for name in ID_COLUMNS:
        if name in df:
            df[name] = df[name].astype(object)
    return df


def canonical(df: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by every column, with a fresh index, for frame comparison."""
    return df.sort_values(list(df.columns), na_position="first").reset_index(drop=True)


def assert_frames_match(actual: pd.DataFrame, expected: pd.DataFrame, *, exact: bool = True) -> None:
    actual, expected = canonical(actual), canonical(expected[list(actual.columns)])
    assert len(actual) == len(expected), f"{len(actual)} rows, expected {len(expected)}"
    if exact:
        pd.testing.assert_frame_equal(actual, expected, check_dtype=False)
    else:
        pd.testing.assert_frame_equal(actual, expected, check_dtype=False, rtol=1e-9, atol=1e-9)


def run_query(store: Store, **options) -> pa.Table:
    """Scan `samples` with the Selection that select() builds from `options`."""
    return store.scan(select("samples", **options))


def pandas_query(df: pd.DataFrame, start=None, end=None, generation=None, **columns) -> pd.DataFrame:
    """The same filter as run_query, written as plain pandas boolean indexing."""
    keep = pd.Series(True, index=df.index)
    if start is not None:
        keep &= df["ts"] >= int(start * 1_000_000)
    if end is not None:
        keep &= df["ts"] < int(end * 1_000_000)
    if generation is not None:
        low, high = (generation, generation) if isinstance(generation, int) else generation
        if low is not None:
            keep &= df["generation"] >= low
        if high is not None:
            keep &= df["generation"] <= high
    for name, values in columns.items():
        values = [values] if isinstance(values, str) else list(values)
        keep &= df[name].isin(values)
    return df[keep]


def pandas_downsample(df: pd.DataFrame, step_s: float, agg: Aggregation) -> pd.DataFrame:
    """One point per (series, floor(ts / step)) bucket, the bucket start as ts."""
    step_us = int(step_s * 1_000_000)
    df = df.assign(bucket=df["ts"] // step_us)
    grouped = df.groupby([*ID_COLUMNS, "bucket"], sort=False)["value"]
    if agg is Aggregation.LAST:  # the value of the newest row (timestamps are distinct)
        points = df.loc[df.groupby([*ID_COLUMNS, "bucket"])["ts"].idxmax(), [*ID_COLUMNS, "bucket", "value"]]
    else:
        if agg.quantile is not None:
            reduced = grouped.quantile(agg.quantile)  # linear interpolation
        elif agg is Aggregation.COUNT:
            reduced = grouped.size().astype(float)
        else:
            reduced = grouped.agg(agg.value)
        points = reduced.rename("value").reset_index()
    points = points.assign(ts=points["bucket"] * step_us).drop(columns="bucket")
    return points[["ts", *ID_COLUMNS, "value"]]


def pandas_latest(df: pd.DataFrame) -> pd.DataFrame:
    return df.loc[df.groupby(ID_COLUMNS)["ts"].idxmax()]


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def data() -> pa.Table:
    return random_samples(np.random.default_rng(20240601), ROWS)


@pytest.fixture(scope="module")
def expected(data) -> pd.DataFrame:
    return to_pandas(data)


@pytest.fixture(scope="module")
def store(data, tmp_path_factory) -> Store:
    """The rows of `data` in every place a Store keeps them: two segments written by an earlier
    Store (read from disk), a segment this Store sealed (cached in memory), and the hot buffer."""
    data_dir: Path = tmp_path_factory.mktemp("query") / "data"
    config = StoreConfig(data_dir=data_dir, fsync="never", retention_s=None)
    clock = lambda: T0 + SPAN_S + 60.0  # noqa: E731 (a fixed clock: nothing is in the future)
    cuts = [0, 1500, 2500, 4000, 5000, ROWS]
    batches = [data.slice(a, b - a).to_batches()[0] for a, b in pairwise(cuts)]

    writer = Store(config, clock=clock)
    writer.ingest("samples", batches[0], producer_id="writer", seq=0)
    writer.seal()
    writer.ingest("samples", batches[1], producer_id="writer", seq=1)
    writer.ingest("samples", batches[2], producer_id="writer", seq=2)
    writer.seal()
    writer.close()

    reader = Store(config, clock=clock)
    assert reader.health().rows_in_memory == 0, "the earlier segments must be read from disk"
    reader.ingest("samples", batches[3], producer_id="reader", seq=0)
    reader.seal()
    reader.ingest("samples", batches[4], producer_id="reader", seq=1)
    health = reader.health()
    assert (health.segments, health.rows, health.unsealed_rows) == (3, ROWS, ROWS - 5000)
    assert health.rows_in_memory == ROWS - 4000
    return reader


# ------------------------------------------------------------------------------------ scan


def test_the_data_set_has_what_the_queries_need(expected):
    assert (expected["node"] == NULL).any() and expected["generation"].isna().any()
    assert expected["ts"].is_unique
    assert not expected["ts"].is_monotonic_increasing
    assert set(expected["kind"]) == set(KINDS) and set(expected["metric"]) == set(METRICS)


def test_full_scan_returns_every_row_once(store, expected):
    scanned = store.scan(select("samples"))
    assert scanned.schema == SCHEMAS[TableName.SAMPLES]
    assert_frames_match(to_pandas(scanned), expected)


SCAN_CASES = {
    "everything": {},
    "start-end": {"start": T0 + 100, "end": T0 + 250},
    "start-only": {"start": T0 + 590},
    "end-only": {"end": T0 + 7},
    "metric": {"metric": "loss"},
    "metrics": {"metric": ["util", "mem"]},
    "kind": {"kind": "gpu"},
    "source": {"source": ["bench", "callback"]},
    "node": {"node": "n1"},
    "nodes": {"node": ["n0", "n2"]},
    "generation": {"generation": 3},
    "generation-range": {"generation": (2, 5)},
    "generation-open-low": {"generation": (None, 1)},
    "generation-open-high": {"generation": (10, None)},
    "combined": {
        "start": T0 + 60,
        "end": T0 + 480,
        "kind": ["gpu", "node"],
        "metric": "util",
        "source": "monitor",
        "node": ["n0", "n1"],
        "generation": (1, 9),
    },
    "matches-nothing": {"metric": "no-such-metric"},
    "empty-time-range": {"start": T0 - 1000, "end": T0 - 10},
}


def test_the_scan_cases_select_some_rows_but_not_all(expected):
    for name, options in SCAN_CASES.items():
        selected = len(pandas_query(expected, **options))
        if name == "everything":
            assert selected == len(expected)
        elif name in ("matches-nothing", "empty-time-range"):
            assert selected == 0
        else:
            assert 0 < selected < len(expected), name


@pytest.mark.parametrize("options", SCAN_CASES.values(), ids=SCAN_CASES.keys())
def test_scan_matches_pandas_filtering(store, expected, options):
    want = pandas_query(expected, **options)
    got = to_pandas(run_query(store, **options))
    assert_frames_match(got, want)


@pytest.mark.parametrize("options", SCAN_CASES.values(), ids=SCAN_CASES.keys())
def test_selection_expression_matches_pandas_filtering(data, expected, options):
    """The push-down expression on its own, over the whole table in memory."""
    expression = select("samples", **options).expression()
    got = data if expression is None else data.filter(expression)
    assert_frames_match(to_pandas(got), pandas_query(expected, **options))


# ------------------------------------------------------------------------------------ downsample


@pytest.mark.parametrize("step_s", [7.0, 60.0])
@pytest.mark.parametrize("agg", list(Aggregation), ids=[a.value for a in Aggregation])
def test_downsample_matches_pandas_groupby(store, expected, agg, step_s):
    points = downsample(store.scan(select("samples")), step_s=step_s, agg=agg)
    assert points.column_names == ["ts", *ID_COLUMNS, "value"]
    want = pandas_downsample(expected, step_s, agg)
    exact = agg in (Aggregation.MIN, Aggregation.MAX, Aggregation.LAST, Aggregation.COUNT)
    assert_frames_match(to_pandas(points), want, exact=exact)


@pytest.mark.parametrize("agg", ["mean", "p95", "last"])
def test_downsample_of_a_filtered_scan(store, expected, agg):
    options = {"start": T0 + 30, "end": T0 + 400, "kind": "gpu", "generation": (0, 6)}
    points = downsample(run_query(store, **options), step_s=15, agg=agg)
    want = pandas_downsample(pandas_query(expected, **options), 15, Aggregation(agg))
    assert_frames_match(to_pandas(points), want, exact=agg == "last")


def test_downsample_output_is_sorted_by_series_then_time(store):
    """Sorted by kind, node, source, metric (string order, a null node first), then ts."""
    points = to_pandas(downsample(store.scan(select("samples")), step_s=60, agg="count"))
    assert (points["node"] == NULL).any()
    ordered = points.sort_values([*ID_COLUMNS, "ts"], key=_null_first, kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(points, ordered)


def _null_first(column: pd.Series) -> pd.Series:
    return column.map(lambda v: "" if v == NULL else "~" + v) if column.dtype == object else column


def test_downsample_buckets_align_to_multiples_of_the_step():
    minute = (T0 // 60 + 1) * 60  # a multiple of 60 s since the epoch
    table = small_table([(minute - 0.1, 1.0), (minute, 2.0), (minute + 59.999, 4.0), (minute + 60, 8.0)])
    points = downsample(table, step_s=60, agg="sum")
    starts = [minute - 60, minute, minute + 60]
    assert points.column("ts").cast(pa.int64()).to_pylist() == [s * 1_000_000 for s in starts]
    assert points.column("value").to_pylist() == [1.0, 6.0, 8.0]


def test_last_on_equal_timestamps_takes_the_later_row():
    table = small_table([(T0 + 1, 1.0), (T0 + 2, 2.0), (T0 + 2, 3.0), (T0 + 1.5, 4.0)])
    assert downsample(table, step_s=10, agg="last").column("value").to_pylist() == [3.0]
    assert latest(table).column("value").to_pylist() == [3.0]


def test_latest_on_equal_timestamps_prefers_the_row_stored_last_through_a_scan(tmp_path):
    """latest(): 'ties in ts: the row stored last wins', also for rows coming out of Store.scan,
    where the earlier row sits in a segment and the later one in memory."""
    store = Store(StoreConfig(data_dir=tmp_path / "data", retention_s=None), clock=lambda: T0 + 60.0)
    first, second = small_table([(T0, 1.0)]), small_table([(T0, 2.0)])
    store.ingest("samples", first.to_batches()[0], producer_id="p", seq=0)
    store.seal()
    store.ingest("samples", second.to_batches()[0], producer_id="p", seq=1)
    scanned = store.scan(select("samples"))
    assert latest(scanned).column("value").to_pylist() == [2.0]
    assert downsample(scanned, step_s=60, agg="last").column("value").to_pylist() == [2.0]


def test_downsample_of_nothing_is_empty_with_the_point_columns():
    empty = SCHEMAS[TableName.SAMPLES].empty_table()
    points = downsample(empty, step_s=60)
    assert points.num_rows == 0
    assert points.column_names == ["ts", *ID_COLUMNS, "value"]
    assert latest(empty).num_rows == 0


@pytest.mark.parametrize("step_s", [0, -5, math.nan, math.inf, "30s"])
def test_downsample_refuses_a_non_positive_step(data, step_s):
    with pytest.raises(ValueError, match="step_s"):
        downsample(data, step_s=step_s)


def test_downsample_refuses_an_unknown_aggregation(data):
    with pytest.raises(ValueError):
        downsample(data, step_s=60, agg="median")


def small_table(points: list[tuple[float, float]]) -> pa.Table:
    """One series of samples, in the given order."""
    n = len(points)
    schema = SCHEMAS[TableName.SAMPLES]
    return pa.table(
        {
            "ts": pa.array([int(round(t * 1e6)) for t, _ in points], pa.int64()).cast(schema.field("ts").type),
            "kind": pa.array(["gpu"] * n).dictionary_encode(),
            "node": pa.array(["n0"] * n).dictionary_encode(),
            "source": pa.array(["s"] * n).dictionary_encode(),
            "generation": pa.array([0] * n, pa.int64()),
            "metric": pa.array(["m"] * n).dictionary_encode(),
            "value": pa.array([v for _, v in points], pa.float64()),
        },
        schema=schema,
    )


# ------------------------------------------------------------------------------------ latest


def test_latest_matches_pandas(store, expected):
    got = to_pandas(latest(store.scan(select("samples"))))
    want = pandas_latest(expected)
    assert len(got) == expected.groupby(ID_COLUMNS).ngroups
    assert_frames_match(got, want)


def test_latest_of_a_filtered_scan(store, expected):
    options = {"end": T0 + 200, "metric": ["util", "loss"], "node": ["n0", "n2"]}
    got = to_pandas(latest(run_query(store, **options)))
    assert_frames_match(got, pandas_latest(pandas_query(expected, **options)))


# ------------------------------------------------------------------------------------ select


@pytest.mark.parametrize(
    "options, field",
    [
        ({"colour": "red"}, "colour"),
        ({"value": "1"}, "value"),  # a column, but not an identifier filter
        ({"start": T0 + 10, "end": T0 + 10}, "start"),
        ({"start": T0 + 10, "end": T0 + 5}, "start"),
        ({"generation": (5, 2)}, "generation"),
        ({"metric": []}, "metric"),
        ({"metric": ["util", ""]}, "metric"),
        ({"start": "yesterday"}, "start"),
        ({"end": 1.7e15}, "end"),  # microseconds as seconds
        ({"generation": "3"}, "generation"),
        ({"generation": 2.0}, "generation"),
        ({"generation": (1, 2, 3)}, "generation"),
        ({"generation": ("a", None)}, "generation"),
        ({"generation": True}, "generation"),
        ({"generation": (0, 2**64)}, "generation"),  # past int64: was an OverflowError from Arrow
    ],
)
def test_select_errors_name_the_field(options, field):
    with pytest.raises(ValueError, match=rf"^{field}:"):
        select("samples", **options)


def test_select_rejects_an_unknown_table():
    with pytest.raises(ValueError, match="unknown table"):
        select("metrics")


def test_select_filters_are_per_table():
    assert select("events", type="exploit", agent=["a1", "a2"]).equals == (
        ("type", ("exploit",)),
        ("agent", ("a1", "a2")),
    )
    with pytest.raises(ValueError, match="^metric:"):
        select("events", metric="util")


def test_select_builds_the_selection():
    selection = select("samples", start=T0, end=T0 + 1.5, generation=4, node=None, metric=("a", "b"))
    assert (selection.start_us, selection.end_us) == (T0 * 1_000_000, T0 * 1_000_000 + 1_500_000)
    assert (selection.min_generation, selection.max_generation) == (4, 4)
    assert selection.equals == (("metric", ("a", "b")),)
    assert select("samples").expression() is None


# ------------------------------------------------------- one series in time order (the fast path)


@pytest.mark.parametrize("agg", list(Aggregation))
def test_downsample_of_one_sorted_series_matches_pandas(agg):
    rng = np.random.default_rng(7)
    times = np.sort(T0 + rng.uniform(0, 300, 5_000))  # uneven spacing, some empty buckets
    table = small_table(list(zip(times.tolist(), rng.normal(size=len(times)).tolist(), strict=True)))
    expected = pandas_downsample(to_pandas(table), 7.0, agg)
    assert_frames_match(to_pandas(downsample(table, step_s=7.0, agg=agg)), expected, exact=False)


@pytest.mark.parametrize("agg", [Aggregation.P50, Aggregation.P99])
def test_percentiles_of_very_uneven_buckets_match_pandas(agg):
    """One crowded bucket beside many single-sample ones takes the per-segment sort."""
    rng = np.random.default_rng(8)
    crowded = T0 + rng.uniform(0, 1, 200_000)
    sparse = T0 + 10 + np.arange(2_000) * 10.0
    times = np.concatenate([crowded, sparse])
    table = small_table(list(zip(times.tolist(), rng.normal(size=len(times)).tolist(), strict=True)))
    expected = pandas_downsample(to_pandas(table), 10.0, agg)
    for arrangement in (table, table.take(np.argsort(times))):  # generic path, then the fast path
        assert_frames_match(to_pandas(downsample(arrangement, step_s=10.0, agg=agg)), expected, exact=False)
