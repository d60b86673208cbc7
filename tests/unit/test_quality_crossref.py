"""Cross-dataset checks on hand-made good files and state indexes, with keys in a temp keystore."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from govshare.catalog import Catalog, load_catalog
from govshare.errors import ConfigError
from govshare.schema import source_schema
from keys.keystore import Keystore
from keys.protection import staging_encryption
from sharing.changes import INDEX_SCHEMA, index_path, key_refs, with_fingerprints
from validation import crossref as crossref_module
from validation.crossref import REFERENCES, CrossrefResult, crossref, references
from validation.quality import mask_keys

LICENSE = "1.2.156.3005.2.11100000000013338W011.11430000006122244L.{serial}.001.U"
PUBLISHED_PEOPLE = ["11010519491231002X", "440524188001010014"]
PUBLISHED_ENTITIES = ["91110000600037341L"]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture
def keystore(tmp_path: Path, catalog: Catalog) -> Keystore:
    ks = Keystore(tmp_path / "keystore")
    ks.init(catalog.key_names(), [])
    return ks


def publish_state(state_dir: Path, dataset_id: str, keys: list[str], secret: bytes) -> None:
    """A state index as sharing.changes.write_index leaves it: key_ref, fingerprint, version."""
    refs = key_refs(pa.array(keys, pa.string()), secret)
    path = index_path(state_dir, dataset_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fingerprints = pa.array([b"\0" * 16] * len(keys), pa.binary(16))
    pq.write_table(pa.table([refs, fingerprints, pa.array([1] * len(keys), pa.int64())], schema=INDEX_SCHEMA), path)


def write_good(path: Path, dataset, keystore: Keystore, rows: list[dict[str, Any]]) -> Path:
    defaults = {"updated_at": datetime(2026, 2, 28, 12, 0), "is_deleted": 0}
    batch = pa.RecordBatch.from_pylist([{**defaults, **r} for r in rows], schema=source_schema(dataset))
    batch = with_fingerprints(batch, dataset, keystore.hmac_key())
    with pq.ParquetWriter(path, batch.schema, encryption_properties=staging_encryption(keystore).file_encryption_properties) as w:
        w.write_table(pa.Table.from_batches([batch]), row_group_size=2)  # several batches per file
    return path


def license_row(serial: int, id_type: str | None, holder: str | None, **extra: Any) -> dict[str, Any]:
    return {"license_id": LICENSE.format(serial=f"{20230000000 + serial}"), "holder_name": "测试",
            "holder_id_type": id_type, "holder_id": holder, **extra}


LICENSES = [
    license_row(1, "111", "11010519491231002x"),  # published, arrives un-normalised
    license_row(2, "111", "360426199101010071"),  # not published
    license_row(3, "111", "440524188001010014"),  # published
    license_row(4, "111", "110102199101010078", is_deleted=1),  # a delete: not checked
    license_row(5, "111", None),  # nothing to look up
    license_row(6, "001", "91110000600037341l"),  # published entity
    license_row(7, "001", "91310115MA1K3BTP2B"),  # entity not published
    license_row(8, "414", "E12345678"),  # passport: no reference
    license_row(9, " 111", "412723199010050012"),  # padded type code, not published
]


def findings(result: CrossrefResult) -> dict[str, Any]:
    return {f.check: f for f in result.findings}


def test_e_license_holders_found_and_not_found(catalog: Catalog, keystore: Keystore, tmp_path: Path) -> None:
    ds = catalog.dataset("e_license")
    secret = keystore.hmac_key()
    publish_state(tmp_path / "state", "population", PUBLISHED_PEOPLE, secret)
    publish_state(tmp_path / "state", "legal_entity", PUBLISHED_ENTITIES, secret)
    good = [write_good(tmp_path / "good-0.parquet", ds, keystore, LICENSES[:5]),
            write_good(tmp_path / "good-1.parquet", ds, keystore, LICENSES[5:])]

    result = crossref(ds, good, keystore, tmp_path / "state")
    assert result.dataset == "e_license"
    by_check = findings(result)
    people = by_check["holder_id.in_population"]
    assert (people.checked, people.target, people.rows_checked, people.not_found) == (True, "population", 4, 2)
    expected = mask_keys(pa.array([LICENSES[1]["license_id"], LICENSES[8]["license_id"]])).to_pylist()
    assert list(people.masked_keys) == expected and people.masked_keys_omitted == 0
    entities = by_check["holder_id.in_legal_entity"]
    assert (entities.rows_checked, entities.not_found) == (2, 1)
    assert list(entities.masked_keys) == mask_keys(pa.array([LICENSES[6]["license_id"]])).to_pylist()
    assert result.not_found == 3
    doc = result.to_dict()
    assert doc["findings"][0]["masked_keys"] == expected
    assert all("*" in k for f in doc["findings"] for k in f["masked_keys"])


def test_a_target_without_published_state_is_not_checked(catalog: Catalog, keystore: Keystore, tmp_path: Path) -> None:
    ds = catalog.dataset("e_license")
    publish_state(tmp_path / "state", "population", PUBLISHED_PEOPLE, keystore.hmac_key())
    good = [write_good(tmp_path / "good.parquet", ds, keystore, LICENSES)]
    by_check = findings(crossref(ds, good, keystore, tmp_path / "state"))
    entities = by_check["holder_id.in_legal_entity"]
    assert (entities.checked, entities.rows_checked, entities.not_found, entities.masked_keys) == (False, 0, 0, ())
    assert "legal_entity" in entities.note
    assert by_check["holder_id.in_population"].not_found == 2


def test_an_empty_published_state_finds_nothing(catalog: Catalog, keystore: Keystore, tmp_path: Path) -> None:
    ds = catalog.dataset("e_license")
    publish_state(tmp_path / "state", "population", [], keystore.hmac_key())
    good = [write_good(tmp_path / "good.parquet", ds, keystore, LICENSES)]
    people = findings(crossref(ds, good, keystore, tmp_path / "state"))["holder_id.in_population"]
    assert people.checked and (people.rows_checked, people.not_found) == (4, 4)


def test_refs_of_another_secret_never_match(catalog: Catalog, keystore: Keystore, tmp_path: Path) -> None:
    ds = catalog.dataset("e_license")
    publish_state(tmp_path / "state", "population", PUBLISHED_PEOPLE, b"another secret")
    good = [write_good(tmp_path / "good.parquet", ds, keystore, LICENSES)]
    people = findings(crossref(ds, good, keystore, tmp_path / "state"))["holder_id.in_population"]
    assert people.not_found == people.rows_checked == 4


def test_legal_representatives(catalog: Catalog, keystore: Keystore, tmp_path: Path) -> None:
    ds = catalog.dataset("legal_entity")
    publish_state(tmp_path / "state", "population", PUBLISHED_PEOPLE, keystore.hmac_key())
    rows = [
        {"uscc": "91110000600037341L", "entity_name": "测试一", "legal_rep_id_type": "111", "legal_rep_id_number": "440524188001010014"},
        {"uscc": "121200004013590816", "entity_name": "测试二", "legal_rep_id_type": "111", "legal_rep_id_number": "360426199101010071"},
        {"uscc": "91310115MA1K3BTP2B", "entity_name": "测试三", "legal_rep_id_type": "414", "legal_rep_id_number": "E1"},
    ]
    good = [write_good(tmp_path / "good.parquet", ds, keystore, rows)]
    (rep,) = crossref(ds, good, keystore, tmp_path / "state").findings
    assert (rep.check, rep.rows_checked, rep.not_found, rep.masked_keys) == (
        "legal_rep_id_number.in_population", 2, 1, ("121***********0816",))


def test_masked_keys_are_capped(catalog: Catalog, keystore: Keystore, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crossref_module, "MAX_MASKED_KEYS", 1)
    ds = catalog.dataset("e_license")
    publish_state(tmp_path / "state", "population", [], keystore.hmac_key())
    good = [write_good(tmp_path / "good.parquet", ds, keystore, LICENSES)]
    people = findings(crossref(ds, good, keystore, tmp_path / "state"))["holder_id.in_population"]
    assert people.not_found == 4 and len(people.masked_keys) == 1 and people.masked_keys_omitted == 3


def test_datasets_without_references_give_no_findings(catalog: Catalog, keystore: Keystore, tmp_path: Path) -> None:
    assert crossref(catalog.dataset("population"), [], keystore, tmp_path / "state").findings == ()


def test_every_reference_names_catalog_fields_and_datasets(catalog: Catalog) -> None:
    for dataset_id, refs in REFERENCES.items():
        ds = catalog.dataset(dataset_id)
        assert references(ds) == refs
        for ref in refs:
            assert ref.target in catalog.datasets
            assert ds.field(ref.type_field).type == ds.field(ref.id_field).type == "string"


def test_a_reference_to_a_missing_field_is_a_config_error(catalog: Catalog) -> None:
    ds = catalog.dataset("e_license")
    renamed = dataclasses.replace(ds, fields=tuple(f for f in ds.fields if f.name != "holder_id"))
    with pytest.raises(ConfigError) as err:
        references(renamed)
    assert any("holder_id" in p for p in err.value.problems)
