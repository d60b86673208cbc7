"""The error branches decide what happens next: each has one exit code, and only the temporary
ones are retried."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from common import errors

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("common", "keys", "connectors", "validation", "sharing", "lineage", "govshare", "dags")


@pytest.mark.parametrize(("branch", "code", "retriable"), [
    (errors.InternalError, 1, False),
    (errors.ConfigError, 2, False),
    (errors.IntegrityError, 3, False),
    (errors.AccessDenied, 4, False),
    (errors.GateBlocked, 5, False),
    (errors.TemporaryFailure, 75, True),
    (errors.SourceUnavailable, 75, True),
    (errors.TargetUnavailable, 75, True),
    (errors.PublishConflict, 75, True),
])
def test_each_branch_has_its_exit_code(branch, code, retriable) -> None:
    exc = branch("what was being done", problems=["what to do"])
    assert (exc.exit_code, exc.retriable) == (code, retriable)
    assert exc.lines()[-1] == "  - what to do"


def test_a_bug_says_so() -> None:
    assert errors.InternalError("publish before protect").lines()[0] == "a bug: publish before protect"
    assert errors.EX_TEMPFAIL == 75


def test_the_product_raises_a_branch_never_the_root() -> None:
    """A bare GovshareError says nothing about what happens next (retry? fix the config? a bug?)."""
    bare = [f"{path.relative_to(ROOT)}:{n}" for top in PRODUCT for path in sorted((ROOT / top).rglob("*.py"))
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if re.search(r"\b(raise|return) GovshareError\(", line)]
    assert bare == []
