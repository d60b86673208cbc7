"""Masked keys (110***********1234): what reports, quarantine cases and disputes show of an
identifier, so that a person can recognise a record they already know without the report
disclosing it.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from common.arrays import as_strings

MASK_HEAD, MASK_TAIL = 3, 4


def mask_keys(values: Any) -> pa.Array:
    """Keep the first 3 and last 4 characters, '*' for each one between; 7 or fewer: all '*'.

    Characters are Unicode code points (a full-width or Chinese character counts once). Nulls
    stay null. Vectorised with Arrow compute.
    """
    arr = as_strings(values)
    length = pc.utf8_length(arr)
    short = pc.less_equal(length, MASK_HEAD + MASK_TAIL)
    hidden = pc.if_else(short, length, pc.subtract(length, MASK_HEAD + MASK_TAIL))
    stars = pc.binary_repeat("*", hidden)
    head = pc.if_else(short, "", pc.utf8_slice_codeunits(arr, 0, MASK_HEAD))
    tail = pc.if_else(short, "", pc.utf8_slice_codeunits(arr, -MASK_TAIL))
    return pc.binary_join_element_wise(head, stars, tail, "")
