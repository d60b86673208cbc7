"""Code lists named in common.checks.CODE_LISTS, and GB/T 2260 division codes.

Division codes come from python-stdnum's history file (stdnum/cn/loc.dat): a code is valid if
it was ever listed, because records keep the code that was current when they were made.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.arrays import as_strings
from common.checks import CODE_LISTS as CODE_LIST_NAMES
from common.errors import ConfigError

CODE_LISTS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {
        "sex": ("0", "1", "2", "9"),  # GB/T 2261.1
        "ethnicity": (*(f"{i:02d}" for i in range(1, 57)), "97", "98"),  # GB/T 3304
        "person_status": ("1", "2", "3", "4"),
        "entity_type": ("企业法人", "机关法人", "事业单位法人", "社会团体法人", "其他"),
        "entity_status": ("存续", "在业", "吊销", "注销", "迁出"),
        # 证件类型 / 持证主体代码类型: 001 USCC, 099 other organisation, 111 ID number, 414 passport,
        # 511 台胞证, 516 港澳通行证, 999 other person.
        "id_type": ("001", "099", "111", "414", "511", "516", "999"),
        # 证照状态: 10 有效, 01 已换发, 02 已过期, 03 已注销, 04 已撤销, 05 已吊销, 09 其他.
        "license_status": ("10", "01", "02", "03", "04", "05", "09"),
    }
)

assert set(CODE_LISTS) == set(CODE_LIST_NAMES), "validation.codes and common.checks disagree on code lists"


def code_list(name: str) -> tuple[str, ...]:
    try:
        return CODE_LISTS[name]
    except KeyError:
        raise ConfigError(f"unknown code list {name!r} (known: {', '.join(CODE_LISTS)})") from None


def in_code_list(values: Any, name: str) -> np.ndarray:
    """Each value is in the named list; nulls pass (presence is the job of ``required``)."""
    return _in_set(as_strings(values), pa.array(code_list(name), pa.string()))


@cache
def division_codes() -> pa.StringArray:
    """Every 6-digit GB/T 2260 code ever listed in stdnum's history, read once."""
    text = resources.files("stdnum").joinpath("cn/loc.dat").read_text(encoding="utf-8")
    codes: list[str] = []
    province = ""
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        prefix = line.split(maxsplit=1)[0]
        if not line[0].isspace():
            province = prefix
        elif province and len(prefix) == 4:
            codes.append(province + prefix)
    if not codes:
        raise ConfigError("python-stdnum's cn/loc.dat holds no division codes; reinstall python-stdnum")
    return pa.array(sorted(set(codes)), pa.string())


def division_valid(values: Any) -> np.ndarray:
    """GB/T 2260: 6 digits, listed at some time; nulls pass."""
    return _in_set(as_strings(values), division_codes())


def _in_set(arr: pa.StringArray, allowed: pa.StringArray) -> np.ndarray:
    hits = pc.fill_null(pc.is_in(arr, value_set=allowed), False)
    return np.asarray(hits.to_numpy(zero_copy_only=False), dtype=bool) | ~np.asarray(
        arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool
    )
