"""The Arrow time-series store: hot buffer, write-ahead log, Parquet segments. No Ray inside."""

from elitemon.store._segments import Segment
from elitemon.store._store import Ack, Health, Store, StoreBusy

__all__ = ["Ack", "Health", "Segment", "Store", "StoreBusy"]
