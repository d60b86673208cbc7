"""Hostile access: subscribers and approvals in every state, denied pulls, disputes outside the grant.

One row per case: the CLI arguments, the expected exit code, a fragment of the message, and what
must stay intact (no output written, a denial recorded in the access log, nothing flagged).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
PURPOSE = "户籍迁移审批 核验申请人身份"


@dataclass(frozen=True)
class PullCase:
    name: str
    dataset: str
    subscriber: str
    purpose: str | None
    exit_code: int
    message: str
    denied: bool  # a "denied" record must be appended


PULLS = [
    PullCase("active subscriber, approval in force", "population", "sub-active", PURPOSE, 0, "access log record", False),
    PullCase("suspended subscriber", "legal_entity", "sub-suspended", PURPOSE, 4, "is suspended", True),
    PullCase("revoked subscriber", "legal_entity", "sub-revoked", PURPOSE, 4, "is revoked", True),
    PullCase("approval not yet in force", "population", "sub-approval-future", PURPOSE, 4, "not in force before 2999-01-01", True),
    PullCase("approval expired", "population", "sub-approval-expired", PURPOSE, 4, "expired on 2020-12-31", True),
    PullCase("approval suspended", "population", "sub-approval-suspended", PURPOSE, 4, "is suspended", True),
    PullCase("approval revoked", "population", "sub-approval-revoked", PURPOSE, 4, "is revoked", True),
    PullCase("no grant for the dataset", "e_license", "sub-active", PURPOSE, 4, "has no grant", True),
    PullCase("unknown subscriber", "population", "nobody", PURPOSE, 4, "not registered", True),
    PullCase("an ID number as subscriber", "population", "110101199003074258", PURPOSE, 4, "not shown", True),
    PullCase("missing purpose", "population", "sub-active", None, 4, "--purpose", True),
    PullCase("blank purpose", "population", "sub-active", "   ", 4, "--purpose", True),
    PullCase("purpose too long", "population", "sub-active", "审" * 201, 4, "at most 200", True),
    PullCase("unknown dataset is not a denial", "nonesuch", "sub-active", PURPOSE, 2, "unknown dataset", False),
]


@pytest.mark.parametrize("case", PULLS, ids=[c.name for c in PULLS])
def test_pull_access_states(cli_world, tmp_path: Path, case: PullCase) -> None:
    out = tmp_path / "out.parquet"
    args = ["pull", case.dataset, "--subscriber", case.subscriber, "--out", str(out)]
    if case.purpose is not None:
        args += ["--purpose", case.purpose]
    before = cli_world.access_log()
    result = cli_world.run(*args)
    assert result.returncode == case.exit_code, result.stderr
    assert case.message in (result.stderr if case.exit_code else result.stdout)
    cli_world.assert_clean(result)
    assert out.exists() == (case.exit_code == 0)
    added = cli_world.access_log()[len(before):]
    if case.denied:
        assert [r["event"] for r in added] == ["denied"]
        denial = added[0]
        assert denial["dataset"] == case.dataset and case.message in denial["reason"]
        assert "110101199003074258" not in json.dumps(denial, ensure_ascii=False)
        assert "purpose" not in denial
        if case.subscriber.startswith(("sub-", "nobody")):
            assert denial["subscriber"] == case.subscriber
    elif case.exit_code == 0:
        assert [(r["event"], r.get("outcome")) for r in added] == [("delivery", "pending"), ("delivery-complete", "confirmed")]
        assert added[1]["delivery"] == added[0]["seq"]
    else:
        assert added == []
    assert cli_world.run("audit", "verify").returncode == 0


@dataclass(frozen=True)
class DisputeCase:
    name: str
    subscriber: str
    key: str  # "published" (a published USCC), or the literal key
    exit_code: int
    message: str


DISPUTES = [
    DisputeCase("no grant, published key", "approval-household", "published", 4, "cannot dispute"),
    DisputeCase("no grant, unpublished key", "approval-household", "91110000MA00000000", 4, "cannot dispute"),
    DisputeCase("suspended, published key", "sub-suspended", "published", 4, "cannot dispute"),
    DisputeCase("suspended, unpublished key", "sub-suspended", "91110000MA00000000", 4, "cannot dispute"),
    DisputeCase("revoked, published key", "sub-revoked", "published", 4, "cannot dispute"),
    DisputeCase("revoked, unpublished key", "sub-revoked", "91110000MA00000000", 4, "cannot dispute"),
    DisputeCase("unknown, published key", "nobody", "published", 4, "cannot dispute"),
    DisputeCase("unknown, unpublished key", "nobody", "91110000MA00000000", 4, "cannot dispute"),
]


@pytest.mark.parametrize("case", DISPUTES, ids=[c.name for c in DISPUTES])
def test_dispute_outside_the_grant_flags_nothing_and_reveals_nothing(cli_world, case: DisputeCase) -> None:
    key = cli_world.usccs[0] if case.key == "published" else case.key
    log = cli_world.home / "disputes" / "legal_entity.jsonl"
    before = log.read_bytes() if log.exists() else b""
    result = cli_world.run("dispute", "legal_entity", key, "--subscriber", case.subscriber, "--reason", "名称有误")
    assert result.returncode == case.exit_code
    assert case.message in result.stderr
    cli_world.assert_clean(result)
    assert key not in result.stderr
    assert (log.read_bytes() if log.exists() else b"") == before  # nothing flagged


def test_dispute_refusal_is_the_same_whether_or_not_the_key_is_published(cli_world) -> None:
    for subscriber in ("approval-household", "sub-suspended", "sub-revoked", "nobody"):
        published = cli_world.run("dispute", "legal_entity", cli_world.usccs[0], "--subscriber", subscriber, "--reason", "x")
        unknown = cli_world.run("dispute", "legal_entity", "91110000MA00000000", "--subscriber", subscriber, "--reason", "x")
        assert (published.returncode, published.stderr) == (unknown.returncode, unknown.stderr)
