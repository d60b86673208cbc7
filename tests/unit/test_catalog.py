"""The catalog loader: typed objects from YAML, every problem reported at once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from common.catalog import PROJECT_ROOT, load_catalog
from common.errors import ConfigError

SHIPPED = PROJECT_ROOT / "catalogs"


@pytest.fixture
def catalog_copy(tmp_path: Path) -> Path:
    target = tmp_path / "catalogs"
    shutil.copytree(SHIPPED, target)
    return target


def test_shipped_catalog_loads_three_datasets_and_demo_subscribers():
    catalog = load_catalog(SHIPPED)
    assert set(catalog.datasets) == {"population", "legal_entity", "e_license"}
    assert set(catalog.subscribers) >= {"approval-general", "approval-household"}
    assert catalog.dataset("population").key == "id_number"
    assert catalog.dataset("population").connection_id == "population_db"
    assert catalog.dataset("legal_entity").source_table == "legal_entity"


def test_contract_sharing_classes_of_key_fields():
    catalog = load_catalog(SHIPPED)
    assert catalog.dataset("legal_entity").field("uscc").sharing == "unconditional"
    assert catalog.dataset("e_license").field("license_id").sharing == "unconditional"
    assert catalog.dataset("population").field("id_number").sharing == "conditional"
    assert catalog.dataset("population").field("phone").sharing == "none"


def test_general_subscriber_gets_only_unconditional_fields():
    catalog = load_catalog(SHIPPED)
    general = catalog.subscriber("approval-general")
    for dataset_id, grant in general.grants.items():
        ds = catalog.dataset(dataset_id)
        assert grant.fields, dataset_id
        assert {ds.field(f).sharing for f in grant.fields} == {"unconditional"}


def test_household_grant_has_conditional_fields_under_an_approval_and_no_withheld_field():
    catalog = load_catalog(SHIPPED)
    grant = catalog.subscriber("approval-household").grant_for("population")
    assert grant.approval is not None and grant.approval.id
    assert "id_number" in grant.fields
    assert "phone" not in grant.fields
    assert catalog.subscriber("approval-household").grant_for("legal_entity") is None


def test_decimal_type_is_parsed():
    field = load_catalog(SHIPPED).dataset("legal_entity").field("registered_capital")
    assert (field.type, field.decimal) == ("decimal", (18, 4))


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(ConfigError, match="population"):
        load_catalog(SHIPPED).dataset("nope")


def test_broken_catalog_lists_every_problem_at_once(catalog_copy: Path):
    pop = catalog_copy / "population.yaml"
    text = pop.read_text(encoding="utf-8")
    text = text.replace("sharing: none               # 不予共享", "sharing: secret")
    text = text.replace("checks: [id_number]", "checks: [no_such_check]")
    text = text.replace("key: id_number", "key: nobody")
    pop.write_text(text, encoding="utf-8")
    subs = catalog_copy / "subscribers.yaml"
    subs.write_text(subs.read_text(encoding="utf-8").replace("dataset: e_license", "dataset: e_licence"), encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        load_catalog(catalog_copy)
    problems = "\n".join(info.value.problems)
    assert "sharing 'secret'" in problems
    assert "unknown check 'no_such_check'" in problems
    assert "key 'nobody'" in problems
    assert "'e_licence' is not in the catalog" in problems
    assert len(info.value.problems) >= 4


def test_withheld_field_cannot_be_granted(catalog_copy: Path):
    subs = catalog_copy / "subscribers.yaml"
    subs.write_text(subs.read_text(encoding="utf-8").replace("fields: [unconditional, conditional]", "fields: [unconditional, conditional, phone]"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_catalog(catalog_copy)
    assert any("population.phone is 不予共享" in p for p in info.value.problems)


def test_conditional_grant_without_approval_is_refused(catalog_copy: Path):
    subs = catalog_copy / "subscribers.yaml"
    text = subs.read_text(encoding="utf-8")
    subs.write_text(text.replace("        fields: [unconditional]\n      - dataset: legal_entity", "        fields: [unconditional, id_number]\n      - dataset: legal_entity"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_catalog(catalog_copy)
    assert any("need an approval" in p and "id_number" in p for p in info.value.problems)


def test_source_identifiers_must_be_plain(catalog_copy: Path):
    pop = catalog_copy / "population.yaml"
    pop.write_text(pop.read_text(encoding="utf-8").replace("table: population_person", 'table: "x; DROP TABLE y"'), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_catalog(catalog_copy)
    assert any("source.table" in p for p in info.value.problems)


def test_record_check_declared_on_a_field_is_refused(catalog_copy: Path):
    pop = catalog_copy / "population.yaml"
    pop.write_text(pop.read_text(encoding="utf-8").replace("checks: [not_future]", "checks: [{valid_range: {from: a, until: b}}]"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_catalog(catalog_copy)
    assert any("is a record check" in p for p in info.value.problems)


def test_unreadable_yaml_is_a_problem_not_a_crash(catalog_copy: Path):
    (catalog_copy / "broken.yaml").write_text("kind: dataset\nid: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_catalog(catalog_copy)
    assert any(p.startswith("broken.yaml") for p in info.value.problems)
