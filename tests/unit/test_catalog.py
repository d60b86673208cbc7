"""The catalog loader: typed objects from YAML, every problem reported at once."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from common.catalog import (
    DATASET_SHAPE,
    MAX_LISTED_PROBLEMS,
    PROJECT_ROOT,
    SUBSCRIBERS_SHAPE,
    Approval,
    Keys,
    Subscriber,
    load_catalog,
    unknown_keys,
)
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


# -- strictness: unknown keys, statuses, approval dates ----------------------------------------


def test_unknown_keys_names_the_path_and_the_nearest_known_key():
    doc = {"kind": "dataset", "gaet": {}, "source": {"lookbak": "1h"}, "fields": {"a": {"type": "string"}, "b": {"chekcs": []}},
           "gate": {"max_rejected_share": 0.5, "max_delet_share": 0.1}}
    assert sorted(unknown_keys(doc, DATASET_SHAPE)) == sorted([
        "gaet: unknown key; did you mean gate?",
        "source.lookbak: unknown key; did you mean lookback?",
        "fields[1].chekcs: unknown key; did you mean checks?",
        "gate.max_delet_share: unknown key; did you mean max_delete_share?",
    ])


def test_unknown_keys_in_subscribers_grants_and_approvals():
    doc = {"kind": "subscribers", "subscribers": [
        {"id": "a", "grants": []},
        {"id": "b", "stauts": "active", "grants": [{"dataset": "x", "approval": {"id": "1", "expires_in": "2027-01-01"}}]},
    ]}
    assert list(unknown_keys(doc, SUBSCRIBERS_SHAPE)) == [
        "subscribers[1].stauts: unknown key; did you mean status?",
        "subscribers[1].grants[0].approval.expires_in: unknown key; did you mean expires_on?",
    ]


def test_unknown_key_far_from_every_known_one_lists_them_and_odd_keys_are_cut():
    assert list(unknown_keys({"zzz": 1}, Keys({"id": None, "name": None}))) == ["zzz: unknown key; known keys: id, name"]
    (problem,) = unknown_keys({"x" * 500: 1}, Keys({"id": None}))
    assert len(problem) < 120 and "(502 chars)" in problem
    assert list(unknown_keys({True: 1}, Keys({"id": None}))) == ["True: unknown key; known keys: id"]


def test_values_of_another_type_are_left_to_the_typed_checks():
    assert list(unknown_keys({"fields": ["a", "b"], "gate": 3, "source": None}, DATASET_SHAPE)) == []


def test_shipped_catalog_has_no_unknown_keys_and_everything_is_active():
    catalog = load_catalog(SHIPPED)
    assert all(s.status == "active" and s.active for s in catalog.subscribers.values())
    approval = catalog.subscriber("approval-household").grant_for("population").approval
    assert (approval.status, approval.approved_on, approval.expires_on) == ("active", date(2026, 1, 15), date(2027, 12, 31))


def _approval(**changes: object) -> Approval:
    base = {"id": "SJJ-1", "purpose": "p", "approved_by": "b", "approved_on": date(2026, 1, 15), "expires_on": date(2027, 12, 31)}
    return Approval(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("approval", "today", "why_not"),
    [
        (_approval(), date(2026, 1, 15), None),  # from its first day
        (_approval(), date(2027, 12, 31), None),  # through its last day
        (_approval(expires_on=None), date(2099, 1, 1), None),
        (_approval(), date(2026, 1, 14), "approval SJJ-1 is not in force before 2026-01-15"),
        (_approval(), date(2028, 1, 1), "approval SJJ-1 expired on 2027-12-31"),
        (_approval(status="suspended"), date(2026, 6, 1), "approval SJJ-1 is suspended"),
        (_approval(status="revoked"), date(2026, 6, 1), "approval SJJ-1 is revoked"),
    ],
)
def test_approval_in_force(approval: Approval, today: date, why_not: str | None):
    assert approval.in_force(today) == why_not


def test_subscriber_active_follows_status():
    assert Subscriber("s", "S", "external").active
    assert not Subscriber("s", "S", "external", status="suspended").active
    assert not Subscriber("s", "S", "external", status="revoked").active


def test_statuses_are_parsed(catalog_copy: Path):
    subs = catalog_copy / "subscribers.yaml"
    text = subs.read_text(encoding="utf-8")
    text = text.replace("  - id: approval-general\n", "  - id: approval-general\n    status: revoked\n")
    text = text.replace("          expires_on: 2027-12-31", "          expires_on: 2027-12-31\n          status: suspended")
    subs.write_text(text, encoding="utf-8")
    catalog = load_catalog(catalog_copy)
    assert catalog.subscriber("approval-general").status == "revoked" and not catalog.subscriber("approval-general").active
    approval = catalog.subscriber("approval-household").grant_for("population").approval
    assert approval.status == "suspended" and approval.in_force(date(2026, 6, 1)) == "approval SJJ-GX-2026-0017 is suspended"


def test_every_problem_is_counted_but_the_list_is_bounded(catalog_copy: Path):
    pop = catalog_copy / "population.yaml"
    pop.write_text(pop.read_text(encoding="utf-8") + "".join(f"extra_{n}: 1\n" for n in range(MAX_LISTED_PROBLEMS + 7)), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_catalog(catalog_copy)
    assert f"has {MAX_LISTED_PROBLEMS + 7} problem(s)" in info.value.message
    assert len(info.value.problems) == MAX_LISTED_PROBLEMS + 1
    assert info.value.problems[-1] == "... and 7 more problem(s) not listed"


def test_repeated_key_and_unknown_key_are_both_reported(catalog_copy: Path):
    pop = catalog_copy / "population.yaml"
    text = pop.read_text(encoding="utf-8").replace("    sharing: none               # 不予共享", "    sharing: none\n    sharing: unconditional")
    text = text.replace("  lookback: 1h", "  lookbak: 1h")
    pop.write_text(text, encoding="utf-8")
    first = text.splitlines().index("    sharing: none") + 1
    with pytest.raises(ConfigError) as info:
        load_catalog(catalog_copy)
    assert info.value.problems == [
        f"population.yaml: line {first + 1}: key 'sharing' is repeated (first on line {first}); a repeated key would "
        "silently replace the first value",
        "population.yaml: source.lookbak: unknown key (line 11); did you mean lookback?",
    ]
