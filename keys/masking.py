"""Masked values (110***********1234, 张*): what reports, quarantine cases and disputes show of an
identifier, so that a person can recognise a record they already know without the report
disclosing it; and what a masked grant (脱敏) receives of a field, computed at publish time into
the version (sharing.publish), never derived from the plain value at the subscriber.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from common.arrays import as_strings

MASK_HEAD, MASK_TAIL = 3, 4


def mask_keys(values: Any) -> pa.Array:
    """Keep the first 3 and last 4 characters, '*' for each one between; 7 or fewer: all '*'."""
    return mask_values(values, MASK_HEAD, MASK_TAIL)


def mask_values(values: Any, first: int, last: int) -> pa.Array:
    """Keep the first ``first`` and last ``last`` characters, '*' for each one between; a value
    of ``first + last`` characters or fewer is all '*' (nothing of a short value is kept).

    Characters are Unicode code points (a full-width or Chinese character counts once). Nulls
    stay null. Vectorised with Arrow compute.
    """
    if first < 0 or last < 0:
        raise ValueError("a mask keeps a non-negative number of characters at each end")
    arr = as_strings(values)
    length = pc.utf8_length(arr)
    short = pc.less_equal(length, first + last)
    hidden = pc.if_else(short, length, pc.subtract(length, first + last))
    stars = pc.binary_repeat("*", hidden)
    head = pc.if_else(short, "", pc.utf8_slice_codeunits(arr, 0, first))
    # utf8_slice_codeunits(arr, -0) would be the whole value: with last == 0 the tail is empty
    tail = pc.if_else(short, "", pc.utf8_slice_codeunits(arr, -last)) if last else pc.if_else(short, "", "")
    return pc.binary_join_element_wise(head, stars, tail, "")
