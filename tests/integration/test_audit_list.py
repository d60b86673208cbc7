"""``govshare audit list``: the access log's records for auditors, filtered, as text or JSON."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration


def test_audit_list_filters_and_prints_json_lines(cli_world, tmp_path) -> None:  # noqa: ANN001
    denied = cli_world.run("pull", "population", "--subscriber", "sub-suspended", "--purpose", "核验",
                           "--out", str(tmp_path / "x.parquet"))
    assert denied.returncode == 4
    done = cli_world.run("audit", "list", "--json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert len(rows) == len(cli_world.access_log())
    mine = cli_world.run("audit", "list", "--subscriber", "sub-suspended", "--json")
    theirs = [json.loads(line) for line in mine.stdout.splitlines()]
    assert theirs and all(r["subscriber"] == "sub-suspended" for r in theirs)
    assert any(r["event"] == "denied" and "suspended" in r["reason"] for r in theirs)
    deliveries = cli_world.run("audit", "list", "--dataset", "legal_entity", "--event", "delivery", "--json")
    found = [json.loads(line) for line in deliveries.stdout.splitlines()]
    assert found and all(r["dataset"] == "legal_entity" and r["event"] == "delivery" for r in found)
    assert all("purpose" in r and r["fields"] for r in found)
    text = cli_world.run("audit", "list", "--subscriber", "sub-suspended")
    assert text.returncode == 0 and text.stdout.strip().endswith(f"{len(theirs)} record(s)")
    cli_world.assert_clean(text)
    assert not any(i in done.stdout for i in cli_world.id_numbers)  # the log never holds an identifier
