"""Data-quality feedback (数据质量反馈) for the department that provides a dataset.

After a run, the provider gets back what was rejected and why, so it can fix its records at the
source (校核纠错) and the fix is traceable to a run and a version. The report holds counts per
rule and the *masked* keys of the affected rows, never a field value: a key keeps its first 3
and last 4 characters (enough for the provider to find the record in its own system, too little
to identify a person from the report), every other character becomes '*'.

Three files per run (``write_quality_report``): JSON (machine-readable, the file a bureau sends
back), CSV (one row per rule and masked key, for Excel) and one self-contained HTML page with the
counts per rule: the run's "Data Docs" without raw values.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from common.catalog import Dataset
from common.errors import ConfigError
from common.files import private_dir, write_private
from common.run import CrossrefResult, Gate, QualityFiles, RuleSummary, ValidationSummary
from common.times import utc_now
from keys.keystore import Keystore
from keys.masking import MASK_HEAD, MASK_TAIL, mask_keys

FORMAT = "govshare-quality-feedback/1"


@dataclass(frozen=True)
class FeedbackInputs:
    """What a run found, for its feedback: the checks' counts, the cross-dataset findings, the gate."""

    summary: ValidationSummary | None
    cross: CrossrefResult | None
    gate: Gate | None
    version: int | None  # what the run published; None: nothing
MAX_MASKED_KEYS = 1000  # masked keys listed per rule; the rest are counted
_BATCH_ROWS = 262_144
_FILE_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,199}$")
_CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

# Standards a rule's check implements (titles as the standards name themselves).
STANDARD_TITLES: Mapping[str, str] = {
    "GB 11643-1999": "公民身份号码",
    "GB 32100-2015": "法人和其他组织统一社会信用代码编码规则",
    "GB 11714-1997": "全国组织机构代码编制规则",
    "GB/T 36904": "证照标识",
    "GB/T 2260": "中华人民共和国行政区划代码",
    "GB/T 2261.1": "个人基本信息分类与代码 第1部分: 人的性别代码",
    "GB/T 3304": "中国各民族名称的罗马字母拼写法和代码",
}
CHECK_STANDARDS: Mapping[str, tuple[str, ...]] = {
    "id_number": ("GB 11643-1999",),
    "uscc": ("GB 32100-2015", "GB 11714-1997"),
    "license_id": ("GB/T 36904",),
    "issuer_code": ("GB 32100-2015", "GB/T 2260"),
    "division": ("GB/T 2260",),
    "birth_date_matches_id": ("GB 11643-1999",),
    "sex_matches_id": ("GB 11643-1999", "GB/T 2261.1"),
    "id_by_type": ("GB 11643-1999", "GB 32100-2015"),
}
CODE_LIST_STANDARDS: Mapping[str, tuple[str, ...]] = {"sex": ("GB/T 2261.1",), "ethnicity": ("GB/T 3304",)}


# -- masking ------------------------------------------------------------------------------------


# -- the report -----------------------------------------------------------------------------------


def quality_report(
    dataset: Dataset,
    run_id: str,
    summary: ValidationSummary | None,
    rejected_files: list[Path],
    keystore: Keystore,
    *,
    cross: CrossrefResult | None = None,
    version: int | None = None,
) -> dict[str, Any]:
    """JSON-ready feedback on one run for ``dataset.provider``.

    ``summary`` is the run's ValidationSummary (its parts merged; None: no rows were judged);
    ``rejected_files`` the run's quarantine files (encrypted, source schema + ``_rules``),
    streamed batch by batch for the keys of each rule. ``version`` is the version the run
    published, None when it published none.
    """
    quarantined = _quarantined_keys(dataset, rejected_files, keystore)
    counted = summary.rules if summary else ()
    rules = [_rule_entry(dataset, r.rule_id, r, quarantined.pop(r.rule_id, _RuleKeys())) for r in counted]
    # Rule ids found in the quarantine but absent from the summary (a summary of other parts).
    rules += [_rule_entry(dataset, rule_id, None, keys) for rule_id, keys in sorted(quarantined.items())]
    rows, good, rejected = (summary.rows, summary.good, summary.rejected) if summary else (0, 0, 0)
    standards = sorted({s for r in rules for s in r["standards"]})
    return {
        "format": FORMAT,
        "header": {
            "dataset": dataset.id,
            "title": dataset.title,
            "provider": dataset.provider,
            "run_id": run_id,
            "version": version,
            "generated_at": utc_now(),
            "validated_on": summary.today.isoformat() if summary else None,
            "key_field": dataset.key,
            "masking": f"keys keep their first {MASK_HEAD} and last {MASK_TAIL} characters, "
                       f"every other character is '*'; keys of {MASK_HEAD + MASK_TAIL} characters or fewer are all '*'",
            "standards": [{"code": s, "title": STANDARD_TITLES[s]} for s in standards],
        },
        "totals": {
            "rows_checked": rows,
            "rows_passed": good,
            "rows_rejected": rejected,
            "rejected_share": round(rejected / rows, 6) if rows else 0.0,
        },
        "rules": rules,
        "crossref": cross.to_json() if cross is not None else None,
    }


class _RuleKeys:
    """Quarantined rows of one rule: counts, and the first MAX_MASKED_KEYS masked keys."""

    def __init__(self) -> None:
        self.rows = 0
        self.without_key = 0
        self.masked: list[str] = []

    def add(self, masked: pa.Array) -> None:
        self.rows += len(masked)
        self.without_key += masked.null_count
        room = MAX_MASKED_KEYS - len(self.masked)
        if room > 0:
            self.masked += masked.drop_null().slice(0, room).to_pylist()


def _quarantined_keys(dataset: Dataset, files: list[Path], keystore: Keystore) -> dict[str, _RuleKeys]:
    from validation.engine import RULES_COLUMN

    by_rule: dict[str, _RuleKeys] = {}
    for batch in _batches(files, keystore, [dataset.key, RULES_COLUMN]):
        rules = batch.column(RULES_COLUMN)
        broken = pc.list_flatten(rules)
        # One masked key per (row, rule broken), in row order.
        masked = mask_keys(batch.column(dataset.key)).take(pc.list_parent_indices(rules))
        for rule_id in pc.unique(broken).to_pylist():
            by_rule.setdefault(rule_id, _RuleKeys()).add(masked.filter(pc.equal(broken, rule_id)))
    return by_rule


def _rule_entry(dataset: Dataset, rule_id: str, rule: RuleSummary | None, keys: _RuleKeys) -> dict[str, Any]:
    """One rule of the report: its counts (``rule``: None when only the quarantine knows it) and keys."""
    from validation.rules import dataset_rules

    declared = {r.id: r for r in dataset_rules(dataset)}.get(rule_id)
    check = (rule.check if rule else "") or (declared.check if declared else "")
    code_list = declared.param("list") if declared is not None else None
    standards = CHECK_STANDARDS.get(check, ()) + (CODE_LIST_STANDARDS.get(code_list or "", ()) if check == "code_list" else ())
    return {
        "rule_id": rule_id,
        "description": (rule.description if rule else "") or (declared.description if declared else ""),
        "check": check,
        "fields": list((rule.fields if rule else ()) or (declared.fields if declared else ())),
        "standards": list(standards),
        "code_list": code_list if check == "code_list" else None,
        "rows_checked": rule.rows_checked if rule else None,
        "rows_failed": rule.rows_failed if rule else None,
        "gx_success": rule.gx_success if rule else None,
        "rows_quarantined": keys.rows,
        "masked_keys": keys.masked,
        "masked_keys_omitted": keys.rows - keys.without_key - len(keys.masked),
        "rows_without_key": keys.without_key,
    }


def _batches(files: list[Path], keystore: Keystore, columns: list[str]) -> Iterator[pa.RecordBatch]:
    from keys.protection import encrypted_batches
    from validation.quarantine import SEALED_AS

    return encrypted_batches(files, keystore, columns, _BATCH_ROWS, name=SEALED_AS)


# -- files ------------------------------------------------------------------------------------------


def write_run_feedback(dataset: Dataset, run_id: str, keystore: Keystore, rejected_files: list[Path],
                       findings: FeedbackInputs, folder: Path) -> QualityFiles:
    """The run's 数据质量反馈 for the source department, written as JSON, CSV and HTML."""
    report = quality_report(dataset, run_id, findings.summary, rejected_files, keystore, cross=findings.cross,
                            version=findings.version)
    report["gate"] = findings.gate.to_json() if findings.gate else {}
    return QualityFiles({name: str(path) for name, path in write_quality_report(report, folder).items()})


def write_quality_report(report: Mapping[str, Any], folder: Path) -> dict[str, Path]:
    """Write ``<dataset>-<run_id>.json``, ``.csv`` (UTF-8 with BOM, for Excel) and ``.html``."""
    header = report["header"]
    stem = f"{header['dataset']}-{header['run_id']}"
    if not _FILE_SAFE.match(stem):
        raise ConfigError(f"cannot name quality report files after dataset {header['dataset']!r} and run "
                          f"{header['run_id']!r}: use letters, digits, '_', '.', '+', '-'")
    folder = private_dir(Path(folder))
    paths = {"json": folder / f"{stem}.json", "csv": folder / f"{stem}.csv", "html": folder / f"{stem}.html"}
    write_private(paths["json"], json.dumps(report, ensure_ascii=False, indent=2).encode("utf-8"))
    write_private(paths["csv"], render_csv(report).encode("utf-8-sig"))
    write_private(paths["html"], render_html(report).encode("utf-8"))
    return paths


def render_csv(report: Mapping[str, Any]) -> str:
    """rule_id, masked_key, description, outcome: 'rejected' (validation) or 'flagged' (cross-dataset)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["rule_id", "masked_key", "description", "outcome"])
    for rule in report["rules"]:
        for key in rule["masked_keys"]:
            writer.writerow([rule["rule_id"], _csv_text(key), rule["description"], "rejected"])
    for finding in (report.get("crossref") or {}).get("findings", []):
        for key in finding["masked_keys"]:
            writer.writerow([f"crossref.{finding['check']}", _csv_text(key), finding["description"], "flagged"])
    return out.getvalue()


def _csv_text(value: str) -> str:
    """A cell Excel shows as text, never evaluates (a key may start with '=' in a broken source)."""
    return "'" + value if value.startswith(_CSV_FORMULA_START) else value


_CSS = """
body{font-family:"Noto Sans CJK SC","Microsoft YaHei","PingFang SC",sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #bbb;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#eef}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.fail td{background:#fde8e8}tr.flag td{background:#fff6dd}
.note{color:#555;font-size:.9em}
"""


def render_html(report: Mapping[str, Any]) -> str:
    """One page, counts only: no keys, no values, no scripts, nothing loaded from elsewhere."""
    h, t = report["header"], report["totals"]
    e = _esc
    head_rows = [
        ("数据集 Dataset", f"{h['title']} ({h['dataset']})"),
        ("提供部门 Provider", h["provider"]),
        ("运行 Run", h["run_id"]),
        ("版本 Version", "未发布 not published" if h["version"] is None else h["version"]),
        ("校验日期 Validated on", h.get("validated_on") or ""),
        ("生成时间 Generated", h["generated_at"]),
        ("标准 Standards", "; ".join(f"{s['code']} {s['title']}" for s in h["standards"])),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="zh-CN"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>数据质量反馈 {e(h['title'])} {e(h['run_id'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>数据质量反馈 Data-quality feedback: {e(h['title'])}</h1>",
        _table(("", ""), [(_cell(k), _cell(v)) for k, v in head_rows], header=False),
        "<h2>总计 Totals</h2>",
        _table(("校验行数 Rows checked", "通过 Passed", "拒收 Rejected", "拒收比例 Rejected share"),
               [tuple(_num(v) for v in (t["rows_checked"], t["rows_passed"], t["rows_rejected"]))
                + (_num(f"{t['rejected_share']:.2%}"),)]),
        "<h2>校验规则 Validation rules</h2>",
        _rules_table(report["rules"]),
        '<p class="note">受影响记录的主键(已脱敏)见同名 JSON / CSV 文件。本页只含计数。'
        " The masked keys of affected rows are in the JSON / CSV files of the same name; this page holds counts only.</p>",
    ]
    cross = report.get("crossref")
    if cross is not None:
        parts += ["<h2>跨库比对 Cross-dataset checks (待核查, flagged, not rejected)</h2>", _crossref_table(cross["findings"])]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _rules_table(rules: list[Mapping[str, Any]]) -> str:
    rows, classes = [], []
    for r in rules:
        failed = r["rows_failed"] if r["rows_failed"] is not None else r["rows_quarantined"]
        gx = {True: "✓", False: "✗", None: "—"}[r["gx_success"]]
        rows.append((_cell(r["rule_id"]), _cell(r["description"]), _cell(", ".join(r["fields"])),
                     _cell(", ".join(r["standards"])), _num(r["rows_checked"]), _num(failed), _cell(gx)))
        classes.append("fail" if failed else "")
    return _table(("规则 Rule", "说明 Description", "字段 Fields", "标准 Standard", "校验 Checked",
                   "未通过 Failed", "GX"), rows, classes)


def _crossref_table(findings: list[Mapping[str, Any]]) -> str:
    rows, classes = [], []
    for f in findings:
        rows.append((_cell(f["check"]), _cell(f["description"]), _cell(f.get("target", "")),
                     _num(f["rows_checked"]), _num(f["not_found"]), _cell(f.get("note", ""))))
        classes.append("flag" if f["not_found"] else "")
    return _table(("比对 Check", "说明 Description", "比对数据集 Against", "比对行数 Checked",
                   "未找到 Not found", "备注 Note"), rows, classes)


def _table(columns: tuple[str, ...], rows: list[tuple[str, ...]], classes: list[str] | None = None,
           *, header: bool = True) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{_esc(c)}</th>" for c in columns) + "</tr>")
    for i, row in enumerate(rows):
        css = classes[i] if classes else ""
        out.append((f'<tr class="{css}">' if css else "<tr>") + "".join(row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _cell(value: Any) -> str:
    return f"<td>{_esc(value)}</td>"


def _num(value: Any) -> str:
    return f'<td class="n">{_esc(value)}</td>'
