"""Rows of the samples table as the analytics read them, for tests that build them by hand."""

from __future__ import annotations

import pandas as pd

T0 = pd.Timestamp("2026-01-01", tz="UTC")
SAMPLE_COLUMNS = ["ts", "kind", "node", "source", "generation", "metric", "value"]


def at(seconds: float) -> pd.Timestamp:
    """The time `seconds` after T0."""
    return T0 + pd.Timedelta(seconds=seconds)


def sample(
    seconds: float, kind: str, node: str | None, source: str, metric: str, value: float, generation: int | None = None
) -> dict:
    """One sample row at T0 + `seconds`."""
    return {
        "ts": at(seconds),
        "kind": kind,
        "node": node,
        "source": source,
        "generation": generation,
        "metric": metric,
        "value": value,
    }


def frame(rows: list[dict]) -> pd.DataFrame:
    """Sample rows as a frame with the table's columns, also when `rows` is empty."""
    return pd.DataFrame(rows, columns=SAMPLE_COLUMNS)
