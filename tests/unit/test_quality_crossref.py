"""Cross-dataset checks on hand-made good files and state indexes, with keys in a temp keystore."""

from __future__ import annotations

import dataclasses
import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from common.catalog import Catalog, load_catalog
from common.errors import ConfigError
from common.schema import source_schema
from keys.keystore import Keystore
from keys.protection import staging_encryption
from keys.pseudonyms import FINGERPRINT, KEY_REF, key_refs, with_fingerprints
from sharing.index import StateIndex, published_refs
from validation import crossref as crossref_module
from validation.crossref import (
    REFERENCES,
    CrossrefCheck,
    CrossrefResult,
    consistency,
    crossref,
    merge_crossref,
    references,
)
from keys.masking import mask_keys

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
    """A state index as a first version (a snapshot) of these keys leaves it."""
    refs = key_refs(pa.array(keys, pa.string()), secret)
    delta = state_dir / f"{dataset_id}-delta.parquet"
    delta.parent.mkdir(parents=True, exist_ok=True)
    fingerprints = pa.array([b"\0" * 16] * len(keys), pa.binary(16))
    pq.write_table(pa.table({KEY_REF: refs, FINGERPRINT: fingerprints, "change": ["upsert"] * len(keys)}), delta)
    StateIndex(state_dir, dataset_id).add(delta, 1, replace=True)


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

    result = crossref(ds, good, keystore, published_refs(tmp_path / "state"))
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
    doc = result.to_json()
    assert doc["findings"][0]["masked_keys"] == expected
    assert all("*" in k for f in doc["findings"] for k in f["masked_keys"])


def test_a_target_without_published_state_is_not_checked(catalog: Catalog, keystore: Keystore, tmp_path: Path) -> None:
    ds = catalog.dataset("e_license")
    publish_state(tmp_path / "state", "population", PUBLISHED_PEOPLE, keystore.hmac_key())
    good = [write_good(tmp_path / "good.parquet", ds, keystore, LICENSES)]
    by_check = findings(crossref(ds, good, keystore, published_refs(tmp_path / "state")))
    entities = by_check["holder_id.in_legal_entity"]
    assert (entities.checked, entities.rows_checked, entities.not_found, entities.masked_keys) == (False, 0, 0, ())
    assert "legal_entity" in entities.note
    assert by_check["holder_id.in_population"].not_found == 2


def test_an_empty_published_state_finds_nothing(catalog: Catalog, keystore: Keystore, tmp_path: Path) -> None:
    ds = catalog.dataset("e_license")
    publish_state(tmp_path / "state", "population", [], keystore.hmac_key())
    good = [write_good(tmp_path / "good.parquet", ds, keystore, LICENSES)]
    people = findings(crossref(ds, good, keystore, published_refs(tmp_path / "state")))["holder_id.in_population"]
    assert people.checked and (people.rows_checked, people.not_found) == (4, 4)


def test_refs_of_another_secret_never_match(catalog: Catalog, keystore: Keystore, tmp_path: Path) -> None:
    ds = catalog.dataset("e_license")
    publish_state(tmp_path / "state", "population", PUBLISHED_PEOPLE, b"another secret")
    good = [write_good(tmp_path / "good.parquet", ds, keystore, LICENSES)]
    people = findings(crossref(ds, good, keystore, published_refs(tmp_path / "state")))["holder_id.in_population"]
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
    (rep,) = crossref(ds, good, keystore, published_refs(tmp_path / "state")).findings
    assert (rep.check, rep.rows_checked, rep.not_found, rep.masked_keys) == (
        "legal_rep_id_number.in_population", 2, 1, ("121***********0816",))


def test_masked_keys_are_capped(catalog: Catalog, keystore: Keystore, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crossref_module, "MAX_MASKED_KEYS", 1)
    ds = catalog.dataset("e_license")
    publish_state(tmp_path / "state", "population", [], keystore.hmac_key())
    good = [write_good(tmp_path / "good.parquet", ds, keystore, LICENSES)]
    people = findings(crossref(ds, good, keystore, published_refs(tmp_path / "state")))["holder_id.in_population"]
    assert people.not_found == 4 and len(people.masked_keys) == 1 and people.masked_keys_omitted == 3


def test_datasets_without_references_give_no_findings(catalog: Catalog, keystore: Keystore, tmp_path: Path) -> None:
    assert crossref(catalog.dataset("population"), [], keystore, published_refs(tmp_path / "state")).findings == ()


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


# -- streaming, batch by batch as ingest sees the rows, and the merge of a run's parts ----------

TODAY = date(2026, 3, 1)
STATUSES = [  # (license_status, valid_until) of LICENSES, in order: status 10 past its expiry is flagged
    ("10", date(2025, 12, 31)), ("10", date(2030, 1, 1)), ("10", None), ("10", date(2020, 1, 1)),  # the last: deleted
    ("20", date(2020, 1, 1)), ("10", date(2026, 2, 28)), (None, date(2020, 1, 1)), ("10", TODAY),
    ("10", date(2021, 6, 1)),
]
STREAMED = [{**row, "license_status": status, "valid_until": until} for row, (status, until) in zip(LICENSES, STATUSES)]


def good_batch(dataset, rows: list[dict[str, Any]]) -> pa.RecordBatch:
    """Good rows as ingest hands them to CrossrefCheck.add: every source column, no fingerprints."""
    defaults = {"updated_at": datetime(2026, 2, 28, 12, 0), "is_deleted": 0}
    return pa.RecordBatch.from_pylist([{**defaults, **r} for r in rows], schema=source_schema(dataset))


def streamed(dataset, rows: list[dict[str, Any]], state_dir: Path, secret: bytes,
             batch_rows: int = 2) -> CrossrefResult:
    check = CrossrefCheck(dataset, secret, published_refs(state_dir), TODAY)
    for start in range(0, len(rows), batch_rows):
        check.add(good_batch(dataset, rows[start:start + batch_rows]))
    return check.result()


def merged_json(parts: list[dict[str, Any]], dataset_id: str) -> dict[str, Any]:
    """merge_crossref over parts as the pipeline keeps them between stages (JSON), as JSON."""
    return merge_crossref([CrossrefResult.from_json(p) for p in parts], dataset_id).to_json()


def as_saved(result: CrossrefResult) -> dict[str, Any]:
    """A part's result as the pipeline keeps it between stages: JSON."""
    return json.loads(json.dumps(result.to_json(), ensure_ascii=False))


@pytest.fixture
def e_license_state(catalog: Catalog, keystore: Keystore, tmp_path: Path) -> Path:
    publish_state(tmp_path / "state", "population", PUBLISHED_PEOPLE, keystore.hmac_key())
    publish_state(tmp_path / "state", "legal_entity", PUBLISHED_ENTITIES, keystore.hmac_key())
    return tmp_path / "state"


def test_streaming_gives_the_findings_of_the_files(catalog: Catalog, keystore: Keystore, tmp_path: Path,
                                                   e_license_state: Path) -> None:
    ds = catalog.dataset("e_license")
    good = [write_good(tmp_path / "good-0.parquet", ds, keystore, STREAMED[:4]),
            write_good(tmp_path / "good-1.parquet", ds, keystore, STREAMED[4:])]
    from_files = crossref(ds, good, keystore, published_refs(e_license_state)).findings + consistency(ds, good, keystore, TODAY)

    for batch_rows in (1, 2, len(STREAMED)):
        result = streamed(ds, STREAMED, e_license_state, keystore.hmac_key(), batch_rows)
        assert result.dataset == "e_license"
        assert result.findings == from_files, batch_rows
    checks = [f.check for f in from_files]
    assert checks == ["holder_id.in_population", "holder_id.in_legal_entity", "license_status.expired_but_valid"]
    expired = from_files[-1]
    assert (expired.rows_checked, expired.not_found) == (6, 3)  # rows 1, 2, 3, 6, 8, 9 live with status 10
    flagged = [STREAMED[i]["license_id"] for i in (0, 5, 8)]
    assert list(expired.masked_keys) == mask_keys(pa.array(flagged)).to_pylist()


def test_streaming_reports_a_target_without_published_state(catalog: Catalog, keystore: Keystore,
                                                            tmp_path: Path) -> None:
    ds = catalog.dataset("e_license")
    publish_state(tmp_path / "state", "population", PUBLISHED_PEOPLE, keystore.hmac_key())
    by_check = findings(streamed(ds, STREAMED, tmp_path / "state", keystore.hmac_key()))
    entities = by_check["holder_id.in_legal_entity"]
    assert (entities.checked, entities.rows_checked, entities.not_found) == (False, 0, 0)
    assert entities.note == crossref_module.NOT_CHECKED_NOTE.format(target="legal_entity")
    assert by_check["holder_id.in_population"].not_found == 2


def test_each_target_state_is_read_once_per_check(catalog: Catalog, keystore: Keystore, e_license_state: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    real = StateIndex.refs
    monkeypatch.setattr(StateIndex, "refs", lambda index: reads.append(index.dataset_id) or real(index))
    ds = catalog.dataset("e_license")
    streamed(ds, STREAMED, e_license_state, keystore.hmac_key(), batch_rows=1)
    assert sorted(reads) == ["legal_entity", "population"]


def test_a_run_in_parts_merges_to_one_pass(catalog: Catalog, keystore: Keystore, e_license_state: Path) -> None:
    ds = catalog.dataset("e_license")
    secret = keystore.hmac_key()
    whole = as_saved(streamed(ds, STREAMED, e_license_state, secret))
    for cut in range(len(STREAMED) + 1):  # an empty part too
        parts = [as_saved(streamed(ds, rows, e_license_state, secret)) for rows in (STREAMED[:cut], STREAMED[cut:])]
        assert merged_json(parts, "e_license") == whole, cut
    assert merged_json([whole], "e_license") == whole
    three = [as_saved(streamed(ds, rows, e_license_state, secret))
             for rows in (STREAMED[:3], STREAMED[3:7], STREAMED[7:])]
    assert merged_json(three, "e_license") == whole


def test_merged_masked_keys_are_capped_across_parts(catalog: Catalog, keystore: Keystore, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crossref_module, "MAX_MASKED_KEYS", 3)
    ds = catalog.dataset("e_license")
    secret = keystore.hmac_key()
    publish_state(tmp_path / "state", "population", [], secret)  # nobody published: every holder flagged
    rows = [license_row(100 + i, "111", f"11010519491231{i:03d}X") for i in range(8)]
    whole = as_saved(streamed(ds, rows, tmp_path / "state", secret))
    for cut in (2, 4, 6):  # 2 + 6, each part under the cap / 4 + 4, each part over it / 6 + 2
        parts = [as_saved(streamed(ds, part, tmp_path / "state", secret)) for part in (rows[:cut], rows[cut:])]
        assert all(p["findings"][0]["not_found"] <= 6 for p in parts)
        merged = merged_json(parts, "e_license")
        assert merged == whole, cut
        people = merged["findings"][0]
        assert (people["not_found"], len(people["masked_keys"]), people["masked_keys_omitted"]) == (8, 3, 5)
        assert people["masked_keys"] == mask_keys(pa.array([r["license_id"] for r in rows[:3]])).to_pylist()


def test_merge_keeps_masked_keys_only(catalog: Catalog, keystore: Keystore, e_license_state: Path) -> None:
    ds = catalog.dataset("e_license")
    parts = [as_saved(streamed(ds, rows, e_license_state, keystore.hmac_key()))
             for rows in (STREAMED[:5], STREAMED[5:])]
    text = json.dumps(merged_json(parts, "e_license"), ensure_ascii=False)
    identifiers = [v for r in STREAMED for v in (r["license_id"], r["holder_id"]) if v]
    assert not [v for v in identifiers if v in text or v.upper() in text]
    assert all("*" in k for f in json.loads(text)["findings"] for k in f["masked_keys"])


def test_merge_of_no_parts_has_no_findings() -> None:
    assert merged_json([], "e_license") == {"dataset": "e_license", "findings": []}


def test_merge_of_a_check_some_part_could_not_make(catalog: Catalog, keystore: Keystore, tmp_path: Path) -> None:
    """A target publishing its first version while the parts run: the check is not (fully) made."""
    ds = catalog.dataset("e_license")
    secret = keystore.hmac_key()
    publish_state(tmp_path / "state", "population", PUBLISHED_PEOPLE, secret)
    before = as_saved(streamed(ds, STREAMED[:5], tmp_path / "state", secret))
    publish_state(tmp_path / "state", "legal_entity", PUBLISHED_ENTITIES, secret)
    after = as_saved(streamed(ds, STREAMED[5:], tmp_path / "state", secret))
    for parts in ([before, after], [after, before]):
        entities = {f["check"]: f for f in merged_json(parts, "e_license")["findings"]}["holder_id.in_legal_entity"]
        assert entities["checked"] is False and "legal_entity" in entities["note"]
        assert (entities["rows_checked"], entities["not_found"]) == (2, 1)  # what the later part could check


def test_population_has_nothing_to_check_per_batch(catalog: Catalog, keystore: Keystore, tmp_path: Path) -> None:
    ds = catalog.dataset("population")
    publish_state(tmp_path / "state", "population", PUBLISHED_PEOPLE, keystore.hmac_key())
    check = CrossrefCheck(ds, keystore.hmac_key(), published_refs(tmp_path / "state"), TODAY)
    assert check.columns == []

    class Untouchable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"CrossrefCheck.add read {name!r} of a population batch")

    for _ in range(1000):
        check.add(Untouchable())  # type: ignore[arg-type]
    assert check.result() == CrossrefResult((), "population")
    assert merged_json([as_saved(check.result())] * 2, "population") == {"dataset": "population", "findings": []}


def test_published_state_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sorted lookup answers as pc.is_in would, also when refs share their first 8 bytes."""
    def refs(*hexes: str | None) -> pa.Array:
        return pa.array([None if h is None else bytes.fromhex(h) for h in hexes], pa.binary(16))

    same = "00" * 7 + "ff"  # a common first half
    state = refs(same + "01" * 8, same + "02" * 8, same + "03" * 8, "ab" * 16, "01" * 16, "ff" * 16)
    asked = refs(same + "03" * 8, same + "04" * 8, "ab" * 16, "ab" * 8 + "ac" * 8, "ff" * 16, "00" * 16, None,
                 "01" * 16)
    expected = pc.fill_null(pc.is_in(asked, value_set=state), False).to_pylist()
    published = crossref_module._Published(state)
    assert published.contains(asked).tolist() == expected == [True, False, True, False, True, False, False, True]
    assert published.contains(asked.slice(2, 3)).tolist() == expected[2:5]
    assert not crossref_module._Published(refs()).contains(asked).any()
