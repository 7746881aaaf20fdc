"""Small Arrow helpers that pyarrow lacks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def sort_by(data: pa.Table, keys: tuple[str, ...] | list[str]) -> pa.Table:
    """Sort ascending by `keys`: dictionary columns by their string values (nulls first), and at
    most one plain numeric or timestamp column, which must come last.

    Arrow cannot sort by dictionary columns, and a multi-key sort is slow, so the dictionary keys
    are folded into one integer (the rank of each value within its dictionary, combined
    arithmetically) and sorted with numpy's stable sort. Rows usually arrive in time order, so
    that sort alone leaves the last key ordered within each group; only when it does not is a
    two-key lexsort run.
    """
    data = data.unify_dictionaries().combine_chunks()
    group_keys = [k for k in keys if pa.types.is_dictionary(data.schema.field(k).type)]
    plain_keys = [k for k in keys if k not in group_keys]
    if len(plain_keys) > 1 or (plain_keys and keys[-1] != plain_keys[0]):
        raise TypeError(f"sort_by: only the last key may be a non-dictionary column, got {list(keys)}")
    code = np.zeros(data.num_rows, dtype=np.int64)
    space = 1
    for name in group_keys:
        column = data.column(name).combine_chunks()
        levels = len(column.dictionary) + 1
        space *= levels
        if space >= 1 << 62:
            raise ValueError(f"sort_by: too many distinct values in {group_keys} to sort")
        ranks = np.concatenate(([0], pc.rank(column.dictionary, tiebreaker="dense").to_numpy()))
        indices = column.indices.fill_null(-1).to_numpy().astype(np.int64) + 1
        code = code * levels + ranks[indices].astype(np.int64)
    # numpy's stable sort is a radix sort for 16-bit keys: the common case of < 65536 series.
    order = np.argsort(code.astype(np.uint16) if space <= 1 << 16 else code, kind="stable")
    if plain_keys:
        last = data.column(plain_keys[0]).combine_chunks()
        last = (last.cast(pa.int64()) if pa.types.is_timestamp(last.type) else last).to_numpy(zero_copy_only=False)
        grouped, ordered = code[order], last[order]
        if np.any((grouped[1:] == grouped[:-1]) & (ordered[1:] < ordered[:-1])):
            order = np.lexsort((last, code))
    return data.take(pa.array(order))
