"""The three tables elitemon stores, their Arrow schemas, and the checks every row must pass.

One module owns the data model so that producers (which check rows before sending them) and the
aggregator (which checks again, because not every writer is our producer) apply the very same rules.

Validation is columnar: each rule is one pyarrow compute kernel over a whole batch, and a bad row is
rejected with the field and the reason while the good rows of the same batch are kept. A batch whose
*shape* is wrong (a missing column, a column of a type that cannot be cast) cannot be split into good
and bad rows, so every one of its rows is rejected with that field and reason.
"""

from __future__ import annotations

import enum
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class TableName(enum.StrEnum):
    """The tables of the store. A batch always belongs to exactly one of them."""

    SAMPLES = "samples"
    EVENTS = "events"
    CONFIGS = "configs"


class Kind(enum.StrEnum):
    """What a sample describes; the `kind` column of `samples`."""

    AGENT = "agent"
    NODE = "node"
    GPU = "gpu"
    BENCH = "bench"
    #: Written by `elitemon start --smoke` to check the write and read path; nothing analyses them.
    SMOKE = "smoke"


_ID = pa.dictionary(pa.int32(), pa.string())
TIMESTAMP = pa.timestamp("us", tz="UTC")

SCHEMAS: dict[TableName, pa.Schema] = {
    TableName.SAMPLES: pa.schema(
        [
            pa.field("ts", TIMESTAMP, nullable=False),
            pa.field("kind", _ID, nullable=False),
            pa.field("node", _ID),
            pa.field("source", _ID, nullable=False),
            pa.field("generation", pa.int64()),
            pa.field("metric", _ID, nullable=False),
            pa.field("value", pa.float64(), nullable=False),
        ]
    ),
    TableName.EVENTS: pa.schema(
        [
            pa.field("ts", TIMESTAMP, nullable=False),
            pa.field("type", _ID, nullable=False),
            pa.field("agent", _ID),
            pa.field("source_agent", _ID),
            pa.field("node", _ID),
            pa.field("source_node", _ID),
            pa.field("generation", pa.int64()),
            pa.field("payload", pa.string()),
        ]
    ),
    TableName.CONFIGS: pa.schema(
        [
            pa.field("ts", TIMESTAMP, nullable=False),
            pa.field("agent", _ID, nullable=False),
            pa.field("generation", pa.int64()),
            pa.field("param", _ID, nullable=False),
            pa.field("value", pa.float64()),
            pa.field("text", pa.string()),
        ]
    ),
}

#: Identifier columns: dictionary-encoded strings that must be non-empty and at most MAX_ID_LEN long.
ID_COLUMNS: dict[TableName, tuple[str, ...]] = {
    TableName.SAMPLES: ("kind", "node", "source", "metric"),
    TableName.EVENTS: ("type", "agent", "source_agent", "node", "source_node"),
    TableName.CONFIGS: ("agent", "param"),
}

MAX_ID_LEN = 256
#: Payloads and config texts larger than this are rejected rather than stored: they are meant to be
#: small JSON documents, and one runaway row must not eat the memory budget.
MAX_TEXT_LEN = 1 << 20
#: Rows stamped further than this into the future come from a broken clock or a unit mistake
#: (milliseconds given as seconds), and would sit at the end of every range forever.
DEFAULT_MAX_FUTURE_S = 300.0
#: The largest epoch-seconds value whose microseconds fit timestamp[us] (int64): about year 294,000.
#: Past it, a number is a time in finer units given as seconds, refused rather than overflowed.
MAX_EPOCH_S = 9.2e12


def table_name(name: str | TableName) -> TableName:
    """Return the TableName for `name`, or raise a ValueError that lists the valid ones."""
    try:
        return TableName(name)
    except ValueError:
        valid = ", ".join(t.value for t in TableName)
        raise ValueError(f"unknown table {name!r}; expected one of: {valid}") from None


class SchemaError(ValueError):
    """A batch's shape is wrong (missing or uncastable column): none of its rows can be stored."""

    def __init__(self, field_name: str, reason: str, detail: str = "") -> None:
        """`reason` is a fixed phrase (rejects are counted by it); the offending value goes in `detail`."""
        super().__init__(f"{field_name}: {reason}" + (f" ({detail})" if detail else ""))
        self.field = field_name
        self.reason = reason


@dataclass(frozen=True)
class Reject:
    """One rejected row: where it was in its batch, which field was wrong, and why."""

    row: int
    field: str
    reason: str


@dataclass(frozen=True)
class Validated:
    """The outcome of checking a batch: the rows to keep and an account of the rest."""

    good: pa.RecordBatch
    rejected: int
    reasons: Counter[str] = field(default_factory=Counter)
    examples: tuple[Reject, ...] = ()


def conform(table: TableName, batch: pa.RecordBatch) -> pa.RecordBatch:
    """Return `batch` with exactly the table's columns, in order and of the table's types.

    Columns may arrive in another order or a castable type (plain strings for dictionary columns,
    int for float, ns timestamps for us); nullable columns may be absent and are filled with nulls.
    Raises SchemaError naming the field for anything else.
    """
    if not isinstance(batch, pa.RecordBatch):
        raise SchemaError("batch", f"expected a pyarrow.RecordBatch, got {type(batch).__name__}")
    schema = SCHEMAS[table]
    known = set(schema.names)
    for name in batch.schema.names:
        if name not in known:
            raise SchemaError(name, f"unknown field for table {table.value} (expected {sorted(known)})")
        if len(batch.schema.get_all_field_indices(name)) > 1:
            raise SchemaError(name, "given more than once")
    columns = []
    for target in schema:
        index = batch.schema.get_field_index(target.name)
        if index < 0:
            if not target.nullable:
                raise SchemaError(target.name, "missing required field")
            columns.append(pa.nulls(batch.num_rows, target.type))
            continue
        column = batch.column(index)
        if column.type != target.type:
            column = _cast(target, column)
        if pa.types.is_dictionary(column.type) and column.dictionary.null_count:
            # A null *inside* the dictionary hides from null_count and cannot be written to
            # Parquet: re-encode so that nulls are nulls of the column.
            column = pc.dictionary_encode(column.dictionary_decode())
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _cast(target: pa.Field, column: pa.Array) -> pa.Array:
    if pa.types.is_timestamp(target.type) and pa.types.is_timestamp(column.type):
        if column.type.tz is None:
            raise SchemaError(target.name, "timestamp without time zone; use UTC")
        if column.type.unit == "ns":  # pandas' unit: its sub-microsecond digits are dropped, not refused
            return column.cast(target.type, safe=False)
    try:
        return column.cast(target.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
        raise SchemaError(target.name, f"expected {target.type}, got {column.type}", str(error)) from None


def validate(
    table: TableName,
    batch: pa.RecordBatch,
    *,
    now_us: int | None = None,
    max_future_s: float = DEFAULT_MAX_FUTURE_S,
    max_examples: int = 5,
) -> Validated:
    """Check every row of `batch` and split it into the rows to keep and counted rejects.

    Rules: required fields are present and non-null; identifiers are non-empty and at most
    MAX_ID_LEN characters; floats are finite (a null config value is allowed: non-numeric params);
    `ts` is at most `max_future_s` ahead of `now_us`; `generation` is not negative; `kind` is a Kind.
    A SchemaError (wrong shape) rejects the whole batch and is reported the same way, so callers
    have a single path.
    """
    try:
        batch = conform(table, batch)
    except SchemaError as error:
        empty = SCHEMAS[table].empty_table().to_batches()
        good = empty[0] if empty else pa.RecordBatch.from_pylist([], schema=SCHEMAS[table])
        reason = f"{error.field}: {error.reason}"
        return Validated(
            good=good,
            rejected=batch.num_rows,
            reasons=Counter({reason: batch.num_rows}),
            examples=(Reject(0, error.field, error.reason),) if batch.num_rows else (),
        )
    now_us = time.time_ns() // 1000 if now_us is None else now_us
    checks = [c for c in _row_checks(table, batch, now_us + int(max_future_s * 1e6)) if c[2] is not None]
    if not checks:
        return Validated(good=batch, rejected=0)
    bad_any = np.zeros(batch.num_rows, dtype=bool)
    reasons: Counter[str] = Counter()
    examples: list[Reject] = []
    for field_name, reason, mask in checks:
        fresh = mask & ~bad_any
        count = int(fresh.sum())
        if not count:
            continue
        reasons[f"{field_name}: {reason}"] += count
        for row in np.flatnonzero(fresh)[: max_examples - len(examples)]:
            examples.append(Reject(int(row), field_name, reason))
        bad_any |= fresh
    rejected = int(bad_any.sum())
    good = batch.filter(pa.array(~bad_any)) if rejected else batch
    return Validated(good=good, rejected=rejected, reasons=reasons, examples=tuple(examples))


def _row_checks(
    table: TableName, batch: pa.RecordBatch, latest_us: int
) -> Iterable[tuple[str, str, np.ndarray | None]]:
    """Yield (field, reason, mask of offending rows or None) for the rules that some row may break.

    Each rule first asks a cheap whole-column question (null count, min/max, all finite) and builds
    a per-row mask only when the answer says some row is bad, so a clean batch costs a handful of
    reductions.
    """
    schema = SCHEMAS[table]
    for target in schema:
        column = batch.column(target.name)
        if not target.nullable and column.null_count:
            yield target.name, "missing (null)", _mask(column.is_null())
    for name in ID_COLUMNS[table]:
        yield from _id_checks(name, batch.column(name))
    if "value" in schema.names:
        values = batch.column("value")
        if values.null_count < len(values) and not pc.all(pc.is_finite(values)).as_py():
            yield "value", "NaN", _mask(pc.is_nan(values))
            yield "value", "infinite", _mask(pc.is_inf(values))
    ts = batch.column("ts").cast(pa.int64())
    bounds = pc.min_max(ts)
    if bounds["max"].as_py() is not None and bounds["max"].as_py() > latest_us:
        yield "ts", "more than the allowed skew in the future", _mask(pc.greater(ts, latest_us))
    if bounds["min"].as_py() is not None and bounds["min"].as_py() < 0:
        yield "ts", "before 1970", _mask(pc.less(ts, 0))
    generation = batch.column("generation")
    lowest = pc.min(generation).as_py()
    if lowest is not None and lowest < 0:
        yield "generation", "negative", _mask(pc.less(generation, 0))
    if table is TableName.SAMPLES:
        kinds = pa.array([k.value for k in Kind])
        unknown = pc.invert(pc.is_in(batch.column("kind").dictionary, value_set=kinds))
        yield (
            "kind",
            f"unknown kind (expected one of {[k.value for k in Kind]})",
            _by_dictionary(batch.column("kind"), unknown),
        )
    for name in ("payload", "text"):
        if name in schema.names:
            lengths = pc.binary_length(batch.column(name))
            longest = pc.max(lengths).as_py()
            if longest is not None and longest > MAX_TEXT_LEN:
                yield name, f"longer than {MAX_TEXT_LEN} bytes", _mask(pc.greater(lengths, MAX_TEXT_LEN))


def _id_checks(name: str, column: pa.DictionaryArray) -> Iterable[tuple[str, str, np.ndarray | None]]:
    """Identifier rules, evaluated once per distinct value (the dictionary), then mapped to rows."""
    lengths = pc.utf8_length(column.dictionary)
    bounds = pc.min_max(lengths)
    if bounds["min"].as_py() == 0:
        yield name, "empty", _by_dictionary(column, pc.equal(lengths, 0))
    if (bounds["max"].as_py() or 0) > MAX_ID_LEN:
        yield name, f"longer than {MAX_ID_LEN} characters", _by_dictionary(column, pc.greater(lengths, MAX_ID_LEN))


def _by_dictionary(column: pa.DictionaryArray, bad_values: pa.BooleanArray) -> np.ndarray | None:
    if not pc.any(bad_values).as_py():
        return None
    return _mask(pc.take(bad_values, column.indices))


def _mask(condition: pa.Array) -> np.ndarray:
    """A boolean numpy mask where nulls (no value to judge) count as not offending."""
    return np.asarray(condition.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


# --------------------------------------------------------------------------------------------
# Building batches from Python values (the producer's edge).


def to_timestamp_us(value: Any) -> int:
    """Epoch microseconds from epoch seconds (int/float, as time.time() gives), a datetime or a
    numpy datetime64. Raises ValueError naming what it got for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"ts: expected epoch seconds or a datetime, got {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
        if not math.isfinite(seconds):
            raise ValueError(f"ts: not a finite number: {value!r}")
        if abs(seconds) > MAX_EPOCH_S:
            raise ValueError(f"ts: {value!r} is out of range for epoch seconds (micro- or nanoseconds?)")
        return int(round(seconds * 1e6))
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[us]").astype(np.int64))
    timestamp = getattr(value, "timestamp", None)
    if callable(timestamp):
        if getattr(value, "tzinfo", None) is None:
            raise ValueError(f"ts: naive datetime {value!r}; give a timezone-aware one")
        return int(round(timestamp() * 1e6))
    raise ValueError(f"ts: expected epoch seconds or a datetime, got {type(value).__name__}")


def batch_from_columns(
    table: str | TableName, columns: Mapping[str, Sequence[Any] | np.ndarray], *, now: float | None = None
) -> pa.RecordBatch:
    """Build a batch of `table` from equal-length columns of Python or numpy values.

    `ts` may be omitted (every row gets `now`, default time.time()) or given as epoch seconds or
    datetimes. Raises SchemaError naming the field when a column cannot be converted; per-row
    checks are left to `validate`.
    """
    table = table_name(table)
    schema = SCHEMAS[table]
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise SchemaError("columns", "columns differ in length", str(lengths))
    num_rows = next(iter(lengths.values()), 0)
    arrays: dict[str, pa.Array] = {}
    for name, values in columns.items():
        if name not in schema.names:
            raise SchemaError(name, f"unknown field for table {table.value} (expected {schema.names})")
        target = schema.field(name)
        arrays[name] = _ts_array(values) if name == "ts" else _array(target, values)
    if "ts" not in arrays:
        stamp = int((time.time() if now is None else now) * 1e6)
        arrays["ts"] = pa.array(np.full(num_rows, stamp, dtype=np.int64)).cast(TIMESTAMP)
    return conform(table, pa.RecordBatch.from_pydict(arrays))


def batch_from_rows(
    table: str | TableName, rows: Sequence[Mapping[str, Any]], *, now: float | None = None
) -> pa.RecordBatch:
    """Build a batch of `table` from row dicts; see batch_from_columns for the conventions."""
    table = table_name(table)
    names: list[str] = []
    seen: set[str] = set()
    for row in rows:
        for key in row:
            if key not in seen:
                seen.add(key)
                names.append(key)
    now = time.time() if now is None else now
    columns = {name: [row.get(name) for row in rows] for name in names}
    if "ts" in columns:  # some rows have one: the others are stamped `now`, as a batch without any is
        columns["ts"] = [row["ts"] if "ts" in row else now for row in rows]
    if not rows:
        columns = {name: [] for name in SCHEMAS[table].names}
    return batch_from_columns(table, columns, now=now)


def _ts_array(values: Sequence[Any] | np.ndarray) -> pa.Array:
    if isinstance(values, np.ndarray) and np.issubdtype(values.dtype, np.datetime64):
        return pa.array(values.astype("datetime64[us]").astype(np.int64)).cast(TIMESTAMP)
    if isinstance(values, np.ndarray) and np.issubdtype(values.dtype, np.number):
        if not np.all(np.isfinite(values)):
            raise SchemaError("ts", "not a finite number")
        if np.any(np.abs(values) > MAX_EPOCH_S):
            raise SchemaError("ts", "out of range for epoch seconds (micro- or nanoseconds?)")
        return pa.array(np.round(values.astype(np.float64) * 1e6).astype(np.int64)).cast(TIMESTAMP)
    try:
        micros = [to_timestamp_us(value) for value in values]
    except ValueError as error:
        raise SchemaError("ts", "expected epoch seconds or a timezone-aware datetime", str(error)) from None
    return pa.array(micros, pa.int64()).cast(TIMESTAMP)


def _array(target: pa.Field, values: Sequence[Any] | np.ndarray) -> pa.Array:
    value_type = target.type.value_type if pa.types.is_dictionary(target.type) else target.type
    try:
        array = pa.array(values, type=value_type, from_pandas=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as error:
        raise SchemaError(target.name, f"expected {value_type}", str(error)) from None
    if pa.types.is_dictionary(target.type):
        return pc.dictionary_encode(array)
    return array
