"""Ingest's staging files and the version files made from them, stage by stage.

Ingest writes per part: candidates (already in the version's upserts form: published fields and
ref fields, 有条件共享 columns encrypted, 不予共享 dropped), markers (pseudonyms and times only)
and deleted (the deletes' keys, encrypted). Protect takes a one-part run's candidates as the
upserts file when every candidate is published, and copies the published rows out otherwise.
Publish makes the version and removes the run's work folder.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest
import sqlalchemy as sa

from common.catalog import load_catalog
from common.run import Staged
from govshare import pipeline
from govshare.cli import main
from keys.keystore import Keystore
from keys.kms import CACHE_LIFETIME, KeystoreKmsClient, kms_connection_config
from keys.protection import decryption_properties
from sharing.store import SharingStore
from tests.integration.test_incremental import X_CHECK, person_id, population_view, row

pytestmark = pytest.mark.integration

# The population catalog, written out here so that a change to it (or to the code deriving the
# published columns) shows up as a failure, not as a silently different expectation.
PUBLISHED = ["id_number", "name", "sex_code", "ethnicity_code", "birth_date", "household_division_code",
             "household_address", "person_status"]
CONDITIONAL = ["id_number", "name", "birth_date", "household_address"]
MASKED = ["id_number__masked", "name__masked"]  # the masks the catalog declares, computed at publish
UNCONDITIONAL = [f for f in PUBLISHED if f not in CONDITIONAL]
WITHHELD = ["phone"]
REFS = ["_key_ref", "_fingerprint"]
MARKER_COLUMNS = ["_key_ref", "_fingerprint", "updated_at", "is_deleted"]
BASE = datetime(2026, 11, 1, 8, 0, 0)


# -- helpers ---------------------------------------------------------------------------------


def person(n: int, updated_at: datetime, **changes) -> dict:
    """A population row (as test_incremental's) with a phone number of its own."""
    return row(n, updated_at, **{"phone": f"1390000{n:04d}", **changes})


@pytest.fixture
def own_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> sa.Engine:
    """An empty population view on SQLite, the population connection pointing at it."""
    yield from population_view(f"sqlite:///{tmp_path / 'population.db'}", monkeypatch)


def write(engine: sa.Engine, rows: list[dict], replace: bool = True) -> None:
    table = sa.table("population_person", *(sa.column(c) for c in rows[0]))
    with engine.begin() as conn:
        if replace:
            for r in rows:
                conn.execute(sa.delete(table).where(table.c.id_number == r["id_number"]))
        conn.execute(sa.insert(table), rows)


def keystore(home) -> Keystore:
    return Keystore(home.keystore)


def read_decrypted(home, path: Path, columns: list[str] | None = None):
    return pq.read_table(path, columns=columns, decryption_properties=decryption_properties(keystore(home)))


def rows_in(home, path: Path) -> int:
    return pq.ParquetFile(path, decryption_properties=decryption_properties(keystore(home))).metadata.num_rows


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def parquet_magic(path: Path) -> tuple[bytes, bytes]:
    data = path.read_bytes()
    return data[:4], data[-4:]


class KeyRefused(Exception):
    pass


class FooterKeyOnly(KeystoreKmsClient):
    """A reader holding the footer key but not the 有条件共享 key: unwraps only ``allowed``."""

    def __init__(self, ks: Keystore, allowed: set[str], asked: list[str]) -> None:
        super().__init__(ks)
        self._allowed, self._asked = allowed, asked

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        self._asked.append(master_key_identifier)
        if master_key_identifier not in self._allowed:
            raise KeyRefused(master_key_identifier)
        return super().unwrap_key(wrapped_key, master_key_identifier)


def assert_conditional_columns_need_their_key(home, path: Path, data_keys: dict[str, str]) -> None:
    """Without any key nothing of the file opens; with the footer data key only, the plain columns
    read and each 有条件共享 column asks for its own field's data key, and fails without it; with
    the footer and one field's key, that field reads and the others still fail."""
    with pytest.raises(OSError, match="encrypted"):
        pq.ParquetFile(path)  # encrypted footer: not even the schema
    with pytest.raises(OSError, match="encrypted"):
        pq.read_table(path)
    assert parquet_magic(path) == (b"PARE", b"PARE")

    ks = keystore(home)
    asked: list[str] = []
    assert set(data_keys) == {"footer", *CONDITIONAL, *MASKED}
    assert len(set(data_keys.values())) == len(data_keys)  # a key of its own per group

    def reader(*groups: str):
        allowed = {data_keys[g] for g in groups}
        factory = pe.CryptoFactory(lambda _config: FooterKeyOnly(ks, allowed, asked))  # fresh: no cached keys
        return factory.file_decryption_properties(kms_connection_config(ks),
                                                  pe.DecryptionConfiguration(cache_lifetime=CACHE_LIFETIME))

    partial = reader("footer")
    plain = pq.ParquetFile(path, decryption_properties=partial).read(columns=UNCONDITIONAL + REFS)
    assert plain.num_rows == rows_in(home, path)
    assert not {data_keys[c] for c in CONDITIONAL} & set(asked)
    for column in CONDITIONAL:
        asked.clear()
        with pytest.raises(KeyRefused):
            pq.ParquetFile(path, decryption_properties=partial).read(columns=[column])
        assert data_keys[column] in asked, column
    one = reader("footer", "name")
    assert pq.ParquetFile(path, decryption_properties=one).read(columns=["name"]).num_rows == plain.num_rows
    with pytest.raises(KeyRefused):
        pq.ParquetFile(path, decryption_properties=one).read(columns=["birth_date"])


def staged_upserts(run) -> Path:
    return SharingStore(run.home.store, run.dataset.id).staging_dir / run.run_id / "upserts.parquet"


def version_dir(home, version: int) -> Path:
    return home.store / "population" / "versions" / f"{version:08d}"


def manifest(home, version: int) -> dict:
    return json.loads((version_dir(home, version) / "manifest.json").read_text(encoding="utf-8"))


def source_values(db: Path, column: str) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return [v for (v,) in con.execute(f"SELECT {column} FROM population_person") if v]
    finally:
        con.close()


def ingested(dataset: str = "population"):
    """A fresh run, planned and ingested (one part)."""
    run = pipeline.start(dataset, catalog=load_catalog())
    parts = pipeline.plan(run)
    assert parts == [0]
    pipeline.ingest(run, 0)
    return run


# -- the published version ---------------------------------------------------------------------


def test_published_upserts_hold_the_published_fields_and_refs_only(home, sources):
    assert main(["sync", "population"]) == 0
    upserts = version_dir(home, 1) / "upserts.parquet"
    schema = pq.ParquetFile(upserts, decryption_properties=decryption_properties(keystore(home))).schema_arrow
    assert schema.names == PUBLISHED + MASKED + REFS
    for withheld in WITHHELD:
        assert withheld not in schema.names

    doc = manifest(home, 1)
    assert [f["name"] for f in doc["schema"]] == PUBLISHED + MASKED
    assert doc["withheld_fields"] == WITHHELD
    assert {f["name"]: f["protection"] for f in doc["schema"]} == {
        name: "encrypted" if name in CONDITIONAL + MASKED else "plain" for name in PUBLISHED + MASKED}


def test_published_conditional_columns_cannot_be_read_without_their_key(home, sources):
    assert main(["sync", "population"]) == 0
    doc = manifest(home, 1)
    data_keys = {k["group"]: k["key_id"] for k in doc["data_keys"]}
    protection = doc["protection"]["upserts"]
    assert protection["column_keys"] == {data_keys[c]: [c] for c in CONDITIONAL + MASKED}
    assert protection["footer"] == "encrypted"
    assert protection["footer_key_id"] == data_keys["footer"]
    assert_conditional_columns_need_their_key(home, version_dir(home, 1) / "upserts.parquet", data_keys)


# -- ingest's staging files --------------------------------------------------------------------


def test_markers_hold_pseudonyms_and_times_only(home, sources):
    run = ingested()
    markers = run.file("markers-0.parquet")
    table = pq.read_table(markers)  # not encrypted: it holds nothing that needs it
    assert table.schema.names == MARKER_COLUMNS
    assert table.num_rows == run.require(Staged, 0).markers > 0
    assert {len(v) for v in table.column("_key_ref").to_pylist()} == {16}
    assert len(set(table.column("_key_ref").to_pylist())) == table.num_rows  # demo keys are unique

    raw = markers.read_bytes()  # uncompressed: a value written in clear would show here as it is
    db = sources["population_db"]
    ids = {v.strip().upper() for v in source_values(db, "id_number")}
    for value in ids | set(source_values(db, "phone")) | set(source_values(db, "name")):
        assert value.encode("utf-8") not in raw


def test_staging_files_with_row_values_are_encrypted(home, sources):
    run = ingested()
    for name in ("candidates-0.parquet", "deleted-0.parquet", "rejected-0.parquet"):
        path = run.file(name)
        assert path.is_file(), name  # the demo source has deletes and defective rows
        assert parquet_magic(path) == (b"PARE", b"PARE"), name
        with pytest.raises(OSError, match="encrypted"):
            pq.read_table(path)
    candidates = run.file("candidates-0.parquet")
    assert pq.ParquetFile(candidates, decryption_properties=decryption_properties(keystore(home))).schema_arrow.names \
        == PUBLISHED + MASKED + REFS
    assert rows_in(home, candidates) == run.require(Staged, 0).candidates
    deleted = read_decrypted(home, run.file("deleted-0.parquet"))
    assert deleted.schema.names == ["id_number", "_key_ref"]
    assert deleted.num_rows == run.require(Staged, 0).deletes > 0


# -- protect: the candidates taken whole, or filtered ----------------------------------------------


def test_first_sync_takes_the_candidates_file_as_the_upserts_file(home, sources, demo_sources):
    run = ingested()
    candidates = run.file("candidates-0.parquet")
    staged = run.require(Staged, 0)
    before = (candidates.stat().st_size, sha256(candidates))

    protected = pipeline.protect(run)
    assert protected.kind == "snapshot"
    assert protected.superseded_in_run == 0
    assert protected.upserts == staged.candidates == demo_sources.counts["population"].valid
    assert protected.deletes_of_unpublished == staged.deletes  # withdrawn before ever published
    assert not candidates.exists()  # moved, not copied
    upserts = staged_upserts(run)
    assert (upserts.stat().st_size, sha256(upserts)) == before
    assert protected.protection.upserts == staged.protection

    result = pipeline.publish(run)
    assert (result.version, result.upserts) == (1, staged.candidates)
    published = version_dir(home, 1) / "upserts.parquet"
    assert sha256(published) == before[1]
    (entry,) = [f for f in manifest(home, 1)["files"] if f["role"] == "upserts"]
    assert (entry["bytes"], entry["sha256"], entry["rows"]) == (before[0], before[1], staged.candidates)


def test_a_delta_writes_only_the_changed_rows(home, own_source):
    write(own_source, [person(n, BASE) for n in range(1, 7)])
    assert main(["sync", "population"]) == 0
    # Then at the source: a change, a re-stamp without change, a new row. The lookback re-reads
    # rows 1-6 (all on the watermark): unchanged, they are candidates but not published.
    write(own_source, [person(1, BASE + timedelta(hours=2), name="改名一"),
                       person(2, BASE + timedelta(hours=2)),
                       person(7, BASE + timedelta(hours=1))])

    run = ingested()
    candidates = run.file("candidates-0.parquet")
    assert rows_in(home, candidates) == 7
    protected = pipeline.protect(run)
    assert (protected.kind, protected.upserts, protected.unchanged, protected.deletes) == ("delta", 2, 5, 0)
    assert candidates.exists()  # copied out of, not taken whole

    upserts = staged_upserts(run)
    rows = read_decrypted(home, upserts)
    assert rows.schema.names == PUBLISHED + MASKED + REFS
    by_id = {r["id_number"]: r for r in rows.to_pylist()}
    assert set(by_id) == {person_id(1), person_id(7)}
    assert by_id[person_id(1)]["name"] == "改名一"
    assert by_id[person_id(7)]["name"] == "测试7"
    data_keys = protected.protection.upserts["data_keys"]
    assert protected.protection.upserts["column_keys"] == {data_keys[c]: [c] for c in CONDITIONAL + MASKED}
    assert_conditional_columns_need_their_key(home, upserts, data_keys)

    digest = sha256(upserts)
    result = pipeline.publish(run)
    assert (result.version, result.upserts) == (2, 2)
    assert sha256(version_dir(home, 2) / "upserts.parquet") == digest
    assert manifest(home, 2)["protection"]["upserts"]["column_keys"] == {data_keys[c]: [c] for c in CONDITIONAL + MASKED}
    assert {k["group"]: k["key_id"] for k in manifest(home, 2)["data_keys"]} == data_keys


def test_a_key_twice_in_one_run_writes_a_filtered_upserts_file_with_its_later_row(home, own_source):
    write(own_source, [person(n, BASE) for n in range(1, 4)] + [
        person(X_CHECK, BASE, name="旧名"),
        person(X_CHECK, BASE + timedelta(minutes=5), id_number=person_id(X_CHECK).lower(), name="新名"),
    ], replace=False)

    run = ingested()
    candidates = run.file("candidates-0.parquet")
    assert rows_in(home, candidates) == 5
    protected = pipeline.protect(run)
    assert (protected.kind, protected.upserts, protected.superseded_in_run) == ("snapshot", 4, 1)
    assert candidates.exists()

    rows = read_decrypted(home, staged_upserts(run)).to_pylist()
    assert len(rows) == 4
    by_id = {r["id_number"]: r for r in rows}
    assert set(by_id) == {person_id(n) for n in (1, 2, 3, X_CHECK)}
    assert by_id[person_id(X_CHECK)]["name"] == "新名"
    assert len({r["_key_ref"] for r in rows}) == 4
    assert "phone" not in rows[0]

    assert pipeline.publish(run).upserts == 4


# -- after publish ------------------------------------------------------------------------------


def test_publish_removes_the_run_work_folder(home, sources):
    run = ingested()
    names = {p.name for p in run.folder.iterdir()}
    assert {"markers-0.parquet", "candidates-0.parquet", "deleted-0.parquet"} <= names
    pipeline.protect(run)
    assert run.folder.is_dir()
    assert pipeline.publish(run).version == 1
    assert not run.folder.exists()
    assert not (SharingStore(home.store, "population").staging_dir / run.run_id).exists()
    assert not list(home.work.rglob("*.parquet"))


def test_a_sync_leaves_no_staging_files_behind(home, own_source):
    write(own_source, [person(n, BASE) for n in range(1, 4)])
    assert main(["sync", "population"]) == 0
    write(own_source, [person(1, BASE + timedelta(hours=1), name="新")])
    assert main(["sync", "population"]) == 0  # a delta: the candidates were copied out of, not moved
    assert not [p for p in home.work.rglob("*") if p.is_file()]
    staging = SharingStore(home.store, "population").staging_dir
    assert not staging.exists() or not any(staging.iterdir())


# -- GOVSHARE_GX through the command line ----------------------------------------------------------


def test_a_bad_govshare_gx_stops_the_sync_with_exit_2(home, own_source, monkeypatch, capsys):
    write(own_source, [person(n, BASE) for n in range(1, 4)])
    monkeypatch.setenv("GOVSHARE_GX", "sometimes")
    assert main(["sync", "population"]) == 2
    assert "GOVSHARE_GX" in capsys.readouterr().err
    assert SharingStore(home.store, "population").latest() is None
