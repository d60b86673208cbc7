"""The validation gate: past the catalog's thresholds a run publishes nothing (exit 5).

It judges what the run read and what it would publish against the current published state:
the share of rejected rows, of rows lacking a required field, a full snapshot that collapsed,
and mass deletes.
"""

from __future__ import annotations

from common.catalog import Dataset
from common.run import Gate, GateThresholds, Protected, ValidateTotals
from common.times import utc_now


def judge(dataset: Dataset, validated: ValidateTotals, protected: Protected, state_rows: int) -> Gate:
    """The gate's measures for this run and its decision (``why`` says what blocked it)."""
    limits, total = dataset.gate, validated.rows
    missing = validated.summary.failed("required") if validated.summary else 0
    snapshot = protected.kind == "snapshot" and state_rows > 0
    rejected_share = round(validated.rejected / total, 6) if total else 0.0
    missing_share = round(missing / total, 6) if total else 0.0
    snapshot_ratio = round(protected.upserts / state_rows, 6) if snapshot else None
    delete_share = round(protected.deletes / state_rows, 6) if state_rows else 0.0
    reasons = []
    if rejected_share > limits.max_rejected_share:
        reasons.append(f"{rejected_share:.1%} of {total} rows were rejected (at most {limits.max_rejected_share:.0%} allowed)")
    if missing_share > limits.max_missing_required_share:
        reasons.append(f"{missing_share:.1%} of rows lack a required field (at most {limits.max_missing_required_share:.0%})")
    if snapshot_ratio is not None and snapshot_ratio < limits.min_snapshot_ratio:
        reasons.append(f"the full snapshot has {protected.upserts} rows against {state_rows} published: the row count "
                       f"collapsed (at least {limits.min_snapshot_ratio:.0%} expected)")
    if state_rows and delete_share > limits.max_delete_share:
        reasons.append(f"{protected.deletes} deletes against {state_rows} published rows (at most {limits.max_delete_share:.0%})")
    thresholds = GateThresholds(limits.max_rejected_share, limits.max_missing_required_share, limits.min_snapshot_ratio,
                                limits.max_delete_share)
    return Gate(at=utc_now(), rows=total, rejected_share=rejected_share, missing_required_share=missing_share,
                state_rows=state_rows, snapshot_ratio=snapshot_ratio, delete_share=delete_share, thresholds=thresholds,
                passed=not reasons, blocked=bool(reasons), why="; ".join(reasons) or None)
