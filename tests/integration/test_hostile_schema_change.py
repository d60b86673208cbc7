"""Catalog changes under published versions, as data: one row per case, through the real CLI.

Each case publishes version 1 of population (five people) under the shipped catalog, then edits
the catalog copy in GOVSHARE_CATALOG (one field's type or sharing class, or a field removed or
added to the published set), changes two people at the source and syncs with the case's flags.
When that sync publishes (version 2, a snapshot), a third person changes and a plain sync
publishes version 3 under the new schema. Then every pull of the case runs: its subscriber,
arguments, exit code, and what the view holds of the changed field (absent, or its Arrow type).

Nothing may exit 1 or print a traceback. Adding a case is adding a row.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from common.catalog import PROJECT_ROOT
from connectors.ddl import create_table_sql
from govshare.cli import main
from validation.identifiers import id_check_char

pytestmark = pytest.mark.integration
BASE = datetime(2026, 11, 1, 8, 0, 0)
GENERAL, HOUSEHOLD = "approval-general", "approval-household"
ABSENT = "absent"

STATUS_STRING = "    type: string\n    sharing: unconditional\n    sensitivity: personal\n    checks: [{code_list: {list: person_status}}]"
ADDRESS = "    type: string\n    sharing: conditional\n    sensitivity: personal\n  phone:"
ADDRESS_BLOCK = "  household_address:\n    label: 户籍地址\n" + ADDRESS
PHONE = "    sharing: none               # 不予共享"


@dataclass(frozen=True)
class Pull:
    subscriber: str
    args: tuple[str, ...]
    exit: int
    holds: str | None = None  # the changed field in the view: ABSENT or its Arrow type; None: not looked at
    fragment: str = ""  # in the output of a refused pull


@dataclass(frozen=True)
class Case:
    id: str
    field: str
    old: str  # replaced exactly once in population.yaml
    new: str
    full: bool  # the second sync is --full
    sync_exit: int
    sync_fragment: str
    pulls: tuple[Pull, ...]


def refused(subscriber: str, *args: str, fragment: str) -> Pull:
    return Pull(subscriber, args, 2, None, fragment)


SPANS_V2 = "version 2 changed the schema"
# After a --full sync: version 1 old schema, 2 the snapshot under the new one, 3 a delta.
AFTER_FULL = (
    refused(HOUSEHOLD, "--since", "0", fragment=SPANS_V2),
    refused(HOUSEHOLD, "--since", "1", fragment=SPANS_V2),
    refused(GENERAL, "--since", "1", fragment=SPANS_V2),
)

CASES = [
    # a type change: string -> int (the code-list check goes with it)
    Case("type-change-refused-without-full", "person_status", STATUS_STRING, STATUS_STRING.replace("string", "int").rsplit("\n", 1)[0],
         False, 2, "field person_status changed type from string to int64", (
             refused(GENERAL, fragment="person_status is published as string, the catalog has int64"),
             refused(HOUSEHOLD, "--since", "0", fragment="sync population --full"),
             Pull(HOUSEHOLD, ("--version", "1"), 2),
         )),
    Case("type-change-with-full", "person_status", STATUS_STRING, STATUS_STRING.replace("string", "int").rsplit("\n", 1)[0],
         True, 0, "published version 2", (
             Pull(GENERAL, (), 0, "int64"), Pull(HOUSEHOLD, (), 0, "int64"), Pull(GENERAL, ("--since", "2"), 0, "int64"),
             Pull(HOUSEHOLD, ("--version", "2"), 0, "int64"),
             refused(GENERAL, "--version", "1", fragment="version 1 was published under another schema"),
             *AFTER_FULL,
         )),
    # less shared: unconditional -> conditional
    Case("unconditional-to-conditional-refused-without-full", "person_status", STATUS_STRING,
         STATUS_STRING.replace("unconditional", "conditional"), False, 2,
         "field person_status changed sharing from unconditional to conditional", (
             Pull(GENERAL, (), 0, ABSENT), Pull(GENERAL, ("--since", "0"), 0, ABSENT),
             Pull(HOUSEHOLD, (), 0, "string"),
         )),
    Case("unconditional-to-conditional-with-full", "person_status", STATUS_STRING,
         STATUS_STRING.replace("unconditional", "conditional"), True, 0, "published version 2", (
             Pull(GENERAL, (), 0, ABSENT), Pull(GENERAL, ("--version", "1"), 0, ABSENT),
             Pull(GENERAL, ("--since", "2"), 0, ABSENT),
             Pull(HOUSEHOLD, (), 0, "string"), Pull(HOUSEHOLD, ("--version", "1"), 0, "string"),
             Pull(HOUSEHOLD, ("--since", "2"), 0, "string"),
             *AFTER_FULL,
         )),
    # less shared: unconditional -> none, and conditional -> none
    Case("unconditional-to-none-refused-without-full", "person_status", STATUS_STRING, STATUS_STRING.replace("unconditional", "none"),
         False, 2, "field person_status changed sharing from unconditional to none", (
             Pull(GENERAL, (), 0, ABSENT), Pull(HOUSEHOLD, (), 0, ABSENT), Pull(HOUSEHOLD, ("--since", "0"), 0, ABSENT),
         )),
    Case("unconditional-to-none-with-full", "person_status", STATUS_STRING, STATUS_STRING.replace("unconditional", "none"),
         True, 0, "published version 2", (
             Pull(GENERAL, (), 0, ABSENT), Pull(HOUSEHOLD, (), 0, ABSENT), Pull(GENERAL, ("--version", "1"), 0, ABSENT),
             Pull(HOUSEHOLD, ("--version", "1"), 0, ABSENT), Pull(HOUSEHOLD, ("--since", "2"), 0, ABSENT),
             *AFTER_FULL,
         )),
    Case("conditional-to-none-refused-without-full", "household_address", ADDRESS, ADDRESS.replace("conditional", "none"),
         False, 2, "field household_address changed sharing from conditional to none", (
             Pull(HOUSEHOLD, (), 0, ABSENT), Pull(HOUSEHOLD, ("--since", "0"), 0, ABSENT),
         )),
    Case("conditional-to-none-with-full", "household_address", ADDRESS, ADDRESS.replace("conditional", "none"),
         True, 0, "published version 2", (
             Pull(HOUSEHOLD, (), 0, ABSENT), Pull(HOUSEHOLD, ("--version", "1"), 0, ABSENT),
             Pull(HOUSEHOLD, ("--since", "2"), 0, ABSENT), Pull(GENERAL, ("--version", "1"), 0, ABSENT),
             *AFTER_FULL,
         )),
    # more shared: conditional -> unconditional reaches the new subscribers through the snapshot only
    Case("conditional-to-unconditional-refused-without-full", "household_address", ADDRESS, ADDRESS.replace("conditional", "unconditional"),
         False, 2, "field household_address changed sharing from conditional to unconditional", (
             refused(GENERAL, fragment="household_address is published conditional, the catalog shares it unconditional"),
             refused(HOUSEHOLD, "--since", "0", fragment="sync population --full"),
         )),
    Case("conditional-to-unconditional-with-full", "household_address", ADDRESS, ADDRESS.replace("conditional", "unconditional"),
         True, 0, "published version 2", (
             Pull(GENERAL, (), 0, "string"), Pull(HOUSEHOLD, (), 0, "string"), Pull(GENERAL, ("--since", "2"), 0, "string"),
             refused(GENERAL, "--version", "1", fragment="household_address is published conditional"),
             *AFTER_FULL,
         )),
    # a field added to the published set (不予共享 -> unconditional), and one removed from the catalog
    Case("withheld-field-published-refused-without-full", "phone", PHONE, "    sharing: unconditional", False, 2,
         "field phone changed sharing from none to unconditional", (
             refused(GENERAL, fragment="field phone is not published there"),
         )),
    Case("withheld-field-published-with-full", "phone", PHONE, "    sharing: unconditional", True, 0, "published version 2", (
        Pull(GENERAL, (), 0, "string"), Pull(HOUSEHOLD, ("--since", "2"), 0, "string"),
        refused(HOUSEHOLD, "--version", "1", fragment="field phone is not published there (none)"),
        *AFTER_FULL,
    )),
    Case("field-removed-refused-without-full", "household_address", ADDRESS_BLOCK, "  phone:", False, 2,
         "field household_address was removed (it was conditional)", (
             Pull(HOUSEHOLD, (), 0, ABSENT),
         )),
    Case("field-removed-with-full", "household_address", ADDRESS_BLOCK, "  phone:", True, 0, "published version 2", (
        Pull(HOUSEHOLD, (), 0, ABSENT), Pull(HOUSEHOLD, ("--version", "1"), 0, ABSENT),
        Pull(HOUSEHOLD, ("--since", "2"), 0, ABSENT),
        *AFTER_FULL,
    )),
    # a mask declared or changed: the masked values of every row are republished by a snapshot
    Case("mask-declared-refused-without-full", "household_address", ADDRESS,
         ADDRESS.replace("personal\n  phone:", "personal\n    mask: {first: 6}\n  phone:"), False, 2,
         "field household_address__masked was added (conditional)", (Pull(HOUSEHOLD, (), 0, "string"),)),
    Case("mask-changed-refused-without-full", "name", "    mask: {first: 1}            # 张*", "    mask: {first: 2}",
         False, 2, "masked column name__masked changed its mask from first=1,last=0 to first=2,last=0",
         (Pull(HOUSEHOLD, (), 0, "string"),)),
    Case("mask-changed-with-full", "name", "    mask: {first: 1}            # 张*", "    mask: {first: 2}",
         True, 0, "published version 2", (Pull(HOUSEHOLD, (), 0, "string"), *AFTER_FULL)),
]


def person_id(n: int) -> str:
    body = f"110105{1980}0101{n:03d}"
    return body + id_check_char(body)


def person(n: int, updated_at: datetime, **changes: object) -> dict[str, object]:
    values: dict[str, object] = {
        "id_number": person_id(n), "name": f"测试{n}", "sex_code": "1" if n % 2 else "2", "ethnicity_code": "01",
        "birth_date": "1980-01-01", "household_division_code": "110105", "household_address": f"北京市朝阳区{n}号",
        "phone": "13800000000", "person_status": "1", "updated_at": updated_at.strftime("%Y-%m-%d %H:%M:%S"), "is_deleted": 0,
    }
    return values | changes


class Source:
    """The population view on SQLite, the population connection pointing at it."""

    def __init__(self, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        uri = f"sqlite:///{path}"
        self.engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)
        with self.engine.begin() as conn:
            conn.exec_driver_sql(create_table_sql("population_person"))
        monkeypatch.setenv("AIRFLOW_CONN_POPULATION_DB", uri)

    def write(self, rows: list[dict[str, object]]) -> None:
        table = sa.table("population_person", *(sa.column(c) for c in rows[0]))
        with self.engine.begin() as conn:
            for r in rows:
                conn.execute(sa.delete(table).where(table.c.id_number == r["id_number"]))
            conn.execute(sa.insert(table), rows)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text, text
    assert code != 1, f"govshare {' '.join(args)} exited 1: {text}"
    return code, text


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_schema_change(case: Case, home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    catalog = tmp_path / "catalog"
    shutil.copytree(PROJECT_ROOT / "catalogs", catalog)
    monkeypatch.setenv("GOVSHARE_CATALOG", str(catalog))
    source = Source(tmp_path / "population.db", monkeypatch)
    source.write([person(n, BASE) for n in range(1, 6)])
    assert cli(capsys, "sync", "population")[0] == 0

    yaml = catalog / "population.yaml"
    text = yaml.read_text(encoding="utf-8")
    assert text.count(case.old) == 1, case.old
    yaml.write_text(text.replace(case.old, case.new), encoding="utf-8")
    source.write([person(n, BASE + timedelta(hours=1), name=f"改名{n}") for n in (1, 2)])
    code, said = cli(capsys, "sync", "population", *(["--full"] if case.full else []))
    assert code == case.sync_exit and case.sync_fragment in said, said
    versions = 1
    if code == 0:
        source.write([person(3, BASE + timedelta(hours=2), name="改名3")])
        assert cli(capsys, "sync", "population")[0] == 0, "the new schema is the base from version 2 on"
        versions = 3
    assert len(list((home.store / "population" / "versions").iterdir())) == versions

    for n, p in enumerate(case.pulls):
        out = tmp_path / f"pull-{n}.parquet"
        code, said = cli(capsys, "pull", "population", "--subscriber", p.subscriber, "--purpose", "核验申请人",
                         "--out", str(out), *p.args)
        assert code == p.exit, f"{p}: {said}"
        assert p.fragment in said, said
        if code:
            assert not out.exists(), "a refused pull writes nothing"
            continue
        view = pq.read_table(out)
        assert view.num_rows > 0, p
        if p.holds == ABSENT:
            assert case.field not in view.column_names, p
        elif p.holds is not None:
            assert str(view.schema.field(case.field).type) == p.holds, p
