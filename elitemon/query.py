"""Queries over the store: selections that push down to Parquet, and vectorised aggregation.

A `Selection` says which rows of a table are wanted (time range, generation range, and allowed
values for identifier columns). In memory it prunes whole batches by their time bounds and
dictionaries before building any row mask (`filter_batch`); on disk it becomes one pyarrow compute
Expression pushed down into Parquet row groups (`expression`).

Aggregation (`downsample`, `latest`) is pure: Arrow table in, Arrow table out. Rows are mapped to
dense integer group ids (series × time bucket) straight from the dictionary indices, and each
aggregate is one numpy reduction over views of the Arrow buffers (bincount, ufunc.at, reduceat;
percentiles sort all groups at once in a padded grid), so the cost is a few passes over the data
whatever the number of series, and nothing loops over rows in Python.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from elitemon._arrow import sort_by
from elitemon.schema import ID_COLUMNS, SCHEMAS, TIMESTAMP, TableName, table_name, to_timestamp_us

#: The columns that identify one time series in `samples`.
SERIES_KEYS = ("kind", "node", "source", "metric")


class Aggregation(enum.StrEnum):
    """How the samples of one series inside one time bucket become one point."""

    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    LAST = "last"
    SUM = "sum"
    COUNT = "count"
    P50 = "p50"
    P95 = "p95"
    P99 = "p99"

    @property
    def quantile(self) -> float | None:
        return {"p50": 0.5, "p95": 0.95, "p99": 0.99}.get(self.value)


@dataclass(frozen=True, kw_only=True)
class Selection:
    """Which rows of one table a query wants. Build it with `select`, which checks the names.

    Time bounds are epoch microseconds, `end_us` exclusive; generation bounds are inclusive.
    """

    table: TableName
    start_us: int | None = None
    end_us: int | None = None
    min_generation: int | None = None
    max_generation: int | None = None
    equals: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def expression(self) -> pc.Expression | None:
        """The whole selection as one filter, for Parquet push-down (None: everything)."""
        terms = [pc.field(name).isin(list(values)) for name, values in self.equals]
        if self.start_us is not None:
            terms.append(pc.field("ts") >= pa.scalar(self.start_us, TIMESTAMP))
        if self.end_us is not None:
            terms.append(pc.field("ts") < pa.scalar(self.end_us, TIMESTAMP))
        if self.min_generation is not None:
            terms.append(pc.field("generation") >= self.min_generation)
        if self.max_generation is not None:
            terms.append(pc.field("generation") <= self.max_generation)
        expression = None
        for term in terms:
            expression = term if expression is None else expression & term
        return expression

    def overlaps(self, min_ts: int, max_ts: int) -> bool:
        """Whether rows stamped within [min_ts, max_ts] can be selected at all."""
        return (self.start_us is None or max_ts >= self.start_us) and (self.end_us is None or min_ts < self.end_us)

    def filter_batch(self, batch: pa.RecordBatch, min_ts: int, max_ts: int) -> pa.RecordBatch | None:
        """The rows of an in-memory batch (ts within [min_ts, max_ts]) that match; None if none.

        Whole batches are decided from metadata where possible, as a time-series engine does with
        its blocks: the time bounds, and each identifier condition evaluated on the batch's small
        dictionary instead of its rows. Only conditions that split the batch build a row mask.
        """
        if not self.overlaps(min_ts, max_ts):
            return None
        masks = []
        for name, values in self.equals:
            column = batch.column(name)
            hit = pc.is_in(column.dictionary, value_set=pa.array(values))
            hits = pc.sum(hit).as_py() or 0
            if hits == 0:
                return None
            if hits < len(column.dictionary) or column.null_count:
                masks.append(pc.take(hit, column.indices))
        ts = batch.column("ts")
        if self.start_us is not None and min_ts < self.start_us:
            masks.append(pc.greater_equal(ts, pa.scalar(self.start_us, TIMESTAMP)))
        if self.end_us is not None and max_ts >= self.end_us:
            masks.append(pc.less(ts, pa.scalar(self.end_us, TIMESTAMP)))
        if self.min_generation is not None:
            masks.append(pc.greater_equal(batch.column("generation"), self.min_generation))
        if self.max_generation is not None:
            masks.append(pc.less_equal(batch.column("generation"), self.max_generation))
        if not masks:
            return batch
        mask = masks[0]
        for other in masks[1:]:
            mask = pc.and_kleene(mask, other)
        selected = batch.filter(mask)  # null (unknown) counts as not selected
        return selected if selected.num_rows else None


def select(
    table: str | TableName,
    *,
    start: Any = None,
    end: Any = None,
    generation: tuple[int | None, int | None] | int | None = None,
    **columns: str | Iterable[str] | None,
) -> Selection:
    """Build a Selection; raises ValueError naming any unknown column or malformed bound.

    `start`/`end` are epoch seconds or datetimes (`end` exclusive); `generation` is one generation or
    an inclusive (low, high) pair with None for open; every other keyword names an identifier column
    of the table and gives one value or several.
    """
    table = table_name(table)
    allowed = ID_COLUMNS[table]
    equals = []
    for name, values in columns.items():
        if name not in allowed:
            raise ValueError(f"{name}: not a filter of table {table.value} (expected one of {list(allowed)})")
        if values is None:
            continue
        values = (values,) if isinstance(values, str) else tuple(values)
        if not values or not all(isinstance(v, str) and v for v in values):
            raise ValueError(f"{name}: expected one or more non-empty strings, got {values!r}")
        equals.append((name, values))
    low, high = _generation_bounds(generation)
    if low is not None and high is not None and low > high:
        raise ValueError(f"generation: low bound {low} is above high bound {high}")
    start_us = None if start is None else _bound_us("start", start)
    end_us = None if end is None else _bound_us("end", end)
    if start_us is not None and end_us is not None and start_us >= end_us:
        raise ValueError(f"start: {start!r} is not before end {end!r}")
    return Selection(
        table=table,
        start_us=start_us,
        end_us=end_us,
        min_generation=low,
        max_generation=high,
        equals=tuple(equals),
    )


def _generation_bounds(generation: Any) -> tuple[int | None, int | None]:
    """(low, high) from one generation or an inclusive pair with None for open; a ValueError naming
    `generation` for anything else (a float, text, a triple)."""
    if _is_generation(generation):
        return int(generation), int(generation)
    if generation is None:
        return None, None
    if isinstance(generation, tuple | list) and len(generation) == 2:
        if all(bound is None or _is_generation(bound) for bound in generation):
            low, high = generation
            return (None if low is None else int(low)), (None if high is None else int(high))
    raise ValueError(f"generation: expected a whole number or a (low, high) pair of them or None, got {generation!r}")


def _is_generation(value: Any) -> bool:
    """A whole number that fits the stored int64 generations."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def _bound_us(name: str, value: Any) -> int:
    """A time bound in epoch microseconds; the ValueError names the bound, not the stored `ts`."""
    try:
        return to_timestamp_us(value)
    except ValueError as error:
        raise ValueError(f"{name}: {str(error).removeprefix('ts: ')}") from None


# ------------------------------------------------------------------------------ aggregation


def downsample(data: pa.Table, *, step_s: float, agg: str | Aggregation = Aggregation.MEAN) -> pa.Table:
    """One point per series and step-wide bucket of `samples` rows.

    Buckets are aligned to multiples of the step since the epoch (as Prometheus and Grafana do), so
    the same query gives the same points whenever it runs; a point's `ts` is its bucket's start.
    Percentiles interpolate linearly between order statistics (numpy's and pandas' default); `last`
    takes the newest row, the one stored later on equal timestamps.
    Returns columns ts, kind, node, source, metric, value, sorted by series then time.

    One series in time order (the usual panel query) takes a fast path: each bucket is a run of
    consecutive rows and each aggregate is one `ufunc.reduceat`, with no grouping at all.
    """
    agg = Aggregation(agg)
    if not isinstance(step_s, int | float | np.integer | np.floating) or not math.isfinite(step_s):
        raise ValueError(f"step_s must be a finite number of seconds, but got {step_s=}")
    step_us = int(round(step_s * 1e6))
    if step_us <= 0:
        raise ValueError(f"step_s must be positive, but got {step_s=}")
    if data.num_rows == 0:
        return _empty_points()
    ts = _int64(data.column("ts"))
    values = _float64(data.column("value"))
    series = _Series(data, SERIES_KEYS)
    if series.codes is None and bool(np.all(ts[1:] >= ts[:-1])):
        buckets, reduced = _downsample_sorted(agg, ts, values, step_us)
        series_of_point = np.zeros(len(buckets), dtype=np.int64)
    else:
        bucket = ts // step_us
        low = int(bucket.min())
        groups = _GroupIds(series, bucket - low, int(bucket.max()) - low + 1)
        present = np.flatnonzero(groups.counts())
        reduced = _reduce(agg, groups, values, ts)[present]
        series_of_point, offset = groups.split(present)
        buckets = offset + low
    points = pa.table(
        {
            "ts": pa.array(buckets * step_us).cast(TIMESTAMP),
            **series.columns(series_of_point),
            "value": pa.array(reduced),
        }
    )
    return sort_by(points, (*SERIES_KEYS, "ts"))


def _downsample_sorted(
    agg: Aggregation, ts: np.ndarray, values: np.ndarray, step_us: int
) -> tuple[np.ndarray, np.ndarray]:
    """(bucket numbers, aggregates) of one series whose `ts` is non-decreasing: each bucket is a
    contiguous run of rows, found where the bucket number changes (O(rows), whatever the range)."""
    bucket = ts // step_us
    starts = np.flatnonzero(np.concatenate(([True], bucket[1:] != bucket[:-1])))
    ends = np.append(starts[1:], len(ts))
    buckets = bucket[starts]
    counts = ends - starts
    if agg is Aggregation.COUNT:
        return buckets, counts.astype(np.float64)
    if agg in (Aggregation.SUM, Aggregation.MEAN):
        sums = np.add.reduceat(values, starts)
        return buckets, sums / counts if agg is Aggregation.MEAN else sums
    if agg is Aggregation.MIN:
        return buckets, np.minimum.reduceat(values, starts)
    if agg is Aggregation.MAX:
        return buckets, np.maximum.reduceat(values, starts)
    if agg is Aggregation.LAST:
        return buckets, values[ends - 1]
    return buckets, _segment_quantiles(values, counts, agg.quantile)


def latest(data: pa.Table) -> pa.Table:
    """The newest row of each series in `samples` (ties in `ts`: the row stored last wins)."""
    if data.num_rows == 0:
        return data
    groups = _GroupIds(_Series(data, SERIES_KEYS), np.zeros(data.num_rows, dtype=np.int64), 1)
    rows = _last_rows(groups, _int64(data.column("ts")))
    rows = rows[rows >= 0]
    return sort_by(data.take(pa.array(rows)), SERIES_KEYS)


def _reduce(agg: Aggregation, groups: _GroupIds, values: np.ndarray, ts: np.ndarray) -> np.ndarray:
    ids, size = groups.ids, groups.size
    if agg is Aggregation.COUNT:
        return groups.counts().astype(np.float64)
    if agg is Aggregation.SUM:
        return np.bincount(ids, weights=values, minlength=size)
    if agg is Aggregation.MEAN:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.bincount(ids, weights=values, minlength=size) / groups.counts()
    if agg in (Aggregation.MIN, Aggregation.MAX):
        ufunc, start = (np.minimum, np.inf) if agg is Aggregation.MIN else (np.maximum, -np.inf)
        out = np.full(size, start)
        ufunc.at(out, ids, values)
        return out
    if agg is Aggregation.LAST:
        rows = _last_rows(groups, ts)
        return np.where(rows >= 0, values[np.maximum(rows, 0)], np.nan)
    return _quantile(groups, values, agg.quantile)


def _last_rows(groups: _GroupIds, ts: np.ndarray) -> np.ndarray:
    """Index of the newest row of each group (the later row on equal ts), -1 for empty groups."""
    newest = np.full(groups.size, np.iinfo(np.int64).min)
    np.maximum.at(newest, groups.ids, ts)
    rows = np.arange(len(ts), dtype=np.int64)
    candidate = np.where(ts == newest[groups.ids], rows, -1)
    out = np.full(groups.size, -1, dtype=np.int64)
    np.maximum.at(out, groups.ids, candidate)
    return out


def _quantile(groups: _GroupIds, values: np.ndarray, q: float) -> np.ndarray:
    """Per-group quantile: one stable sort by group id, then quantiles of contiguous segments."""
    order = np.argsort(groups.ids, kind="stable")
    return _segment_quantiles(values[order], groups.counts(), q)


def _segment_quantiles(values: np.ndarray, counts: np.ndarray, q: float) -> np.ndarray:
    """Quantile `q` (linear interpolation) of each consecutive segment of `values`, whose lengths
    are `counts` (NaN for empty segments).

    The segments are laid out as rows of a grid padded with +inf and sorted along the rows in one
    call, which is several times faster than a quantile per segment; when the padding would more
    than double the data (very uneven segments), each segment is sorted on its own instead.
    """
    out = np.full(len(counts), np.nan)
    filled = counts > 0
    if not filled.any():
        return out
    width = int(counts.max())
    position = q * (counts[filled] - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, counts[filled] - 1)
    fraction = position - below
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))[filled]
    if filled.sum() * width <= 2 * len(values) + (1 << 20):
        grid = np.full((int(filled.sum()), width), np.inf)
        row = np.repeat(np.arange(len(starts)), counts[filled])
        grid[row, np.arange(len(values)) - np.repeat(starts, counts[filled])] = values
        grid.sort(axis=1)
        rows = np.arange(len(starts))
        low, high = grid[rows, below], grid[rows, above]
    else:
        segments = [np.sort(values[a : a + n]) for a, n in zip(starts, counts[filled], strict=True)]
        low = np.array([s[b] for s, b in zip(segments, below, strict=True)])
        high = np.array([s[a] for s, a in zip(segments, above, strict=True)])
    out[filled] = low + (high - low) * fraction
    return out


class _Series:
    """Dense series codes built from dictionary indices, without sorting.

    Each key column's values are numbered 0..k-1 over the values actually present (nulls are a
    value too) and the numbers are combined arithmetically; a key holding one value throughout adds
    nothing and costs no pass over the rows. `codes` is None when the data is a single series.
    """

    def __init__(self, data: pa.Table, keys: tuple[str, ...]) -> None:
        self._keys = keys
        self._levels: list[tuple[pa.Array, np.ndarray]] = []  # (values, used value index) per key
        self.codes: np.ndarray | None = None
        for key in keys:
            codes, values, used = _dense_codes(data.column(key))
            self._levels.append((values, used))
            if codes is None:
                continue
            if self.codes is None:
                self.codes = codes
            else:
                self.codes *= len(used)
                self.codes += codes
        self.space = int(np.prod([float(len(used)) for _, used in self._levels]))

    def columns(self, series: np.ndarray) -> dict[str, pa.Array]:
        """Identifier columns for dense series codes."""
        columns: dict[str, pa.Array] = {}
        for key, (values, used) in reversed(list(zip(self._keys, self._levels, strict=True))):
            series, code = np.divmod(series, len(used))
            index = used[code]
            null = index < 0
            indices = pa.array(np.maximum(index, 0).astype(np.int32), mask=null if null.any() else None)
            columns[key] = pa.DictionaryArray.from_arrays(indices, values)
        return {key: columns[key] for key in self._keys}


class _GroupIds:
    """Dense ids for (series, time bucket) groups; compacted with np.unique only when the dense
    space would be much larger than the data (very many series)."""

    def __init__(self, series: _Series, bucket: np.ndarray, buckets: int) -> None:
        if series.space * buckets >= 1 << 62:
            raise ValueError(
                f"too many distinct series ({series.space}) x buckets ({buckets}) to group; narrow the query"
            )
        self.buckets = buckets
        ids = bucket if series.codes is None else series.codes * buckets + bucket
        dense_size = series.space * buckets
        self._unique: np.ndarray | None = None
        if dense_size <= 4 * len(bucket) + (1 << 20):
            self.ids, self.size = ids, dense_size
        else:
            self._unique, self.ids = np.unique(ids, return_inverse=True)
            self.size = len(self._unique)
        self._counts: np.ndarray | None = None

    def counts(self) -> np.ndarray:
        if self._counts is None:
            self._counts = np.bincount(self.ids, minlength=self.size)
        return self._counts

    def split(self, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(dense series code, bucket offset) of each group id."""
        keys = groups if self._unique is None else self._unique[groups]
        return np.divmod(keys, self.buckets)


def _dense_codes(column: pa.ChunkedArray) -> tuple[np.ndarray | None, pa.Array, np.ndarray]:
    """Number the distinct values present in a (dictionary) column 0..k-1, nulls being one more.

    Returns (code of each row, or None when all rows hold one value; the values; `used`: for each
    code, its index in the values, -1 for null). Work is per chunk: a chunk whose dictionary holds
    a single value needs no pass over its rows, which is the common case of per-series batches.
    """
    chunks = [c if pa.types.is_dictionary(c.type) else pc.dictionary_encode(c) for c in column.chunks]
    values = pc.unique(pa.concat_arrays([c.dictionary for c in chunks])) if chunks else pa.array([], pa.string())
    null_slot = len(values)
    present = np.zeros(null_slot + 1, dtype=bool)
    local: list[tuple[np.ndarray, np.ndarray | None]] = []  # (local index -> global, row indices)
    for chunk in chunks:
        to_global = np.append(pc.index_in(chunk.dictionary, value_set=values).to_numpy(), null_slot)
        if not chunk.null_count and len(chunk.dictionary) == 1:
            present[to_global[0]] = len(chunk) > 0 or present[to_global[0]]
            local.append((to_global, None))
            continue
        indices = chunk.indices.fill_null(len(chunk.dictionary)) if chunk.null_count else chunk.indices
        rows = indices.to_numpy()
        present[to_global[np.bincount(rows, minlength=len(to_global)) > 0]] = True
        local.append((to_global, rows))
    used = np.flatnonzero(present)
    used_values = np.where(used == null_slot, -1, used)
    if len(used) <= 1:
        return None, values, used_values
    remap = np.zeros(null_slot + 1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    codes = np.empty(len(column), dtype=np.int64)
    position = 0
    for (to_global, rows), chunk in zip(local, chunks, strict=True):
        dense = remap[to_global]
        end = position + len(chunk)
        codes[position:end] = dense[0] if rows is None else dense[rows]
        position = end
    return codes, values, used_values


def _int64(column: pa.ChunkedArray) -> np.ndarray:
    return column.cast(pa.int64()).combine_chunks().to_numpy()


def _float64(column: pa.ChunkedArray) -> np.ndarray:
    return column.combine_chunks().to_numpy(zero_copy_only=False)


def _empty_points() -> pa.Table:
    schema = SCHEMAS[TableName.SAMPLES]
    return pa.schema([schema.field(n) for n in ("ts", *SERIES_KEYS, "value")]).empty_table()
