"""The data model: conform(), validate() and the batch builders of elitemon.schema."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elitemon.schema import (
    MAX_ID_LEN,
    MAX_TEXT_LEN,
    SCHEMAS,
    TIMESTAMP,
    Kind,
    Reject,
    SchemaError,
    TableName,
    batch_from_columns,
    batch_from_rows,
    conform,
    validate,
)

NOW = 1_700_000_000.0
NOW_US = int(NOW * 1e6)
MAX_FUTURE_S = 300.0


# ------------------------------------------------------------------------------------ helpers


def good_row(table: TableName, index: int) -> dict:
    """A valid row of `table`, distinguishable from the others by `index`."""
    ts = NOW - 100 + index
    if table is TableName.SAMPLES:
        return {
            "ts": ts,
            "kind": "gpu",
            "node": f"node{index}",
            "source": "monitor",
            "generation": index,
            "metric": "util",
            "value": float(index),
        }
    if table is TableName.EVENTS:
        return {
            "ts": ts,
            "type": "exploit",
            "agent": f"agent{index}",
            "source_agent": "agent0",
            "node": "n1",
            "source_node": "n0",
            "generation": index,
            "payload": '{"k": 1}',
        }
    return {
        "ts": ts,
        "agent": f"agent{index}",
        "generation": index,
        "param": "lr",
        "value": 0.1 * index,
        "text": None,
    }


def run_validate(table: TableName, rows: list[dict]):
    batch = batch_from_rows(table, rows, now=NOW)
    return validate(table, batch, now_us=NOW_US, max_future_s=MAX_FUTURE_S)


def as_rows(batch: pa.RecordBatch) -> list[dict]:
    """Rows of a conformed batch as plain Python values (ts in epoch microseconds)."""
    rows = batch.to_pylist()
    for row in rows:
        row["ts"] = int(row["ts"].timestamp() * 1_000_000)
    return rows


def expected_rows(table: TableName, rows: list[dict]) -> list[dict]:
    return as_rows(batch_from_rows(table, rows, now=NOW))


def reason_key(checked, field: str) -> str:
    """The single reason key of `checked`, which must be about `field`."""
    assert len(checked.reasons) == 1, checked.reasons
    (key,) = checked.reasons
    assert key.startswith(f"{field}: "), key
    return key


# Each case: table, field, bad value, the reason (or its prefix).
BAD_CELLS = [
    (TableName.SAMPLES, "value", math.nan, "NaN"),
    (TableName.SAMPLES, "value", math.inf, "infinite"),
    (TableName.SAMPLES, "value", -math.inf, "infinite"),
    (TableName.SAMPLES, "value", None, "missing (null)"),
    (TableName.SAMPLES, "metric", None, "missing (null)"),
    (TableName.SAMPLES, "kind", None, "missing (null)"),
    (TableName.SAMPLES, "source", "", "empty"),
    (TableName.SAMPLES, "metric", "", "empty"),
    (TableName.SAMPLES, "node", "", "empty"),
    (TableName.SAMPLES, "node", "x" * (MAX_ID_LEN + 1), f"longer than {MAX_ID_LEN} characters"),
    (TableName.SAMPLES, "metric", "é" * (MAX_ID_LEN + 1), f"longer than {MAX_ID_LEN} characters"),
    (TableName.SAMPLES, "ts", NOW + MAX_FUTURE_S + 1, "more than the allowed skew in the future"),
    (TableName.SAMPLES, "ts", -1.0, "before 1970"),
    (TableName.SAMPLES, "generation", -1, "negative"),
    (TableName.SAMPLES, "kind", "bogus", "unknown kind"),
    (TableName.EVENTS, "type", None, "missing (null)"),
    (TableName.EVENTS, "type", "", "empty"),
    (TableName.EVENTS, "agent", "a" * (MAX_ID_LEN + 1), f"longer than {MAX_ID_LEN} characters"),
    (TableName.EVENTS, "source_node", "", "empty"),
    (TableName.EVENTS, "generation", -5, "negative"),
    (TableName.EVENTS, "ts", NOW + 10 * MAX_FUTURE_S, "more than the allowed skew in the future"),
    (TableName.EVENTS, "payload", "p" * (MAX_TEXT_LEN + 1), f"longer than {MAX_TEXT_LEN} bytes"),
    (TableName.CONFIGS, "value", math.nan, "NaN"),
    (TableName.CONFIGS, "value", math.inf, "infinite"),
    (TableName.CONFIGS, "agent", None, "missing (null)"),
    (TableName.CONFIGS, "param", "", "empty"),
    (TableName.CONFIGS, "generation", -1, "negative"),
    (TableName.CONFIGS, "text", "t" * (MAX_TEXT_LEN + 1), f"longer than {MAX_TEXT_LEN} bytes"),
]


# ------------------------------------------------------------------------------------ validate


@pytest.mark.parametrize(
    "table, field, bad, reason", BAD_CELLS, ids=[f"{t.value}-{f}-{r[:12]}" for t, f, _, r in BAD_CELLS]
)
def test_bad_cell_rejects_only_its_row(table, field, bad, reason):
    rows = [good_row(table, i) for i in range(4)]
    rows[2] = {**rows[2], field: bad}
    checked = run_validate(table, rows)

    assert checked.rejected == 1
    key = reason_key(checked, field)
    assert key.startswith(f"{field}: {reason}")
    assert checked.reasons[key] == 1
    assert len(checked.examples) == 1
    example = checked.examples[0]
    assert (example.row, example.field) == (2, field)
    assert example.reason.startswith(reason)
    assert as_rows(checked.good) == expected_rows(table, [rows[0], rows[1], rows[3]])
    assert checked.good.schema == SCHEMAS[table]


@pytest.mark.parametrize(
    "table, field, value",
    [
        (TableName.SAMPLES, "node", "x" * MAX_ID_LEN),  # exactly at the limit
        (TableName.SAMPLES, "node", None),  # node is optional
        (TableName.SAMPLES, "generation", None),
        (TableName.SAMPLES, "generation", 0),
        (TableName.SAMPLES, "ts", NOW + MAX_FUTURE_S - 1),
        (TableName.SAMPLES, "ts", 0.0),
        (TableName.SAMPLES, "value", -1e300),
        (TableName.CONFIGS, "value", None),  # non-numeric params have no value
        (TableName.EVENTS, "payload", None),
        (TableName.EVENTS, "agent", None),
    ],
)
def test_edge_values_are_accepted(table, field, value):
    rows = [good_row(table, i) for i in range(3)]
    rows[1] = {**rows[1], field: value}
    checked = run_validate(table, rows)
    assert checked.rejected == 0, checked.reasons
    assert not checked.reasons
    assert as_rows(checked.good) == expected_rows(table, rows)


@pytest.mark.parametrize("kind", [k.value for k in Kind])
def test_every_kind_is_accepted(kind):
    rows = [{**good_row(TableName.SAMPLES, 0), "kind": kind}]
    assert run_validate(TableName.SAMPLES, rows).rejected == 0


def test_several_bad_rows_in_one_batch_keep_exactly_the_good_ones():
    table = TableName.SAMPLES
    rows = [good_row(table, i) for i in range(8)]
    rows[1]["value"] = math.nan
    rows[3]["kind"] = "toaster"
    rows[4]["generation"] = -2
    rows[6]["source"] = ""
    checked = run_validate(table, rows)

    assert checked.rejected == 4
    assert sum(checked.reasons.values()) == 4
    assert {key.split(":")[0] for key in checked.reasons} == {"value", "kind", "generation", "source"}
    assert sorted((e.row, e.field) for e in checked.examples) == [
        (1, "value"),
        (3, "kind"),
        (4, "generation"),
        (6, "source"),
    ]
    assert as_rows(checked.good) == expected_rows(table, [rows[i] for i in (0, 2, 5, 7)])


def test_row_with_several_faults_is_counted_once():
    table = TableName.SAMPLES
    rows = [good_row(table, 0), {**good_row(table, 1), "value": math.nan, "generation": -1, "source": ""}]
    checked = run_validate(table, rows)
    assert checked.rejected == 1
    assert sum(checked.reasons.values()) == 1
    assert len(checked.examples) == 1 and checked.examples[0].row == 1
    assert as_rows(checked.good) == expected_rows(table, rows[:1])


def test_examples_are_capped():
    table = TableName.SAMPLES
    rows = [{**good_row(table, i), "value": math.nan} for i in range(10)]
    batch = batch_from_rows(table, rows, now=NOW)
    checked = validate(table, batch, now_us=NOW_US, max_examples=3)
    assert checked.rejected == 10
    assert checked.reasons == {"value: NaN": 10}
    assert [e.row for e in checked.examples] == [0, 1, 2]
    assert checked.good.num_rows == 0


def test_max_future_is_relative_to_now():
    table = TableName.SAMPLES
    rows = [{**good_row(table, 0), "ts": NOW + 50}]
    batch = batch_from_rows(table, rows, now=NOW)
    assert validate(table, batch, now_us=NOW_US, max_future_s=60).rejected == 0
    assert validate(table, batch, now_us=NOW_US, max_future_s=40).rejected == 1


def test_all_good_batch_is_returned_whole():
    table = TableName.EVENTS
    rows = [good_row(table, i) for i in range(5)]
    checked = run_validate(table, rows)
    assert checked.rejected == 0
    assert checked.examples == ()
    assert as_rows(checked.good) == expected_rows(table, rows)


# --------------------------------------------------------------------- whole-batch (shape) rejects


def raw_samples(**overrides: pa.Array) -> pa.RecordBatch:
    """A 3-row samples batch of raw Arrow arrays (plain strings), with columns replaced/removed."""
    columns = {
        "ts": pa.array([NOW_US - 3, NOW_US - 2, NOW_US - 1], pa.timestamp("us", tz="UTC")),
        "kind": pa.array(["gpu", "node", "agent"]),
        "node": pa.array(["n0", None, "n2"]),
        "source": pa.array(["s", "s", "s"]),
        "generation": pa.array([0, 1, 2], pa.int64()),
        "metric": pa.array(["m", "m", "m"]),
        "value": pa.array([1.0, 2.0, 3.0]),
    }
    for name, array in overrides.items():
        if array is None:
            del columns[name]
        else:
            columns[name] = array
    return pa.RecordBatch.from_pydict(columns)


@pytest.mark.parametrize("missing", ["ts", "kind", "source", "metric", "value"])
def test_missing_required_column_rejects_every_row(missing):
    checked = validate(TableName.SAMPLES, raw_samples(**{missing: None}), now_us=NOW_US)
    assert checked.rejected == 3
    assert checked.reasons == {f"{missing}: missing required field": 3}
    assert checked.examples == (Reject(0, missing, "missing required field"),)
    assert checked.good.num_rows == 0
    assert checked.good.schema == SCHEMAS[TableName.SAMPLES]


@pytest.mark.parametrize(
    "field, array",
    [
        ("value", pa.array(["abc", "def", "ghi"])),
        ("generation", pa.array(["one", "two", "three"])),
        ("ts", pa.array(["yesterday", "today", "tomorrow"])),
        ("kind", pa.array([1.5, 2.5, 3.5])),
    ],
)
def test_uncastable_column_rejects_every_row(field, array):
    checked = validate(TableName.SAMPLES, raw_samples(**{field: array}), now_us=NOW_US)
    assert checked.rejected == 3
    key = reason_key(checked, field)
    assert checked.reasons[key] == 3
    assert checked.examples[0].field == field
    assert checked.good.num_rows == 0


def test_unknown_extra_column_rejects_naming_it():
    batch = raw_samples(colour=pa.array(["red", "green", "blue"]))
    checked = validate(TableName.SAMPLES, batch, now_us=NOW_US)
    assert checked.rejected == 3
    key = reason_key(checked, "colour")
    assert "unknown field" in key
    with pytest.raises(SchemaError) as error:
        conform(TableName.SAMPLES, batch)
    assert error.value.field == "colour"


def test_empty_batch_with_wrong_shape_has_no_examples():
    batch = raw_samples(metric=None).slice(0, 0)
    checked = validate(TableName.SAMPLES, batch, now_us=NOW_US)
    assert checked.rejected == 0
    assert checked.examples == ()
    assert checked.good.num_rows == 0


# ------------------------------------------------------------------------------------ conform


def test_conform_casts_strings_to_dictionary_and_int_to_float():
    batch = raw_samples(value=pa.array([1, 2, 3], pa.int64()))
    assert batch.schema.field("kind").type == pa.string()
    conformed = conform(TableName.SAMPLES, batch)
    assert conformed.schema == SCHEMAS[TableName.SAMPLES]
    assert pa.types.is_dictionary(conformed.schema.field("kind").type)
    assert conformed.schema.field("value").type == pa.float64()
    assert conformed.column("value").to_pylist() == [1.0, 2.0, 3.0]
    assert conformed.column("kind").to_pylist() == ["gpu", "node", "agent"]
    assert conformed.column("node").to_pylist() == ["n0", None, "n2"]


def test_conform_reorders_columns_and_fills_absent_nullable_ones():
    batch = raw_samples(node=None, generation=None)
    reordered = batch.select(list(reversed(batch.schema.names)))
    conformed = conform(TableName.SAMPLES, reordered)
    assert conformed.schema.names == SCHEMAS[TableName.SAMPLES].names
    assert conformed.column("node").to_pylist() == [None, None, None]
    assert conformed.column("generation").to_pylist() == [None, None, None]
    assert conformed.column("metric").to_pylist() == ["m", "m", "m"]


def test_conform_casts_ns_timestamps_to_us():
    ns = pa.array([NOW_US * 1000 + 7000], pa.timestamp("ns", tz="UTC"))
    batch = raw_samples().slice(0, 1)
    batch = batch.set_column(0, "ts", ns)
    conformed = conform(TableName.SAMPLES, batch)
    assert conformed.column("ts").cast(pa.int64()).to_pylist() == [NOW_US + 7]
    # Nanoseconds below a microsecond (pandas' Timestamp.now()) are dropped, not the row or the batch.
    finer = batch.set_column(0, "ts", pa.array([NOW_US * 1000 + 7321], pa.timestamp("ns", tz="UTC")))
    assert conform(TableName.SAMPLES, finer).column("ts").cast(pa.int64()).to_pylist() == [NOW_US + 7]


def test_conform_refuses_naive_timestamps_naming_ts():
    naive = pa.array([NOW_US] * 3, pa.timestamp("us"))
    with pytest.raises(SchemaError) as error:
        conform(TableName.SAMPLES, raw_samples(ts=naive))
    assert error.value.field == "ts"
    checked = validate(TableName.SAMPLES, raw_samples(ts=naive), now_us=NOW_US)
    assert checked.rejected == 3
    reason_key(checked, "ts")


# ------------------------------------------------------------------------------------ builders


def ts_us(batch: pa.RecordBatch) -> list[int]:
    return batch.column("ts").cast(pa.int64()).to_pylist()


def test_batch_from_rows_reads_ts_as_epoch_seconds():
    rows = [
        {"ts": 1_700_000_000.25, "kind": "gpu", "source": "s", "metric": "m", "value": 1},
        {"ts": 1_700_000_001, "kind": "gpu", "source": "s", "metric": "m", "value": 2},
    ]
    batch = batch_from_rows("samples", rows)
    assert batch.schema == SCHEMAS[TableName.SAMPLES]
    assert ts_us(batch) == [1_700_000_000_250_000, 1_700_000_001_000_000]
    assert batch.column("value").to_pylist() == [1.0, 2.0]
    assert batch.column("node").to_pylist() == [None, None]


def test_batch_from_rows_accepts_aware_datetimes_and_datetime64():
    aware = dt.datetime(2023, 11, 14, 22, 13, 20, 500, tzinfo=dt.UTC)
    rows = [{"ts": aware, "kind": "gpu", "source": "s", "metric": "m", "value": 1.0}]
    assert ts_us(batch_from_rows("samples", rows)) == [1_700_000_000_000_500]
    rows = [
        {"ts": np.datetime64(1_700_000_000_000_001, "us"), "kind": "gpu", "source": "s", "metric": "m", "value": 1.0}
    ]
    assert ts_us(batch_from_rows("samples", rows)) == [1_700_000_000_000_001]


def test_missing_ts_is_filled_with_now():
    rows = [{"kind": "gpu", "source": "s", "metric": "m", "value": 1.0}] * 3
    batch = batch_from_rows("samples", rows, now=1_700_000_123.5)
    assert ts_us(batch) == [1_700_000_123_500_000] * 3
    batch = batch_from_columns("events", {"type": ["a", "b"]}, now=1_600_000_000.0)
    assert ts_us(batch) == [1_600_000_000_000_000] * 2


def test_naive_datetime_raises_schema_error_naming_ts():
    rows = [{"ts": dt.datetime(2024, 1, 1), "kind": "gpu", "source": "s", "metric": "m", "value": 1.0}]
    with pytest.raises(SchemaError) as error:
        batch_from_rows("samples", rows)
    assert error.value.field == "ts"
    assert error.value.reason == "expected epoch seconds or a timezone-aware datetime"
    assert "naive" in str(error.value)  # the detail names the problem; the counted reason stays fixed


@pytest.mark.parametrize("bad", [math.nan, math.inf, "yesterday", True, 1_700_000_000_000_000, 10**400])
def test_unusable_ts_raises_schema_error_naming_ts(bad):
    rows = [{"ts": bad, "kind": "gpu", "source": "s", "metric": "m", "value": 1.0}]
    with pytest.raises(SchemaError) as error:
        batch_from_rows("samples", rows)
    assert error.value.field == "ts"


def test_a_time_in_finer_units_given_as_seconds_is_refused_naming_ts():
    """Microseconds (or nanoseconds) as epoch seconds overflow timestamp[us]: refused, not wrapped."""
    with pytest.raises(SchemaError) as error:
        batch_from_columns("samples", {"ts": np.array([1.7e15]), "kind": ["gpu"], "source": ["s"], "metric": ["m"]})
    assert error.value.field == "ts" and "out of range" in error.value.reason


def test_rows_with_and_without_ts_mix():
    rows = [{"ts": 1_700_000_000.0, "kind": "gpu", "source": "s", "metric": "m", "value": 1.0}]
    rows.append({"kind": "gpu", "source": "s", "metric": "m", "value": 2.0})
    batch = batch_from_rows("samples", rows, now=1_700_000_123.5)
    assert ts_us(batch) == [1_700_000_000_000_000, 1_700_000_123_500_000]


def test_a_column_given_twice_is_refused_naming_it():
    batch = pa.RecordBatch.from_arrays(
        [pa.array(["a"]), pa.array(["b"])] + list(raw_samples().slice(0, 1).columns),
        names=["node", "node"] + raw_samples().schema.names,
    )
    with pytest.raises(SchemaError) as error:
        conform(TableName.SAMPLES, batch)
    assert error.value.field == "node" and error.value.reason == "given more than once"


def test_a_table_in_place_of_a_batch_is_refused_naming_batch():
    with pytest.raises(SchemaError) as error:
        conform(TableName.SAMPLES, pa.Table.from_batches([raw_samples()]))
    assert error.value.field == "batch" and "Table" in error.value.reason


def test_batch_from_columns_takes_numpy_arrays():
    batch = batch_from_columns(
        "samples",
        {
            "ts": np.array([1.5, 2.5]),
            "kind": ["gpu", "node"],
            "source": np.array(["a", "b"]),
            "metric": ["m", "m"],
            "generation": np.array([3, 4]),
            "value": np.array([1, 2], dtype=np.int32),
        },
    )
    assert ts_us(batch) == [1_500_000, 2_500_000]
    assert batch.column("value").to_pylist() == [1.0, 2.0]
    assert batch.column("generation").to_pylist() == [3, 4]
    assert batch.column("source").to_pylist() == ["a", "b"]
    with pytest.raises(SchemaError) as error:
        batch_from_columns("samples", {"ts": np.array([1.0, np.nan]), "kind": ["gpu", "gpu"]})
    assert error.value.field == "ts"


def test_batch_from_columns_shape_errors_name_the_field():
    with pytest.raises(SchemaError) as error:
        batch_from_columns("samples", {"kind": ["gpu"], "metric": ["m", "n"]})
    assert error.value.field == "columns"
    with pytest.raises(SchemaError) as error:
        batch_from_columns("samples", {"kind": ["gpu"], "colour": ["red"]})
    assert error.value.field == "colour"
    with pytest.raises(SchemaError) as error:
        batch_from_columns("samples", {"kind": ["gpu"], "value": ["abc"]})
    assert error.value.field == "value"
    with pytest.raises(SchemaError) as error:  # a required column absent altogether
        batch_from_columns("samples", {"kind": ["gpu"], "source": ["s"], "value": [1.0]})
    assert error.value.field == "metric"
    with pytest.raises(ValueError, match="unknown table"):
        batch_from_columns("metrics", {"kind": ["gpu"]})


def test_batch_from_rows_fills_keys_missing_from_some_rows_with_null():
    rows = [
        {"ts": 1.0, "kind": "gpu", "source": "s", "metric": "m", "value": 1.0, "node": "n"},
        {"ts": 2.0, "kind": "gpu", "source": "s", "metric": "m", "value": 2.0},
    ]
    assert batch_from_rows("samples", rows).column("node").to_pylist() == ["n", None]


def test_batch_from_no_rows_is_empty_with_the_schema():
    batch = batch_from_rows("configs", [])
    assert batch.num_rows == 0
    assert batch.schema == SCHEMAS[TableName.CONFIGS]


# ------------------------------------------------------------------------------------ property


def row_oracle_is_good(row: dict) -> bool:
    """The validation rules, written out row by row, for samples rows built by `sample_rows`."""
    value = row["value"]
    return (
        value is not None
        and math.isfinite(value)
        and row["kind"] in {k.value for k in Kind}
        and all(row[name] != "" for name in ("source", "metric"))
        and (row["node"] is None or 0 < len(row["node"]) <= MAX_ID_LEN)
        and len(row["source"]) <= MAX_ID_LEN
        and (row["generation"] is None or row["generation"] >= 0)
        and 0 <= row["ts"] <= NOW + MAX_FUTURE_S
    )


sample_rows = st.lists(
    st.fixed_dictionaries(
        {
            "ts": st.sampled_from([NOW - 3600, NOW, NOW + MAX_FUTURE_S - 1, NOW + MAX_FUTURE_S + 1, -10.0]),
            "kind": st.sampled_from(["gpu", "node", "agent", "bench", "bogus", ""]),
            "node": st.sampled_from([None, "n0", "n1", "", "x" * (MAX_ID_LEN + 1)]),
            "source": st.sampled_from(["s", "", "y" * MAX_ID_LEN, "y" * (MAX_ID_LEN + 1)]),
            "generation": st.one_of(st.none(), st.integers(-3, 3)),
            "metric": st.sampled_from(["m", "loss", ""]),
            "value": st.one_of(
                st.none(), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf])
            ),
        }
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=sample_rows)
def test_property_accepted_plus_rejected_is_total_and_accepted_are_finite(rows):
    checked = run_validate(TableName.SAMPLES, rows)
    total = len(rows)
    assert checked.good.num_rows + checked.rejected == total
    assert sum(checked.reasons.values()) == checked.rejected
    values = np.asarray(checked.good.column("value").to_pylist(), dtype=float)
    assert np.isfinite(values).all()
    assert as_rows(checked.good) == expected_rows(TableName.SAMPLES, [r for r in rows if row_oracle_is_good(r)])


def test_a_null_inside_the_dictionary_is_a_null_of_the_column():
    source = pc.dictionary_encode(pa.array(["a", None, "b"]), null_encoding="encode")
    assert source.null_count == 0 and source.dictionary.null_count == 1  # the hidden null
    batch = pa.record_batch(
        {
            "ts": pa.array([1_700_000_000_000_000] * 3, pa.int64()).cast(TIMESTAMP),
            "kind": pa.array(["agent"] * 3).dictionary_encode(),
            "source": source,
            "metric": pa.array(["m"] * 3).dictionary_encode(),
            "value": [1.0, 2.0, 3.0],
        }
    )
    checked = validate(TableName.SAMPLES, batch, now_us=1_700_000_000_000_000)
    assert checked.rejected == 1 and checked.reasons == {"source: missing (null)": 1}
    assert checked.good.column("source").dictionary.null_count == 0
