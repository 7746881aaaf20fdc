"""A process killed with SIGKILL mid-ingest loses no acknowledged row and duplicates none.

The child opens a Store and ingests numbered batches as fast as it can, printing
`ACK <seq> <accepted> <duplicate>` after each ingest returns; seal_bytes is small, so seals (inline
or by the background worker) happen every few batches and the kill may land in any phase: building
a batch, a log append, a segment write, a manifest save. Every row carries a unique generation
number seq * 1000 + i, so the parent can tell which batch a recovered row belongs to and whether it
appears twice.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from elitemon.config import MiB, StoreConfig
from elitemon.query import select
from elitemon.schema import batch_from_columns
from elitemon.store import Store

ROWS_PER_BATCH = 300
ACKS_BEFORE_KILL = 40
SEAL_BYTES = 48 << 10  # a seal every four or five batches
REPO_ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import sys

    import numpy as np

    from elitemon.config import StoreConfig
    from elitemon.schema import batch_from_columns
    from elitemon.store import Store

    data_dir, fsync, background = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    first_seq, rows, seal_bytes = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    store = Store(
        StoreConfig(
            data_dir=data_dir,
            fsync=fsync,
            fsync_interval_s=0.005,
            memory_budget_bytes=16 << 20,
            seal_bytes=seal_bytes,
            retention_s=None,
        )
    )
    if background:
        store.start(period_s=0.002)
    base = 1_700_000_000.0
    for seq in range(first_seq, 1_000_000):
        ids = seq * 1000 + np.arange(rows)
        batch = batch_from_columns(
            "samples",
            {
                "ts": base + ids * 1e-3,
                "kind": ["gpu"] * rows,
                "node": [f"node{i % 4}" for i in range(rows)],
                "source": ["child"] * rows,
                "generation": ids,
                "metric": [f"m{i % 5}" for i in range(rows)],
                "value": ids.astype(float),
            },
        )
        ack = store.ingest("samples", batch, producer_id="child", seq=seq)
        print(f"ACK {seq} {ack.accepted} {int(ack.duplicate)}", flush=True)
        if not background and seq % 3 == 0:
            store.maintain()
    """
)


# ------------------------------------------------------------------------------------ helpers


@dataclass(frozen=True)
class Ack:
    seq: int
    accepted: int
    duplicate: bool


def start_child(tmp_path: Path, fsync: str, background: bool, first_seq: int) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    args = [tmp_path / "data", fsync, int(background), first_seq, ROWS_PER_BATCH, SEAL_BYTES]
    return subprocess.Popen(
        [sys.executable, str(script), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "child.stderr", "ab"),
        text=True,
        env={**os.environ, "PYTHONPATH": pythonpath},
    )


def pump_lines(stream, lines: queue.Queue) -> threading.Thread:
    """Copy lines of `stream` into `lines` until EOF, then put None."""

    def run() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def parse_ack(line: str) -> Ack:
    word, seq, accepted, duplicate = line.split()
    assert word == "ACK", line
    return Ack(int(seq), int(accepted), duplicate == "1")


def run_and_kill(tmp_path: Path, fsync: str, background: bool, first_seq: int, kill_delay_s: float) -> list[Ack]:
    """Run the child until it has acknowledged ACKS_BEFORE_KILL batches, SIGKILL it, and return every
    ack it printed.

    `kill_delay_s` only shifts *where* in its loop the child is when the kill lands (0 catches it
    building the next batch, a few ms inside a log append or a seal); nothing waits on it.
    """
    child = start_child(tmp_path, fsync, background, first_seq)
    lines: queue.Queue = queue.Queue()
    reader = pump_lines(child.stdout, lines)
    acks: list[Ack] = []
    deadline = time.monotonic() + 60
    try:
        while len(acks) < ACKS_BEFORE_KILL:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "child too slow to acknowledge"
            line = lines.get(timeout=remaining)
            assert line is not None, f"child exited early: {(tmp_path / 'child.stderr').read_text()}"
            acks.append(parse_ack(line))
        if kill_delay_s:
            time.sleep(kill_delay_s)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    reader.join(timeout=30)
    # Acks printed after the ones read above but before the kill count too: they were given.
    while (line := lines.get(timeout=5)) is not None:
        if line.endswith("\n"):  # a line torn by the kill has no newline: not a full ack
            acks.append(parse_ack(line))
    assert [a.seq for a in acks] == list(range(first_seq, first_seq + len(acks))), "acks out of order"
    return acks


def open_store(tmp_path: Path, fsync: str) -> Store:
    config = StoreConfig(
        data_dir=tmp_path / "data", fsync=fsync, memory_budget_bytes=16 * MiB, seal_bytes=SEAL_BYTES, retention_s=None
    )
    return Store(config)


def rows_by_batch(store: Store) -> dict[int, list[int]]:
    """Row numbers (0..ROWS_PER_BATCH-1) recovered for each seq, duplicates kept."""
    by_batch: dict[int, list[int]] = {}
    for generation in store.scan(select("samples")).column("generation").to_pylist():
        by_batch.setdefault(generation // 1000, []).append(generation % 1000)
    return by_batch


def assert_recovered_exactly(store: Store, applied: set[int], in_flight: int) -> bool:
    """Every batch in `applied` is present exactly once and whole; the only other batch allowed is
    `in_flight`, also whole. Returns whether the in-flight batch made it."""
    by_batch = rows_by_batch(store)
    twice = {seq: n for seq, rows in by_batch.items() if (n := len(rows) - len(set(rows)))}
    assert not twice, f"rows recovered more than once (seq: count): {dict(list(twice.items())[:5])}"
    missing = sorted(seq for seq in applied if sorted(by_batch.get(seq, [])) != list(range(ROWS_PER_BATCH)))
    assert not missing, f"acknowledged batches missing rows after the kill: {missing[:5]}"
    extra = set(by_batch) - applied
    assert extra <= {in_flight}, f"rows of batches never acknowledged: {sorted(extra)}"
    if extra:  # the in-flight batch is logged whole or not at all
        assert sorted(by_batch[in_flight]) == list(range(ROWS_PER_BATCH))
    assert store.health().rows == sum(len(rows) for rows in by_batch.values())
    return bool(extra)


def one_row(seq: int):
    """A one-row batch to re-send under the child's (producer_id, seq)."""
    return batch_from_columns(
        "samples",
        {
            "ts": [1_700_000_000.0],
            "kind": ["gpu"],
            "source": ["child"],
            "metric": ["m0"],
            "generation": [seq * 1000 + 999],
            "value": [0.0],
        },
    )


# ------------------------------------------------------------------------------------ tests

# (fsync policy, seal in the ingest path or by the background worker, kill delay): the delays vary
# the phase the kill lands in, so that between them the cases catch seals and log appends mid-way.
CASES = [
    ("never", False, 0.0),
    ("never", True, 0.006),
    ("interval", False, 0.004),
    ("interval", True, 0.010),
    ("always", False, 0.006),
    ("always", True, 0.002),
]


@pytest.mark.parametrize(
    "fsync, background, kill_delay_s",
    CASES,
    ids=[f"{f}-{'worker' if b else 'inline'}-{int(d * 1000)}ms" for f, b, d in CASES],
)
def test_sigkill_loses_no_acknowledged_row_and_duplicates_none(tmp_path, fsync, background, kill_delay_s):
    acks = run_and_kill(tmp_path, fsync, background, first_seq=0, kill_delay_s=kill_delay_s)
    assert all(a.accepted == ROWS_PER_BATCH and not a.duplicate for a in acks)
    applied = {a.seq for a in acks}
    in_flight = max(applied) + 1  # the child is sequential: at most this one was unacknowledged

    store = open_store(tmp_path, fsync)
    landed = assert_recovered_exactly(store, applied, in_flight)
    assert store.health().segments > 0, "the kill came before any seal: sealing was not exercised"
    segment_files = list((tmp_path / "data" / "segments" / "samples").iterdir())
    assert len(segment_files) == store.health().segments, f"orphans left behind: {segment_files}"

    # Exactly-once survives the crash: acknowledged batches are duplicates when re-sent, and the
    # in-flight one is a duplicate exactly when it made it into the log.
    for seq in (0, max(applied) // 2, max(applied)):
        assert store.ingest("samples", one_row(seq), producer_id="child", seq=seq).duplicate
    resent = store.ingest("samples", one_row(in_flight), producer_id="child", seq=in_flight)
    assert resent.duplicate == landed
    assert store.health().rows == len(applied) * ROWS_PER_BATCH + (ROWS_PER_BATCH if landed else 1)


@pytest.mark.parametrize("fsync, background", [("interval", False), ("never", True)], ids=["inline", "worker"])
def test_killed_twice_with_producer_resending_its_in_flight_batch(tmp_path, fsync, background):
    """A recovered store killed again; the restarted producer resends from its last unacked seq."""
    first = run_and_kill(tmp_path, fsync, background, first_seq=0, kill_delay_s=0.004)
    in_flight = first[-1].seq + 1
    second = run_and_kill(tmp_path, fsync, background, first_seq=in_flight, kill_delay_s=0.008)
    resent = second[0]
    assert resent.seq == in_flight
    # The resend is a duplicate (and adds nothing) exactly when the first in-flight batch was logged.
    assert resent.accepted == (0 if resent.duplicate else ROWS_PER_BATCH)
    assert all(a.accepted == ROWS_PER_BATCH and not a.duplicate for a in second[1:])

    applied = {a.seq for a in first} | {a.seq for a in second}
    store = open_store(tmp_path, fsync)
    assert_recovered_exactly(store, applied, in_flight=second[-1].seq + 1)
    assert min(applied) == 0 and max(applied) == second[-1].seq
