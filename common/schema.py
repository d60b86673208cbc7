"""Canonical Arrow schemas: the one shape batches have between connectors, validation and sharing.

Every batch carries the dataset's fields under their canonical names and types, followed by the
system columns ``updated_at`` (source change time, naive local time Asia/Shanghai) and
``is_deleted`` (1 = withdrawn at the source).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

    from common.catalog import Dataset, Field

# The column names themselves live in common.columns (the catalog loader needs them too).
from common.columns import CHANGE_TYPE, COMMIT_VERSION, DISPUTED, IS_DELETED, SYSTEM_COLUMNS, UPDATED_AT  # noqa: E402

__all__ = ["CHANGE_TYPE", "COMMIT_VERSION", "DISPUTED", "IS_DELETED", "SYSTEM_COLUMNS", "UPDATED_AT",
           "arrow_type", "fields_schema", "source_schema"]


def arrow_type(field: Field) -> pa.DataType:
    import pyarrow as pa

    if field.type == "string":
        return pa.string()
    if field.type == "date":
        return pa.date32()
    if field.type == "timestamp":
        return pa.timestamp("us")
    if field.type == "int":
        return pa.int64()
    precision, scale = field.decimal or (38, 10)
    return pa.decimal128(precision, scale)


def source_schema(dataset: Dataset) -> pa.Schema:
    """Fields plus system columns: what a connector yields."""
    import pyarrow as pa

    fields = [pa.field(f.name, arrow_type(f), nullable=f.name != dataset.key) for f in dataset.fields]
    fields += [pa.field(UPDATED_AT, pa.timestamp("us"), nullable=False), pa.field(IS_DELETED, pa.int8(), nullable=False)]
    return pa.schema(fields)


def fields_schema(dataset: Dataset, names: tuple[str, ...] | None = None) -> pa.Schema:
    """Just the named fields (all by default), in catalog order."""
    import pyarrow as pa

    wanted = set(names) if names is not None else None
    return pa.schema(
        [pa.field(f.name, arrow_type(f), nullable=f.name != dataset.key)
         for f in dataset.fields if wanted is None or f.name in wanted]
    )
