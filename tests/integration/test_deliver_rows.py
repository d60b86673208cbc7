"""deliver() against a real database: nasty values, version guards, one transaction.

Uses a small synthetic dataset rather than the demo catalog. ``target_url`` is a fresh SQLite
file now; PostgreSQL/MariaDB URLs can be added as params.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

import sharing.deliver as deliver_module
from common.errors import ConfigError
from common.schema import fields_schema
from sharing.deliver import deliver, target_table_for
from tests.unit.test_deliver_statements import DATASET, FIELDS

pytestmark = pytest.mark.integration


NULLS = {"holder": None, "issued_on": None, "changed_at": None, "fee": None, "pages": None}


@pytest.fixture
def target_url(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'subscriber.db'}"


def changes(*rows: dict[str, Any]) -> pa.Table:
    """Rows as a pull delivers them: the fields, then _change_type and _commit_version."""
    schema = fields_schema(DATASET, FIELDS)
    schema = schema.append(pa.field("_change_type", pa.string())).append(pa.field("_commit_version", pa.int64()))
    return pa.Table.from_pylist([{**NULLS, **r} for r in rows], schema=schema)


def up(key: str, version: int, **values: Any) -> dict[str, Any]:
    return {"permit_id": key, **values, "_change_type": "upsert", "_commit_version": version}


def delete(key: str, version: int) -> dict[str, Any]:
    return {"permit_id": key, "_change_type": "delete", "_commit_version": version}


def state(url: str) -> dict[str, dict[str, Any]]:
    table = target_table_for(DATASET, FIELDS)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {r.permit_id: dict(r._mapping) for r in conn.execute(sa.select(table))}
    finally:
        engine.dispose()


NASTY = [
    up("P-001", 1, holder="张三", issued_on=date(1949, 12, 31), changed_at=datetime(2026, 11, 20, 12, 0, 0, 1),
       fee=Decimal("12345678901234.5678"), pages=2**62),
    up("P-002", 1),  # NULLs everywhere a NULL is allowed
    up("Ｐ－００３", 1, holder="Ｊｏｈｎ　史密斯 李😀🇨🇳 👨‍👩‍👧", fee=Decimal("0.0001"), pages=-1),
    up("P-004", 1, holder="a\x00b", fee=Decimal("-99999999999999.9999")),  # NUL: SQLite only
    up("P-005", 1, holder="经营范围；" * 20_000, issued_on=date(2000, 2, 29)),
    up("P'); DROP TABLE permit;--", 1, holder="Robert'); DROP TABLE permit;--"),
]


def test_nasty_values_land_exactly(target_url):
    nul_ok = sa.make_url(target_url).get_backend_name() == "sqlite"  # PostgreSQL text cannot hold NUL
    rows = [r for r in NASTY if nul_ok or "\x00" not in (r.get("holder") or "")]
    result = deliver(changes(*rows), DATASET, FIELDS, target_url)
    assert (result.table, result.upserts, result.deletes) == ("permit", len(rows), 0)
    got = state(target_url)
    expected = {r["permit_id"]: {**NULLS, **{k: v for k, v in r.items() if k != "_change_type"}, "_disputed": False}
                for r in rows}
    assert got == expected


def test_changes_apply_only_when_at_least_as_new_as_the_stored_row(target_url):
    deliver(changes(up("A", 3, holder="v3"), up("B", 3, holder="v3"), up("C", 1, holder="v1")), DATASET, FIELDS, target_url)
    # an older feed: neither its update nor its delete may touch the version-3 rows
    deliver(changes(up("A", 2, holder="v2"), delete("B", 2), up("C", 2, holder="v2")), DATASET, FIELDS, target_url)
    got = state(target_url)
    assert {k: (r["holder"], r["_commit_version"]) for k, r in got.items()} == {"A": ("v3", 3), "B": ("v3", 3), "C": ("v2", 2)}
    # the same version again is idempotent, a newer delete deletes, a delete of an absent key is a no-op
    deliver(changes(up("A", 3, holder="v3"), delete("B", 4), delete("Z", 4)), DATASET, FIELDS, target_url)
    assert {k: (r["holder"], r["_commit_version"]) for k, r in state(target_url).items()} == {"A": ("v3", 3), "C": ("v2", 2)}


def test_chunks_all_land_in_one_transaction_or_not_at_all(target_url, monkeypatch):
    monkeypatch.setattr(deliver_module, "CHUNK_ROWS", 2)
    engine = sa.create_engine(target_url)
    table = target_table_for(DATASET, FIELDS)
    table.append_constraint(sa.CheckConstraint(sa.func.length(table.c.holder) < 20, name="holder_short"))
    with engine.begin() as conn:
        table.create(conn)
    engine.dispose()
    secret = "身份证号110105194912310021很长很长很长"
    rows = [up(f"K{i}", 1, holder="ok") for i in range(5)] + [up("K9", 1, holder=secret)]
    with pytest.raises(ConfigError) as err:
        deliver(changes(*rows), DATASET, FIELDS, target_url)
    assert "110105194912310021" not in str(err.value) and "permit" in str(err.value)
    assert state(target_url) == {}
    deliver(changes(*rows[:5]), DATASET, FIELDS, target_url)
    assert sorted(state(target_url)) == [f"K{i}" for i in range(5)]


def test_deletes_across_chunks_and_versions(target_url, monkeypatch):
    monkeypatch.setattr(deliver_module, "CHUNK_ROWS", 3)
    deliver(changes(*(up(f"K{i:02d}", 1) for i in range(10))), DATASET, FIELDS, target_url)
    feed = [delete(f"K{i:02d}", 2 + i % 2) for i in range(7)] + [up("K09", 3, pages=9)]
    result = deliver(changes(*feed), DATASET, FIELDS, target_url)
    assert (result.upserts, result.deletes) == (1, 7)
    got = state(target_url)
    assert sorted(got) == ["K07", "K08", "K09"] and got["K09"]["pages"] == 9
