"""Nasty rows per source view, as plain dicts under the contract's column names.

Full-width characters, emoji, NUL bytes, very long text, NULLs everywhere, codes with leading
zeros, exact decimals, timestamps on the watermark edge (equal, one microsecond either side,
written with and without fractional seconds). Identifiers are the standards' published examples
or synthetic; no real person's record.

Values are Python objects (str, date, datetime, Decimal, int, None); ``sqlite_value`` turns them
into what a SQLite source holds. Rows in ``SQLITE_ONLY`` cannot be stored by PostgreSQL/MySQL
as they stand (NUL bytes in text, text longer than its VARCHAR): skip them on those engines.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

WATERMARK = datetime(2026, 11, 20, 12, 0, 0)
US = timedelta(microseconds=1)
EARLY = datetime(2026, 11, 1, 8, 30, 0)
LATE = datetime(2026, 11, 25, 18, 0, 0, 250000)

LONG_TEXT = "长" * 10_000
VERY_LONG_TEXT = "经营范围；" * 20_000  # 100,000 characters

_PERSON = {
    "name": None,
    "sex_code": None,
    "ethnicity_code": None,
    "birth_date": None,
    "household_division_code": None,
    "household_address": None,
    "phone": None,
    "person_status": None,
    "is_deleted": 0,
}

POPULATION: list[dict[str, Any]] = [
    {**_PERSON, "id_number": "11010519491231002X", "name": "张三", "sex_code": "1", "ethnicity_code": "01",
     "birth_date": date(1949, 12, 31), "household_division_code": "110105", "household_address": "北京市朝阳区建国路1号",
     "phone": "13800000000", "person_status": "1", "updated_at": EARLY},
    # NULLs everywhere a NULL is allowed.
    {**_PERSON, "id_number": "440524188001010014", "name": "李四", "updated_at": WATERMARK - US},
    # Three rows share the watermark instant; one is written without fractional seconds.
    {**_PERSON, "id_number": "360426199101010071", "name": "王五", "sex_code": "0", "ethnicity_code": "02",
     "household_division_code": "010101", "updated_at": WATERMARK},
    {**_PERSON, "id_number": "44011320141005001X", "name": "Ｊｏｈｎ　史密斯", "household_address": "广州市番禺区１２３号",
     "updated_at": WATERMARK},
    {**_PERSON, "id_number": "110102199101010078", "name": "李😀🇨🇳", "household_address": "👨‍👩‍👧 家",
     "updated_at": WATERMARK},
    {**_PERSON, "id_number": "412723199010050012", "name": "王\x00五", "household_address": "a\x00b",
     "updated_at": WATERMARK + US},
    # Legacy 15-digit number, lowercase check character, surrounding spaces: raw, not normalised.
    {**_PERSON, "id_number": "110105491231002", "name": "旧号", "updated_at": LATE},
    {**_PERSON, "id_number": " 11010519491231003x ", "name": "  ", "sex_code": "9", "updated_at": LATE},
    {**_PERSON, "id_number": "110105194912310021", "name": "Robert'); DROP TABLE population_person;--",
     "household_address": LONG_TEXT, "updated_at": LATE, "is_deleted": 1},
    {**_PERSON, "id_number": "１１０１０５１９４９１２３１００４Ｘ", "name": "全角号码", "birth_date": date(2000, 2, 29),
     "updated_at": LATE},
]

_ENTITY = {
    "entity_type": None,
    "legal_rep_name": None,
    "legal_rep_id_type": None,
    "legal_rep_id_number": None,
    "registration_authority": None,
    "registration_division_code": None,
    "established_on": None,
    "registered_capital": None,
    "business_scope": None,
    "address": None,
    "entity_status": None,
    "is_deleted": 0,
}

LEGAL_ENTITY: list[dict[str, Any]] = [
    {**_ENTITY, "uscc": "91110000600037341L", "entity_name": "示例科技有限公司", "entity_type": "企业法人",
     "legal_rep_name": "张三", "legal_rep_id_type": "111", "legal_rep_id_number": "11010519491231002X",
     "registration_authority": "北京市市场监督管理局", "registration_division_code": "110000",
     "established_on": date(1900, 1, 1), "registered_capital": Decimal("12345678901.2345"),
     "business_scope": VERY_LONG_TEXT, "address": "北京市", "entity_status": "存续", "updated_at": EARLY},
    {**_ENTITY, "uscc": "121200004013590816", "entity_name": "示例事业单位", "registered_capital": Decimal("0.0001"),
     "updated_at": WATERMARK - US},
    {**_ENTITY, "uscc": "91310115MA1K3BTP2B", "entity_name": "ＡＢＣ（上海）有限公司", "registered_capital": Decimal("-1.5"),
     "established_on": date(2000, 2, 29), "updated_at": WATERMARK},
    {**_ENTITY, "uscc": "9144030071526726XG", "entity_name": "🚀火箭贸易", "registered_capital": Decimal("100"),
     "legal_rep_id_type": "414", "updated_at": WATERMARK},
    {**_ENTITY, "uscc": "91620105L015101280", "entity_name": "零\x00字节", "registered_capital": Decimal("99999999999.9999"),
     "updated_at": WATERMARK + US},
    {**_ENTITY, "uscc": " 92340602ma2pbmem24 ", "entity_name": "", "updated_at": LATE, "is_deleted": 1},
    {**_ENTITY, "uscc": "91350100M000100Y4Z", "entity_name": "错误校验", "registration_division_code": "011000",
     "updated_at": LATE},
]

_LICENSE = {
    "license_type_code": None,
    "license_name": None,
    "license_number": None,
    "holder_name": None,
    "holder_id_type": None,
    "holder_id": None,
    "issuer_name": None,
    "issuer_code": None,
    "issued_on": None,
    "valid_from": None,
    "valid_until": None,
    "license_status": None,
    "is_deleted": 0,
}

E_LICENSE: list[dict[str, Any]] = [
    {**_LICENSE, "license_id": "1.2.156.3005.2.11100000000013338W011.11430000006122244L.20230000403.001.U",
     "license_type_code": "11100000000013338W011", "license_name": "营业执照", "license_number": "0000123",
     "holder_name": "示例科技有限公司", "holder_id_type": "001", "holder_id": "91110000600037341L",
     "issuer_name": "示例市场监督管理局", "issuer_code": "11430000006122244L", "issued_on": date(2023, 1, 2),
     "valid_from": date(2023, 1, 2), "valid_until": None, "license_status": "10", "updated_at": EARLY},
    {**_LICENSE, "license_id": "1.2.156.3005.2.11100000000013338W009.11330105002500287C.2025052201.002.0",
     "holder_id_type": "111", "holder_id": "11010519491231002X", "license_status": "01", "valid_from": date(2025, 5, 22),
     "valid_until": date(2025, 5, 21), "updated_at": WATERMARK},
    {**_LICENSE, "license_id": "1.2.156.3005.2.11100000MB03271699022.340100.000000016.001.9",
     "holder_name": "😀" * 50, "issuer_code": "340100", "license_status": "09", "updated_at": WATERMARK + US},
    {**_LICENSE, "license_id": " 1.2.156.3005.2.11100000000013338w011.11430000006122244l.20230000403.001.u ",
     "holder_name": "\x00", "updated_at": WATERMARK - US, "is_deleted": 1},
]

SOURCES: dict[str, list[dict[str, Any]]] = {
    "population_person": POPULATION,
    "legal_entity": LEGAL_ENTITY,
    "e_license": E_LICENSE,
}

# (table, key) of rows PostgreSQL/MySQL cannot store as they stand.
SQLITE_ONLY: frozenset[tuple[str, str]] = frozenset(
    {
        ("population_person", "412723199010050012"),  # NUL bytes
        ("population_person", "110105194912310021"),  # 10,000-character address in VARCHAR(200)
        ("legal_entity", "91620105L015101280"),  # NUL byte
        ("e_license", " 1.2.156.3005.2.11100000000013338w011.11430000006122244l.20230000403.001.u "),  # NUL byte
    }
)


def sqlite_value(value: Any) -> Any:
    """How a SQLite source stores the value: dates and timestamps as ISO text, decimals as text
    (a DECIMAL column's NUMERIC affinity turns them into REAL, as real SQLite sources have them)."""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value
