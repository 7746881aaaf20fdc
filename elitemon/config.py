"""Store configuration: where data lives, how durable writes are, and how much memory it may use."""

from __future__ import annotations

import enum
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

from elitemon.schema import DEFAULT_MAX_FUTURE_S

DATA_DIR_ENV = "ELITEMON_DATA_DIR"
SEGMENT_COMPRESSIONS = ("none", "lz4", "zstd", "snappy")
GiB = 1 << 30
MiB = 1 << 20
#: The smallest memory budget a store accepts.
MIN_MEMORY_BUDGET_BYTES = 16 * MiB
#: Unsealed rows are sealed into a segment at this size, or at half the memory budget if smaller.
DEFAULT_SEAL_BYTES = 64 * MiB


class FsyncPolicy(enum.StrEnum):
    """When the write-ahead log is forced to stable storage.

    Every acknowledged batch has been written to the log file before the acknowledgement, so a
    killed actor or process loses nothing under any policy: the bytes are in the OS page cache.
    The policy only decides what survives a crash of the *machine*:
    ALWAYS fsyncs before each acknowledgement (nothing lost, slowest); INTERVAL fsyncs at most every
    `fsync_interval_s` (up to that much lost); NEVER leaves it to the OS.
    """

    ALWAYS = "always"
    INTERVAL = "interval"
    NEVER = "never"


def default_data_dir() -> Path:
    """`$ELITEMON_DATA_DIR`, else `~/.elitemon/data`."""
    configured = os.environ.get(DATA_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".elitemon" / "data"


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    """Settings of a Store; every bound is checked at construction.

    Memory policy at the budget: sealed segments cached in memory are evicted, least recently
    queried first (they stay on disk and are read back on demand); once the unsealed tail reaches
    half the budget, the store seals it before accepting more, and refuses batches (StoreBusy,
    retried by producers) if it cannot. Acknowledged data is never dropped.
    """

    data_dir: Path = field(default_factory=default_data_dir)
    memory_budget_bytes: int = 1 * GiB
    seal_bytes: int | None = None  # None: DEFAULT_SEAL_BYTES or half the budget, whichever is smaller
    seal_age_s: float = 60.0
    fsync: FsyncPolicy = FsyncPolicy.INTERVAL
    fsync_interval_s: float = 1.0
    retention_s: float | None = 30 * 24 * 3600.0
    max_future_s: float = DEFAULT_MAX_FUTURE_S
    max_producers: int = 100_000
    segment_compression: str = "lz4"

    @property
    def seal_threshold_bytes(self) -> int:
        """The unsealed size at which a segment is sealed: `seal_bytes`, or by default DEFAULT_SEAL_BYTES
        or half the budget, whichever is smaller. Resolved here, not stored, so that
        `dataclasses.replace(config, memory_budget_bytes=...)` gets the new budget's default."""
        if self.seal_bytes is not None:
            return self.seal_bytes
        return min(DEFAULT_SEAL_BYTES, self.memory_budget_bytes // 2)

    def __post_init__(self) -> None:
        # Absolute here, in the process that names it: an actor opening the store runs elsewhere.
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().absolute())
        try:
            object.__setattr__(self, "fsync", FsyncPolicy(self.fsync))
        except ValueError:
            choices = [policy.value for policy in FsyncPolicy]
            raise ValueError(f"fsync must be one of {choices}, but got {self.fsync!r}.") from None
        whole, seconds = (numbers.Integral, "a whole number"), (numbers.Real, "a number of seconds")
        for name, (kind, what), optional in (
            ("memory_budget_bytes", whole, False),
            ("seal_bytes", whole, True),
            ("max_producers", whole, False),
            ("seal_age_s", seconds, False),
            ("fsync_interval_s", seconds, False),
            ("retention_s", seconds, True),
            ("max_future_s", seconds, False),
        ):
            value = getattr(self, name)
            if kind is numbers.Integral and isinstance(value, float) and value.is_integer():
                object.__setattr__(self, name, value := int(value))  # 2e9 bytes is a whole number
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, kind):
                raise ValueError(f"{name} must be {what}, but got {value!r}.")
            if not math.isfinite(value):
                keep = " (None keeps data forever)" if name == "retention_s" else ""
                raise ValueError(f"{name} must be a finite number of seconds{keep}, but got {value!r}.")
        if self.memory_budget_bytes < MIN_MEMORY_BUDGET_BYTES:
            raise ValueError(f"memory_budget_bytes must be at least 16 MiB, but got {self.memory_budget_bytes=}.")
        if not 0 < self.seal_threshold_bytes <= self.memory_budget_bytes // 2:
            raise ValueError(
                f"seal_bytes must be positive and at most half the memory budget, but got {self.seal_bytes=}."
            )
        if self.seal_age_s <= 0:
            raise ValueError(f"seal_age_s must be positive, but got {self.seal_age_s=}.")
        if self.fsync_interval_s <= 0:
            raise ValueError(f"fsync_interval_s must be positive, but got {self.fsync_interval_s=}.")
        if self.retention_s is not None and self.retention_s <= 0:
            raise ValueError(f"retention_s must be positive or None, but got {self.retention_s=}.")
        if self.max_future_s < 0:
            raise ValueError(f"max_future_s must not be negative, but got {self.max_future_s=}.")
        if self.segment_compression not in SEGMENT_COMPRESSIONS:
            raise ValueError(
                f"segment_compression must be one of {SEGMENT_COMPRESSIONS}, but got {self.segment_compression=}."
            )
        if self.max_producers < 1:
            raise ValueError(f"max_producers must be at least 1, but got {self.max_producers=}.")
