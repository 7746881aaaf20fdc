"""The store: exactly-once ingest into a hot Arrow buffer, sealed to Parquet, recovered from a log.

Life of a batch: `ingest` validates it (outside the lock), then under the lock drops it if its
`(producer_id, seq)` was already applied, appends the good rows to the write-ahead log, records the
sequence and appends the rows to the hot buffer; only then does it return the acknowledgement.
`seal` freezes the hot buffer, rotates the log, writes one Parquet segment per table outside
the lock (ingest and queries go on meanwhile), then publishes a new manifest and drops the sealed
log generations. Sealed data stays cached in memory until the memory budget needs the room.

Threads: state is guarded by `_lock`; sealing and retention are serialised by `_seal_lock`, and the
manifest is only replaced while holding both. Arrow data is immutable, so queries copy references
under the lock and compute outside it.
"""

from __future__ import annotations

import fcntl
import logging
import numbers
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from elitemon.config import FsyncPolicy, StoreConfig
from elitemon.query import Selection
from elitemon.schema import SCHEMAS, Reject, TableName, table_name, validate
from elitemon.store._segments import (
    Manifest,
    Segment,
    read_segment,
    remove_orphans,
    write_segment,
)
from elitemon.store._sequences import SequenceTracker
from elitemon.store._wal import WriteAheadLog, fsync_all, last_generation, replay

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ack:
    """The store's answer to one batch. `duplicate` batches were applied before and changed nothing."""

    producer_id: str
    seq: int
    accepted: int
    rejected: int = 0
    duplicate: bool = False
    reasons: dict[str, int] = field(default_factory=dict)
    examples: tuple[Reject, ...] = ()


@dataclass(frozen=True)
class Health:
    """A snapshot of the store's state, for `elitemon status` and the health endpoint."""

    rows: int
    rows_in_memory: int
    bytes_in_memory: int
    memory_budget_bytes: int
    unsealed_rows: int
    segments: int
    bytes_on_disk: int
    wal_bytes: int
    batches: int
    duplicates: int
    rejected_rows: int
    rejects: dict[str, int]
    producers: int
    last_seal: float | None
    last_error: str | None
    data_dir: str


class _Chunk(NamedTuple):
    """A batch held in memory with its time bounds, so queries can skip it without reading it."""

    batch: pa.RecordBatch
    min_ts: int
    max_ts: int

    @classmethod
    def of(cls, batch: pa.RecordBatch) -> _Chunk:
        bounds = pc.min_max(batch.column("ts").cast(pa.int64()))
        return cls(batch, bounds["min"].as_py(), bounds["max"].as_py())


@dataclass
class _Pending:
    """Data frozen by a seal that is not yet in a published segment (still queryable from here)."""

    wal_generation: int
    tables: dict[TableName, list[_Chunk]]
    nbytes: int
    sequences: dict  # applied sequences at the freeze: exactly what the log up to here holds


class StoreBusy(RuntimeError):
    """The store cannot take a batch right now (it needs to seal first and could not); retry."""


class DirectoryInUse(OSError, RuntimeError):
    """Another Store (in this process or another) holds the data directory. An OSError, as the
    data dir's other problems are; a RuntimeError, as it was before it had a class of its own."""


#: How long `check_data_dir` waits for a store that holds the directory to let go.
DATA_DIR_WAIT_S = 5.0


def make_data_dir(directory: Path) -> None:
    """Create `directory` and its parents if needed; an OSError names it and says why not."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise type(error)(f"data dir {directory} cannot be created: {error.strerror or error}") from None


def check_data_dir(directory: Path, *, wait_s: float | None = None) -> None:
    """Create `directory` if needed and check that no Store holds it, as a Store would on opening:
    for a caller that starts a Store elsewhere (an actor) and wants the reason as an error here.

    A holder is waited for up to `wait_s` (default DATA_DIR_WAIT_S): a store just closed or killed
    (an aggregator restarted on the same data) lets go of the lock when its process exits, a moment
    after it was stopped.
    """
    make_data_dir(directory)
    deadline = time.monotonic() + (DATA_DIR_WAIT_S if wait_s is None else wait_s)
    while True:
        try:
            _lock_directory(directory).close()  # flock is released with the handle
            return
        except DirectoryInUse:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


class Store:
    """The time-series store of one aggregator. Pure Python and Arrow: no Ray in here.

    One Store owns its data directory: a second one on the same directory (another process, or
    this one) is refused, since both would write the same log and segments.
    """

    def __init__(self, config: StoreConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock
        self._dir = config.data_dir
        self._dir.mkdir(parents=True, exist_ok=True)
        self._dir_lock = _lock_directory(self._dir)
        self._lock = threading.RLock()
        self._seal_lock = threading.Lock()
        self._hot: dict[TableName, list[_Chunk]] = {t: [] for t in TableName}
        self._hot_rows = 0
        self._hot_bytes = 0
        self._hot_since: float | None = None
        self._pending: list[_Pending] = []
        self._cache: OrderedDict[str, list[_Chunk]] = OrderedDict()
        self._cache_bytes = 0
        self._batches = 0
        self._duplicates = 0
        self._rejects: Counter[str] = Counter()
        self._last_seal: float | None = None
        self._last_error: str | None = None
        self._last_sync = time.monotonic()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._manifest = Manifest.load(self._dir)
        remove_orphans(self._dir, self._manifest)
        self._sequences = SequenceTracker.restore(self._manifest.sequences, config.max_producers)
        self._recover_log()

    # ---------------------------------------------------------------- recovery

    def _recover_log(self) -> None:
        wal_dir = self._dir / "wal"
        replayed = 0
        for logged in replay(wal_dir, self._manifest.wal_generation):
            if self._sequences.seen(logged.producer_id, logged.seq):
                continue
            self._sequences.add(logged.producer_id, logged.seq)
            self._append_hot(logged.table, logged.batch)
            replayed += logged.batch.num_rows
        newest = last_generation(wal_dir)
        start = max(self._manifest.wal_generation, -1 if newest is None else newest + 1)
        self._wal = WriteAheadLog(wal_dir, start)
        if replayed:
            log.info("recovered %d unsealed rows from the write-ahead log", replayed)

    # ---------------------------------------------------------------- ingest

    def ingest(self, table: str | TableName, batch: pa.RecordBatch, *, producer_id: str, seq: int) -> Ack:
        """Apply `batch` once: validate, log, buffer, then acknowledge. Thread-safe."""
        table = table_name(table)
        if not isinstance(producer_id, str) or not producer_id:
            raise ValueError(f"producer_id: must be a non-empty string, but got {producer_id!r}")
        if not isinstance(seq, numbers.Integral) or isinstance(seq, bool) or seq < 0:
            raise ValueError(f"seq: must be a whole number, not negative, but got {seq!r}")
        seq = int(seq)  # logged as text and read back with int()
        with self._lock:
            if self._sequences.seen(producer_id, seq):
                self._duplicates += 1
                return Ack(producer_id, seq, accepted=0, duplicate=True)
        self._make_room()
        checked = validate(table, batch, now_us=int(self._clock() * 1e6), max_future_s=self._config.max_future_s)
        with self._lock:
            if self._sequences.seen(producer_id, seq):  # a concurrent resend won the race
                self._duplicates += 1
                return Ack(producer_id, seq, accepted=0, duplicate=True)
            self._wal.append(table, checked.good, producer_id, seq)
            if self._config.fsync is FsyncPolicy.ALWAYS:
                self._wal.sync()
            self._sequences.add(producer_id, seq)
            self._batches += 1
            self._rejects.update(checked.reasons)
            self._append_hot(table, checked.good)
            seal_due = self._hot_bytes >= self._config.seal_threshold_bytes
        if seal_due:
            self._request_seal()
        elif self._memory_bytes() > self._config.memory_budget_bytes:
            self._evict_to_budget()
        return Ack(
            producer_id,
            seq,
            accepted=checked.good.num_rows,
            rejected=checked.rejected,
            reasons=dict(checked.reasons),
            examples=checked.examples,
        )

    def _append_hot(self, table: TableName, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        self._hot[table].append(_Chunk.of(batch))
        self._hot_rows += batch.num_rows
        self._hot_bytes += batch.nbytes
        if self._hot_since is None:
            self._hot_since = time.monotonic()

    def _make_room(self) -> None:
        """Back-pressure, before anything is applied: once unsealed data reaches half the budget,
        seal it here; if that fails, refuse the batch with StoreBusy (the producer retries)."""
        with self._lock:
            unsealed = self._hot_bytes + sum(p.nbytes for p in self._pending)
        if unsealed < self._config.memory_budget_bytes // 2:
            return
        try:
            self.seal()
        except Exception as error:
            raise StoreBusy(f"unsealed data is at half the memory budget and sealing failed: {error!r}") from error

    def _request_seal(self) -> None:
        """The batch is applied and acknowledged whatever happens here: the background worker
        seals, or without one the caller does, and a failure is recorded (`last_error`), not raised."""
        if self._worker is not None:
            self._wake.set()
            return
        try:
            self.seal()
        except Exception:
            pass  # recorded by seal(); the data is safe in the log and retried at the next seal

    # ---------------------------------------------------------------- sealing

    def seal(self) -> list[Segment]:
        """Write everything unsealed to Parquet segments now; returns the new segments."""
        with self._seal_lock:
            with self._lock:
                self._freeze_hot()
                pending = list(self._pending)
            if not pending:
                return []
            try:
                return self._publish(pending)
            except Exception as error:  # the data stays pending and logged; the next seal retries
                self._last_error = f"seal failed: {error!r}"
                log.exception("seal failed; unsealed data is kept and retried")
                raise

    def _freeze_hot(self) -> None:
        if not self._hot_rows:
            return
        tables = {t: chunks for t, chunks in self._hot.items() if chunks}
        self._pending.append(_Pending(self._wal.rotate(), tables, self._hot_bytes, self._sequences.snapshot()))
        self._hot = {t: [] for t in TableName}
        self._hot_rows = self._hot_bytes = 0
        self._hot_since = None

    def _publish(self, pending: list[_Pending]) -> list[Segment]:
        manifest = replace(self._manifest, segments=list(self._manifest.segments))
        written: list[tuple[Segment, list[_Chunk]]] = []
        for part in pending:
            for table, chunks in part.tables.items():
                name = f"{manifest.next_segment:012d}.parquet"
                manifest.next_segment += 1
                # One dictionary per column for the whole segment: with a dictionary per batch the
                # Parquet writer falls back to plain strings (4x the bytes, 2x slower to write).
                data = pa.Table.from_batches([c.batch for c in chunks], SCHEMAS[table]).unify_dictionaries()
                segment = write_segment(self._dir, table, name, data, compression=self._config.segment_compression)
                written.append((segment, chunks))
        manifest.segments.extend(segment for segment, _ in written)
        manifest.wal_generation = pending[-1].wal_generation + 1
        manifest.sequences = pending[-1].sequences
        manifest.save(self._dir)
        with self._lock:
            self._manifest = manifest
            del self._pending[: len(pending)]
            for segment, chunks in written:
                self._cache[segment.name] = chunks
                self._cache_bytes += _nbytes(chunks)
            self._last_seal = self._clock()
        self._wal.remove_before(manifest.wal_generation)
        self._evict_to_budget()
        return [segment for segment, _ in written]

    def _evict_to_budget(self) -> None:
        """Drop cached segment tables, oldest first, until memory fits the budget."""
        with self._lock:
            while self._cache and self._memory_bytes() > self._config.memory_budget_bytes:
                _, chunks = self._cache.popitem(last=False)
                self._cache_bytes -= _nbytes(chunks)

    def _memory_bytes(self) -> int:
        return self._hot_bytes + sum(p.nbytes for p in self._pending) + self._cache_bytes

    # ---------------------------------------------------------------- maintenance

    def maintain(self) -> None:
        """Periodic work: fsync by policy, seal by size or age, apply retention, fit the budget."""
        handles: list[int] = []
        with self._lock:
            if (
                self._config.fsync is FsyncPolicy.INTERVAL
                and time.monotonic() - self._last_sync >= self._config.fsync_interval_s
            ):
                handles = self._wal.sync_handles()
                self._last_sync = time.monotonic()
            age = 0.0 if self._hot_since is None else time.monotonic() - self._hot_since
            seal_due = self._hot_bytes >= self._config.seal_threshold_bytes or age >= self._config.seal_age_s
        fsync_all(handles)  # outside the lock: ingest and queries go on during the fsync
        if seal_due:
            self.seal()
        self.apply_retention()
        self._evict_to_budget()

    def apply_retention(self) -> list[Segment]:
        """Delete segments whose newest row is older than the retention period; returns them."""
        if self._config.retention_s is None:
            return []
        cutoff_us = int((self._clock() - self._config.retention_s) * 1e6)
        with self._seal_lock:
            expired = [s for s in self._manifest.segments if s.max_ts < cutoff_us]
            if not expired:
                return []
            gone = {s.name for s in expired}
            manifest = replace(self._manifest, segments=[s for s in self._manifest.segments if s.name not in gone])
            manifest.save(self._dir)
            with self._lock:
                self._manifest = manifest
                for name in gone:
                    chunks = self._cache.pop(name, None)
                    if chunks is not None:
                        self._cache_bytes -= _nbytes(chunks)
            for segment in expired:
                segment.path(self._dir).unlink(missing_ok=True)
        return expired

    def start(self, period_s: float = 0.5) -> None:
        """Run `maintain` in a background thread every `period_s`, and at once when a seal is due."""
        if self._worker is not None:
            return
        self._worker = threading.Thread(target=self._run, args=(period_s,), name="elitemon-store", daemon=True)
        self._worker.start()

    def _run(self, period_s: float) -> None:
        while not self._stop.is_set():
            self._wake.wait(period_s)
            self._wake.clear()
            try:
                self.maintain()
            except Exception as error:
                self._last_error = f"maintenance failed: {error!r}"
                log.exception("store maintenance failed")

    def close(self) -> None:
        """Stop the worker and sync the log. Unsealed data stays in the log for the next start."""
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join()
            self._worker = None
        with self._seal_lock:  # a seal an ingest thread started (`_make_room`) ends before the directory is let go
            with self._lock:
                self._wal.close()
            self._dir_lock.close()

    # ---------------------------------------------------------------- reading

    def scan(self, selection: Selection) -> pa.Table:
        """The rows `selection` picks, from disk and memory together, in storage order (oldest
        segment first, the hot buffer last), so that "the row stored last" is well defined.

        Segments whose time bounds miss the range are skipped unopened. A segment not in memory is
        read whole into the cache when it fits in the free memory budget (the next query on it is
        served from memory); otherwise it is read with the selection pushed down to Parquet row
        groups and not cached. In memory, batches are pruned by their time bounds and dictionaries
        (Selection.filter_batch).
        """
        table = selection.table
        with self._lock:
            sources: list[list[_Chunk] | Segment] = []
            for segment in self._manifest.segments:
                if segment.table is not table or not selection.overlaps(segment.min_ts, segment.max_ts):
                    continue
                cached = self._cache.get(segment.name)
                if cached is not None:
                    self._cache.move_to_end(segment.name)
                sources.append(segment if cached is None else cached)
            sources += [p.tables[table] for p in self._pending if table in p.tables]
            sources.append(list(self._hot[table]))
        schema = SCHEMAS[table]
        pieces = []
        for source in sources:
            try:
                chunks = self._load_into_cache(source) if isinstance(source, Segment) else source
                if chunks is None:  # too big to cache: let Parquet filter it
                    dataset = ds.dataset([str(source.path(self._dir))], schema=schema, format="parquet")
                    pieces.append(dataset.to_table(filter=selection.expression()))
                    continue
            except FileNotFoundError:
                continue  # deleted by retention since the plan was made: expired rows

            selected = (selection.filter_batch(*chunk) for chunk in chunks)
            pieces.append(pa.Table.from_batches([b for b in selected if b is not None], schema))
        return pa.concat_tables(pieces)

    def _load_into_cache(self, segment: Segment) -> list[_Chunk] | None:
        """Read a segment whole into the cache if it fits the free budget; None if it does not.

        The Parquet size is a lower bound of the in-memory size, so a segment whose file alone
        exceeds the free budget is not even read.
        """
        with self._lock:
            free = self._config.memory_budget_bytes - self._memory_bytes()
        if segment.bytes > free:
            return None
        chunks = [_Chunk.of(b) for b in read_segment(self._dir, segment).to_batches() if b.num_rows]
        with self._lock:
            if _nbytes(chunks) > self._config.memory_budget_bytes - self._memory_bytes():
                return chunks  # answer this query from it, but do not cache it
            if segment.name not in self._cache and segment in self._manifest.segments:
                self._cache[segment.name] = chunks
                self._cache_bytes += _nbytes(chunks)
        return chunks

    def health(self) -> Health:
        with self._lock:
            segments = self._manifest.segments
            cached_rows = sum(_rows(chunks) for chunks in self._cache.values())
            pending_rows = sum(_rows(chunks) for p in self._pending for chunks in p.tables.values())
            sealed_rows = sum(s.rows for s in segments)
            return Health(
                rows=self._hot_rows + pending_rows + sealed_rows,
                rows_in_memory=self._hot_rows + pending_rows + cached_rows,
                bytes_in_memory=self._memory_bytes(),
                memory_budget_bytes=self._config.memory_budget_bytes,
                unsealed_rows=self._hot_rows + pending_rows,
                segments=len(segments),
                bytes_on_disk=sum(s.bytes for s in segments),
                wal_bytes=self._wal.bytes_on_disk(),
                batches=self._batches,
                duplicates=self._duplicates,
                rejected_rows=sum(self._rejects.values()),
                rejects=dict(self._rejects),
                producers=len(self._sequences),
                last_seal=self._last_seal,
                last_error=self._last_error,
                data_dir=str(self._dir),
            )


def _lock_directory(directory: Path) -> IO[bytes]:
    """Hold an exclusive lock on `directory` for this Store's life (released when closed or when
    the process dies); raise if another Store holds it."""
    handle = open(directory / "LOCK", "wb")  # noqa: SIM115 - kept open to hold the lock
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DirectoryInUse(f"{directory} is in use by another elitemon store") from None
    return handle


def _nbytes(chunks: list[_Chunk]) -> int:
    return sum(c.batch.nbytes for c in chunks)


def _rows(chunks: list[_Chunk]) -> int:
    return sum(c.batch.num_rows for c in chunks)
