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


def column_as(frame: pd.DataFrame, argument: str, column: str, dtype: Any, what: str) -> pd.Series:
    """frame[column] as `dtype`, or a ValueError naming `argument` and the column (the store's tables
    always convert; a table built by hand may not: text in a number column, a generation of 1.5)."""
    try:
        numbers = pd.to_numeric(frame[column])
        if pd.api.types.is_integer_dtype(pd.api.types.pandas_dtype(dtype)) and pd.api.types.is_float_dtype(numbers):
            fractional = numbers.dropna() % 1 != 0  # a nullable float casts to Int64 by cutting them off
            if fractional.any():
                raise ValueError(f"{numbers.dropna()[fractional].iloc[0]!r} is not whole")
        return numbers.astype(dtype)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{argument}: column {column!r} must hold {what} ({error}).") from None


def plain_copy(frame: Any, argument: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """A checked copy of `frame` with text columns as plain objects (the store gives categoricals, which
    cannot be compared across columns, and pandas' own string dtype cannot be joined with objects) and
    `ts` in UTC at the store's microseconds (tables built by hand often hold nanoseconds, and pandas
    joins two tables on time only in one unit)."""
    require_columns(frame, argument, columns)
    if len(frame) and pd.api.types.is_numeric_dtype(frame["ts"]):  # pandas would read them as nanoseconds
        raise ValueError(
            f"{argument}: column 'ts' must hold times, but holds numbers ({frame['ts'].dtype});"
            " for epoch seconds, pd.to_datetime(ts, unit='s', utc=True)"
        )
    frame = frame.copy()
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype | pd.StringDtype):
            frame[column] = frame[column].astype(object)
    try:
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True).dt.as_unit("us")
    except (ValueError, TypeError) as error:
        raise ValueError(f"{argument}: column 'ts' must hold times, but {error}") from error
    return frame
