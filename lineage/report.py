"""The lineage report of one version, for auditors: JSON, and one self-contained HTML page
(zh-CN first, English on request) that opens offline and prints on A4, its flow drawn as inline
SVG; and an index page of every dataset, version and run.

Source and watermark range, checks and their results, quarantined rows by rule, protection per
field with key ids (never keys), the verified manifest, and every delivery of the version.
Counts and names only: no record values appear anywhere in it.
"""

from __future__ import annotations

import html
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from common.catalog import SHARING_LABELS, Catalog
from common.errors import ConfigError
from common.files import private_dir, write_private
from common.home import Home
from common.run import RunRecord
from common.times import SOURCE_ZONE, utc_now
from keys.keystore import Keystore
from lineage import openlineage
from lineage.audit import AccessLog
from lineage.runs import blocked_runs, load_run_record, runs_dir
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


def write_report(report: dict[str, Any], out: Path, fmt: str, lang: str = "zh") -> Path:
    """Written 0600 (folders made for it 0700), whatever the umask: it names subscribers and purposes."""
    text = json.dumps(report, ensure_ascii=False, indent=2) if fmt == "json" else render_html(report, lang)
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


# -- the pages: one per version, and an index of every dataset, version and run ----------------
#
# Self-contained and offline: inline CSS, the flow drawn as inline SVG, no script, no external
# resource. Chinese first (zh-CN), English on request. Times in Beijing time.

LABELS: dict[str, dict[str, str]] = {
    "zh": {
        "html_lang": "zh-CN", "title": "数据血缘", "version": "版本", "generated": "生成时间",
        "counts_only": "仅含计数与名称，不含任何记录值。", "local_time": "北京时间",
        "flow": "数据流向", "source": "数据源", "provider": "提供部门", "view": "视图", "rows_read": "读取行数",
        "watermark_from": "自", "watermark_to": "至", "beginning": "（起始）",
        "checks": "质量检查", "rows_checked": "检查行数", "rows_passed": "通过行数", "quarantined": "隔离行数",
        "published": "发布", "upserts": "新增/更新", "deletes": "删除",
        "protection": "字段保护", "plain": "无条件共享·明文", "encrypted": "有条件共享·加密", "masked": "脱敏",
        "withheld": "不予共享·不提供",
        "signature": "签名", "algorithm": "算法", "key_id": "密钥编号", "manifest_sha256": "清单 SHA-256",
        "subscribers": "订阅方", "delivered_rows": "交付行数", "deliveries_n": "交付次数", "none_yet": "尚无交付",
        "version_section": "版本信息", "kind": "类型", "created": "创建时间", "run": "运行编号",
        "previous": "上一版本清单", "first_version": "无（首个版本）", "integrity": "完整性",
        "source_section": "数据源", "connection": "连接", "watermark": "水位范围",
        "rows_section": "行数", "checks_section": "质量检查", "gate": "发布闸门", "measure": "指标",
        "observed": "实测", "threshold": "阈值", "result": "结果", "passed_ok": "通过", "failed": "未通过",
        "rule": "规则", "fields": "字段", "check": "检查", "gx": "GX 期望", "rows_failed": "失败行数",
        "quarantine_by_rule": "按规则隔离", "rows": "行数", "no_quarantine": "没有记录被隔离。",
        "protection_section": "逐字段保护", "field": "字段", "label": "名称", "sharing": "共享类别",
        "sensitivity": "敏感度", "action": "处理", "deliveries": "交付记录", "time": "时间",
        "subscriber": "订阅方", "purpose": "申请事由", "approval": "审批", "not_delivered": "尚未交付给任何订阅方。",
        "cross": "跨库核对（仅标记，不拒收）", "against": "核对对象", "not_found": "未找到", "note": "说明",
        "none_declared": "本数据集未声明。", "cases": "隔离案件（全部运行）", "no_case": "无案件。",
        "feedback": "向提供部门的质量反馈", "none": "无。", "disputes": "异议", "event": "事件",
        "dispute": "异议编号", "record": "记录", "reason": "理由/说明", "blocked": "被闸门拦截的运行",
        "when": "时间", "why": "原因", "openlineage": "OpenLineage 事件", "type": "类型", "job": "作业",
        "run_id": "运行编号", "manifest": "清单摘要", "item": "项目", "value": "值", "files": "文件",
        "path": "路径", "role": "角色", "bytes": "大小（字节）", "digest": "SHA-256", "data_keys": "数据密钥",
        "group": "分组", "schema": "字段结构", "mask_of": "脱敏自", "type_col": "数据类型",
        "withheld_fields": "不予共享的字段", "access_log": "访问日志", "system_columns": "系统列",
        "format": "格式", "dataset": "数据集", "key": "主键", "column_protection": "列加密",
        "index_title": "数据血缘总览", "datasets": "数据集", "versions": "版本", "runs": "运行",
        "no_version": "尚无已发布版本。", "no_runs": "无运行记录。", "status": "状态", "page": "页面",
        "open": "查看", "st_published": "已发布", "st_blocked": "被拦截", "st_unchanged": "无变化",
        "st_incomplete": "未完成", "st_unreadable": "无法读取", "yes": "是", "no": "否",
        "back": "返回总览",
    },
    "en": {
        "html_lang": "en", "title": "Lineage", "version": "Version", "generated": "Generated",
        "counts_only": "Counts and names only; no record values.", "local_time": "Beijing time",
        "flow": "Flow", "source": "Source", "provider": "Provider", "view": "View", "rows_read": "Rows read",
        "watermark_from": "After", "watermark_to": "Up to", "beginning": "(the beginning)",
        "checks": "Checks", "rows_checked": "Rows checked", "rows_passed": "Rows passed", "quarantined": "Quarantined",
        "published": "Published", "upserts": "Upserts", "deletes": "Deletes",
        "protection": "Protection", "plain": "Unconditional · plain", "encrypted": "Conditional · encrypted",
        "masked": "Masked", "withheld": "Not shared · withheld",
        "signature": "Signature", "algorithm": "Algorithm", "key_id": "Key id", "manifest_sha256": "Manifest SHA-256",
        "subscribers": "Subscribers", "delivered_rows": "Rows delivered", "deliveries_n": "Deliveries",
        "none_yet": "No delivery yet",
        "version_section": "Version", "kind": "Kind", "created": "Created", "run": "Run",
        "previous": "Previous manifest", "first_version": "none (first version)", "integrity": "Integrity",
        "source_section": "Source", "connection": "Connection", "watermark": "Watermark range",
        "rows_section": "Rows", "checks_section": "Checks", "gate": "Gate", "measure": "Measure",
        "observed": "Observed", "threshold": "Threshold", "result": "Result", "passed_ok": "passed", "failed": "failed",
        "rule": "Rule", "fields": "Fields", "check": "Check", "gx": "GX expectation", "rows_failed": "Rows failed",
        "quarantine_by_rule": "Quarantine by rule", "rows": "Rows", "no_quarantine": "No row was quarantined.",
        "protection_section": "Protection per field", "field": "Field", "label": "Label", "sharing": "Sharing class",
        "sensitivity": "Sensitivity", "action": "Action", "deliveries": "Deliveries", "time": "Time",
        "subscriber": "Subscriber", "purpose": "Purpose", "approval": "Approval",
        "not_delivered": "Not delivered to anyone yet.",
        "cross": "Cross-dataset checks (flagged, not rejected)", "against": "Against", "not_found": "Not found",
        "note": "Note", "none_declared": "None declared for this dataset.", "cases": "Quarantine cases (all runs)",
        "no_case": "No case.", "feedback": "Quality feedback to the provider", "none": "None.",
        "disputes": "Disputes (异议)", "event": "Event", "dispute": "Dispute", "record": "Record",
        "reason": "Reason / note", "blocked": "Runs blocked by the gate", "when": "When", "why": "Why",
        "openlineage": "OpenLineage events", "type": "Type", "job": "Job", "run_id": "Run id",
        "manifest": "Manifest summary", "item": "Item", "value": "Value", "files": "Files", "path": "Path",
        "role": "Role", "bytes": "Bytes", "digest": "SHA-256", "data_keys": "Data keys", "group": "Group",
        "schema": "Schema", "mask_of": "Masked from", "type_col": "Type", "withheld_fields": "Withheld fields",
        "access_log": "Access log", "system_columns": "System columns", "format": "Format", "dataset": "Dataset",
        "key": "Key", "column_protection": "Column encryption",
        "index_title": "Lineage index", "datasets": "Datasets", "versions": "Versions", "runs": "Runs",
        "no_version": "No published version yet.", "no_runs": "No run recorded.", "status": "Status", "page": "Page",
        "open": "open", "st_published": "published", "st_blocked": "blocked", "st_unchanged": "no change",
        "st_incomplete": "incomplete", "st_unreadable": "unreadable", "yes": "yes", "no": "no",
        "back": "Back to the index",
    },
}
LANGS = tuple(LABELS)


def _labels(lang: str) -> dict[str, str]:
    code = "zh" if lang.lower().startswith("zh") else lang
    if code not in LABELS:
        raise ConfigError(f"--lang {lang}: one of {', '.join(LANGS)}")
    return LABELS[code]


def local_time(value: Any, t: dict[str, str]) -> str:
    """An ISO time with a zone as Beijing time, to the second: '2026-12-07 11:20:05 (北京时间)'.
    A time without a zone is a source time, already local."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(SOURCE_ZONE)
    return f"{moment:%Y-%m-%d %H:%M:%S} ({t['local_time']})"


def _time_cell(value: Any, t: dict[str, str]) -> tuple[str, bool] | str:
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=SOURCE_ZONE)
    stamp = moment.astimezone(SOURCE_ZONE).isoformat(timespec="seconds")
    return (f"<time datetime='{html.escape(stamp)}'>{html.escape(local_time(value, t))}</time>", True)


def _short(digest: Any, n: int = 16) -> str:
    text = "" if digest is None else str(digest)
    return text if len(text) <= n else text[:n] + "…"


def _digest_cell(digest: Any, n: int = 16) -> tuple[str, bool]:
    e = html.escape
    return (f"<span class='digest' title='{e(str(digest or ''))}'>{e(_short(digest, n))}</span>", True)


def delivery_totals(report: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per subscriber, in order of first delivery: rows delivered (summed) and deliveries (counted)."""
    totals: dict[str, dict[str, int]] = {}
    for d in report["deliveries"]:
        entry = totals.setdefault(str(d["subscriber"]), {"rows": 0, "deliveries": 0})
        entry["rows"] += int(d.get("rows") or 0)
        entry["deliveries"] += 1
    return totals


def protection_counts(report: dict[str, Any]) -> dict[str, int]:
    """Fields per protection: plain (无条件共享), encrypted (有条件共享), masked variants, withheld (不予共享)."""
    actions = [p["action"] for p in report["protection"]]
    masked = sum(1 for entry in report["manifest"].get("schema", []) if entry.get("masked_of"))
    return {"plain": actions.count("plain"), "encrypted": actions.count("encrypted"), "masked": masked,
            "withheld": actions.count("withheld")}


_CSS = """
*{box-sizing:border-box}
body{font-family:"Noto Sans CJK SC","Noto Sans SC","Microsoft YaHei","PingFang SC","WenQuanYi Micro Hei",system-ui,sans-serif;
margin:0 auto;padding:1.2rem 1.5rem;color:#1d2733;max-width:1300px;line-height:1.45}
h1{font-size:1.45rem;margin:.2rem 0 .4rem}h2{font-size:1.12rem;margin-top:1.8rem;border-bottom:1px solid #ccd;padding-bottom:.2rem}
h3{font-size:1rem;margin:1.2rem 0 .4rem}
table{border-collapse:collapse;width:100%;font-size:.86rem;table-layout:auto}
th,td{border:1px solid #ccd;padding:.28rem .45rem;text-align:left;vertical-align:top;overflow-wrap:anywhere;word-break:break-word}
th{background:#eef2f7}.num{text-align:right;font-variant-numeric:tabular-nums}
.digest{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:.8rem;word-break:break-all}
.ok{color:#176c2a;font-weight:600;white-space:nowrap}.bad{color:#a11;font-weight:600;white-space:nowrap}.muted{color:#667}
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.2rem 1rem;margin:.4rem 0}
dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere;word-break:break-word}
figure{margin:.6rem 0}svg.flow{width:100%;height:auto;display:block}
nav a{color:#1c4f8c}a{color:#1c4f8c}
@media print{
@page{size:A4;margin:12mm}
body{max-width:none;padding:0;font-size:9.5pt}
h2{break-after:avoid;page-break-after:avoid}
figure,svg.flow,tr{break-inside:avoid;page-break-inside:avoid}
table{font-size:8.5pt}nav{display:none}a{color:inherit;text-decoration:none}
}
"""

_BOX_W, _GAP, _LINE, _HEAD = 200, 24, 19, 34


def _svg_box(x: int, y: int, h: int, title: str, lines: list[tuple[str, str, str | None]], fill: str) -> list[str]:
    """A box with a title and lines (label, value, data-count name or None): the value right-aligned."""
    e = html.escape
    out = [f"<g><rect x='{x}' y='{y}' width='{_BOX_W}' height='{h}' rx='8' fill='{fill}' stroke='#5a6b80'/>",
           f"<text x='{x + 10}' y='{y + 22}' font-size='15' font-weight='700' fill='#1d2733'>{e(title)}</text>"]
    for n, (label, value, count) in enumerate(lines):
        ly = y + _HEAD + 14 + n * _LINE
        shown = label if len(label) <= 24 else label[:23] + "…"
        out.append(f"<text x='{x + 10}' y='{ly}' font-size='12' fill='#33404f'><title>{e(label)}</title>{e(shown)}</text>")
        attr = f" data-count='{e(count)}'" if count else ""
        out.append(f"<text x='{x + _BOX_W - 10}' y='{ly}' font-size='12' font-weight='600' text-anchor='end' "
                   f"fill='#1d2733'{attr}>{e(value)}</text>")
    out.append("</g>")
    return out


def _arrow(x1: int, y1: int, x2: int, y2: int) -> str:
    return (f"<line x1='{x1}' y1='{y1}' x2='{x2 - 2}' y2='{y2}' stroke='#5a6b80' stroke-width='2' "
            "marker-end='url(#arrow)'/>")


def render_flow_svg(report: dict[str, Any], lang: str = "zh") -> str:
    """The flow of one version as inline SVG: source -> checks -> published -> protection ->
    version and signature -> each subscriber. Every number sits in a <text data-count=...>."""
    t = _labels(lang)
    ds, v, src, rows, checks = report["dataset"], report["version"], report["source"], report["rows"], report["checks"]
    wm = src.get("watermark") or {}

    def n(value: Any) -> str:
        return "–" if value is None else str(value)

    def wm_time(value: Any) -> str:
        return local_time(value, t).split(" (")[0] if value else t["beginning"]

    columns: list[tuple[str, list[tuple[str, str, str | None]], str]] = [
        (t["source"], [(t["provider"], "", None), (str(ds["provider"]), "", None), (t["view"], str(src.get("table")), None),
                       (t["rows_read"], n(src.get("rows_read")), "rows_read"),
                       (t["watermark_from"], wm_time(wm.get("from")), None), (t["watermark_to"], wm_time(wm.get("to")), None)],
         "#e8f0fb"),
        (t["checks"], [(t["rows_checked"], n(checks.get("rows_checked")), "rows_checked"),
                       (t["rows_passed"], n(checks.get("rows_passed")), "rows_passed"),
                       (t["quarantined"], n(rows.get("quarantined")), "quarantined")]
         + [(rule, str(count), f"quarantined:{rule}") for rule, count in report["quarantine_by_rule"].items()],
         "#fdf3e3"),
        (t["published"], [(t["upserts"], n(rows.get("upserts")), "upserts"), (t["deletes"], n(rows.get("deletes")), "deletes")],
         "#e6f4ea"),
        (t["protection"], [(t[k], str(c), k) for k, c in protection_counts(report).items()], "#f1ebfa"),
        (f"{t['version']} {v['number']}", [(t["kind"], str(v["kind"]), None),
                                            (t["algorithm"], str(v["signature"].get("algorithm")), None),
                                            (t["key_id"], str(v["signature"].get("key_id")), None),
                                            (t["manifest_sha256"], "", None), (_short(v["manifest_sha256"], 24), "", None)],
         "#e9eef3"),
    ]
    top = 44
    height = _HEAD + 12 + max(len(lines) for _, lines, _ in columns) * _LINE
    subs = delivery_totals(report)
    sub_h = _HEAD + 12 + 2 * _LINE
    stack = max(1, len(subs)) * (sub_h + 12) - 12
    total_h = top + max(height, stack) + 16
    width = 6 * _BOX_W + 5 * _GAP + 20
    parts = [f"<svg class='flow' xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {total_h}' width='100%' "
             f"role='img' aria-label='{html.escape(t['flow'])}' font-family='Noto Sans CJK SC, Microsoft YaHei, PingFang SC, WenQuanYi Micro Hei, sans-serif'>",
             "<defs><marker id='arrow' viewBox='0 0 10 10' refX='9' refY='5' markerWidth='7' markerHeight='7' "
             "orient='auto-start-reverse'><path d='M0,0 L10,5 L0,10 z' fill='#5a6b80'/></marker></defs>",
             f"<text x='10' y='24' font-size='16' font-weight='700' fill='#1d2733'>{html.escape(t['flow'])} · "
             f"{html.escape(str(ds['title']))} · {html.escape(t['version'])} {v['number']}</text>"]
    mid = top + height // 2
    for i, (title, lines, fill) in enumerate(columns):
        x = 10 + i * (_BOX_W + _GAP)
        parts += _svg_box(x, top, height, title, lines, fill)
        parts.append(_arrow(x + _BOX_W, mid, x + _BOX_W + _GAP, mid if i < 4 else mid))
    x = 10 + 5 * (_BOX_W + _GAP)
    vx = 10 + 4 * (_BOX_W + _GAP) + _BOX_W
    parts.pop()  # the last column's arrow fans out to the subscribers instead
    if not subs:
        parts += _svg_box(x, top, sub_h, t["subscribers"], [(t["none_yet"], "", None)], "#f5f5f5")
        parts.append(_arrow(vx, mid, x, top + sub_h // 2))
    for k, (subscriber, total) in enumerate(subs.items()):
        y = top + k * (sub_h + 12)
        parts += _svg_box(x, y, sub_h, subscriber, [(t["delivered_rows"], str(total["rows"]), f"delivered:{subscriber}"),
                                                    (t["deliveries_n"], str(total["deliveries"]), f"deliveries:{subscriber}")],
                          "#fff8e1")
        parts.append(f"<path d='M{vx},{mid} C{vx + 14},{mid} {x - 14},{y + sub_h // 2} {x - 2},{y + sub_h // 2}' "
                     "fill='none' stroke='#5a6b80' stroke-width='2' marker-end='url(#arrow)'/>")
    parts.append("</svg>")
    return "\n".join(parts)


def _share(value: Any) -> str:
    return "–" if value is None else f"{float(value) * 100:.2f}%"


_GATE_MEASURES = (("rejected_share", "max_rejected_share", "≤"), ("missing_required_share", "max_missing_required_share", "≤"),
                  ("snapshot_ratio", "min_snapshot_ratio", "≥"), ("delete_share", "max_delete_share", "≤"))


def _gate_html(gate: dict[str, Any], t: dict[str, str]) -> str:
    if not gate:
        return f"<p>{html.escape(t['none'])}</p>"
    thresholds = gate.get("thresholds") or {}
    rows = []
    for measure, limit, sign in _GATE_MEASURES:
        observed, bound = gate.get(measure), thresholds.get(limit)
        if observed is None:
            verdict: Any = "–"
        else:
            good = bound is None or (observed <= bound if sign == "≤" else observed >= bound)
            verdict = (f"<span class='ok'>{html.escape(t['passed_ok'])}</span>", True) if good else \
                (f"<span class='bad'>{html.escape(t['failed'])}</span>", True)
        rows.append([measure, _share(observed), f"{sign} {_share(bound)}" if bound is not None else "–", verdict])
    table = _table([t["measure"], t["observed"], t["threshold"], t["result"]], rows)
    shown = {measure for measure, _, _ in _GATE_MEASURES} | {"thresholds"}
    rest: dict[str, Any] = {}
    for key, value in gate.items():
        if key in shown:
            continue
        if isinstance(value, bool):
            value = t["yes"] if value else t["no"]
        elif key == "at":
            value = _time_cell(value, t)
        rest[key] = "–" if value is None else value
    return table + _dl(rest)


def _flat(value: Any) -> str:
    """A small dict or list as readable text (never JSON): 'a: 1; b: 2'."""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_flat(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_flat(v) for v in value)
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return _short(value)
    return "–" if value is None else str(value)


def _manifest_html(doc: dict[str, Any], t: dict[str, str]) -> str:
    log = doc.get("access_log") or {}
    checkpoint = log.get("checkpoint") or {}
    summary = {t["format"]: doc.get("format"), t["dataset"]: doc.get("dataset"), t["version"]: doc.get("version"),
               t["kind"]: doc.get("kind"), t["key"]: doc.get("key"), t["created"]: _time_cell(doc.get("created_at"), t),
               t["run"]: doc.get("run_id"),
               t["previous"]: _flat(doc["previous"]) if doc.get("previous") else t["first_version"],
               t["withheld_fields"]: ", ".join(doc.get("withheld_fields") or []) or "–",
               t["access_log"]: f"{log.get('count', '–')} · {_short(log.get('hash'))} · "
                                f"checkpoint {checkpoint.get('size', '–')} / {_short(checkpoint.get('root'))}"}
    parts = [_dl(summary), f"<h3>{html.escape(t['files'])}</h3>",
             _table([t["path"], t["role"], t["rows"], t["bytes"], t["digest"]],
                    [[f.get("path"), f.get("role"), f.get("rows"), f.get("bytes"), _digest_cell(f.get("sha256"))]
                     for f in doc.get("files", [])]),
             f"<h3>{html.escape(t['data_keys'])}</h3>",
             _table([t["group"], t["key_id"]], [[k.get("group"), _digest_cell(k.get("key_id"), 40)]
                                               for k in doc.get("data_keys", [])])]
    protection = doc.get("protection") or {}
    if protection:
        parts += [f"<h3>{html.escape(t['column_protection'])}</h3>",
                  _table([t["role"], t["algorithm"], "footer", "kms", t["fields"]],
                         [[role, p.get("algorithm"), p.get("footer"), p.get("kms"),
                           ", ".join(c for cols in (p.get("column_keys") or {}).values() for c in cols)]
                          for role, p in protection.items() if isinstance(p, dict)])]
    parts += [f"<h3>{html.escape(t['schema'])}</h3>",
              _table([t["field"], t["type_col"], t["sharing"], t["sensitivity"], t["action"], t["mask_of"]],
                     [[s.get("name"), s.get("type"), SHARING_LABELS.get(s.get("sharing"), s.get("sharing")),
                       s.get("sensitivity"), s.get("protection"), s.get("masked_of") or ""] for s in doc.get("schema", [])])]
    if doc.get("system_columns"):
        parts += [f"<h3>{html.escape(t['system_columns'])}</h3>", _dl(dict(doc["system_columns"]))]
    return "\n".join(parts)


def render_html(report: dict[str, Any], lang: str = "zh", index_href: str | None = None) -> str:
    t = _labels(lang)
    ds, v = report["dataset"], report["version"]
    e = html.escape
    src, wm = report["source"], report["source"].get("watermark") or {}
    checks = report["checks"]
    ok, bad = (f"<span class='ok'>{e(t['passed_ok'])}</span>", True), (f"<span class='bad'>{e(t['failed'])}</span>", True)
    parts = [
        f"<!DOCTYPE html><html lang='{t['html_lang']}'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{e(t['title'])}: {e(ds['id'])} {e(t['version'])} {v['number']}</title><style>{_CSS}</style></head><body>",
        f"<nav><a href='{e(index_href)}'>{e(t['back'])}</a></nav>" if index_href else "",
        f"<h1>{e(t['title'])} · {e(ds['title'])} ({e(ds['id'])}) · {e(t['version'])} {v['number']}</h1>",
        f"<p class='muted'>{e(t['generated'])} {e(local_time(report['generated_at'], t))}. {e(t['counts_only'])}</p>",
        f"<figure>{render_flow_svg(report, lang)}</figure>",
        f"<h2>{e(t['version_section'])}</h2>",
        _dl({t["kind"]: v["kind"], t["created"]: _time_cell(v["created_at"], t), t["run"]: v["run_id"],
             t["manifest_sha256"]: _digest_cell(v["manifest_sha256"], 64),
             t["previous"]: _flat(v["previous"]) if v["previous"] else t["first_version"],
             t["signature"]: f"{v['signature']['algorithm']} · {v['signature']['key_id']}", t["integrity"]: v["integrity"]}),
        f"<h2>{e(t['source_section'])}</h2>",
        _dl({t["provider"]: ds["provider"], t["connection"]: src.get("connection_id"), t["view"]: src.get("table"),
             t["watermark"]: f"{t['watermark_from']} {local_time(wm.get('from'), t) if wm.get('from') else t['beginning']} "
                             f"{t['watermark_to']} {local_time(wm.get('to'), t)}",
             t["rows_read"]: src.get("rows_read")}),
        f"<h2>{e(t['rows_section'])}</h2>",
        _dl({t["upserts"]: report["rows"]["upserts"], t["deletes"]: report["rows"]["deletes"],
             t["quarantined"]: report["rows"]["quarantined"]}),
        f"<h2>{e(t['checks_section'])}</h2>",
        _dl({t["rows_checked"]: checks["rows_checked"], t["rows_passed"]: checks["rows_passed"]}),
        f"<h3>{e(t['gate'])}</h3>",
        _gate_html(checks["gate"], t),
        _table([t["rule"], t["fields"], t["check"], t["gx"], t["rows_checked"], t["rows_failed"], t["result"]],
               [[r["rule"], ", ".join(r["fields"]), r["description"], r["expectation"], r["checked"], r["failed"],
                 ok if not r.get("failed") else bad] for r in checks["rules"]]),
        f"<h2>{e(t['quarantine_by_rule'])}</h2>",
        _table([t["rule"], t["rows"]], [[k, n] for k, n in report["quarantine_by_rule"].items()])
        if report["quarantine_by_rule"] else f"<p>{e(t['no_quarantine'])}</p>",
        f"<h2>{e(t['protection_section'])}</h2>",
        _table([t["field"], t["label"], t["sharing"], t["sensitivity"], t["action"], t["key_id"]],
               [[p["field"], p["label"], f"{p['sharing_label']} ({p['sharing']})", p["sensitivity"], p["action"],
                 _digest_cell(p["key_id"], 40) if p["key_id"] else ""] for p in report["protection"]]),
        f"<h2>{e(t['deliveries'])}</h2>",
        _table(["#", t["time"], t["subscriber"], t["purpose"], t["approval"], t["fields"], t["rows"]],
               [[d["seq"], _time_cell(d["time"], t), d["subscriber"], d["purpose"], d["approval_id"] or "",
                 ", ".join(d["fields"] or []), d["rows"]] for d in report["deliveries"]])
        if report["deliveries"] else f"<p>{e(t['not_delivered'])}</p>",
        f"<h2>{e(t['cross'])}</h2>",
        _table([t["check"], t["against"], t["rows_checked"], t["not_found"], t["note"]],
               [[c["description"] or c["check"], c["target"], c["rows_checked"], c["not_found"], c["note"] or ""]
                for c in report["cross_dataset"]]) if report["cross_dataset"] else f"<p>{e(t['none_declared'])}</p>",
        f"<h2>{e(t['cases'])}</h2>",
        _dl(report["quarantine_cases"]) if report["quarantine_cases"] else f"<p>{e(t['no_case'])}</p>",
        f"<h2>{e(t['feedback'])}</h2>",
        _dl(report["quality_feedback"]) if report["quality_feedback"] else f"<p>{e(t['none'])}</p>",
        f"<h2>{e(t['disputes'])}</h2>",
        _table(["#", t["time"], t["event"], t["dispute"], t["record"], t["subscriber"], t["reason"], t["version"]],
               [[d["seq"], _time_cell(d["time"], t), d["event"], d["dispute_id"], d["masked_key"] or "",
                 d["subscriber"] or d["by"] or "", d["reason"] or d["note"] or "", d["version"] or ""]
                for d in report["disputes"]]) if report["disputes"] else f"<p>{e(t['none'])}</p>",
        f"<h2>{e(t['blocked'])}</h2>",
        _table([t["run"], t["when"], t["why"]], [[b["run_id"], _time_cell(b["at"], t), b["why"]] for b in report["blocked_runs"]])
        if report["blocked_runs"] else f"<p>{e(t['none'])}</p>",
        f"<h2>{e(t['openlineage'])}</h2>",
        _table([t["type"], t["time"], t["job"], t["run_id"]],
               [[o["eventType"], _time_cell(o["eventTime"], t), o["job"], o["runId"]] for o in report["openlineage_events"]]),
        f"<h2>{e(t['manifest'])}</h2>",
        _manifest_html(report["manifest"], t),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


# -- the index of every dataset, version and run -------------------------------------------


def _run_rows(home: Home, dataset_id: str) -> list[dict[str, Any]]:
    folder = runs_dir(home, dataset_id)
    if not folder.is_dir():
        return []
    rows = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = RunRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            rows.append({"run_id": path.stem, "status": "unreadable", "at": None, "version": None})
            continue
        if record.blocked:
            status, at = "blocked", record.gate.at if record.gate else None
        elif record.publish is not None:
            status = "published" if record.publish.version is not None else "unchanged"
            at = record.publish.at
        else:
            status, at = "incomplete", record.gate.at if record.gate else None
        rows.append({"run_id": record.run_id, "status": status, "at": at,
                     "version": record.publish.version if record.publish else None})
    return rows


def build_index(catalog: Catalog, home: Home) -> dict[str, Any]:
    """Every dataset of the catalog, its published versions (from their manifests) and its runs."""
    datasets = []
    for ds in catalog.datasets.values():
        store = SharingStore(home.store, ds.id)
        versions = []
        for number in store.versions():
            doc = store.read_manifest(number).doc
            versions.append({"number": number, "kind": doc.get("kind"), "created_at": doc.get("created_at"),
                             "rows": doc.get("rows", {}), "page": f"{ds.id}/v{number}.html"})
        datasets.append({"id": ds.id, "title": ds.title, "provider": ds.provider, "versions": versions,
                         "runs": _run_rows(home, ds.id)})
    return {"report": "govshare-lineage-index/1", "generated_at": utc_now(), "datasets": datasets}


def render_index(index: dict[str, Any], lang: str = "zh") -> str:
    t = _labels(lang)
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang='{t['html_lang']}'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>{e(t['index_title'])}</title><style>{_CSS}</style></head><body>",
             f"<h1>{e(t['index_title'])}</h1>",
             f"<p class='muted'>{e(t['generated'])} {e(local_time(index['generated_at'], t))}. {e(t['counts_only'])}</p>"]
    for ds in index["datasets"]:
        parts.append(f"<h2 id='{e(ds['id'])}'>{e(ds['title'])} ({e(ds['id'])})</h2>")
        parts.append(f"<p class='muted'>{e(t['provider'])}: {e(str(ds['provider']))}</p>")
        parts.append(f"<h3>{e(t['versions'])}</h3>")
        if ds["versions"]:
            parts.append(_table(
                [t["version"], t["kind"], t["created"], t["upserts"], t["deletes"], t["quarantined"], t["page"]],
                [[v["number"], v["kind"], _time_cell(v["created_at"], t), v["rows"].get("upserts"), v["rows"].get("deletes"),
                  v["rows"].get("quarantined"),
                  (f"<a href='{e(quote(v['page']))}'>{e(t['open'])} v{v['number']}</a>", True)] for v in ds["versions"]]))
        else:
            parts.append(f"<p>{e(t['no_version'])}</p>")
        parts.append(f"<h3>{e(t['runs'])}</h3>")
        if ds["runs"]:
            parts.append(_table([t["run_id"], t["status"], t["time"], t["version"]],
                                [[r["run_id"], t[f"st_{r['status']}"], _time_cell(r["at"], t), r["version"] or ""]
                                 for r in ds["runs"]]))
        else:
            parts.append(f"<p>{e(t['no_runs'])}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_all(catalog: Catalog, home: Home, out_dir: Path, lang: str = "zh") -> tuple[Path, list[Path]]:
    """DIR/index.html and DIR/<dataset>/v<N>.html for every published version (files 0600, folders 0700)."""
    index = build_index(catalog, home)
    pages = []
    try:
        private_dir(out_dir)
        for ds in index["datasets"]:
            for v in ds["versions"]:
                report = build_report(catalog, home, ds["id"], v["number"])
                pages.append(write_private(out_dir / v["page"], render_html(report, lang, index_href="../index.html")))
        return write_private(out_dir / "index.html", render_index(index, lang)), pages
    except OSError as exc:
        raise ConfigError(f"--out {out_dir}: cannot write the lineage pages ({exc.strerror})") from None


def _cell(value: Any) -> str:
    if isinstance(value, tuple):  # (markup, trusted): markup made here, not data
        return value[0]
    return html.escape("" if value is None else str(value))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _dl(items: dict[str, Any]) -> str:
    return "<dl>" + "".join(f"<dt>{html.escape(str(k))}</dt><dd>{_cell(v)}</dd>" for k, v in items.items()) + "</dl>"
