"""The quarantine loop: rejected records are held as cases until the source corrects them (then
they are published) or the bureau releases them; run files go once no case needs them."""

from __future__ import annotations

import json
import sqlite3

import pyarrow.parquet as pq
import pytest

from govshare.cli import main

pytestmark = pytest.mark.integration


def open_cases(capsys) -> list[dict]:
    capsys.readouterr()
    assert main(["quarantine", "list", "population", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cases_open_then_close_by_correction_and_release(home, sources, demo_sources, tmp_path, capsys):
    assert main(["sync", "population"]) == 0
    cases = open_cases(capsys)
    assert len(cases) == demo_sources.counts["population"].defective
    assert all("*" in c["masked_key"] for c in cases)
    blank = sorted(demo_sources.defect_keys[("population", "blank_name")])
    assert any("name.not_blank" in c["rules"] for c in cases)

    db = sqlite3.connect(sources["population_db"])
    with db:  # the source department corrects one record
        db.execute("UPDATE population_person SET name = '更正姓名', updated_at = datetime('now', '+8 hours') "
                   "WHERE upper(trim(id_number)) = ?", (blank[0],))
    db.close()
    assert main(["sync", "population"]) == 0
    assert len(open_cases(capsys)) == len(cases) - 1
    out = tmp_path / "p.parquet"
    assert main(["pull", "population", "--subscriber", "approval-household", "--purpose", "核验", "--out", str(out)]) == 0
    assert blank[0] in set(pq.read_table(out).column("id_number").to_pylist())

    assert main(["quarantine", "release", "population", blank[1], "--by", "省数据资源局", "--note", "已线下核实"]) == 0
    assert len(open_cases(capsys)) == len(cases) - 2
    assert main(["quarantine", "release", "population", blank[1], "--by", "x", "--note", "y"]) == 2

    capsys.readouterr()
    assert main(["quarantine", "list", "population", "--all", "--json"]) == 0
    statuses = sorted(c["status"] for c in json.loads(capsys.readouterr().out))
    assert statuses.count("corrected") == 1 and statuses.count("released") == 1
    events = [json.loads(line) for line in (home.quarantine / "population" / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    runs = [e for e in events if e["event"] == "run"]
    assert runs[0]["opened"] == len(cases) and runs[1]["corrected"] == 1
    assert [e["event"] for e in events if e["event"] != "run"] == ["released"]
    assert not any(k in (home.quarantine / "population" / "events.jsonl").read_text(encoding="utf-8") for k in blank)


def test_rereading_a_defective_row_does_not_open_a_second_case(home, sources, demo_sources, capsys):
    assert main(["sync", "population"]) == 0
    before = open_cases(capsys)
    assert main(["sync", "population", "--full"]) == 0
    after = open_cases(capsys)
    assert sorted(c["masked_key"] for c in after) == sorted(c["masked_key"] for c in before)
    assert len({c["first_run"] for c in after}) == 1
