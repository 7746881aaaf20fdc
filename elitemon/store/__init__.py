"""The Arrow time-series store: hot buffer, write-ahead log, Parquet segments. No Ray inside."""

from elitemon.store._segments import Segment
from elitemon.store._store import Ack, DirectoryInUse, Health, Store, StoreBusy, check_data_dir, make_data_dir

__all__ = ["Ack", "DirectoryInUse", "Health", "Segment", "Store", "StoreBusy", "check_data_dir", "make_data_dir"]
