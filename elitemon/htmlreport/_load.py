"""Where the report's tables come from: a running aggregator, or a data directory read in place.

Reading a directory never opens a `Store`. A Store takes the directory's exclusive lock (so it fails
while an aggregator runs there, and would keep that aggregator from starting meanwhile), deletes
segment files the manifest does not list and opens a new log generation: all writes, wrong for a
report that may run against a live run, a copy, or a read-only mount. Instead `read_data_dir` takes
the snapshot the store's own recovery would, and writes nothing: the manifest's segments, then the
write-ahead log from the manifest's generation on, each batch applied once by its `(producer_id, seq)`
(as `Store._recover_log` does). A live aggregator may seal or apply retention meanwhile, which moves
rows from the log into a new segment or deletes a segment: the manifest is read before and after,
and the whole read repeats while it changed, so that no row is counted twice or lost. Rows the
aggregator logs after the read are simply not in the snapshot.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import pyarrow as pa

from elitemon.config import StoreConfig, default_data_dir
from elitemon.query import select
from elitemon.schema import SCHEMAS, TableName
from elitemon.store._segments import MANIFEST, Manifest, read_segment
from elitemon.store._sequences import SequenceTracker
from elitemon.store._wal import replay

#: A snapshot is retried this many times when a seal or retention changes the manifest during it.
SNAPSHOT_ATTEMPTS = 5
log = logging.getLogger(__name__)


class RunTables(NamedTuple):
    """The three tables as pandas frames, as `Client.samples(as_pandas=True)` gives them. `samples`
    holds agent rows only: node, GPU and benchmark rows are not in the report and can be large."""

    samples: pd.DataFrame
    events: pd.DataFrame
    configs: pd.DataFrame
    source: str  # where they came from, for the report's header and the CLI's message


def read_data_dir(data_dir: str | Path, *, start: float | None = None) -> RunTables:
    """A consistent snapshot of the store in `data_dir` (rows from `start`, epoch seconds, on), read
    without a lock and without writing anything; see the module docstring. Raises ValueError when
    the directory holds no elitemon data, RuntimeError when it kept changing through every attempt."""
    directory = Path(data_dir).expanduser()
    if not (directory / MANIFEST).exists() and not (directory / "wal").is_dir():
        raise ValueError(f"{directory}: no elitemon data here (neither {MANIFEST} nor wal/)")
    for _ in range(SNAPSHOT_ATTEMPTS):
        before = _manifest_bytes(directory)
        try:
            tables = _read_once(directory)
        except FileNotFoundError:  # a segment or log file removed by a seal or retention meanwhile
            tables = None
        if tables is not None and _manifest_bytes(directory) == before:
            return _frames(tables, start, f"data directory {directory}")
        log.info("%s changed while it was read; reading it again", directory)
    raise RuntimeError(f"{directory}: the store kept sealing while it was read ({SNAPSHOT_ATTEMPTS} attempts)")


def query_aggregator(client: Any, *, start: float | None = None) -> RunTables:
    """The tables from a running aggregator through an `elitemon.client.Client`."""
    samples = client.samples(kind="agent", start=start, as_pandas=True)
    return RunTables(
        samples=samples,
        events=client.events(start=start, as_pandas=True),
        configs=_configs_of_the_run(client.configs(as_pandas=True), samples, start),
        source="the running aggregator",
    )


def load_run(
    *, data_dir: str | Path | None = None, address: str | None = None, start: float | None = None
) -> RunTables:
    """The CLI's choice of source: `data_dir` when given; else the aggregator of the Ray cluster at
    `address` (default: the running one); and when no cluster or aggregator is found and no address
    was given, the default data directory ($ELITEMON_DATA_DIR or ~/.elitemon/data)."""
    if data_dir is not None:
        return read_data_dir(data_dir, start=start)
    from elitemon.aggregator import AggregatorNotFound  # imports Ray: only when an aggregator is wanted
    from elitemon.client import connect

    try:
        client = connect(address or "auto")
    except (ConnectionError, AggregatorNotFound):
        if address is not None:
            raise
        return read_data_dir(default_data_dir(), start=start)
    return query_aggregator(client, start=start)


def _read_once(directory: Path) -> dict[TableName, list[pa.Table]]:
    manifest = Manifest.load(directory)
    tables: dict[TableName, list[pa.Table]] = {t: [] for t in TableName}
    for segment in manifest.segments:
        tables[segment.table].append(read_segment(directory, segment))
    sequences = SequenceTracker.restore(manifest.sequences, StoreConfig.max_producers)
    for logged in replay(directory / "wal", manifest.wal_generation):
        if sequences.seen(logged.producer_id, logged.seq):
            continue
        sequences.add(logged.producer_id, logged.seq)
        tables[logged.table].append(pa.Table.from_batches([logged.batch], SCHEMAS[logged.table]))
    return tables


def _manifest_bytes(directory: Path) -> bytes | None:
    try:
        return (directory / MANIFEST).read_bytes()
    except FileNotFoundError:
        return None


def _frames(tables: dict[TableName, list[pa.Table]], start: float | None, source: str) -> RunTables:
    def frame(table: TableName, **columns: str) -> pd.DataFrame:
        pieces = tables[table] or [SCHEMAS[table].empty_table()]
        data = pa.concat_tables(pieces)
        expression = select(table, start=start, **columns).expression()
        return (data if expression is None else data.filter(expression)).to_pandas()

    samples = frame(TableName.SAMPLES, kind="agent")
    everything = pa.concat_tables(tables[TableName.CONFIGS] or [SCHEMAS[TableName.CONFIGS].empty_table()]).to_pandas()
    return RunTables(
        samples=samples,
        events=frame(TableName.EVENTS),
        configs=_configs_of_the_run(everything, samples, start),
        source=source,
    )


def _configs_of_the_run(configs: pd.DataFrame, samples: pd.DataFrame, start: float | None) -> pd.DataFrame:
    """The hyperparameter rows of the agents in `samples`, from before `start` too. Configs are state,
    written at a trial's start and at its exploits: cut at `start` like samples and events, most
    agents would have none (diversity and importance read from the few exploited since)."""
    if start is None or configs.empty:
        return configs
    return configs[configs["agent"].isin(set(samples["source"].astype(str)))].reset_index(drop=True)
