"""On sources built to the contract with a known set of defective rows, the quarantine holds
exactly the defective rows, each under the rule it breaks, and no version holds any of them."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from govshare.cli import main
from keys.keystore import Keystore
from keys.protection import decryption_properties

pytestmark = pytest.mark.integration

# defect kind of the demo generator -> the rule id that must catch it
EXPECTED_RULE = {
    ("population", "wrong_check_char"): "id_number.id_number",
    ("population", "impossible_date"): "id_number.id_number",
    ("population", "unknown_sex_code"): "sex_code.code_list",
    ("population", "blank_name"): "name.not_blank",
    ("population", "future_birth_date"): "birth_date.not_future",
    ("population", "birth_date_mismatch"): "birth_date_matches_id",
    ("population", "sex_mismatch"): "sex_matches_id",
    ("legal_entity", "wrong_check_char"): "uscc.uscc",
    ("legal_entity", "negative_capital"): "registered_capital.not_negative",
    ("legal_entity", "blank_name"): "entity_name.not_blank",
    ("legal_entity", "unknown_status"): "entity_status.code_list",
    ("e_license", "wrong_check_char"): "license_id.license_id",
    ("e_license", "valid_until_before_valid_from"): "valid_range",
    ("e_license", "holder_id_invalid"): "id_by_type",
}
KEYS = {"population": "id_number", "legal_entity": "uscc", "e_license": "license_id"}


@pytest.mark.parametrize("dataset", ["population", "legal_entity", "e_license"])
def test_quarantine_holds_exactly_the_defective_rows_under_their_rules(dataset, home, sources, demo_sources, tmp_path):
    assert main(["sync", dataset]) == 0
    decrypt = decryption_properties(Keystore(home.keystore))
    files = sorted((home.quarantine / dataset).glob("cli_*.parquet"))
    rows = [r for f in files for r in pq.ParquetFile(f, decryption_properties=decrypt).read(columns=[KEYS[dataset], "_rules"]).to_pylist()]
    rules_by_key = {r[KEYS[dataset]]: set(r["_rules"]) for r in rows}

    expected = {kind: keys for (ds, kind), keys in demo_sources.defect_keys.items() if ds == dataset}
    assert set(rules_by_key) == set().union(*expected.values())
    assert len(rows) == demo_sources.counts[dataset].defective
    for kind, keys in expected.items():
        for key in keys:
            assert EXPECTED_RULE[(dataset, kind)] in rules_by_key[key], (kind, EXPECTED_RULE[(dataset, kind)])

    subscriber = "approval-household" if dataset == "population" else "approval-general"
    out = tmp_path / "pulled.parquet"
    assert main(["pull", dataset, "--subscriber", subscriber, "--purpose", "核对", "--out", str(out)]) == 0
    published = set(pq.read_table(out).column(KEYS[dataset]).to_pylist())
    assert published.isdisjoint(rules_by_key)
    assert len(published) == demo_sources.counts[dataset].valid
