"""The lineage report of one version, for auditors: JSON, and one self-contained HTML page.

Source and watermark range, checks and their results, quarantined rows by rule, protection per
field with key ids (never keys), the verified manifest, and every delivery of the version.
Counts and names only: no record values appear anywhere in it.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from common.catalog import SHARING_LABELS, Catalog
from common.errors import ConfigError
from common.files import write_private
from common.home import Home
from common.times import SOURCE_ZONE_NAME, utc_now
from keys.keystore import Keystore
from lineage import openlineage
from lineage.audit import AccessLog
from lineage.runs import blocked_runs, load_run_record
from sharing.disputes import DisputeLog
from sharing.store import SharingStore
from sharing.verify import verify_chain, verify_files


def build_report(catalog: Catalog, home: Home, dataset_id: str, version: int | None = None) -> dict[str, Any]:
    ds = catalog.dataset(dataset_id)
    keystore = Keystore(home.keystore)
    store = SharingStore(home.store, ds.id)
    number = store.require_version(version)
    manifests = verify_chain(store, keystore, number)
    manifest = manifests[-1]
    verify_files(store, manifest)
    doc = manifest.doc
    run = load_run_record(home, ds.id, doc["run_id"])
    validated = run.validate if run else None
    signature = store.read_signature(number)
    return {
        "report": "govshare-lineage/1",
        "generated_at": utc_now(),
        "dataset": {"id": ds.id, "title": ds.title, "provider": ds.provider, "key": ds.key},
        "version": {
            "number": number,
            "kind": doc["kind"],
            "created_at": doc["created_at"],
            "run_id": doc["run_id"],
            "manifest_sha256": manifest.digest,
            "previous": doc.get("previous"),
            "signature": {"algorithm": signature.get("algorithm"), "key_id": signature.get("key_id")},
            "integrity": f"verified: signatures and chain of versions 1..{number}, digests of this version's files",
        },
        "source": doc["source"],
        "rows": doc["rows"],
        "checks": {
            "rows_checked": validated.rows if validated else None,
            "rows_passed": validated.good if validated else None,
            "rows_quarantined": doc["rows"]["quarantined"],
            "gate": validated.gate.to_json() if validated and validated.gate else {},
            "rules": [
                {"rule": r.rule_id, "fields": list(r.fields), "check": r.check, "description": r.description,
                 "expectation": r.expectation_type, "checked": r.rows_checked, "failed": r.rows_failed,
                 "gx_success": r.gx_success}
                for r in (run.rules if run else ())
            ],
        },
        "quarantine_by_rule": {r.rule_id: r.rows_failed for r in (run.rules if run else ()) if r.rows_failed},
        "protection": [
            {"field": f.name, "label": f.label, "sharing": f.sharing, "sharing_label": SHARING_LABELS[f.sharing],
             "sensitivity": f.sensitivity, "action": _action(doc, f.name), "key_id": _key_id(doc, f.name)}
            for f in ds.fields
        ],
        "manifest": doc,
        "deliveries": [
            {k: e.get(k) for k in ("seq", "time", "subscriber", "purpose", "approval_id", "version", "since", "fields", "rows",
                                   "deletes", "outcome")}
            for e in AccessLog(home.audit, keystore).deliveries(ds.id, number)
        ],
        "cross_dataset": [
            {"check": f.check, "description": f.description, "target": f.target, "checked": f.checked,
             "rows_checked": f.rows_checked, "not_found": f.not_found, "note": f.note}
            for f in (run.crossref.findings if run and run.crossref else ())
        ],
        "quality_feedback": run.quality.to_json() if run and run.quality else {},
        "quarantine_cases": _case_counts(home, ds.id),
        "disputes": [
            {k: e.get(k) for k in ("seq", "time", "event", "dispute_id", "masked_key", "subscriber", "reason", "version", "by", "note")}
            for e in DisputeLog(home, ds.id).events()
        ],
        "blocked_runs": [
            {"run_id": r.run_id, "why": r.gate.why, "at": r.gate.at}
            for r in blocked_runs(home, ds.id) if r.gate
        ],
        "openlineage_events": [
            {"eventType": e.get("eventType"), "eventTime": e.get("eventTime"), "job": e.get("job", {}).get("name"),
             "runId": e.get("run", {}).get("runId")}
            for e in openlineage.read_events(home.lineage, ds.id, doc["run_id"])
        ],
    }


def _case_counts(home: Home, dataset_id: str) -> dict[str, int]:
    import pyarrow.parquet as pq

    path = home.quarantine / dataset_id / "cases.parquet"
    if not path.is_file():
        return {}
    statuses = pq.read_table(path, columns=["status"]).column("status").to_pylist()
    return {status: statuses.count(status) for status in sorted(set(statuses))}


def write_report(report: dict[str, Any], out: Path, fmt: str) -> Path:
    """Written 0600 (folders made for it 0700), whatever the umask: it names subscribers and purposes."""
    text = json.dumps(report, ensure_ascii=False, indent=2) if fmt == "json" else render_html(report)
    try:
        return write_private(out, text)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write the lineage report ({exc.strerror}); nothing was written") from None


def _action(doc: dict[str, Any], field: str) -> str:
    for entry in doc["schema"]:
        if entry["name"] == field:
            return entry["protection"]
    return "withheld"


def _key_id(doc: dict[str, Any], field: str) -> str | None:
    for key_id, columns in doc["protection"]["upserts"].get("column_keys", {}).items():
        if field in columns:
            return key_id
    return None


_CSS = """
body{font-family:system-ui,"Noto Sans CJK SC",sans-serif;margin:2rem;color:#1d2733;max-width:75rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ccd}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{border:1px solid #ccd;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#eef2f7}.ok{color:#176c2a;font-weight:600}.bad{color:#a11;font-weight:600}
.muted{color:#667}pre{background:#f6f8fa;padding:1rem;overflow:auto;font-size:.8rem}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{font-weight:600}
"""


def render_html(report: dict[str, Any]) -> str:
    ds, v = report["dataset"], report["version"]
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang='zh-CN'><head><meta charset='utf-8'>",
        f"<title>Lineage: {e(ds['id'])} version {v['number']}</title><style>{_CSS}</style></head><body>",
        f"<h1>Lineage report · {e(ds['title'])} ({e(ds['id'])}) · version {v['number']}</h1>",
        f"<p class='muted'>Generated {e(report['generated_at'])}. Counts and names only; no record values.</p>",
        "<h2>Version</h2>",
        _dl({"kind": v["kind"], "created": v["created_at"], "run": v["run_id"], "manifest SHA-256": v["manifest_sha256"],
             "previous manifest": json.dumps(v["previous"]) if v["previous"] else "none (first version)",
             "signature": f"{v['signature']['algorithm']} by {v['signature']['key_id']}", "integrity": v["integrity"]}),
        "<h2>Source</h2>",
        _dl({"provider": ds["provider"], "connection": report["source"]["connection_id"], "view": report["source"]["table"],
             "watermark": f"after {report['source']['watermark']['from'] or 'the beginning'} up to {report['source']['watermark']['to']} ({SOURCE_ZONE_NAME})",
             "rows read": report["source"]["rows_read"]}),
        "<h2>Rows</h2>",
        _dl({"upserted": report["rows"]["upserts"], "deleted": report["rows"]["deletes"], "quarantined": report["rows"]["quarantined"]}),
        "<h2>Checks</h2>",
        _dl({"rows checked": report["checks"]["rows_checked"], "rows passed": report["checks"]["rows_passed"],
             "gate": json.dumps(report["checks"]["gate"], ensure_ascii=False)}),
        _table(["rule", "fields", "check", "GX expectation", "rows checked", "rows failed", "result"],
               [[r["rule"], ", ".join(r["fields"]), r["description"], r["expectation"], r["checked"], r["failed"],
                 ("<span class='ok'>passed</span>", True) if not r.get("failed") else ("<span class='bad'>failed</span>", True)]
                for r in report["checks"]["rules"]]),
        "<h2>Quarantine by rule</h2>",
        _table(["rule", "rows"], [[k, n] for k, n in report["quarantine_by_rule"].items()]) if report["quarantine_by_rule"] else "<p>No row was quarantined.</p>",
        "<h2>Protection per field</h2>",
        _table(["field", "label", "sharing class", "sensitivity", "action", "key id"],
               [[p["field"], p["label"], f"{p['sharing_label']} ({p['sharing']})", p["sensitivity"], p["action"], p["key_id"] or ""]
                for p in report["protection"]]),
        "<h2>Deliveries</h2>",
        _table(["#", "time", "subscriber", "purpose", "approval", "fields", "rows"],
               [[d["seq"], d["time"], d["subscriber"], d["purpose"], d["approval_id"] or "", ", ".join(d["fields"] or []), d["rows"]]
                for d in report["deliveries"]]) if report["deliveries"] else "<p>Not delivered to anyone yet.</p>",
        "<h2>Cross-dataset checks (flagged, not rejected)</h2>",
        _table(["check", "against", "rows checked", "not found", "note"],
               [[c["description"] or c["check"], c["target"], c["rows_checked"], c["not_found"], c["note"] or ""]
                for c in report["cross_dataset"]]) if report["cross_dataset"] else "<p>None declared for this dataset.</p>",
        "<h2>Quarantine cases (all runs)</h2>",
        _dl(report["quarantine_cases"]) if report["quarantine_cases"] else "<p>No case.</p>",
        "<h2>Quality feedback to the provider</h2>",
        _dl(report["quality_feedback"]) if report["quality_feedback"] else "<p>None.</p>",
        "<h2>Disputes (异议)</h2>",
        _table(["#", "time", "event", "dispute", "record", "subscriber", "reason / note", "version"],
               [[d["seq"], d["time"], d["event"], d["dispute_id"], d["masked_key"] or "", d["subscriber"] or d["by"] or "",
                 d["reason"] or d["note"] or "", d["version"] or ""] for d in report["disputes"]]) if report["disputes"] else "<p>None.</p>",
        "<h2>Runs blocked by the gate</h2>",
        _table(["run", "when", "why"], [[b["run_id"], b["at"], b["why"]] for b in report["blocked_runs"]]) if report["blocked_runs"] else "<p>None.</p>",
        "<h2>OpenLineage events</h2>",
        _table(["type", "time", "job", "run id"], [[o["eventType"], o["eventTime"], o["job"], o["runId"]] for o in report["openlineage_events"]]),
        "<h2>Manifest</h2>",
        f"<pre>{e(json.dumps(report['manifest'], ensure_ascii=False, indent=2))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _cell(value: Any) -> str:
    if isinstance(value, tuple):  # (markup, trusted): markup made here, not data
        return value[0]
    return html.escape("" if value is None else str(value))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _dl(items: dict[str, Any]) -> str:
    return "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{_cell(v)}</dd>" for k, v in items.items()) + "</dl>"
