"""The Validator on small hand-made batches of each catalog dataset, then with Great Expectations.

Most tests use ``gx=False`` to stay fast; the GX section at the end runs the suites (in this process;
the worker process is tested in test_validation_gx_worker.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from common.catalog import Dataset, load_catalog
from common.checks import Check
from common.errors import ConfigError
from common.schema import source_schema
from validation.engine import RULES_COLUMN, BatchVerdict, Validator
from validation.gx_suite import SuiteRunner, build_suite
from validation.rules import dataset_rules, normalise

TODAY = date(2026, 3, 1)


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def make_batch(dataset: Dataset, rows: list[dict[str, Any]]) -> pa.RecordBatch:
    schema = source_schema(dataset)
    defaults = {"updated_at": datetime(2026, 2, 28, 12, 0), "is_deleted": 0}
    columns = {n: [{**defaults, **r}.get(n) for r in rows] for n in schema.names}
    return pa.RecordBatch.from_pydict(columns, schema=schema)


def assert_partition(batch: pa.RecordBatch, verdict: BatchVerdict) -> None:
    assert verdict.good.num_rows + verdict.rejected.num_rows == batch.num_rows
    assert verdict.good.schema == batch.schema
    assert verdict.rejected.schema.names == [*batch.schema.names, RULES_COLUMN]
    assert verdict.rejected.schema.field(RULES_COLUMN).type == pa.list_(pa.string())


# -- population -------------------------------------------------------------------------------------

PERSON = {
    "name": "测试甲",
    "sex_code": "2",
    "ethnicity_code": "01",
    "birth_date": date(1949, 12, 31),
    "person_status": "1",
}


def population_rows() -> list[dict[str, Any]]:
    return [
        {**PERSON, "id_number": "11010519491231002X"},
        {**PERSON, "id_number": " 44011320141005001x ", "sex_code": "1", "birth_date": date(2014, 10, 5)},
        {**PERSON, "id_number": "110105491231002"},  # legacy 15 digits
        {**PERSON, "id_number": "110105194912310021", "birth_date": None},
        {**PERSON, "id_number": "360426199101010071", "name": "  ", "sex_code": "1", "birth_date": None},
        {**PERSON, "id_number": "110102199101010078", "sex_code": "5", "ethnicity_code": "99", "person_status": "7",
         "birth_date": None},
        {**PERSON, "id_number": "412723199010050012", "sex_code": "9", "birth_date": date(1990, 10, 6)},
        {**PERSON, "id_number": "440524188001010014", "sex_code": "2", "birth_date": None},
        {**PERSON, "id_number": "110105199102300017", "sex_code": "0", "birth_date": date(2030, 1, 1)},
        {"id_number": "\t440524188001010014 ", "is_deleted": 1},  # delete: key only
        {"id_number": "12345", "is_deleted": 1},
        {**PERSON, "id_number": "110102199101010078", "name": None, "sex_code": None, "ethnicity_code": None,
         "birth_date": None, "person_status": None},
    ]


def test_population_rejects_with_exact_rules(catalog) -> None:
    ds = catalog.dataset("population")
    batch = make_batch(ds, population_rows())
    verdict = Validator(ds, TODAY, gx=False).check(batch)
    assert_partition(batch, verdict)
    assert verdict.rejected.column(RULES_COLUMN).to_pylist() == [
        ["id_number.id_number"],
        ["name.required", "name.not_blank"],
        ["sex_code.code_list", "ethnicity_code.code_list", "person_status.code_list"],
        ["birth_date_matches_id"],
        ["sex_matches_id"],
        ["id_number.id_number", "birth_date.not_future"],
        ["id_number.id_number"],
        ["name.required", "name.not_blank"],
    ]
    assert verdict.rejected.column("id_number").to_pylist() == [
        "110105194912310021", "360426199101010071", "110102199101010078", "412723199010050012",
        "440524188001010014", "110105199102300017", "12345", "110102199101010078",
    ]
    assert verdict.counts["name.required"] == 2
    assert verdict.counts["id_number.id_number"] == 3
    assert verdict.counts["id_number.required"] == 0


def test_population_keys_are_normalised(catalog) -> None:
    ds = catalog.dataset("population")
    verdict = Validator(ds, TODAY, gx=False).check(make_batch(ds, population_rows()))
    assert verdict.good.column("id_number").to_pylist() == [
        "11010519491231002X",
        "44011320141005001X",
        "11010519491231002X",
        "440524188001010014",  # the delete, trimmed
    ]
    assert verdict.good.column("is_deleted").to_pylist() == [0, 0, 0, 1]


def test_delete_with_weird_but_valid_key_passes_and_other_fields_are_ignored(catalog) -> None:
    ds = catalog.dataset("population")
    batch = make_batch(ds, [{"id_number": " 110105491231002 ", "name": "", "sex_code": "x", "is_deleted": 1}])
    verdict = Validator(ds, TODAY, gx=False).check(batch)
    assert verdict.rejected.num_rows == 0
    assert verdict.good.column("id_number").to_pylist() == ["11010519491231002X"]


def test_missing_key_fails_required_and_key_check(catalog) -> None:
    ds = catalog.dataset("population")
    batch = make_batch(ds, [{**PERSON, "id_number": None}, {"id_number": "   ", "is_deleted": 1}])
    verdict = Validator(ds, TODAY, gx=False).check(batch)
    assert verdict.rejected.column(RULES_COLUMN).to_pylist() == [
        ["id_number.required", "id_number.id_number"],
        ["id_number.required", "id_number.id_number"],
    ]


# -- legal_entity -----------------------------------------------------------------------------------

ENTITY = {
    "entity_name": "测试有限公司",
    "entity_type": "企业法人",
    "legal_rep_name": "测试乙",
    "legal_rep_id_type": "111",
    "legal_rep_id_number": "11010519491231002X",
    "established_on": date(2000, 1, 1),
    "registered_capital": Decimal("100.0000"),
    "entity_status": "存续",
}


def test_legal_entity(catalog) -> None:
    ds = catalog.dataset("legal_entity")
    rows = [
        {**ENTITY, "uscc": "91110000600037341L", "legal_rep_id_number": "11010519491231002x"},
        {**ENTITY, "uscc": " 91310115ma1k3btp2b ", "legal_rep_id_number": "110105491231002"},
        {**ENTITY, "uscc": "91350100M000100Y4Z"},
        {**ENTITY, "uscc": "121200004013590816", "entity_name": None},
        {**ENTITY, "uscc": "9144030071526726XG", "entity_type": "个体", "entity_status": "存活"},
        {**ENTITY, "uscc": "91620105L015101280", "legal_rep_id_number": "110105194912310021"},
        {**ENTITY, "uscc": "92340602MA2PBMEM24", "legal_rep_id_type": "001",
         "legal_rep_id_number": "91350100M000100Y4Z"},
        {**ENTITY, "uscc": "91350100M000100Y43", "legal_rep_id_type": "414", "legal_rep_id_number": "E12345678"},
        {**ENTITY, "uscc": "91110000600037341L", "legal_rep_id_type": "123"},
        {**ENTITY, "uscc": "121200004013590816", "registered_capital": Decimal("-1"),
         "established_on": date(2026, 3, 2)},
        {**ENTITY, "uscc": "9144030071526726XG", "legal_rep_id_type": "001",
         "legal_rep_id_number": " 91310115ma1k3btp2b"},
    ]
    batch = make_batch(ds, rows)
    verdict = Validator(ds, TODAY, gx=False).check(batch)
    assert_partition(batch, verdict)
    assert verdict.rejected.column(RULES_COLUMN).to_pylist() == [
        ["uscc.uscc"],
        ["entity_name.required", "entity_name.not_blank"],
        ["entity_type.code_list", "entity_status.code_list"],
        ["id_by_type"],
        ["id_by_type"],
        ["legal_rep_id_type.code_list"],
        ["established_on.not_future", "registered_capital.not_negative"],
    ]
    assert verdict.good.column("uscc").to_pylist() == [
        "91110000600037341L", "91310115MA1K3BTP2B", "91350100M000100Y43", "9144030071526726XG",
    ]
    assert verdict.good.column("legal_rep_id_number").to_pylist() == [
        "11010519491231002X", "11010519491231002X", "E12345678", "91310115MA1K3BTP2B",
    ]


# -- e_license --------------------------------------------------------------------------------------

LICENSE = {
    "holder_name": "测试丙",
    "holder_id_type": "001",
    "holder_id": "91110000600037341L",
    "issuer_code": "11430000006122244L",
    "issued_on": date(2023, 1, 1),
    "valid_from": date(2023, 1, 1),
    "valid_until": None,
    "license_status": "10",
}
L1 = "1.2.156.3005.2.11100000000013338W011.11430000006122244L.20230000403.001.U"
L2 = "1.2.156.3005.2.11100000000013338W009.11330105002500287C.2025052201.002.0"
L3 = "1.2.156.3005.2.11100000MB03271699022.340100.000000016.001.9"


def test_e_license(catalog) -> None:
    ds = catalog.dataset("e_license")
    rows = [
        {**LICENSE, "license_id": L1},
        {**LICENSE, "license_id": f"  {L3.lower()} ", "issuer_code": "340100"},
        {**LICENSE, "license_id": L3[:-1] + "8"},
        {**LICENSE, "license_id": L2, "holder_name": ""},
        {**LICENSE, "license_id": L1, "holder_id_type": "111", "holder_id": "110105194912310021"},
        {**LICENSE, "license_id": L2, "holder_id_type": "111", "holder_id": "11010519491231002x",
         "valid_until": date(2023, 1, 1)},
        {**LICENSE, "license_id": L3, "issuer_code": "ABC"},
        {**LICENSE, "license_id": L1, "valid_until": date(2022, 12, 31)},
        {**LICENSE, "license_id": L2, "license_status": "11", "issued_on": date(2026, 3, 2)},
        {"license_id": L3[:-1] + "8", "is_deleted": 1},
    ]
    batch = make_batch(ds, rows)
    verdict = Validator(ds, TODAY, gx=False).check(batch)
    assert_partition(batch, verdict)
    assert verdict.rejected.column(RULES_COLUMN).to_pylist() == [
        ["license_id.license_id"],
        ["holder_name.required", "holder_name.not_blank"],
        ["id_by_type"],
        ["issuer_code.issuer_code"],
        ["valid_range"],
        ["issued_on.not_future", "license_status.code_list"],
        ["license_id.license_id"],
    ]
    assert verdict.good.column("license_id").to_pylist() == [L1, L3, L2]
    assert verdict.good.column("holder_id").to_pylist()[2] == "11010519491231002X"


# -- rules, summary, schema ---------------------------------------------------------------------------


def test_rule_ids(catalog) -> None:
    ids = [r.id for r in dataset_rules(catalog.dataset("e_license"))]
    assert ids == [
        "license_id.required", "license_id.license_id", "holder_name.required", "holder_name.not_blank",
        "holder_id_type.code_list", "issuer_code.issuer_code", "issued_on.not_future", "license_status.code_list",
        "id_by_type", "valid_range", "updated_at.watermark",
    ]


def test_repeated_record_check_gets_a_suffix(catalog) -> None:
    ds = catalog.dataset("e_license")
    again = Check("valid_range", (("from", "issued_on"), ("until", "valid_until")))
    twice = dataclasses.replace(ds, checks=(*ds.checks, again))
    rules = {r.id: r for r in dataset_rules(twice)}
    assert rules["valid_range#2"].fields == ("issued_on", "valid_until")
    assert rules["valid_range"].fields == ("valid_from", "valid_until")


def test_summary_aggregates_batches_and_holds_no_values(catalog) -> None:
    ds = catalog.dataset("population")
    validator = Validator(ds, TODAY, gx=False)
    batch = make_batch(ds, population_rows())
    validator.check(batch)
    validator.check(batch.slice(0, 4))
    summary = validator.summary()
    assert (summary.batches, summary.rows, summary.good, summary.rejected) == (2, 16, 7, 9)
    by_id = {r.rule_id: r for r in summary.rules}
    assert (by_id["id_number.id_number"].rows_checked, by_id["id_number.id_number"].rows_failed) == (16, 4)
    assert (by_id["name.required"].rows_checked, by_id["name.required"].rows_failed) == (14, 2)
    assert by_id["sex_matches_id"].fields == ("id_number", "sex_code")
    assert by_id["sex_code.code_list"].expectation_type == "expect_column_values_to_be_in_set"
    assert by_id["id_number.id_number"].gx_success is None
    text = json.dumps(summary.to_json(), ensure_ascii=False)
    for row in population_rows():
        for value in (row.get("id_number"), row.get("name")):
            if value and value.strip():
                assert value.strip() not in text
    assert "110105491231002" not in text and "11010519491231002X" not in text


def test_batch_with_wrong_columns_is_refused_without_values(catalog) -> None:
    ds = catalog.dataset("population")
    batch = make_batch(ds, population_rows()).drop_columns(["phone"])
    with pytest.raises(ConfigError) as caught:
        Validator(ds, TODAY, gx=False).check(batch)
    assert "phone" in " ".join(caught.value.lines())
    assert "11010519491231002X" not in " ".join(caught.value.lines())


def test_empty_batch(catalog) -> None:
    ds = catalog.dataset("legal_entity")
    verdict = Validator(ds, TODAY, gx=False).check(make_batch(ds, []))
    assert (verdict.good.num_rows, verdict.rejected.num_rows) == (0, 0)
    assert set(verdict.counts.values()) == {0}


# -- Great Expectations -------------------------------------------------------------------------------


def legal_entity_rows() -> list[dict[str, Any]]:
    return [
        {**ENTITY, "uscc": " 91110000600037341l"},
        {**ENTITY, "uscc": "91350100M000100Y4Z", "entity_name": "  ", "entity_type": "个体户"},
        {**ENTITY, "uscc": "121200004013590816", "legal_rep_id_number": "110105194912310021"},
        {**ENTITY, "uscc": "91620105L015101280", "legal_rep_id_type": "777", "registered_capital": Decimal("-5"),
         "established_on": date(2027, 1, 1), "entity_status": "存活中"},
        {"uscc": "91350100M000100Y4Y", "is_deleted": 1},
    ]


def e_license_rows() -> list[dict[str, Any]]:
    return [
        {**LICENSE, "license_id": L1.lower()},
        {**LICENSE, "license_id": L3[:-1] + "Q", "holder_name": None, "issuer_code": "ZZZ999"},
        {**LICENSE, "license_id": L2, "holder_id_type": "111", "holder_id": "110105194912310021",
         "valid_until": date(2020, 1, 1), "license_status": "66", "issued_on": date(2030, 5, 5)},
        {**LICENSE, "license_id": L3, "holder_id_type": "666"},
        {"license_id": "1.2.156.3005.2.BROKEN", "is_deleted": 1},
    ]


ROWS = {"population": population_rows, "legal_entity": legal_entity_rows, "e_license": e_license_rows}

# Values of defective rows that must never appear in anything GX or the summary produce.
RAW_VALUES = [
    "110105194912310021", "360426199101010071", "110102199101010078", "412723199010050012",
    "440524188001010014", "110105199102300017", "12345", "测试甲",
    "91350100M000100Y4Z", "91350100M000100Y4Y", "个体户", "存活中", "测试乙",
    L3[:-1] + "Q", "ZZZ999", "BROKEN", "11100000000013338W009", "测试丙",
]


@pytest.mark.parametrize("dataset_id", sorted(ROWS))
def test_gx_counts_equal_quarantine_counts(catalog, dataset_id: str) -> None:
    ds = catalog.dataset(dataset_id)
    validator = Validator(ds, TODAY)
    verdict = validator.check(make_batch(ds, ROWS[dataset_id]()))
    summary = validator.summary()
    assert sum(verdict.counts.values()) >= 4  # the batch is dirty
    for rule in summary.rules:
        assert rule.gx_unexpected == rule.rows_failed == verdict.counts[rule.rule_id], rule.rule_id
        assert rule.gx_success is (rule.rows_failed == 0), rule.rule_id


@pytest.mark.parametrize("dataset_id", sorted(ROWS))
def test_no_raw_value_leaves_gx_or_the_summary(catalog, dataset_id: str) -> None:
    ds = catalog.dataset(dataset_id)
    rows = ROWS[dataset_id]()
    batch = make_batch(ds, rows)
    raw = SuiteRunner(ds, dataset_rules(ds), TODAY).run_raw(normalise(ds, batch))
    validator = Validator(ds, TODAY)
    validator.check(batch)
    text = json.dumps(raw, ensure_ascii=False, default=str)
    text += json.dumps(validator.summary().to_json(), ensure_ascii=False)
    present = [v for v in RAW_VALUES if any(v in str(value) for row in rows for value in row.values())]
    assert present, "the batch must hold some of the values looked for"
    for value in present:
        assert value not in text
        assert value.lower() not in text
    for result in raw["results"]:
        assert result["result"].get("partial_unexpected_list", []) == []
        assert not {"unexpected_list", "unexpected_index_list", "partial_unexpected_index_list"} & set(result["result"])


def test_suite_uses_builtins_and_custom_expectations(catalog) -> None:
    ds = catalog.dataset("population")
    suite = build_suite(ds, dataset_rules(ds), TODAY)
    types = [e.expectation_type for e in suite.expectations]
    assert "expect_column_values_to_be_in_set" in types
    assert "expect_column_values_to_be_valid_gb11643_id_number" in types
    assert "expect_column_pair_values_birth_date_to_match_gb11643_id" in types
    rule_ids = [rid for e in suite.expectations for rid in e.meta["rule_ids"]]
    assert sorted(rule_ids) == sorted(r.id for r in dataset_rules(ds))


def test_e_license_and_legal_entity_suites(catalog) -> None:
    licenses = catalog.dataset("e_license")
    license_types = {e.expectation_type for e in build_suite(licenses, dataset_rules(licenses), TODAY).expectations}
    assert {"expect_column_values_to_be_valid_gb36904_license_id", "expect_column_pair_values_a_to_be_greater_than_b",
            "expect_column_pair_values_id_to_follow_id_type"} <= license_types
    entity = catalog.dataset("legal_entity")
    entity_types = {e.expectation_type for e in build_suite(entity, dataset_rules(entity), TODAY).expectations}
    assert {"expect_column_values_to_be_valid_gb32100_uscc", "expect_column_values_to_be_between"} <= entity_types


def test_gx_is_quiet(catalog, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    ds = catalog.dataset("population")
    caplog.set_level(logging.DEBUG)
    validator = Validator(ds, TODAY)
    validator.check(make_batch(ds, [{**PERSON, "id_number": "11010519491231002X"}]))
    assert validator.summary().rules[0].gx_success is True  # GX runs its chunks here
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert [r for r in caplog.records if r.name.startswith("great_expectations")] == []
    assert validator._gx.runner.context.config.analytics_enabled is False
    assert logging.getLogger("great_expectations").getEffectiveLevel() >= logging.WARNING


def test_gx_sees_deletes_only_through_the_key(catalog) -> None:
    ds = catalog.dataset("population")
    validator = Validator(ds, TODAY)
    batch = make_batch(ds, [{"id_number": "440524188001010014", "name": None, "sex_code": "x", "is_deleted": 1}])
    verdict = validator.check(batch)
    assert verdict.rejected.num_rows == 0
    rules = {r.rule_id: r for r in validator.summary().rules}
    assert rules["name.required"].gx_unexpected == 0 and rules["name.required"].rows_checked == 0
    assert rules["id_number.id_number"].rows_checked == 1 and rules["id_number.id_number"].gx_success is True
    assert isinstance(verdict.good, pa.RecordBatch)
