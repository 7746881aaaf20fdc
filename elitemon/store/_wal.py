"""The write-ahead log: Arrow IPC streams holding every accepted batch that is not yet sealed.

Layout: `<data_dir>/wal/<generation>/<table>.arrows`, one IPC stream per table and generation.
Each batch carries its `(producer_id, seq)` as IPC custom metadata, so replay restores both the rows
and the exactly-once bookkeeping, and its place in the generation's order of appends across tables
(`order`), so replay applies the batches in the order they were acknowledged: the bookkeeping
closes a gap left more than MAX_GAP_WINDOW sequence numbers behind, and a producer writing to two
tables, replayed table by table, would open such gaps that never were. Sealing rotates to a new
generation; once the sealed segments and the manifest are durable, older generations are deleted.

Files are written through unbuffered `pyarrow.OSFile`s: when `append` returns, the bytes are in the
OS, so a killed process loses nothing it acknowledged. A process killed *during* a write leaves a
torn last message; replay reads up to it and ignores the rest, which was never acknowledged.
"""

from __future__ import annotations

import heapq
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from elitemon.schema import SCHEMAS, TableName

_SUFFIX = ".arrows"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoggedBatch:
    """One batch read back from the log."""

    table: TableName
    batch: pa.RecordBatch
    producer_id: str
    seq: int
    order: int  # the append's place in its generation (-1 in logs written before it was recorded)


class WriteAheadLog:
    """Appends batches to the current generation; rotates, syncs, replays and truncates."""

    def __init__(self, directory: Path, generation: int) -> None:
        self._directory = directory
        self._generation = generation
        self._sinks: dict[TableName, tuple[pa.OSFile, pa.ipc.RecordBatchStreamWriter]] = {}
        self._dirty = False
        self._new_entries: set[Path] = set()  # files and folders whose directory entry is unsynced
        self._appends = 0  # in this generation, across its tables
        directory.mkdir(parents=True, exist_ok=True)

    def append(self, table: TableName, batch: pa.RecordBatch, producer_id: str, seq: int) -> None:
        """Log one batch. If the write fails, the generation is abandoned (a later batch after a
        torn message would be unreadable) and the error raised: the batch was not logged."""
        _, writer = self._sink(table)
        try:
            writer.write_batch(
                batch, custom_metadata={"producer_id": producer_id, "seq": str(seq), "order": str(self._appends)}
            )
        except BaseException:
            self._abandon()
            raise
        self._appends += 1
        self._dirty = True

    def sync(self) -> None:
        """Force what was logged, and the new files' directory entries, to stable storage."""
        fsync_all(self.sync_handles())

    def sync_handles(self) -> list[int]:
        """Duplicated descriptors to fsync (then close) without holding the caller's lock: a
        rotation may close the originals meanwhile, the duplicates stay valid."""
        if not self._dirty and not self._new_entries:
            return []
        handles = [os.dup(sink.fileno()) for sink, _ in self._sinks.values()] if self._dirty else []
        handles += [os.open(path, os.O_RDONLY) for path in self._new_entries if path.exists()]
        self._dirty = False
        self._new_entries.clear()
        return handles

    def rotate(self) -> int:
        """Close the current generation and start the next; returns the closed generation.

        No fsync here: a closed generation is deleted once its rows are sealed in durable
        segments, and until then it is as durable as the fsync policy made it."""
        self._close_sinks()
        closed = self._generation
        self._generation += 1
        self._appends = 0
        return closed

    def _abandon(self) -> None:
        try:
            self._close_sinks()
        except Exception:  # the stream is already broken; closing it may fail too
            self._sinks.clear()
        self._generation += 1
        self._appends = 0

    def remove_before(self, generation: int) -> None:
        """Delete every generation older than `generation` (their data is sealed)."""
        for number, path in _generations(self._directory):
            if number < generation:
                shutil.rmtree(path, ignore_errors=True)

    def bytes_on_disk(self) -> int:
        total = 0
        for _, path in _generations(self._directory):
            try:
                total += sum(f.stat().st_size for f in path.iterdir())
            except FileNotFoundError:  # removed by a seal meanwhile
                continue
        return total

    def close(self) -> None:
        self.sync()
        self._close_sinks()

    def _sink(self, table: TableName) -> tuple[pa.OSFile, pa.ipc.RecordBatchStreamWriter]:
        sink = self._sinks.get(table)
        if sink is None:
            folder = self._directory / f"{self._generation:012d}"
            if not folder.exists():
                folder.mkdir(parents=True)
                self._new_entries.add(self._directory)
            self._new_entries.add(folder)
            path = folder / f"{table.value}{_SUFFIX}"
            if path.exists():
                # A generation number is never reused after recovery (see replay), so an existing
                # file here would be a bug that could interleave two streams.
                raise RuntimeError(f"write-ahead log file already exists: {path}")
            file = pa.OSFile(str(path), "wb")
            sink = self._sinks[table] = (file, pa.ipc.new_stream(file, SCHEMAS[table]))
        return sink

    def _close_sinks(self) -> None:
        for file, writer in self._sinks.values():
            writer.close()
            file.close()
        self._sinks.clear()


def fsync_all(handles: list[int]) -> None:
    """fsync and close each descriptor; when an fsync fails, the others are still synced and every
    one closed, and the first error is raised. A failed fsync is not retried: after one, Linux may
    already have marked the pages clean, so a retry could report success for data not on disk."""
    errors: list[OSError] = []
    for fd in handles:
        try:
            os.fsync(fd)
        except OSError as error:
            errors.append(error)
        finally:
            os.close(fd)
    if errors:
        raise errors[0]


def replay(directory: Path, from_generation: int) -> Iterator[LoggedBatch]:
    """Yield every complete batch logged in generations >= `from_generation`, in the order they
    were appended (a log written before that order was recorded: table by table)."""
    for number, path in _generations(directory):
        if number < from_generation:
            continue
        streams = [_read_stream(table, path / f"{table.value}{_SUFFIX}") for table in TableName]
        yield from heapq.merge(*streams, key=lambda logged: logged.order)  # stable: ties keep table order


def last_generation(directory: Path) -> int | None:
    numbers = [number for number, _ in _generations(directory)]
    return max(numbers) if numbers else None


def _read_stream(table: TableName, path: Path) -> Iterator[LoggedBatch]:
    if not path.exists():
        return
    try:
        reader = pa.ipc.open_stream(pa.memory_map(str(path)))
    except (pa.ArrowInvalid, OSError):
        return  # torn before the schema message: nothing in this file was acknowledged
    while True:
        try:
            batch, metadata = reader.read_next_batch_with_custom_metadata()
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError) as error:
            # A torn tail from a crash mid-write: that batch was never acknowledged. (A failed
            # write abandons its generation, so nothing acknowledged can follow a torn message.)
            log.warning("write-ahead log %s ends in a torn message (%s); replayed up to it", path, error)
            return
        yield LoggedBatch(
            table,
            batch,
            metadata[b"producer_id"].decode(),
            int(metadata[b"seq"]),
            int(metadata.get(b"order", -1)),
        )


def _generations(directory: Path) -> list[tuple[int, Path]]:
    if not directory.exists():
        return []
    found = [(int(p.name), p) for p in directory.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(found)
