"""Small Arrow helpers that several floors share."""

from __future__ import annotations

from typing import Any

import pyarrow as pa


def as_strings(values: Any) -> pa.StringArray:
    """One contiguous ``pa.string()`` array from Arrow, numpy, pandas or a list."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], pa.string())
    if not isinstance(values, pa.Array):
        values = pa.array(values, type=pa.string(), from_pandas=True)
        if isinstance(values, pa.ChunkedArray):  # a pandas column backed by several Arrow chunks
            values = values.combine_chunks() if values.num_chunks else pa.array([], pa.string())
    if pa.types.is_null(values.type) or pa.types.is_large_string(values.type) or pa.types.is_string_view(values.type):
        values = values.cast(pa.string())
    if not pa.types.is_string(values.type):
        raise TypeError(f"identifier checks take strings, not {values.type}")
    return values
