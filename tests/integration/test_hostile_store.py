"""Hostile store and state: each row damages a home of two published versions in one way, runs a
command, and names the exit code and a fragment of the message. A refused sync reads no row and
publishes nothing: the store's versions and the state file stay as they were."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.syncing import DATASET, Place, change_source, copy_place, new_place

pytestmark = pytest.mark.integration


def remove(relative: str) -> Callable[[Place], None]:
    def damage(place: Place) -> None:
        path = place.home / relative
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return damage


def overwrite(relative: str, data: bytes | Callable[[bytes], bytes]) -> Callable[[Place], None]:
    def damage(place: Place) -> None:
        path = place.home / relative
        path.write_bytes(data(path.read_bytes()) if callable(data) else data)
    return damage


def edit_state(**changes: object) -> Callable[[Place], None]:
    def damage(place: Place) -> None:
        doc = place.state()
        doc.update(changes)
        place.state_file.write_text(json.dumps(doc), encoding="utf-8")
    return damage


def flip(raw: bytes) -> bytes:
    data = bytearray(raw)
    data[-20] ^= 0x01
    return bytes(data)


V2 = "store/population/versions/00000002"
STATE = "state/population.json"
INDEX = "state/population"


@dataclass(frozen=True)
class Case:
    name: str
    damage: Callable[[Place], None]
    command: tuple[str, ...]
    exit_code: int
    message: str


CASES = [
    Case("newest-version-removed", remove(V2), ("verify",), 3, "version(s) 2 are missing"),
    Case("newest-version-removed-sync", remove(V2), ("sync",), 3, "a sync would reuse the version numbers"),
    Case("store-removed", remove("store/population"), ("verify",), 3, "is missing (no version at all)"),
    Case("store-removed-sync", remove("store/population"), ("sync",), 3, "version(s) 1, 2 are missing"),
    Case("store-removed-full-sync", remove("store/population"), ("sync", "--full"), 3, "version(s) 1, 2 are missing"),
    Case("manifest-removed", remove(f"{V2}/manifest.json"), ("verify",), 3, "version 2: manifest is missing"),
    Case("manifest-removed-sync", remove(f"{V2}/manifest.json"), ("sync",), 3, "version 2: manifest is missing"),
    Case("signature-removed", remove(f"{V2}/manifest.sig"), ("sync",), 3, "version 2: signature is missing"),
    Case("upserts-removed", remove(f"{V2}/upserts.parquet"), ("verify",), 3, "file upserts.parquet is missing"),
    Case("upserts-removed-sync", remove(f"{V2}/upserts.parquet"), ("sync",), 3, "file upserts.parquet is missing"),
    Case("deletes-damaged-sync", overwrite(f"{V2}/deletes.parquet", flip), ("sync",), 3, "does not match its SHA-256"),
    Case("manifest-damaged-sync", overwrite(f"{V2}/manifest.json", b"{"), ("sync",), 3, "manifest is not valid JSON"),
    Case("state-not-json", overwrite(STATE, b"{\"watermark\": "), ("sync",), 3, f"{STATE} is not valid JSON"),
    Case("state-not-json-verify", overwrite(STATE, b"\x00\xff"), ("verify",), 3, f"{STATE} is not valid JSON"),
    Case("state-truncated", overwrite(STATE, lambda raw: raw[:25]), ("sync",), 3, f"{STATE} is not valid JSON"),
    Case("state-a-list", overwrite(STATE, b"[1, 2]"), ("sync",), 3, "is not a JSON object"),
    Case("state-version-text", edit_state(version="2"), ("sync",), 3, "has a version that is not a number"),
    Case("state-version-zero", edit_state(version=0), ("verify",), 3, "has a version that is not a number"),
    Case("state-watermark-number", edit_state(watermark=42), ("sync",), 3, "watermark that is not an ISO date-time"),
    Case("state-watermark-garbage", edit_state(watermark="yesterday"), ("sync",), 3, "watermark that is not an ISO"),
    Case("state-digest-garbage", edit_state(manifest_sha256="abc"), ("sync",), 3, "is not a SHA-256 digest"),
    Case("state-digest-other", edit_state(manifest_sha256="0" * 64), ("sync",), 3, "the version was replaced"),
    Case("state-ahead", edit_state(version=5), ("sync",), 3, "version(s) 3, 4, 5 are missing"),
    Case("state-removed", remove(STATE), ("sync",), 3, "there is no sync state"),
    Case("state-removed-verify", remove(STATE), ("verify",), 3, "govshare sync population --full"),
    Case("state-behind", edit_state(version=None, manifest_sha256=None), ("sync",), 3, "is at version None"),
    Case("index-meta-removed", remove(f"{INDEX}/index.json"), ("sync",), 3, "index.json"),
    Case("index-meta-not-json", overwrite(f"{INDEX}/index.json", b"rows"), ("sync",), 3, "index.json is not valid JSON"),
    Case("index-meta-types", overwrite(f"{INDEX}/index.json", b'{"rows": "x", "deltas": []}'), ("verify",), 3,
         "does not hold rows, deltas and version"),
    Case("index-base-removed", remove(f"{INDEX}/index.parquet"), ("sync",), 3, "index.parquet is missing"),
    Case("index-base-truncated", overwrite(f"{INDEX}/index.parquet", lambda raw: raw[:100]), ("sync",), 3,
         "index.parquet is not a readable Parquet file"),
    Case("index-delta-removed", remove(f"{INDEX}/index.d/00000002.parquet"), ("verify",), 3, "00000002.parquet is missing"),
    Case("index-removed", remove(INDEX), ("sync",), 3, "the state index"),
    Case("index-behind", overwrite(f"{INDEX}/index.json", lambda raw: raw.replace(b'"version": 2', b'"version": 1')),
         ("sync",), 3, "is at version 1 but the sync state is at version 2"),
]


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory, demo_sources) -> Place:
    place = new_place(tmp_path_factory.mktemp("two-versions"), demo_sources)
    place.ok("sync", DATASET)
    change_source(place.source)
    place.ok("sync", DATASET)
    assert [v["version"] for v in place.versions()] == [1, 2]
    assert len(list((place.index / "index.d").glob("*.parquet"))) == 1  # version 2 is a delta over the base
    return place


def test_an_intact_home_verifies(two_versions: Place) -> None:
    out = two_versions.ok("verify", DATASET)
    assert "versions 1..2 verified" in out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_damage_is_detected(case: Case, two_versions: Place, tmp_path: Path) -> None:
    place = copy_place(two_versions, tmp_path)
    change_source(place.source)  # a sync that went ahead would have something to publish
    case.damage(place)
    versions_before = sorted(p.name for p in (place.store / "versions").glob("*")) if place.store.is_dir() else []
    state_before = place.state_file.read_bytes() if place.state_file.exists() else None
    done = place.run(case.command[0], DATASET, *case.command[1:])
    assert done.returncode == case.exit_code, done.stderr
    assert case.message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    after = sorted(p.name for p in (place.store / "versions").glob("*")) if place.store.is_dir() else []
    assert after == versions_before  # nothing published, nothing removed
    assert (place.state_file.read_bytes() if place.state_file.exists() else None) == state_before
    assert not list((place.home / "work" / DATASET).glob("*"))  # refused before a run folder was made


def test_a_store_without_state_is_adopted_by_a_full_sync(two_versions: Place, tmp_path: Path) -> None:
    place = copy_place(two_versions, tmp_path)
    place.state_file.unlink()
    shutil.rmtree(place.index)
    refused = place.run("sync", DATASET)
    assert refused.returncode == 3 and "govshare sync population --full" in refused.stderr
    out = place.ok("sync", DATASET, "--full")
    assert "published version 3" in out
    state = place.state()
    assert state["version"] == 3 and state["manifest_sha256"] == place.versions()[-1]["manifest_sha256"]
    assert "versions 1..3 verified" in place.ok("verify", DATASET)
    assert "nothing new" in place.ok("sync", DATASET)
    assert place.stray_files() == []


def test_a_fresh_dataset_has_neither_store_nor_state_and_syncs(tmp_path: Path, demo_sources) -> None:
    place = new_place(tmp_path, demo_sources)
    assert "published version 1" in place.ok("sync", DATASET)
    state = place.state()
    assert state["version"] == 1 and state["manifest_sha256"] == place.versions()[0]["manifest_sha256"]
    assert json.loads((place.index / "index.json").read_text(encoding="utf-8"))["version"] == 1
