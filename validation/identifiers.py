"""National identifiers, checked a whole column at a time.

GB 11643 公民身份号码, GB 32100 统一社会信用代码 (with its embedded GB 11714 organisation code)
and GB/T 36904 证照标识. Every check takes a pyarrow string array (or anything ``pa.array``
accepts: numpy object/str arrays, pandas Series, lists) and returns a numpy bool array, one
entry per row. Work is done on fixed-width byte matrices with numpy, looping over the 17 or 18
character positions, never over rows.

Each standard's check character is computed in one place, on (n, width) matrices of ASCII bytes:
``id_check_bytes``, ``uscc_check_bytes``, ``gb11714_check_bytes`` and ``license_check_bytes``.
The validators compare against them, and the demo generator (govshare.demo) makes its
identifiers with them.

Nulls pass every check here: whether a value must be present is the job of ``required`` /
``not_blank`` (and of the key rule, see validation.rules). Checks expect normalised input
(``normalise_id_numbers`` / ``normalise_codes``): a lowercase ``x`` is not canonical.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.arrays import as_strings
from common.checks import LICENSE_VARIANTS
from common.errors import ConfigError

# GB 11643 check character: ISO 7064 MOD 11-2.
_ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
ID_CHECK_CHARS = "10X98765432"  # indexed by the weighted sum mod 11
_ID_CHECK_BYTES = np.frombuffer(ID_CHECK_CHARS.encode(), dtype=np.uint8)

# GB 32100: 31 symbols (no I, O, Z, S, V), value = index; weights 3^(i-1) mod 31.
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = np.array([pow(3, i, 31) for i in range(17)], dtype=np.int64)
_USCC_CHARS = np.frombuffer(USCC_ALPHABET.encode(), dtype=np.uint8)
_USCC_AUTHORITIES = np.frombuffer(b"123456789ANY", dtype=np.uint8)

# GB 11714 organisation code check (positions 9-17 of a USCC): 0-9, A=10..Z=35.
_GB11714_WEIGHTS = np.array([3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_GB11714_CHARS = np.frombuffer(b"0123456789X0", dtype=np.uint8)  # index 11 - (sum mod 11)

# GB/T 36904 证照标识: ISO 7064 MOD 37,36 over 0-9A-Z.
LICENSE_PREFIX = "1.2.156.3005.2."
ALNUM36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # also GB 11714's values: 0-9, A=10..Z=35
_ALNUM_CHARS = np.frombuffer(ALNUM36.encode(), dtype=np.uint8)

_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def _lookup(alphabet: str) -> np.ndarray:
    """Byte -> symbol value, -1 for bytes outside the alphabet."""
    table = np.full(256, -1, dtype=np.int64)
    table[np.frombuffer(alphabet.encode(), dtype=np.uint8)] = np.arange(len(alphabet))
    return table


_USCC_VALUES = _lookup(USCC_ALPHABET)
_ALNUM_VALUES = _lookup(ALNUM36)
_DIGIT_VALUES = _lookup("0123456789")


# -- Arrow plumbing ---------------------------------------------------------------------------


def _validity(arr: pa.Array) -> np.ndarray:
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _fixed(arr: pa.StringArray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows that are exactly ``width`` bytes, and an (n, width) byte matrix of them (zeros elsewhere)."""
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + n + 1].astype(np.int64)
    fits = (np.diff(offsets) == width) & _validity(arr)
    if n and fits.all():  # the common case: every row fits, bytes are back to back
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
        return fits, data[offsets[0] : offsets[-1]].reshape(n, width)
    matrix = np.zeros((n, width), dtype=np.uint8)
    rows = np.flatnonzero(fits)
    if rows.size:
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
        starts = offsets[rows]
        for pos in range(width):
            matrix[rows, pos] = data[starts + pos]
    return fits, matrix


def _padded(arr: pa.StringArray) -> tuple[np.ndarray, np.ndarray]:
    """(n, longest) byte matrix of every row, zero-padded on the right, and the byte lengths."""
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + n + 1].astype(np.int64)
    lengths = np.where(_validity(arr), np.diff(offsets), 0)
    width = int(lengths.max()) if n else 0
    matrix = np.zeros((n, width), dtype=np.uint8)
    if width:
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
        starts = offsets[:-1]
        for pos in range(width):
            rows = np.flatnonzero(lengths > pos)
            matrix[rows, pos] = data[starts[rows] + pos]
    return matrix, lengths


def _from_matrix(matrix: np.ndarray) -> pa.StringArray:
    """Fixed-width ASCII rows back into an Arrow string array."""
    n, width = matrix.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    data = np.ascontiguousarray(matrix, dtype=np.uint8)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _number(digits: np.ndarray) -> np.ndarray:
    """Digit-value columns (n, k) as one integer per row."""
    result = np.zeros(digits.shape[0], dtype=np.int64)
    for pos in range(digits.shape[1]):
        result = result * 10 + digits[:, pos]
    return result


def _body(text: str, width: int, table: np.ndarray, what: str) -> np.ndarray:
    raw = text.encode("ascii", errors="replace") if isinstance(text, str) else b""
    matrix = np.frombuffer(raw, dtype=np.uint8).reshape(1, -1)
    if matrix.shape[1] != width or (table[matrix] < 0).any():
        raise ValueError(f"{what} must be {width} characters from its alphabet")
    return matrix


# -- normalisation ------------------------------------------------------------------------------


def normalise_codes(values: Any) -> pa.StringArray:
    """Trim white space and uppercase (USCC, license ids, any code key)."""
    return pc.utf8_upper(pc.utf8_trim_whitespace(as_strings(values)))


def normalise_id_numbers(values: Any) -> pa.StringArray:
    """Trim, uppercase (``x`` -> ``X``) and upgrade legacy 15-digit numbers to 18 (GB 11643-1989)."""
    arr = normalise_codes(values)
    fits, matrix = _fixed(arr, 15)
    legacy = fits & (_DIGIT_VALUES[matrix] >= 0).all(axis=1)
    if not legacy.any():
        return arr
    old = matrix[legacy]
    body = np.empty((old.shape[0], 18), dtype=np.uint8)
    body[:, :6] = old[:, :6]
    body[:, 6:8] = np.frombuffer(b"19", dtype=np.uint8)
    body[:, 8:17] = old[:, 6:]
    body[:, 17] = id_check_bytes(body[:, :17])
    return pc.replace_with_mask(arr, pa.array(legacy), _from_matrix(body))


# -- GB 11643 公民身份号码 --------------------------------------------------------------------------


def id_check_bytes(body: np.ndarray) -> np.ndarray:
    """GB 11643 check character (ISO 7064 MOD 11-2, an ASCII byte) for each (n, 17) row of ASCII digits."""
    total = (body.astype(np.int64) - 48) @ _ID_WEIGHTS
    return _ID_CHECK_BYTES[total % 11]


def _real_dates(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_ok = (month >= 1) & (month <= 12)
    last = _DAYS_IN_MONTH[np.clip(month, 0, 12)] + ((month == 2) & leap)
    return (year >= 1) & month_ok & (day >= 1) & (day <= last)


def id_birth_dates(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """The YYYYMMDD inside each 18-char ID as an int, and where that is a real date."""
    return _id_dates(*_fixed(as_strings(values), 18))


def _id_dates(fits: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    digits = _DIGIT_VALUES[matrix[:, 6:14]]
    readable = fits & (digits >= 0).all(axis=1)
    digits = np.where(readable[:, None], digits, 0)
    year, month, day = _number(digits[:, :4]), _number(digits[:, 4:6]), _number(digits[:, 6:8])
    return year * 10000 + month * 100 + day, readable & _real_dates(year, month, day)


def id_sex_digits(values: Any) -> np.ndarray:
    """The sequence's last digit (odd = male, even = female) of each 18-char ID, -1 if unreadable."""
    fits, matrix = _fixed(as_strings(values), 18)
    return np.where(fits, _DIGIT_VALUES[matrix[:, 16]], -1)


def id_number_valid(values: Any, today: date) -> np.ndarray:
    """GB 11643: 18 chars, digits + check char, a real birth date not after ``today``, MOD 11-2.

    The address code is not checked: a number never changes after issue, so a retired or
    unknown county code does not make it invalid.
    """
    arr = as_strings(values)
    fits, matrix = _fixed(arr, 18)
    digits_ok = (_DIGIT_VALUES[matrix[:, :17]] >= 0).all(axis=1)
    check_ok = id_check_bytes(np.where(digits_ok[:, None], matrix[:, :17], 48)) == matrix[:, 17]
    born, real = _id_dates(fits, matrix)
    not_future = born <= today.year * 10000 + today.month * 100 + today.day
    return (fits & digits_ok & check_ok & real & not_future) | ~_validity(arr)


def id_check_char(body17: str) -> str:
    """GB 11643 check character for 17 digits."""
    return chr(id_check_bytes(_body(body17, 17, _DIGIT_VALUES, "an ID body"))[0])


# -- GB 32100 统一社会信用代码 ------------------------------------------------------------------------


def _uscc_check_of_values(values: np.ndarray) -> np.ndarray:
    """GB 32100 check character for each (n, 17) row of symbol values (0..30)."""
    return _USCC_CHARS[(31 - (values @ _USCC_WEIGHTS) % 31) % 31]


def _gb11714_check_of_values(values: np.ndarray) -> np.ndarray:
    """GB 11714 check character for each (n, 8) row of values (0-9, A=10..Z=35)."""
    return _GB11714_CHARS[11 - (values @ _GB11714_WEIGHTS) % 11]


def uscc_check_bytes(body: np.ndarray) -> np.ndarray:
    """GB 32100 check character (an ASCII byte) for each (n, 17) row of ASCII symbols of USCC_ALPHABET.

    Bytes outside the alphabet count as 0; a caller that may have them checks them first.
    """
    return _uscc_check_of_values(np.maximum(_USCC_VALUES[body], 0))


def gb11714_check_bytes(body: np.ndarray) -> np.ndarray:
    """GB 11714 organisation code check character (an ASCII byte, 0-9 or X) for each (n, 8) row of ASCII 0-9A-Z.

    GB 11714 values letters by their place in A..Z (A=10 .. Z=35), not by the USCC alphabet.
    """
    return _gb11714_check_of_values(np.maximum(_ALNUM_VALUES[body], 0))


def uscc_valid(values: Any) -> np.ndarray:
    """GB 32100: alphabet, registration authority, division digits, GB 11714 check, check char."""
    arr = as_strings(values)
    fits, matrix = _fixed(arr, 18)
    symbols = _USCC_VALUES[matrix]
    alphabet_ok = (symbols >= 0).all(axis=1)
    symbols = np.where(alphabet_ok[:, None], symbols, 0)
    authority_ok = np.isin(matrix[:, 0], _USCC_AUTHORITIES)
    division_ok = (_DIGIT_VALUES[matrix[:, 2:8]] >= 0).all(axis=1)
    org_ok = gb11714_check_bytes(matrix[:, 8:16]) == matrix[:, 16]
    check_ok = _uscc_check_of_values(symbols[:, :17]) == matrix[:, 17]
    valid = fits & alphabet_ok & authority_ok & division_ok & org_ok & check_ok
    return valid | ~_validity(arr)


def uscc_check_char(body17: str) -> str:
    """GB 32100 check character for the first 17 symbols."""
    return chr(uscc_check_bytes(_body(body17, 17, _USCC_VALUES, "a USCC body"))[0])


def gb11714_check_char(body8: str) -> str:
    """GB 11714 organisation code check character for 8 symbols (0-9, A-Z)."""
    return chr(gb11714_check_bytes(_body(body8, 8, _ALNUM_VALUES, "an organisation code body"))[0])


def issuer_code_valid(values: Any) -> np.ndarray:
    """A valid USCC, or a 6-digit division code (some issuers use one)."""
    arr = as_strings(values)
    six_digits = pc.fill_null(pc.match_substring_regex(arr, r"^[0-9]{6}$"), True)
    return uscc_valid(arr) | np.asarray(six_digits.to_numpy(zero_copy_only=False), dtype=bool)


# -- GB/T 36904 证照标识 ---------------------------------------------------------------------------


def license_check_bytes(middle: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    """GB/T 36904 校验位: ISO 7064 MOD 37,36 (hybrid) over each row's first ``lengths`` ASCII symbols (0-9A-Z).

    ``middle`` is an (n, width) byte matrix of type code + issuer code + serial + version, rows
    zero-padded on the right; ``lengths`` (default: all ``width``) says how many bytes count.
    Returns the check character of each row as an ASCII byte.
    """
    n, width = middle.shape
    state = np.full(n, 36, dtype=np.int64)
    for pos in range(width):
        s = (state + np.maximum(_ALNUM_VALUES[middle[:, pos]], 0)) % 36
        step = (np.where(s == 0, 36, s) * 2) % 37
        state = step if lengths is None else np.where(pos < lengths, step, state)
    return _ALNUM_CHARS[(37 - state) % 36]


def _matches(arr: pa.Array, pattern: str) -> np.ndarray:
    hits = pc.fill_null(pc.match_substring_regex(arr, pattern), False)
    return np.asarray(hits.to_numpy(zero_copy_only=False), dtype=bool)


def license_id_valid(values: Any, variant: str | None = None) -> np.ndarray:
    """GB/T 36904: prefix, 5 parts (type code, issuer code, serial, version, check), MOD 37,36.

    Strict by default. ``variant`` names a vendor's known deviation explicitly; an unknown
    name is a configuration error, never a silent relaxation.
    """
    _license_variant(variant)
    arr = as_strings(values)
    shape = _matches(arr, r"^1\.2\.156\.3005\.2\.[0-9A-Z]{21}\.[0-9A-Z]+\.[0-9A-Z]+\.[0-9]{3}\.[0-9A-Z]$")
    rest = pc.if_else(pa.array(shape), pc.utf8_slice_codeunits(arr, len(LICENSE_PREFIX)), "....")
    parts = pc.split_pattern(rest, ".")
    type_code = pc.list_element(parts, 0)
    type_ok = uscc_valid(pc.utf8_slice_codeunits(type_code, 0, 18)) & _matches(type_code, r"^.{18}[0-9]{3}$")
    issuer_ok = issuer_code_valid(pc.list_element(parts, 1))
    middle = pc.binary_join(pc.list_slice(parts, 0, 4), "")
    matrix, lengths = _padded(middle)
    check = as_strings(pc.list_element(parts, 4))
    _, check_byte = _fixed(check, 1)
    check_ok = license_check_bytes(matrix, lengths) == check_byte[:, 0]
    return (shape & type_ok & issuer_ok & check_ok) | ~_validity(arr)


def license_check_char(middle: str) -> str:
    """GB/T 36904 校验位 for the concatenated type code, issuer code, serial and version."""
    matrix = _body(middle, len(middle), _ALNUM_VALUES, "a license id middle")
    return chr(license_check_bytes(matrix)[0])


def _license_variant(variant: str | None) -> None:
    if variant is not None and variant not in LICENSE_VARIANTS:
        raise ConfigError(
            f"unknown license_id variant {variant!r}",
            problems=[f"known variants: {', '.join(LICENSE_VARIANTS)}; leave it out for strict GB/T 36904"],
        )
