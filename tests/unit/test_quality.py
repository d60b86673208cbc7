"""Data-quality feedback: key masking, the report's shape, and that no raw value ever leaves.

The report tests write one tiny quarantine file, encrypted with keys made in a temp keystore,
the way the pipeline writes it (source schema + ``_rules``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.catalog import Dataset, load_catalog
from common.schema import source_schema
from keys.keystore import Keystore
from keys.protection import quarantine_encryption
from validation import quality
from common.run import CrossrefFinding, CrossrefResult, ValidationSummary
from validation.engine import RULES_COLUMN, Validator
from validation.quality import FORMAT, quality_report, render_csv, write_quality_report
from keys.masking import mask_keys

TODAY = date(2026, 3, 1)
ID_LIKE = re.compile(r"\d{15}(\d{2}[\dXx])?")

# Rejected rows: identifier vectors from the standards' annexes (identifiers.md), made-up names/phones.
REJECTED = [
    {"id_number": "110105194912310021", "name": "测试甲", "phone": "13800138000", "sex_code": "1",
     "household_address": "北京市朝阳区测试路1号", "_rules": ["id_number.id_number"]},
    {"id_number": "110105199102300017", "name": "测试乙", "phone": "13900139001", "sex_code": "2",
     "household_address": "北京市朝阳区测试路2号", "_rules": ["id_number.id_number", "sex_code.code_list"]},
    {"id_number": "440524188001010014", "name": " ", "phone": "+86 10 6552 0000", "sex_code": "7",
     "household_address": "<script>alert(1)</script>", "_rules": ["name.required", "name.not_blank", "sex_code.code_list"]},
    {"id_number": "=cmd|' /C calc'!A0", "name": "测试丙", "phone": "=HYPERLINK(1)", "sex_code": "1",
     "household_address": "上海市", "_rules": ["id_number.id_number"]},
]


@pytest.fixture(scope="module")
def population() -> Dataset:
    return load_catalog().dataset("population")


@pytest.fixture
def keystore(tmp_path: Path) -> Keystore:
    ks = Keystore(tmp_path / "keystore")
    ks.init(["population.footer", "population.conditional"], [])
    return ks


def write_quarantine(path: Path, dataset: Dataset, keystore: Keystore, rows: list[dict[str, Any]], *,
                     batch_rows: int = 2) -> Path:
    schema = source_schema(dataset).append(pa.field(RULES_COLUMN, pa.list_(pa.string()), nullable=False))
    defaults = {"updated_at": datetime(2026, 2, 28, 12, 0), "is_deleted": 0}
    full = [{**defaults, **r} for r in rows]
    table = pa.Table.from_pylist(full, schema=schema)
    with pq.ParquetWriter(path, schema, encryption_properties=quarantine_encryption(keystore).file_encryption_properties) as w:
        w.write_table(table, row_group_size=batch_rows)
    return path


def hand_summary(dataset: Dataset) -> ValidationSummary:
    counts = {"id_number.id_number": 3, "name.required": 1, "name.not_blank": 1,
              "sex_code.code_list": 2}
    rules = []
    from validation.rules import dataset_rules

    for r in dataset_rules(dataset):
        rules.append({"rule_id": r.id, "fields": list(r.fields), "check": r.check, "description": r.description,
                      "rows_checked": 10, "rows_failed": counts.get(r.id, 0), "expectation_type": "x",
                      "gx_success": counts.get(r.id, 0) == 0, "gx_unexpected": counts.get(r.id, 0)})
    return ValidationSummary.from_json({"dataset": dataset.id, "today": TODAY.isoformat(), "batches": 1, "rows": 10,
                                        "good": 6, "rejected": 4, "rules": rules})


def raw_values(rows: list[dict[str, Any]]) -> set[str]:
    return {v for r in rows for k, v in r.items() if k != "_rules" and isinstance(v, str) and len(v.strip()) > 1}


# -- mask_keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("110105194912310021", "110***********0021"),
        ("11010519491231002X", "110***********002X"),
        ("91350100M000100Y43", "913***********0Y43"),
        ("12345678", "123*5678"),
        ("1234567", "*******"),
        ("abc", "***"),
        ("", ""),
        ("京A12345678", "京A1***5678"),  # characters, not bytes
        ("张三丰", "***"),
        ("１２３４５６７８９", "１２３**６７８９"),  # full-width digits
    ],
)
def test_mask_keys_examples(raw: str, masked: str) -> None:
    assert mask_keys(pa.array([raw])).to_pylist() == [masked]


def test_mask_keys_keeps_nulls_and_length() -> None:
    values = pa.array(["110105194912310021", None, "ab", None])
    out = mask_keys(values)
    assert out.to_pylist() == ["110***********0021", None, "**", None]
    assert out.type == pa.string() and out.null_count == 2


def test_mask_keys_takes_chunked_and_sliced_arrays() -> None:
    chunked = pa.chunked_array([["110105194912310021"], [None, "440524188001010014"]])
    assert mask_keys(chunked).to_pylist() == ["110***********0021", None, "440***********0014"]
    sliced = pa.array(["x", "12345678", "123456789"]).slice(1)
    assert mask_keys(sliced).to_pylist() == ["123*5678", "123**6789"]


def _mask_oracle(text: str) -> str:
    return "*" * len(text) if len(text) <= 7 else text[:3] + "*" * (len(text) - 7) + text[-4:]


@given(st.lists(st.one_of(st.none(), st.text(max_size=40)), max_size=20))
def test_mask_keys_matches_a_plain_python_oracle(values: list[str | None]) -> None:
    expected = [None if v is None else _mask_oracle(v) for v in values]
    assert mask_keys(pa.array(values, pa.string())).to_pylist() == expected


# -- the report ---------------------------------------------------------------------------------


def test_report_structure(population: Dataset, keystore: Keystore, tmp_path: Path) -> None:
    files = [write_quarantine(tmp_path / "run1-0.parquet", population, keystore, REJECTED)]
    report = quality_report(population, "run1", hand_summary(population), files, keystore, version=3)

    assert report["format"] == FORMAT
    header = report["header"]
    assert (header["dataset"], header["title"], header["provider"]) == ("population", population.title, population.provider)
    assert header["run_id"] == "run1" and header["version"] == 3 and header["validated_on"] == TODAY.isoformat()
    assert header["key_field"] == "id_number"
    assert {s["code"] for s in header["standards"]} >= {"GB 11643-1999", "GB/T 2261.1"}
    assert report["totals"] == {"rows_checked": 10, "rows_passed": 6, "rows_rejected": 4, "rejected_share": 0.4}
    assert report["crossref"] is None

    rules = {r["rule_id"]: r for r in report["rules"]}
    assert list(rules) == [r.rule_id for r in hand_summary(population).rules]
    ids = rules["id_number.id_number"]
    assert ids["standards"] == ["GB 11643-1999"] and ids["fields"] == ["id_number"]
    assert ids["rows_failed"] == 3 and ids["rows_quarantined"] == 3
    assert ids["masked_keys"] == ["110***********0021", "110***********0017", "=cm***********'!A0"]
    assert ids["rows_without_key"] == 0 and ids["masked_keys_omitted"] == 0
    sex = rules["sex_code.code_list"]
    assert sex["standards"] == ["GB/T 2261.1"] and sex["code_list"] == "sex"
    assert sex["masked_keys"] == ["110***********0017", "440***********0014"]
    assert rules["name.required"]["masked_keys"] == ["440***********0014"]
    assert rules["name.required"]["standards"] == []
    assert rules["birth_date_matches_id"]["standards"] == ["GB 11643-1999"]
    assert rules["birth_date_matches_id"]["masked_keys"] == [] and rules["birth_date_matches_id"]["rows_quarantined"] == 0
    json.dumps(report)  # JSON-ready


def test_report_without_version_and_with_crossref(population: Dataset, keystore: Keystore, tmp_path: Path) -> None:
    cross = CrossrefResult((CrossrefFinding("x.in_y", "not in y", 5, 2, ("110***********0021",), target="y"),), "population")
    report = quality_report(population, "run2", hand_summary(population), [], keystore, cross=cross)
    assert report["header"]["version"] is None
    assert report["crossref"]["findings"][0]["not_found"] == 2
    assert report["crossref"]["findings"][0]["masked_keys"] == ["110***********0021"]
    assert all(r["rows_quarantined"] == 0 for r in report["rules"])


def test_masked_key_lists_are_capped_and_the_rest_counted(population: Dataset, keystore: Keystore, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quality, "MAX_MASKED_KEYS", 3)
    rows = [{"id_number": f"1101051949123100{i:02d}", "name": "测试", "_rules": ["id_number.id_number"]} for i in range(7)]
    files = [write_quarantine(tmp_path / f"run3-{p}.parquet", population, keystore, rows, batch_rows=2) for p in range(2)]
    rule = next(r for r in quality_report(population, "run3", hand_summary(population), files, keystore)["rules"]
                if r["rule_id"] == "id_number.id_number")
    assert rule["rows_quarantined"] == 14
    assert rule["masked_keys"] == ["110***********0000", "110***********0001", "110***********0002"]
    assert rule["masked_keys_omitted"] == 11


def test_rules_in_the_quarantine_but_not_in_the_summary_are_still_reported(population: Dataset, keystore: Keystore,
                                                                         tmp_path: Path) -> None:
    files = [write_quarantine(tmp_path / "run4-0.parquet", population, keystore, REJECTED)]
    report = quality_report(population, "run4", None, files, keystore)
    rules = {r["rule_id"]: r for r in report["rules"]}
    assert rules["sex_code.code_list"]["rows_failed"] is None
    assert rules["sex_code.code_list"]["rows_quarantined"] == 2
    assert rules["sex_code.code_list"]["description"]  # from the catalog's rules
    assert report["totals"]["rows_checked"] == 0 and report["totals"]["rejected_share"] == 0.0


def test_report_counts_agree_with_the_validator(population: Dataset, keystore: Keystore, tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "_rules"} for r in REJECTED]
    rows.append({"id_number": "11010519491231002X", "name": "测试丁", "sex_code": "2", "birth_date": date(1949, 12, 31)})
    schema = source_schema(population)
    defaults = {"updated_at": datetime(2026, 2, 28, 12, 0), "is_deleted": 0}
    batch = pa.RecordBatch.from_pylist([{**defaults, **r} for r in rows], schema=schema)
    validator = Validator(population, TODAY, gx=False)
    verdict = validator.check(batch)
    path = tmp_path / "run5-0.parquet"
    with pq.ParquetWriter(path, verdict.rejected.schema,
                          encryption_properties=quarantine_encryption(keystore).file_encryption_properties) as w:
        w.write_batch(verdict.rejected)
    report = quality_report(population, "run5", validator.summary(), [path], keystore)
    assert report["totals"]["rows_rejected"] == 4 and report["totals"]["rows_passed"] == 1
    for rule in report["rules"]:
        assert rule["rows_quarantined"] == rule["rows_failed"], rule["rule_id"]
        assert len(rule["masked_keys"]) + rule["rows_without_key"] == rule["rows_failed"], rule["rule_id"]


# -- files --------------------------------------------------------------------------------------


def test_written_files(population: Dataset, keystore: Keystore, tmp_path: Path) -> None:
    files = [write_quarantine(tmp_path / "run6-0.parquet", population, keystore, REJECTED)]
    cross = CrossrefResult((CrossrefFinding("x.in_y", "不在 y 中", 5, 1, ("=10***********0021",), target="y"),), "population")
    report = quality_report(population, "run6", hand_summary(population), files, keystore, cross=cross)
    paths = write_quality_report(report, tmp_path / "out")
    assert {k: p.name for k, p in paths.items()} == {
        "json": "population-run6.json", "csv": "population-run6.csv", "html": "population-run6.html"}

    assert json.loads(paths["json"].read_text(encoding="utf-8"))["format"] == FORMAT

    raw = paths["csv"].read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # BOM: Excel reads UTF-8
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert rows[0] == ["rule_id", "masked_key", "description", "outcome"]
    body = rows[1:]
    expected = sum(len(r["masked_keys"]) for r in report["rules"]) + 1
    assert len(body) == expected
    assert ["id_number.id_number", "110***********0021"] == body[0][:2] and body[0][3] == "rejected"
    assert ["id_number.id_number", "'=cm***********'!A0"] == body[2][:2]  # never a formula in Excel
    assert body[-1][:2] == ["crossref.x.in_y", "'=10***********0021"] and body[-1][3] == "flagged"
    assert "不在 y 中" in body[-1][2]

    page = paths["html"].read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "<script" not in page.lower()
    assert not re.search(r"(src|href)\s*=", page, re.IGNORECASE)
    assert "http://" not in page and "https://" not in page
    assert "***" not in page  # counts only: no keys, not even masked ones
    assert "sex_code.code_list" in page and population.title in page


def test_html_escapes_catalog_text(population: Dataset, keystore: Keystore, tmp_path: Path) -> None:
    hostile = dataclasses.replace(population, title="<img src=x onerror=alert(1)>", provider="A & B <i>")
    report = quality_report(hostile, "run7", hand_summary(population), [], keystore)
    page = write_quality_report(report, tmp_path)["html"].read_text(encoding="utf-8")
    assert "<img" not in page and "<i>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "A &amp; B &lt;i&gt;" in page


def test_unsafe_run_ids_are_refused_as_file_names(population: Dataset, keystore: Keystore, tmp_path: Path) -> None:
    from common.errors import ConfigError

    report = quality_report(population, "../../etc/x", hand_summary(population), [], keystore)
    with pytest.raises(ConfigError):
        write_quality_report(report, tmp_path)


def test_no_raw_value_appears_in_any_output(population: Dataset, keystore: Keystore, tmp_path: Path) -> None:
    files = [write_quarantine(tmp_path / "run8-0.parquet", population, keystore, REJECTED)]
    cross = CrossrefResult((CrossrefFinding("x.in_y", "d", 4, 1, tuple(mask_keys(pa.array(["440524188001010014"])).to_pylist()),
                                            target="y"),), "population")
    report = quality_report(population, "run8", hand_summary(population), files, keystore, cross=cross)
    paths = write_quality_report(report, tmp_path / "out")
    secrets = raw_values(REJECTED)
    assert secrets >= {"110105194912310021", "测试甲", "13800138000", "+86 10 6552 0000"}
    for kind, path in paths.items():
        text = path.read_text(encoding="utf-8-sig")
        for value in secrets:
            assert value not in text, kind  # (the value is not printed: it may be an ID number)
        assert not ID_LIKE.search(text), kind
        # No 8+ character run of any raw ID either (masking keeps 3 + 4).
        for value in secrets:
            if ID_LIKE.fullmatch(value):
                assert not any(value[i:i + 8] in text for i in range(len(value) - 7)), kind
    assert render_csv(report).count("\n") == 1 + sum(len(r["masked_keys"]) for r in report["rules"]) + 1
