"""Code lists and GB/T 2260 division codes."""

from __future__ import annotations

import pyarrow as pa
import pytest

from common.checks import Check
from common.errors import ConfigError
from common.checks import CODE_LISTS as CHECK_CODE_LISTS
from common.checks import check_problems
from validation.codes import CODE_LISTS, code_list, division_codes, division_valid, in_code_list


def test_every_code_list_named_in_checks_has_data() -> None:
    assert set(CODE_LISTS) == set(CHECK_CODE_LISTS)


@pytest.mark.parametrize(
    ("name", "inside", "outside"),
    [
        ("sex", ["0", "1", "2", "9"], ["3", "01", " 1"]),
        ("ethnicity", ["01", "56", "97", "98"], ["00", "57", "1", "99"]),
        ("person_status", ["1", "4"], ["0", "5"]),
        ("entity_type", ["企业法人", "机关法人", "事业单位法人", "社会团体法人", "其他"], ["个体工商户"]),
        ("entity_status", ["存续", "在业", "吊销", "注销", "迁出"], ["存活"]),
        ("id_type", ["001", "099", "111", "414", "511", "516", "999"], ["1", "112"]),
        ("license_status", ["10", "01", "02", "03", "04", "05", "09"], ["1", "11", "06"]),
    ],
)
def test_code_lists(name: str, inside: list[str], outside: list[str]) -> None:
    assert in_code_list(pa.array(inside + [None]), name).tolist() == [True] * (len(inside) + 1)
    assert in_code_list(pa.array(outside), name).tolist() == [False] * len(outside)


def test_ethnicity_list_is_complete() -> None:
    assert len(code_list("ethnicity")) == 58


def test_unknown_code_list() -> None:
    with pytest.raises(ConfigError):
        code_list("blood_type")


def test_division_codes_come_from_stdnum_history() -> None:
    codes = division_codes()
    assert division_codes() is codes  # loaded once
    assert len(codes) > 3000
    # 110103 崇文区 was retired in 2010 and still counts; 110000 is a province-level code.
    assert division_valid(["110105", "110103", "110000", "440113", None]).tolist() == [True] * 5
    assert division_valid(["999999", "11010", "1101055", "11010A", ""]).tolist() == [False] * 5


def test_catalog_refuses_unknown_license_variant() -> None:
    assert check_problems(Check("license_id", (("variant", "strict"),))) == []
    assert any("variant" in p for p in check_problems(Check("license_id", (("variant", "vendor-x"),))))
