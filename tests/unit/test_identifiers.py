"""Identifier checks against the standards' published vectors and python-stdnum as an oracle."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum.cn import ric, uscc
from stdnum.iso7064 import mod_37_36

from common.errors import ConfigError
from validation.identifiers import (
    USCC_ALPHABET,
    gb11714_check_bytes,
    gb11714_check_char,
    id_check_bytes,
    id_check_char,
    id_number_valid,
    issuer_code_valid,
    license_check_bytes,
    license_check_char,
    license_id_valid,
    normalise_codes,
    normalise_id_numbers,
    uscc_check_bytes,
    uscc_check_char,
    uscc_valid,
)

VECTORS = json.loads((Path(__file__).parents[1] / "data" / "identifier_vectors.json").read_text(encoding="utf-8"))
TODAY = date(2026, 3, 1)
DIGITS = "0123456789"
ALNUM = DIGITS + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _list(mask: np.ndarray) -> list[bool]:
    assert isinstance(mask, np.ndarray) and mask.dtype == bool
    return mask.tolist()


def _matrix(bodies: list[str], width: int | None = None) -> np.ndarray:
    """ASCII bodies as an (n, width) byte matrix, zero-padded on the right."""
    width = width or len(bodies[0])
    return np.frombuffer("".join(b.ljust(width, "\0") for b in bodies).encode(), dtype=np.uint8).reshape(-1, width)


def _chars(check_bytes: np.ndarray) -> list[str]:
    assert check_bytes.dtype == np.uint8
    return [chr(b) for b in check_bytes]


# -- GB 11643 ---------------------------------------------------------------------------------------


def test_id_vectors_valid_and_invalid() -> None:
    valid = VECTORS["id_number"]["valid"]
    invalid = list(VECTORS["id_number"]["invalid"])
    assert _list(id_number_valid(pa.array(valid), TODAY)) == [True] * len(valid)
    assert _list(id_number_valid(pa.array(invalid), TODAY)) == [False] * len(invalid)


def test_id_with_retired_address_code_is_valid_though_stdnum_rejects_it() -> None:
    number = VECTORS["id_number"]["valid_despite_stdnum"][0]
    assert not ric.is_valid(number)
    assert _list(id_number_valid([number], TODAY)) == [True]


@pytest.mark.parametrize(
    "number",
    [
        "11010519491231002",  # 17 chars
        "11010519491231002X0",  # 19 chars
        "1101051949123100A2",  # a letter in the body
        "11010519491231002x",  # not normalised
        "１１０１０５１９４９１２３１００２Ｘ",  # full-width digits
        "",
        "110105000012310014",  # year 0000
        "110105194913310011",  # month 13
    ],
)
def test_id_malformed_is_invalid(number: str) -> None:
    assert _list(id_number_valid([number], TODAY)) == [False]


def test_id_birth_date_after_today_is_invalid_and_today_is_fine() -> None:
    body_today = "110105" + TODAY.strftime("%Y%m%d") + "001"
    body_tomorrow = "110105" + (TODAY + timedelta(days=1)).strftime("%Y%m%d") + "001"
    numbers = [body_today + id_check_char(body_today), body_tomorrow + id_check_char(body_tomorrow)]
    assert _list(id_number_valid(numbers, TODAY)) == [True, False]


def test_id_leap_day() -> None:
    leap, plain = "11010520000229001", "11010519000229001"  # 2000 is a leap year, 1900 is not
    assert _list(id_number_valid([leap + id_check_char(leap), plain + id_check_char(plain)], TODAY)) == [True, False]


def test_id_nulls_pass_and_inputs_of_every_kind_agree() -> None:
    values = ["11010519491231002X", None, "110105194912310021"]
    expected = [True, True, False]
    assert _list(id_number_valid(pa.array(values), TODAY)) == expected
    assert _list(id_number_valid(np.array(values, dtype=object), TODAY)) == expected
    assert _list(id_number_valid(pd.Series(values), TODAY)) == expected
    assert _list(id_number_valid(pa.chunked_array([values[:1], values[1:]]), TODAY)) == expected
    assert _list(id_number_valid(pa.array(values, pa.large_string()), TODAY)) == expected
    assert _list(id_number_valid(pa.array(values).slice(1), TODAY)) == expected[1:]


def test_normalise_ids_lowercase_whitespace_and_legacy_upgrade() -> None:
    legacy = VECTORS["id_number"]["legacy_15_to_18"]
    lower = VECTORS["id_number"]["lowercase_x"]
    got = normalise_id_numbers(pa.array([legacy["input"], f"  {lower['input']}\t", None, "11010549123100", "abc"]))
    assert got.to_pylist() == [legacy["normalised"], lower["normalised"], None, "11010549123100", "ABC"]


def test_normalise_ids_upgrade_keeps_other_rows_in_place() -> None:
    values = pa.array(["360426199101010071", "110105491231002", "x", "110105491231002"]).slice(1)
    assert normalise_id_numbers(values).to_pylist() == ["11010519491231002X", "X", "11010519491231002X"]


def test_normalise_codes_trims_and_uppercases() -> None:
    assert normalise_codes(["  91310115ma1k3btp2b ", None, "\u3000abc\u3000"]).to_pylist() == [
        "91310115MA1K3BTP2B",
        None,
        "ABC",
    ]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=DIGITS, min_size=17, max_size=17))
def test_id_check_char_agrees_with_stdnum(body: str) -> None:
    # stdnum's calc_check_digit takes the full number and ignores its last character.
    assert id_check_char(body) == ric.calc_check_digit(body + "0")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet=DIGITS, min_size=17, max_size=17), min_size=1, max_size=30))
def test_id_check_bytes_of_a_batch_agree_with_stdnum(bodies: list[str]) -> None:
    assert _chars(id_check_bytes(_matrix(bodies))) == [ric.calc_check_digit(b + "0") for b in bodies]


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=DIGITS, min_size=6, max_size=6),
    st.dates(min_value=date(1800, 1, 1), max_value=TODAY),
    st.text(alphabet=DIGITS, min_size=3, max_size=3),
)
def test_generated_ids_are_valid_and_a_changed_check_char_is_not(address: str, born: date, seq: str) -> None:
    body = address + born.strftime("%Y%m%d") + seq
    good = body + ric.calc_check_digit(body + "0")
    wrong = [body + c for c in "0123456789X" if c != good[-1]]
    assert _list(id_number_valid([good, *wrong], TODAY)) == [True] + [False] * len(wrong)


# -- GB 32100 -----------------------------------------------------------------------------------


def test_uscc_vectors() -> None:
    valid = VECTORS["uscc"]["valid"]
    invalid = list(VECTORS["uscc"]["invalid"])
    assert _list(uscc_valid(valid + [None])) == [True] * len(valid) + [True]
    assert _list(uscc_valid(invalid)) == [False] * len(invalid)


@pytest.mark.parametrize(
    ("number", "why"),
    [
        ("B1110000600037341L", "registration authority B is not allocated"),
        ("911A0000600037341L", "positions 3-8 must be digits"),
        ("91110000600037351L", "GB 11714 check on position 17"),
        ("91110000600037341I", "I is outside the alphabet"),
        ("91110000600037341l", "not normalised"),
        ("91110000600037341", "17 chars"),
    ],
)
def test_uscc_malformed(number: str, why: str) -> None:
    assert _list(uscc_valid([number])) == [False], why


def _gb11714_oracle(body8: str) -> str:
    total = sum(ALNUM.index(c) * w for c, w in zip(body8, (3, 7, 9, 10, 5, 8, 4, 2)))
    return {10: "X", 11: "0"}.get(11 - total % 11, str(11 - total % 11))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=USCC_ALPHABET, min_size=17, max_size=17))
def test_uscc_check_char_agrees_with_stdnum(body: str) -> None:
    assert uscc_check_char(body) == uscc.calc_check_digit(body)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from("123456789ANY"),
    st.sampled_from(USCC_ALPHABET),
    st.text(alphabet=DIGITS, min_size=6, max_size=6),
    st.text(alphabet=USCC_ALPHABET, min_size=8, max_size=8),
)
def test_generated_usccs_are_valid(authority: str, kind: str, division: str, org: str) -> None:
    assert gb11714_check_char(org) == _gb11714_oracle(org)
    body = authority + kind + division + org + gb11714_check_char(org)
    number = body + uscc_check_char(body)
    assert number[-1] == uscc.calc_check_digit(body)  # stdnum's validate wants digits in 1-8: stricter than GB 32100
    wrong_check = body + next(c for c in USCC_ALPHABET if c != number[-1])
    assert _list(uscc_valid([number, wrong_check])) == [True, False]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet=USCC_ALPHABET, min_size=17, max_size=17), min_size=1, max_size=30))
def test_uscc_check_bytes_of_a_batch_agree_with_stdnum(bodies: list[str]) -> None:
    assert _chars(uscc_check_bytes(_matrix(bodies))) == [uscc.calc_check_digit(b) for b in bodies]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet=ALNUM, min_size=8, max_size=8), min_size=1, max_size=30))
def test_gb11714_check_bytes_of_a_batch_agree_with_the_oracle(bodies: list[str]) -> None:
    assert _chars(gb11714_check_bytes(_matrix(bodies))) == [_gb11714_oracle(b) for b in bodies]


def test_gb11714_check_char_of_vectors() -> None:
    for number in VECTORS["uscc"]["valid"]:
        assert gb11714_check_char(number[8:16]) == number[16]


def test_scalar_helpers_refuse_bad_bodies() -> None:
    with pytest.raises(ValueError):
        id_check_char("1101051949123100")
    with pytest.raises(ValueError):
        uscc_check_char("9111000060003734I")
    with pytest.raises(ValueError):
        gb11714_check_char("6000373")
    with pytest.raises(ValueError):
        license_check_char("abc")


# -- GB/T 36904 -----------------------------------------------------------------------------------


def test_license_vectors() -> None:
    valid = VECTORS["license_id"]["valid"]
    assert _list(license_id_valid(valid + [None])) == [True] * (len(valid) + 1)
    assert _list(license_id_valid(valid, variant="strict")) == [True] * len(valid)


def test_license_check_chars_of_vectors_agree_with_stdnum() -> None:
    for license_id in VECTORS["license_id"]["valid"]:
        parts = license_id.removeprefix("1.2.156.3005.2.").split(".")
        middle = "".join(parts[:4])
        assert license_check_char(middle) == mod_37_36.calc_check_digit(middle) == parts[4]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=ALNUM, min_size=1, max_size=60))
def test_license_check_char_agrees_with_stdnum(middle: str) -> None:
    assert license_check_char(middle) == mod_37_36.calc_check_digit(middle)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet=ALNUM, min_size=1, max_size=60), min_size=1, max_size=20))
def test_license_check_bytes_of_padded_rows_of_any_length_agree_with_stdnum(middles: list[str]) -> None:
    width = max(len(m) for m in middles) + 3  # padding beyond every row's length must not count
    lengths = np.array([len(m) for m in middles])
    expected = [mod_37_36.calc_check_digit(m) for m in middles]
    assert _chars(license_check_bytes(_matrix(middles, width), lengths)) == expected
    if len(set(lengths)) == 1:
        assert _chars(license_check_bytes(_matrix(middles))) == expected


def _license(parts: list[str]) -> str:
    return "1.2.156.3005.2." + ".".join(parts)


VALID_PARTS = ["11100000MB03271699022", "340100", "000000016", "001", "9"]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({4: "8"}, "wrong check character"),
        ({0: "11100000MB0327169X022"}, "type code's USCC is invalid"),
        ({0: "11100000MB03271699A22"}, "type code's last 3 must be digits"),
        ({1: "34010"}, "issuer is neither USCC nor 6 digits"),
        ({3: "01"}, "version has 3 digits"),
        ({2: ""}, "serial is empty"),
    ],
)
def test_license_malformed(change: dict[int, str], why: str) -> None:
    parts = [change.get(i, p) for i, p in enumerate(VALID_PARTS)]
    assert _list(license_id_valid([_license(parts)])) == [False], why


def test_license_other_shapes_are_invalid() -> None:
    good = _license(VALID_PARTS)
    assert _list(license_id_valid([good, "1.2.156.3005.1." + good[15:], good + ".9", good[15:], "", "x"])) == [
        True,
        False,
        False,
        False,
        False,
        False,
    ]


def test_license_generated_with_our_check_char_is_valid() -> None:
    parts = ["91110000600037341L001", "91110000600037341L", "A0000123", "007"]
    assert _list(license_id_valid([_license([*parts, license_check_char("".join(parts))])])) == [True]


def test_unknown_license_variant_is_a_config_error_without_values() -> None:
    with pytest.raises(ConfigError) as caught:
        license_id_valid(["1.2.156.3005.2.x"], variant="vendor-x")
    assert "1.2.156" not in " ".join(caught.value.lines())


def test_issuer_code() -> None:
    values = ["11430000006122244L", "340100", "34010", "3401001", "91350100M000100Y4Z", None, " 340100"]
    assert _list(issuer_code_valid(values)) == [True, True, False, False, False, True, False]


NASTY = ["１１０１０５１９４９１２３１００２Ｘ", "😀" * 5, "1101051949\x001231002X", "9" * 10_000, "\u3000", "", "ß" * 9]


@pytest.mark.parametrize("check", [lambda v: id_number_valid(v, TODAY), uscc_valid, license_id_valid, issuer_code_valid])
def test_nasty_text_is_invalid_not_a_crash(check) -> None:
    assert _list(check(pa.array(NASTY))) == [False] * len(NASTY)
