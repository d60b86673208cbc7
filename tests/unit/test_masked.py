"""Masked fields and masked grants (脱敏): the mask itself, what the catalog accepts, and the
published schema's masked columns (a mask declared or changed is a schema change)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from common.catalog import PROJECT_ROOT, Mask, load_catalog, masked_column
from common.errors import ConfigError
from keys.masking import mask_values
from sharing.publish import encrypted_columns, key_groups, upsert_schema, with_masked
from sharing.schema_change import catalog_schema, schema_changes

SHIPPED = PROJECT_ROOT / "catalogs"
MASKED_GRANT = """
  - id: sub-masked
    name: masked
    grants:
      - dataset: population
        fields: [sex_code]
        masked: [id_number, name]
        approval: {id: A-1, purpose: 核验, approved_by: 局, approved_on: 2026-01-01}
"""


@pytest.mark.parametrize(("value", "first", "last", "shown"), [
    ("110101199003071234", 3, 4, "110***********1234"),
    ("11010119900307123X", 3, 4, "110***********123X"),
    ("张三", 1, 0, "张*"),
    ("欧阳娜娜", 1, 0, "欧***"),
    ("张", 1, 0, "*"),  # nothing of a value as short as what is kept
    ("1234567", 3, 4, "*******"),
    ("", 1, 0, ""),
    ("ＡＢＣ", 0, 1, "**Ｃ"),  # characters, not bytes
])
def test_a_mask_keeps_the_ends_and_stars_the_rest(value: str, first: int, last: int, shown: str) -> None:
    assert mask_values(pa.array([value]), first, last).to_pylist() == [shown]


def test_a_mask_keeps_nulls_null_and_refuses_negative_counts() -> None:
    assert mask_values(pa.array(["张三", None]), 1, 0).to_pylist() == ["张*", None]
    with pytest.raises(ValueError):
        mask_values(pa.array(["x"]), -1, 0)


@pytest.fixture
def catalog_copy(tmp_path: Path) -> Path:
    target = tmp_path / "catalogs"
    shutil.copytree(SHIPPED, target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _problems(catalog: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_catalog(catalog)
    return "\n".join(info.value.problems)


def test_the_shipped_catalog_declares_masks_and_a_masked_grant_resolves_to_masked_columns(catalog_copy: Path) -> None:
    with open(catalog_copy / "subscribers.yaml", "a", encoding="utf-8") as fh:
        fh.write(MASKED_GRANT)
    catalog = load_catalog(catalog_copy)
    population = catalog.dataset("population")
    assert population.field("id_number").mask == Mask(3, 4) and population.field("name").mask == Mask(1, 0)
    grant = catalog.subscriber("sub-masked").grant_for("population")
    assert grant.fields == ("id_number", "name", "sex_code") and grant.masked == ("id_number", "name")
    assert grant.columns == ("id_number__masked", "name__masked", "sex_code")
    # each masked column is encrypted under a group of its own, apart from the plain field's
    groups = key_groups(population)
    assert {"id_number", "name", "id_number__masked", "name__masked"} <= set(groups)
    assert {"id_number__masked", "name__masked"} <= set(encrypted_columns(population))
    assert {"id_number__masked", "name__masked"} <= set(upsert_schema(population).names)


def test_masked_values_are_computed_from_the_batch(catalog_copy: Path) -> None:
    population = load_catalog(catalog_copy).dataset("population")
    batch = pa.record_batch({"id_number": ["110101199003071234"], "name": ["李四"]})
    masked = with_masked(population, batch)
    assert masked.column("id_number__masked").to_pylist() == ["110***********1234"]
    assert masked.column("name__masked").to_pylist() == ["李*"]


def test_the_catalog_refuses_every_bad_mask_and_masked_grant_at_once(catalog_copy: Path) -> None:
    pop = catalog_copy / "population.yaml"
    _edit(pop, "    checks: [not_future]\n", "    checks: [not_future]\n    mask: {first: 1}\n")  # birth_date: a date
    _edit(pop, "    sharing: none               # 不予共享\n", "    sharing: none\n    mask: {last: 4}\n")  # phone
    _edit(pop, "    mask: {first: 1}            # 张*", "    mask: {first: -1, last: yes}")
    _edit(pop, "  household_address:\n", "  address__masked:\n    type: string\n    sharing: conditional\n"
                                         "    sensitivity: personal\n  household_address:\n")
    problems = _problems(catalog_copy)
    assert "field 'birth_date': mask applies to string fields" in problems
    assert "field 'phone': a 不予共享 (none) field is never published, masked or not" in problems
    assert "mask.first must be a whole number" in problems and "mask.last must be a whole number" in problems
    assert "field 'address__masked': field names ending in __masked are reserved" in problems


def test_the_catalog_refuses_every_bad_masked_grant_at_once(catalog_copy: Path) -> None:
    with open(catalog_copy / "subscribers.yaml", "a", encoding="utf-8") as fh:
        fh.write("""
  - id: sub-bad
    grants:
      - dataset: population
        fields: [id_number]
        masked: [id_number, household_address, nosuch]
""")
    problems = _problems(catalog_copy)
    assert "id_number is granted both plain (fields) and masked" in problems
    assert "population.household_address declares no mask" in problems
    assert "masked: 'nosuch' is not a field of population" in problems


def test_a_masked_grant_of_a_conditional_field_needs_its_approval(catalog_copy: Path) -> None:
    with open(catalog_copy / "subscribers.yaml", "a", encoding="utf-8") as fh:
        fh.write(MASKED_GRANT.replace("        approval: {id: A-1, purpose: 核验, approved_by: 局, approved_on: 2026-01-01}\n",
                                      ""))
    assert re.search(r"conditional \(有条件共享\) fields id_number, name need an approval", _problems(catalog_copy))


def test_declaring_or_changing_a_mask_is_a_change_of_the_published_schema(catalog_copy: Path) -> None:
    before = catalog_schema(load_catalog(catalog_copy).dataset("population"))
    assert before.fields[masked_column("name")].mask == "first=1,last=0"
    _edit(catalog_copy / "population.yaml", "    mask: {first: 1}            # 张*", "    mask: {first: 1, last: 1}")
    _edit(catalog_copy / "population.yaml", "    mask: {first: 3, last: 4}", "")
    after = catalog_schema(load_catalog(catalog_copy).dataset("population"))
    described = sorted(c.describe() for c in schema_changes(before, after))
    assert described == ["field id_number__masked was removed (it was conditional)",
                         "masked column name__masked changed its mask from first=1,last=0 to first=1,last=1"]
