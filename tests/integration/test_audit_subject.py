"""``govshare audit subject KEY``: exactly the deliveries that contained a record, over full and
--since pulls by two subscribers across three versions (updates, a delete, a quarantined record)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.integration.conftest import build_cli_world

pytestmark = pytest.mark.integration

HOUSEHOLD, GENERAL = "approval-household", "approval-general"


def _ok(world, *args: str):  # noqa: ANN001, ANN202
    done = world.run(*args)
    assert done.returncode == 0, (args, done.stderr)
    world.assert_clean(done)
    return done


def _change(world, sql: str, key: str) -> None:  # noqa: ANN001
    source = world.env["AIRFLOW_CONN_POPULATION_DB"].removeprefix("sqlite:///")
    with sqlite3.connect(source) as db:
        changed = db.execute(sql + " WHERE upper(trim(id_number)) = ?", (key,)).rowcount
    assert changed == 1


def _pull(world, tmp: Path, subscriber: str, *extra: str) -> int:  # noqa: ANN001
    out = tmp / f"{subscriber}-{len(list(tmp.iterdir()))}.parquet"
    _ok(world, "pull", "population", "--subscriber", subscriber, "--purpose", "核验", "--out", str(out), *extra)
    return [r for r in world.access_log() if r["event"] == "delivery"][-1]["seq"]


def test_audit_subject_returns_exactly_the_deliveries_that_held_the_record(tmp_path_factory, demo_sources) -> None:  # noqa: ANN001
    root = tmp_path_factory.mktemp("subject")
    world = build_cli_world(root, demo_sources)
    tmp = root / "pulls"
    tmp.mkdir()
    a, b, c = world.id_numbers[0], world.id_numbers[1], world.id_numbers[2]
    setup = {r["seq"] for r in world.access_log() if r["event"] == "delivery" and r["dataset"] == "population"}
    assert len(setup) == 1  # build_cli_world's own full pull of version 1
    full_v1 = _pull(world, tmp, HOUSEHOLD)

    _change(world, "UPDATE population_person SET household_address = '新住址一', updated_at = datetime('now', '+8 hours')", b)
    assert "published version 2" in _ok(world, "sync", "population").stdout
    since1_v2 = _pull(world, tmp, HOUSEHOLD, "--since", "1")

    _change(world, "UPDATE population_person SET household_address = '新住址二', updated_at = datetime('now', '+8 hours')", a)
    _change(world, "UPDATE population_person SET is_deleted = 1, updated_at = datetime('now', '+8 hours')", c)
    assert "published version 3" in _ok(world, "sync", "population").stdout
    since2_v3 = _pull(world, tmp, GENERAL, "--since", "2")
    full_v3 = _pull(world, tmp, HOUSEHOLD)
    since1_v3 = _pull(world, tmp, GENERAL, "--since", "1")
    since3_v3 = _pull(world, tmp, HOUSEHOLD, "--since", "3")  # nothing after version 3

    def subject(key: str) -> dict[int, dict]:
        done = _ok(world, "audit", "subject", key, "--json")
        assert key not in done.stdout  # never the key itself
        return {r["seq"]: r for r in json.loads(done.stdout)}

    held_a = subject(a)
    assert set(held_a) == setup | {full_v1, since2_v3, full_v3, since1_v3}
    assert held_a[since2_v3]["subscriber"] == GENERAL and held_a[since2_v3]["since"] == 2
    assert held_a[full_v3]["purpose"] == "核验" and held_a[full_v3]["outcome"] == "confirmed"
    assert {r["as"] for r in held_a.values()} == {"upsert"}
    held_b = subject(b)
    assert set(held_b) == setup | {full_v1, since1_v2, full_v3, since1_v3}
    held_c = subject(c)
    assert set(held_c) == setup | {full_v1, since2_v3, since1_v3}
    assert held_c[since2_v3]["as"] == "delete" and held_c[full_v1]["as"] == "upsert"
    assert since3_v3 not in held_a | held_b | held_c

    # a record quarantined and never published was in no delivery
    source = world.env["AIRFLOW_CONN_POPULATION_DB"].removeprefix("sqlite:///")
    with sqlite3.connect(source) as db:
        ids = [r[0] for r in db.execute("SELECT id_number FROM population_person WHERE is_deleted = 0")]
    import pyarrow as pa

    from common.catalog import load_catalog
    from validation.rules import normalise_keys

    normalised = normalise_keys(load_catalog(world.catalog).dataset("population"), pa.array(ids, pa.string())).to_pylist()
    published = set(world.id_numbers)
    unpublished = [raw for raw, n in zip(ids, normalised, strict=True) if raw and n and n not in published]
    assert unpublished  # the demo's defective rows: quarantined, never published
    assert subject(unpublished[0]) == {}
    text = _ok(world, "audit", "subject", a)
    assert text.stdout.startswith("5 delivery(ies)") and a not in text.stdout
    queries = [r for r in world.access_log() if r["event"] == "subject-query"]
    assert queries and not any(a in json.dumps(q) for q in queries)
    assert world.run("audit", "subject").returncode == 2
    _ok(world, "audit", "verify")
