"""govshare's own OpenLineage run facet tells the same story as the version's manifest."""

from __future__ import annotations

import json

import pytest

from govshare.cli import main
from lineage.openlineage import SYNC_FACET, read_events

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("dataset", ["population", "legal_entity"])
def test_the_sync_facet_equals_the_manifest(home, sources, dataset: str) -> None:
    assert main(["sync", dataset]) == 0
    manifest = json.loads((home.store / dataset / "versions" / "00000001" / "manifest.json").read_text(encoding="utf-8"))
    complete = [e for e in read_events(home.lineage, dataset, manifest["run_id"]) if e["eventType"] == "COMPLETE"]
    assert len(complete) == 1
    facet = complete[0]["run"]["facets"][SYNC_FACET]
    assert facet["version"] == manifest["version"] == 1 and facet["kind"] == manifest["kind"]
    assert facet["rows"]["upserts"] == manifest["rows"]["upserts"] > 0
    assert facet["rows"]["deletes"] == manifest["rows"]["deletes"]
    assert facet["rows"]["quarantined"] == manifest["rows"]["quarantined"] > 0
    assert facet["rows"]["read"] == manifest["source"]["rows_read"]
    assert facet["rows"]["checked"] == facet["rows"]["passed"] + facet["rows"]["quarantined"]
    assert facet["watermark"].get("to") == manifest["source"]["watermark"]["to"]
    assert facet["keyIds"] == {k["group"]: k["key_id"] for k in manifest["data_keys"]}
    text = json.dumps(complete[0], ensure_ascii=False)
    assert "BEGIN" not in text and "private" not in text.lower()  # key ids, never key material
