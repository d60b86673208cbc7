"""The schema comparison behind the catalog-change rule (sharing.schema_change), without I/O."""

from __future__ import annotations

import pyarrow as pa
import pytest

from common.catalog import load_catalog
from common.errors import ConfigError, IntegrityError
from common.files import canonical_json
from common.schema import arrow_type
from sharing.schema_change import (
    FieldChange,
    PublishedField,
    Schema,
    arrow_schema,
    catalog_schema,
    check_catalog,
    check_span,
    manifest_schema,
    schema_changes,
)
from sharing.store import MANIFEST_FORMAT, Manifest

KEY = PublishedField("k", "string", "unconditional")


def schema(*fields: PublishedField, withheld: tuple[str, ...] = ()) -> Schema:
    return Schema("k", {f.name: f for f in (KEY, *fields)}, frozenset(withheld))


def manifest(version: int, s: Schema) -> Manifest:
    doc = {"format": MANIFEST_FORMAT, "dataset": "d", "version": version, "key": s.key,
           "schema": [{"name": f.name, "type": f.type, "sharing": f.sharing} for f in s.fields.values()],
           "withheld_fields": sorted(s.withheld)}
    return Manifest(version, canonical_json(doc), doc)


@pytest.mark.parametrize(("before", "after", "expected"), [
    (schema(PublishedField("c", "decimal128(18, 4)", "unconditional")), schema(PublishedField("c", "decimal128(20, 2)", "unconditional")),
     [FieldChange("c", "type", "decimal128(18, 4)", "decimal128(20, 2)")]),
    (schema(PublishedField("s", "string", "unconditional")), schema(PublishedField("s", "int64", "conditional")),
     [FieldChange("s", "type", "string", "int64")]),
    (schema(PublishedField("s", "string", "conditional")), schema(PublishedField("s", "string", "unconditional")),
     [FieldChange("s", "sharing", "conditional", "unconditional")]),
    (schema(PublishedField("s", "string", "unconditional")), schema(withheld=("s",)), [FieldChange("s", "sharing", "unconditional", "none")]),
    (schema(withheld=("s",)), schema(PublishedField("s", "string", "unconditional")), [FieldChange("s", "sharing", "none", "unconditional")]),
    (schema(PublishedField("s", "string", "unconditional")), schema(), [FieldChange("s", "removed", "unconditional", "")]),
    (schema(), schema(PublishedField("s", "string", "conditional")), [FieldChange("s", "added", "", "conditional")]),
    (schema(withheld=("p",)), schema(), []),  # a 不予共享 field removed: it was never published
    (schema(), schema(withheld=("p",)), []),
])
def test_schema_changes(before: Schema, after: Schema, expected: list[FieldChange]) -> None:
    assert schema_changes(before, after) == expected


def test_the_shipped_catalog_round_trips_through_its_manifest_types() -> None:
    for ds in load_catalog().datasets.values():
        names = [f.name for f in ds.published_fields]
        parsed = arrow_schema(catalog_schema(ds), names)
        assert [parsed.field(n).type for n in names] == [arrow_type(ds.field(n)) for n in names]
        assert not parsed.field(ds.key).nullable


def test_an_unknown_manifest_type_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError, match="'large_string'"):
        arrow_schema(schema(PublishedField("s", "large_string", "unconditional")), ["k", "s"])


def test_a_span_over_a_change_names_the_version_and_what_to_pull() -> None:
    v1 = schema(PublishedField("s", "string", "unconditional"))
    v3 = schema(PublishedField("s", "int64", "unconditional"))
    manifests = [manifest(1, v1), manifest(2, v1), manifest(3, v3), manifest(4, v3)]
    assert check_span("d", manifests, 3, 4) == v3
    assert check_span("d", manifests, 1, 4, names=["k"]) == v1  # the key alone did not change
    with pytest.raises(ConfigError, match=r"version 3 changed the schema \(field s changed type from string to int64\), "
                                          r"so no pull can span it: pull --since 3 or a full pull"):
        check_span("d", manifests, 2, 4)
    assert manifest_schema(manifests[0]) == v1


def test_a_granted_field_must_be_published_at_its_class_or_a_more_open_one() -> None:
    ds = load_catalog().dataset("population")
    published = catalog_schema(ds)
    check_catalog(ds, published, ["id_number", "person_status"], 1)
    looser = Schema(published.key, {**published.fields, "name": PublishedField("name", "string", "unconditional")}, published.withheld)
    check_catalog(ds, looser, ["id_number", "name"], 1)  # made less shared: the grant covers it at its new class
    stricter = Schema(published.key, {**published.fields, "sex_code": PublishedField("sex_code", "string", "conditional")},
                      published.withheld)
    with pytest.raises(ConfigError, match="field sex_code is published conditional, the catalog shares it unconditional"):
        check_catalog(ds, stricter, ["id_number", "sex_code"], 2)
    with pytest.raises(ConfigError, match="not published there"):
        check_catalog(ds, Schema(published.key, {"id_number": published.fields["id_number"]}, frozenset()), ["id_number", "sex_code"], 1)


def test_the_parsed_types_are_pyarrow_types() -> None:
    parsed = arrow_schema(schema(PublishedField("c", "decimal128(18, 4)", "unconditional"), PublishedField("d", "date32[day]", "conditional"),
                                 PublishedField("t", "timestamp[us]", "unconditional")), ["c", "d", "t"])
    assert parsed.types == [pa.decimal128(18, 4), pa.date32(), pa.timestamp("us")]
