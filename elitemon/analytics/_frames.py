"""Input checks shared by the analytics modules: the tables arrive as pandas DataFrames from the store."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def is_number(value: Any) -> bool:
    """A real number, Python's or NumPy's, and not a bool (True is an int to Python, and no quantity)."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def is_whole_number(value: Any) -> bool:
    """An integer, Python's or NumPy's, and not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def require_columns(frame: Any, argument: str, columns: tuple[str, ...]) -> None:
    """A ValueError naming `argument` unless `frame` is a DataFrame with every one of `columns`."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{argument} must be a pandas DataFrame, but got {type(frame).__name__}.")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{argument} is missing columns {missing} (has {list(frame.columns)}).")


def require_datetime_ts(frame: pd.DataFrame, argument: str) -> None:
    """A ValueError naming `argument` unless its `ts` column holds datetimes (or it has no rows: a table
    built empty by hand has an untyped column)."""
    if len(frame) and not pd.api.types.is_datetime64_any_dtype(frame["ts"]):
        raise ValueError(f"{argument}: column 'ts' must hold datetimes, but has dtype {frame['ts'].dtype}.")


def plain_copy(frame: Any, argument: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """A checked copy of `frame` with text columns as plain objects (the store gives categoricals, which
    cannot be compared across columns, and pandas' own string dtype cannot be joined with objects) and
    `ts` in UTC at the store's microseconds (tables built by hand often hold nanoseconds, and pandas
    joins two tables on time only in one unit)."""
    require_columns(frame, argument, columns)
    frame = frame.copy()
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype | pd.StringDtype):
            frame[column] = frame[column].astype(object)
    try:
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True).dt.as_unit("us")
    except (ValueError, TypeError) as error:
        raise ValueError(f"{argument}: column 'ts' must hold times, but {error}") from error
    return frame
