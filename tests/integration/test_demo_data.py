"""The demo sources: exact counts, and every row judged by an independent oracle (python-stdnum).

Each row is classified by plain-Python rules built on python-stdnum; valid and deleted rows must
show no defect, every defective row exactly the one defect it was generated with.
Failure messages give counts and kinds, never the synthetic ID numbers themselves.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections import Counter
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from stdnum import numdb
from stdnum.cn import ric, uscc
from stdnum.iso7064 import mod_37_36

from govshare.demo import DemoSources, write_demo_sources

pytestmark = pytest.mark.integration

ROWS = 1200
TODAY = date.today()
AS_OF = datetime(TODAY.year, TODAY.month, TODAY.day)
LOC = numdb.get("cn/loc")
ETHNICITY = {f"{i:02d}" for i in range(1, 57)} | {"97", "98"}
ENTITY_STATUS = {"存续", "在业", "吊销", "注销", "迁出"}
ENTITY_TYPE = {"企业法人", "机关法人", "事业单位法人", "社会团体法人", "其他"}
LICENSE_STATUS = {"10", "01", "02", "03", "04", "05", "09"}
GB11714 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoSources:
    return write_demo_sources(tmp_path_factory.mktemp("demo"), rows=ROWS, seed=7, as_of=AS_OF)


def _rows(path: Path, table: str) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"SELECT * FROM {table}")]


# -- the oracle -----------------------------------------------------------------------------------


def normalise_id(raw: str) -> str:
    number = raw.strip().upper()
    if len(number) == 15 and number.isdigit():
        body = number[:6] + "19" + number[6:]
        return body + ric.calc_check_digit(body + "0")  # stdnum: the argument includes a check char
    return number


def id_date(number: str) -> date | None:
    try:
        return datetime.strptime(number[6:14], "%Y%m%d").date()
    except ValueError:
        return None


def id_ok(number: str) -> bool:
    n = normalise_id(number)
    d = id_date(n) if len(n) == 18 else None
    return len(n) == 18 and n[:17].isdigit() and ric.calc_check_digit(n) == n[17] and d is not None and d <= TODAY


def uscc_ok(code: str) -> bool:
    c = code.strip().upper()
    if not uscc.is_valid(c):
        return False
    org = c[8:17]  # GB 11714 check, which stdnum does not verify
    total = sum(GB11714.index(ch) * w for ch, w in zip(org[:8], (3, 7, 9, 10, 5, 8, 4, 2)))
    check = 11 - total % 11
    return org[8] == {10: "X", 11: "0"}.get(check, str(check))


def division_ok(code: str | None) -> bool:
    return code is not None and len(code) == 6 and code.isdigit() and len(LOC.info(code)) == 2


def person_defects(r: dict[str, Any]) -> set[str]:
    found = set()
    n = normalise_id(r["id_number"])
    if ric.calc_check_digit(n) != n[17]:
        found.add("wrong_check_char")
    born = id_date(n)
    if born is None:
        found.add("impossible_date")
    birth_date = date.fromisoformat(r["birth_date"]) if r["birth_date"] else None
    if (born and born > TODAY) or (birth_date and birth_date > TODAY):
        found.add("future_birth_date")
    if r["sex_code"] not in {"0", "1", "2", "9"}:
        found.add("unknown_sex_code")
    if not r["name"].strip():
        found.add("blank_name")
    if born and birth_date and birth_date != born:
        found.add("birth_date_mismatch")
    if r["sex_code"] in {"1", "2"} and int(n[16]) % 2 != (1 if r["sex_code"] == "1" else 0):
        found.add("sex_mismatch")
    if r["ethnicity_code"] not in ETHNICITY or r["person_status"] not in {"1", "2", "3", "4"}:
        found.add("other")
    if not division_ok(r["household_division_code"]) or not division_ok(n[:6]):
        found.add("other")
    return found


def entity_defects(r: dict[str, Any]) -> set[str]:
    found = set()
    if not uscc_ok(r["uscc"]):
        found.add("wrong_check_char")
    if r["registered_capital"] is not None and Decimal(str(r["registered_capital"])) < 0:
        found.add("negative_capital")
    if not r["entity_name"].strip():
        found.add("blank_name")
    if r["entity_status"] not in ENTITY_STATUS:
        found.add("unknown_status")
    rep_ok = id_ok(r["legal_rep_id_number"]) if r["legal_rep_id_type"] == "111" else r["legal_rep_id_type"] == "414"
    if not rep_ok or r["entity_type"] not in ENTITY_TYPE or not division_ok(r["registration_division_code"]):
        found.add("other")
    if date.fromisoformat(r["established_on"]) > TODAY:
        found.add("other")
    return found


def license_defects(r: dict[str, Any]) -> set[str]:
    found = set()
    lid = r["license_id"].strip().upper()
    parts = lid.removeprefix("1.2.156.3005.2.").split(".")
    if not lid.startswith("1.2.156.3005.2.") or len(parts) != 5 or not mod_37_36.is_valid("".join(parts)):
        found.add("wrong_check_char")
    if parts[0] != r["license_type_code"] or parts[1] != r["issuer_code"]:
        found.add("other")
    valid_from, until = date.fromisoformat(r["valid_from"]), r["valid_until"] and date.fromisoformat(r["valid_until"])
    if until and until < valid_from:
        found.add("valid_until_before_valid_from")
    holder_ok = id_ok(r["holder_id"]) if r["holder_id_type"] == "111" else uscc_ok(r["holder_id"])
    if not holder_ok:
        found.add("holder_id_invalid" if r["holder_id_type"] == "111" else "other")
    issuer = r["issuer_code"]
    if not (uscc_ok(issuer) or division_ok(issuer)) or r["license_status"] not in LICENSE_STATUS:
        found.add("other")
    if date.fromisoformat(r["issued_on"]) > TODAY or (r["license_status"] == "10" and until and until < TODAY):
        found.add("other")
    return found


CHECKS = {
    "population": ("population_person", "id_number", person_defects, normalise_id),
    "legal_entity": ("legal_entity", "uscc", entity_defects, lambda k: k.strip().upper()),
    "e_license": ("e_license", "license_id", license_defects, lambda k: k.strip().upper()),
}


# -- tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["population", "legal_entity", "e_license"])
def test_every_row_has_exactly_its_known_defect(demo: DemoSources, dataset: str) -> None:
    table, key, defects_of, normalise = CHECKS[dataset]
    rows = _rows(demo.paths[dataset], table)
    kind_of = {k: kind for (ds, kind), keys in demo.defect_keys.items() if ds == dataset for k in keys}
    deleted = demo.deleted_keys[dataset]
    wrong: Counter[str] = Counter()
    for r in rows:
        k = normalise(r[key])
        expected = {kind_of[k]} if k in kind_of else set()
        found = defects_of(r)
        if found != expected:
            wrong[f"expected {sorted(expected)}, found {sorted(found)}"] += 1
        if (r["is_deleted"] == 1) != (k in deleted):
            wrong["is_deleted disagrees with deleted_keys"] += 1
    assert not wrong, dict(wrong)


@pytest.mark.parametrize(("dataset", "expected_rows"), [("population", ROWS), ("legal_entity", ROWS // 2), ("e_license", ROWS)])
def test_counts_are_exact(demo: DemoSources, dataset: str, expected_rows: int) -> None:
    table, key, _, normalise = CHECKS[dataset]
    rows = _rows(demo.paths[dataset], table)
    c = demo.counts[dataset]
    assert c.rows == len(rows) == expected_rows
    assert c.valid + c.defective + c.deleted == c.rows
    assert c.defective == sum(c.by_defect.values())
    assert 0.03 <= c.defective / c.rows <= 0.07
    assert set(c.by_defect) == {kind for ds, kind in demo.defect_keys if ds == dataset}
    for kind, n in c.by_defect.items():
        assert n >= 1 and len(demo.defect_keys[(dataset, kind)]) == n
    assert c.deleted == sum(r["is_deleted"] for r in rows) == len(demo.deleted_keys[dataset]) >= 2
    assert len({normalise(r[key]) for r in rows}) == c.rows  # normalised keys are unique too


def test_valid_rows_that_need_normalising(demo: DemoSources) -> None:
    raw = {normalise_id(r["id_number"]): r["id_number"] for r in _rows(demo.population, "population_person")}
    variants = {kind: keys for (ds, kind), keys in demo.variant_keys.items() if ds == "population"}
    assert all(len(keys) >= 1 for keys in variants.values())
    assert all(raw[k].endswith("x") for k in variants["lowercase_x"])
    assert all(len(raw[k]) == 15 for k in variants["legacy_15_digit"])
    assert all(raw[k] != raw[k].strip() for k in variants["surrounding_spaces"])
    counts = demo.counts["population"].needs_normalisation
    assert counts == {kind: len(keys) for kind, keys in variants.items()}
    licenses = {r["license_id"].strip().upper(): r["license_id"] for r in _rows(demo.e_license, "e_license")}
    assert all(licenses[k] != k for (ds, _), keys in demo.variant_keys.items() if ds == "e_license" for k in keys)


def test_holders_come_from_the_generated_people_and_entities(demo: DemoSources) -> None:
    people = {normalise_id(r["id_number"]) for r in _rows(demo.population, "population_person")}
    entities = {r["uscc"].strip().upper() for r in _rows(demo.legal_entity, "legal_entity")}
    invalid_holders = demo.defect_keys[("e_license", "holder_id_invalid")]
    outside = [
        r for r in _rows(demo.e_license, "e_license")
        if r["license_id"].strip().upper() not in invalid_holders and r["holder_id"] not in people | entities
    ]
    assert not outside, f"{len(outside)} licenses with holders from nowhere"


def test_updated_at_spreads_over_30_days_with_ties(demo: DemoSources) -> None:
    stamps = [datetime.fromisoformat(r["updated_at"]) for r in _rows(demo.population, "population_person")]
    assert all((AS_OF - s).days < 30 for s in stamps) and max(stamps) < AS_OF
    assert (max(stamps) - min(stamps)).days >= 25
    assert len(set(stamps)) < len(stamps) * 0.6


def test_codes_are_stored_as_text_with_leading_zeros(demo: DemoSources) -> None:
    with sqlite3.connect(demo.population) as conn:
        kinds = dict(conn.execute("SELECT typeof(ethnicity_code), count(*) FROM population_person GROUP BY 1"))
        assert set(kinds) == {"text"}
        assert conn.execute("SELECT count(*) FROM population_person WHERE ethnicity_code = '01'").fetchone()[0] > 0


def test_connection_uris_point_at_the_files(demo: DemoSources) -> None:
    uris = demo.connection_uris()
    assert set(uris) == {"population_db", "legal_entity_db", "e_license_db"}
    assert uris["population_db"] == f"sqlite:///{demo.population}" and uris["population_db"].startswith("sqlite:////")
    assert demo.environment()["AIRFLOW_CONN_E_LICENSE_DB"] == uris["e_license_db"]


def _digest(sources: DemoSources) -> str:
    h = hashlib.sha256()
    for path in sorted(sources.paths.values()):
        with sqlite3.connect(path) as conn:
            for line in conn.iterdump():
                h.update(line.encode())
    return h.hexdigest()


def test_deterministic_per_seed(tmp_path: Path) -> None:
    first = write_demo_sources(tmp_path / "a", rows=300, seed=11, as_of=AS_OF)
    again = write_demo_sources(tmp_path / "a", rows=300, seed=11, as_of=AS_OF)  # replaces the files
    other = write_demo_sources(tmp_path / "b", rows=300, seed=12, as_of=AS_OF)
    assert _digest(first) == _digest(again) != _digest(other)
    assert first.defect_keys == again.defect_keys


def test_too_few_rows_is_a_config_error(tmp_path: Path) -> None:
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match="100"):
        write_demo_sources(tmp_path, rows=10)


def test_demo_sources_read_through_their_connections(demo: DemoSources, monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors import open_source
    from common.catalog import load_catalog

    for name, value in demo.environment().items():
        monkeypatch.setenv(name, value)
    catalog = load_catalog()
    for dataset_id, counts in demo.counts.items():
        source = open_source(catalog.dataset(dataset_id))
        source.check()
        batches = list(source.read_batches(None, source.high_watermark() or AS_OF, batch_rows=256))
        assert len(batches) >= 2
        assert sum(b.num_rows for b in batches) == counts.rows
        assert sum(b.column("is_deleted").to_pylist().count(1) for b in batches) == counts.deleted


# -- the demo's identifiers, judged by validation.identifiers -----------------------------------


def _column(path: Path, table: str, column: str) -> list[Any]:
    with sqlite3.connect(path) as conn:
        return [v for (v,) in conn.execute(f'SELECT "{column}" FROM "{table}" ORDER BY rowid')]


def _kinds(demo: DemoSources, dataset: str, keys: list[str]) -> list[str]:
    """Each row's defect kind ('' for valid and deleted rows), by its normalised key."""
    kind_of = {k: kind for (ds, kind), ks in demo.defect_keys.items() if ds == dataset for k in ks}
    return [kind_of.get(k, "") for k in keys]


def _mismatches(kinds: list[str], ok: Any, meant_to_fail: set[str]) -> Counter[str]:
    """Rows whose verdict disagrees with their kind, counted by kind (no identifiers in messages)."""
    return Counter(kind or "valid" for kind, good in zip(kinds, ok.tolist()) if good == (kind in meant_to_fail))


def test_id_numbers_verify_and_each_broken_one_breaks_its_rule(demo: DemoSources) -> None:
    import numpy as np

    from validation.identifiers import id_birth_dates, id_check_bytes, id_number_valid, normalise_id_numbers

    ids = normalise_id_numbers(_column(demo.population, "population_person", "id_number"))
    kinds = _kinds(demo, "population", ids.to_pylist())
    assert not _mismatches(kinds, id_number_valid(ids, TODAY), {"wrong_check_char", "impossible_date", "future_birth_date"})

    matrix = np.frombuffer(b"".join(v.encode() for v in ids.to_pylist()), dtype=np.uint8).reshape(-1, 18)
    check_right = id_check_bytes(matrix[:, :17]) == matrix[:, 17]
    born, real = id_birth_dates(ids)
    future = born > int(TODAY.strftime("%Y%m%d"))
    kind = np.array(kinds)
    assert not check_right[kind == "wrong_check_char"].any() and real[kind == "wrong_check_char"].all()
    assert check_right[kind == "impossible_date"].all() and not real[kind == "impossible_date"].any()
    assert check_right[kind == "future_birth_date"].all() and future[kind == "future_birth_date"].all()


def test_credit_codes_verify_and_a_wrong_check_char_is_only_that(demo: DemoSources) -> None:
    from validation.identifiers import id_number_valid, normalise_codes, normalise_id_numbers, uscc_check_char, uscc_valid

    codes = normalise_codes(_column(demo.legal_entity, "legal_entity", "uscc")).to_pylist()
    kinds = _kinds(demo, "legal_entity", codes)
    assert not _mismatches(kinds, uscc_valid(codes), {"wrong_check_char"})
    repaired = [c[:17] + uscc_check_char(c[:17]) for c, k in zip(codes, kinds) if k == "wrong_check_char"]
    assert repaired and uscc_valid(repaired).all()  # GB 11714 part and all else right: only the GB 32100 char is wrong

    types = _column(demo.legal_entity, "legal_entity", "legal_rep_id_type")
    reps = [r for r, t in zip(_column(demo.legal_entity, "legal_entity", "legal_rep_id_number"), types) if t == "111"]
    assert reps and id_number_valid(normalise_id_numbers(reps), TODAY).all()


def test_license_ids_verify_and_each_broken_one_breaks_its_rule(demo: DemoSources) -> None:
    from validation.identifiers import (
        LICENSE_PREFIX,
        id_number_valid,
        issuer_code_valid,
        license_check_char,
        license_id_valid,
        normalise_codes,
        normalise_id_numbers,
        uscc_valid,
    )

    ids = normalise_codes(_column(demo.e_license, "e_license", "license_id")).to_pylist()
    kinds = _kinds(demo, "e_license", ids)
    assert not _mismatches(kinds, license_id_valid(ids), {"wrong_check_char"})
    wrong = [i for i, k in zip(ids, kinds) if k == "wrong_check_char"]
    middles = ["".join(i.removeprefix(LICENSE_PREFIX).split(".")[:4]) for i in wrong]
    repaired = [i[:-1] + license_check_char(m) for i, m in zip(wrong, middles)]
    assert repaired and license_id_valid(repaired).all()  # all else right: only the 校验位 is wrong

    issuers = _column(demo.e_license, "e_license", "issuer_code")
    types = _column(demo.e_license, "e_license", "license_type_code")
    assert issuer_code_valid(issuers).all() and uscc_valid([t[:18] for t in types]).all()
    holder_types = _column(demo.e_license, "e_license", "holder_id_type")
    holders = _column(demo.e_license, "e_license", "holder_id")
    person = [(h, k) for h, t, k in zip(holders, holder_types, kinds) if t == "111"]
    person_ok = id_number_valid(normalise_id_numbers([h for h, _ in person]), TODAY)
    assert not _mismatches([k for _, k in person], person_ok, {"holder_id_invalid"})
    assert uscc_valid(normalise_codes([h for h, t in zip(holders, holder_types) if t == "001"])).all()


# -- where the demo writes: the catalog's connection, table, key and columns ---------------------


def _edited_catalog(tmp_path: Path, file: str, old: str, new: str) -> Path:
    import shutil

    from common.catalog import PROJECT_ROOT

    catalogs = tmp_path / "catalogs"
    shutil.copytree(PROJECT_ROOT / "catalogs", catalogs)
    path = catalogs / file
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1
    path.write_text(text.replace(old, new), encoding="utf-8")
    return catalogs


def test_connection_ids_come_from_the_catalog(tmp_path: Path) -> None:
    from common.catalog import load_catalog

    catalogs = _edited_catalog(tmp_path, "population.yaml", "connection: population_db", "connection: census_db")
    written = write_demo_sources(tmp_path / "out", rows=200, seed=3, as_of=AS_OF, catalog=load_catalog(catalogs))
    assert set(written.connection_uris()) == {"census_db", "legal_entity_db", "e_license_db"}
    assert written.environment()["AIRFLOW_CONN_CENSUS_DB"] == f"sqlite:///{written.population}"


def test_the_catalog_default_is_the_projects_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalogs = _edited_catalog(tmp_path, "e_license.yaml", "connection: e_license_db", "connection: zzk_db")
    monkeypatch.setenv("GOVSHARE_CATALOG", str(catalogs))
    written = write_demo_sources(tmp_path / "out", rows=200, seed=3, as_of=AS_OF)
    assert written.connection_uris()["zzk_db"] == f"sqlite:///{written.e_license}"


@pytest.mark.parametrize(
    ("file", "old", "new", "named"),
    [
        ("e_license.yaml", "table: e_license", "table: DZZZ_ZZXX", "DZZZ_ZZXX"),  # not a contract table
        ("e_license.yaml", "  license_id:\n", "  license_id:\n    column: ZZBS\n", "ZZBS"),  # not a contract column
    ],
)
def test_a_catalog_the_contract_tables_cannot_hold_is_a_config_error_naming_it(
    tmp_path: Path, file: str, old: str, new: str, named: str
) -> None:
    from common.catalog import load_catalog
    from common.errors import ConfigError

    catalog = load_catalog(_edited_catalog(tmp_path, file, old, new))
    with pytest.raises(ConfigError) as caught:
        write_demo_sources(tmp_path / "out", rows=200, seed=3, as_of=AS_OF, catalog=catalog)
    assert named in str(caught.value) + " ".join(caught.value.problems)
    assert not (tmp_path / "out" / "e_license.db").exists()
