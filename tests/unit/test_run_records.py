"""common.run: the typed stage results survive JSON, and a run's record adds its parts up."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import pytest

from common.catalog import load_catalog
from common.errors import InternalError
from common.home import Home
from common.run import (
    CrossrefFinding,
    CrossrefResult,
    Extracted,
    Gate,
    GateThresholds,
    GxUse,
    Plan,
    Protected,
    Published,
    QualityFiles,
    RuleSummary,
    Run,
    RunRecord,
    Staged,
    Validated,
    ValidationSummary,
    VersionProtection,
    new_run_id,
)


def rule(rule_id: str, checked: int, failed: int, gx: bool | None = True, unexpected: int | None = None) -> RuleSummary:
    return RuleSummary(rule_id, ("id_number",), "id_number", "d", checked, failed, "expect_x", gx,
                       failed if unexpected is None else unexpected)


def summary(rows: int, rejected: int, rules: tuple[RuleSummary, ...]) -> ValidationSummary:
    return ValidationSummary("population", date(2026, 12, 1), 1, rows, rows - rejected, rejected, rules)


PLAN = Plan(at="2026-12-01T00:00:00+00:00", full=False, connection_id="population_db", source_table="population_person",
            watermark_from=datetime(2026, 11, 30, 23, 0), watermark_to=datetime(2026, 12, 1, 8, 30, 0, 123456),
            nothing_new=False, parts=((None, "m"), ("m", None)), rows_estimate=10)
PROTECTED = Protected(at="t", kind="delta", upserts=5, deletes=1, superseded_in_run=0, unchanged=3,
                      deletes_of_unpublished=0, new_keys=2,
                      protection=VersionProtection({"id_number": "encrypted", "name": "plain"},
                                                   {"footer_key_id": "population.footer.v1", "column_keys": {}}, {}))
GATE = Gate(at="t", rows=10, rejected_share=0.2, missing_required_share=0.0, state_rows=100, snapshot_ratio=None,
            delete_share=0.01, thresholds=GateThresholds(0.5, 0.1, 0.5, 0.2), passed=True, blocked=False)


@pytest.mark.parametrize("result", [
    PLAN,
    Extracted("t", 1, ("m", None), 7, 1, 1),
    Validated("t", 0, 10, 8, 1, 2, summary(10, 2, (rule("a", 10, 2),)), GxUse("worker", 1.25, 1024)),
    Staged(8, 8, 1, {"footer_key_id": "population.footer.v1"}),
    PROTECTED,
    GATE,
    CrossrefResult((CrossrefFinding("x.in_y", "not in y", 5, 2, ("110***********0021",), target="y"),), "e_license"),
    QualityFiles({"json": "/r/a.json", "html": "/r/a.html"}),
    Published("t", 3, "ab" * 32),
], ids=lambda r: type(r).__name__)
def test_each_result_survives_its_json(result) -> None:
    text = json.dumps(result.to_json(), ensure_ascii=False)
    assert type(result).from_json(json.loads(text)) == result


def test_a_plan_keeps_times_exact_and_ranges_as_pairs() -> None:
    doc = PLAN.to_json()
    assert doc["watermark_to"] == "2026-12-01T08:30:00.123456"
    assert doc["parts"] == [[None, "m"], ["m", None]]
    assert Plan.from_json(doc).parts[1] == ("m", None)
    assert PLAN.rows_per_part == 5


def test_a_result_of_the_wrong_shape_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Published.from_json({"at": "t", "version": "three", "manifest_sha256": None})


def test_summaries_of_parts_add_up_rule_by_rule() -> None:
    first = summary(10, 2, (rule("a", 10, 2), rule("b", 10, 0, gx=None, unexpected=None)))
    second = summary(6, 1, (rule("a", 6, 1, gx=False), rule("b", 6, 0)))
    merged = ValidationSummary.merge([first, second])
    assert (merged.rows, merged.good, merged.rejected, merged.batches) == (16, 13, 3, 2)
    a, b = merged.rules
    assert (a.rows_checked, a.rows_failed, a.gx_success, a.gx_unexpected) == (16, 3, False, 3)
    assert (b.rows_checked, b.gx_success) == (16, None)  # GX did not run on every part: no verdict
    assert ValidationSummary.merge([]) is None
    assert merged.failed("id_number") == 3 and merged.failed("required") == 0
    assert merged.failed_by_rule() == {"a": 3}


def test_a_record_written_before_the_types_still_loads() -> None:
    """Run records under lineage/runs keep the shape they always had, including the old markers
    of a run with nothing new (protect skipped) and a gate that had not judged yet."""
    old = {"dataset": "population", "run_id": "r1", "full": False, "plan": PLAN.to_json(),
           "protect": {"at": "t", "skipped": True},
           "validate": {"rows": 0, "good": 0, "good_deletes": 0, "rejected": 0, "summary": None, "gate": {}},
           "quality": {"json": "/r/a.json"}}
    record = RunRecord.from_json(old)
    assert record.protect is None and record.validate.gate is None
    assert record.quality == QualityFiles({"json": "/r/a.json"})
    assert record.rules == () and not record.blocked


def test_a_run_adds_its_parts_up(tmp_path: Path) -> None:
    ds = load_catalog().dataset("population")
    run = Run(ds, Home(tmp_path), new_run_id("manual__2026-12-01T00:00:00+00:00"))
    run.folder.mkdir(parents=True)
    assert run.record().plan is None and run.parts == []
    with pytest.raises(InternalError, match="plan stage has no result"):
        run.require(Plan)
    run.save(PLAN)
    for part, (rows, rejected) in enumerate([(10, 2), (6, 1)]):
        run.save(Extracted("t", part, PLAN.parts[part], rows, 1, 1), part)
        assert run.record().extract is None or part == 1  # totals only once every part has read
        run.save(Validated("t", part, rows, rows - rejected, 0, rejected, summary(rows, rejected, (rule("a", rows, rejected),)),
                           GxUse("inline", 0.5)), part)
    run.save(GATE)
    record = run.record()
    assert (record.extract.rows, record.extract.deletes, record.extract.parts) == (16, 2, 2)
    assert record.extract.watermark_to == PLAN.watermark_to
    assert (record.validate.rows, record.validate.rejected, record.validate.gate) == (16, 3, GATE)
    assert record.validate.summary.rules[0].rows_failed == 3
    assert RunRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_run_ids_are_file_safe() -> None:
    assert new_run_id("manual__2026-12-01T00:00:00+00:00") == "manual__2026-12-01T00_00_00_00_00"
    assert new_run_id("../../etc") == "etc"
    assert new_run_id("..").startswith("cli_")
    assert new_run_id().startswith("cli_")
