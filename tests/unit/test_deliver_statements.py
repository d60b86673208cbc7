"""Delivery's table and statements per dialect, compiled without a database."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.schema import CreateTable

from common.catalog import Dataset, Field
from common.errors import ConfigError
from sharing.deliver import _DecimalText, _upsert_statement, deliver, target_table_for


def field(name: str, type_: str, decimal: tuple[int, int] | None = None) -> Field:
    return Field(name=name, type=type_, sharing="unconditional", sensitivity="public", column=name, decimal=decimal)  # type: ignore[arg-type]


DATASET = Dataset(
    id="permit", title="permits", provider="test", connection_id="permit_db", source_table="permit",
    key="permit_id", watermark_column="updated_at", deleted_column="is_deleted", schedule=None,
    fields=(field("permit_id", "string"), field("holder", "string"), field("issued_on", "date"),
            field("changed_at", "timestamp"), field("fee", "decimal", (18, 4)), field("pages", "int")),
    checks=(), footer_key="permit.footer", conditional_key="permit.conditional",
)
FIELDS = DATASET.field_names


def ddl(dialect: sa.Dialect, fields: tuple[str, ...] = FIELDS) -> str:
    return " ".join(str(CreateTable(target_table_for(DATASET, fields)).compile(dialect=dialect)).split())


def test_mysql_table_has_an_indexable_key_microsecond_timestamps_and_utf8mb4():
    text = ddl(mysql.dialect())
    assert "permit_id VARCHAR(128) NOT NULL" in text
    assert "holder MEDIUMTEXT" in text and "changed_at DATETIME(6)" in text
    assert "fee NUMERIC(18, 4)" in text and "pages BIGINT" in text and "_commit_version BIGINT NOT NULL" in text
    assert "PRIMARY KEY (permit_id)" in text and "CHARSET=utf8mb4" in text


def test_postgresql_table_types_follow_the_catalog():
    text = ddl(postgresql.dialect())
    assert "permit_id TEXT NOT NULL" in text and "issued_on DATE" in text
    assert "changed_at TIMESTAMP WITHOUT TIME ZONE" in text and "fee NUMERIC(18, 4)" in text
    assert "PRIMARY KEY (permit_id)" in text


def test_sqlite_keeps_decimals_as_exact_text():
    text = ddl(sqlite.dialect())
    assert "fee TEXT" in text
    bind = _DecimalText().process_bind_param(Decimal("12345678901234.5600"), sqlite.dialect())
    assert bind == "12345678901234.5600"
    assert _DecimalText().process_result_value(bind, sqlite.dialect()) == Decimal("12345678901234.5600")


def test_table_has_only_the_delivered_fields_in_catalog_order():
    table = target_table_for(DATASET, ("pages", "permit_id", "fee"))
    assert [c.name for c in table.columns] == ["permit_id", "fee", "pages", "_commit_version", "_disputed"]
    assert [c.name for c in table.primary_key.columns] == ["permit_id"]


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()])
def test_on_conflict_update_only_when_the_incoming_change_is_at_least_as_new(dialect):
    table = target_table_for(DATASET, FIELDS)
    text = " ".join(str(_upsert_statement(dialect.name, table, "permit_id").compile(dialect=dialect)).split())
    assert "ON CONFLICT (permit_id) DO UPDATE SET" in text
    assert text.endswith("WHERE permit._commit_version <= excluded._commit_version")
    assert "permit_id = excluded.permit_id" not in text


def test_mysql_on_duplicate_key_assigns_the_version_last():
    table = target_table_for(DATASET, FIELDS)
    text = " ".join(str(_upsert_statement("mysql", table, "permit_id").compile(dialect=mysql.dialect())).split())
    tail = text.split("ON DUPLICATE KEY UPDATE", 1)[1]
    assignments = [a.strip().split(" = ")[0] for a in tail.split("END,")]
    assert assignments == ["holder", "issued_on", "changed_at", "fee", "pages", "_disputed", "_commit_version"]
    assert "_commit_version) >= permit._commit_version" in tail or "new._commit_version >= permit._commit_version" in tail


def test_grant_without_the_key_is_refused_before_any_connection():
    table = pa.table({"holder": ["x"], "_change_type": ["upsert"], "_commit_version": pa.array([1], pa.int64())})
    with pytest.raises(ConfigError) as err:
        deliver(table, DATASET, ("holder",), "postgresql://u:s3cr3t@db.invalid:5432/x")
    assert "permit_id" in err.value.message and "s3cr3t" not in err.value.message
