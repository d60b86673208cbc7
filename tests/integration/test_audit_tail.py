"""The access log's tail: records removed, cut, reordered or edited at the end are exit 3.

One row per case: what is done to the log (and to the head file), the exit code of
`govshare audit verify`, a fragment of its message. The setup: legal_entity published, three
pulls (six records), the head file saved after the first pull, then population published (its
manifest signs the head at six records).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from govshare.cli import main

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Files:
    log: Path
    head: Path
    early_head: Path  # a copy of the head file when the log held two records


def lines(f: Files) -> list[str]:
    return f.log.read_text(encoding="utf-8").splitlines(keepends=True)


def keep(f: Files, n: int) -> None:
    f.log.write_text("".join(lines(f)[:n]), encoding="utf-8")


def swap_last_two(f: Files) -> None:
    got = lines(f)
    f.log.write_text("".join([*got[:-2], got[-1], got[-2]]), encoding="utf-8")


def edit_last(f: Files) -> None:
    got = lines(f)
    record = json.loads(got[-1])
    record["outcome"] = "failed"
    f.log.write_text("".join([*got[:-1], json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"]), encoding="utf-8")


def cut_bytes(f: Files) -> None:
    raw = f.log.read_bytes()
    f.log.write_bytes(raw[:-40])


def forge_head(f: Files) -> None:
    doc = json.loads(f.head.read_text(encoding="utf-8"))
    doc["count"] = 4
    f.head.write_text(json.dumps(doc), encoding="utf-8")


@dataclass(frozen=True)
class TailCase:
    name: str
    tamper: Callable[[Files], None]
    exit_code: int
    message: str


CASES = [
    TailCase("untouched", lambda f: None, 0, "6 record(s)"),
    TailCase("cut off mid-record", cut_bytes, 3, "not a valid record"),
    TailCase("last record removed", lambda f: keep(f, 5), 3, "removed from the end"),
    TailCase("last two records removed", lambda f: keep(f, 4), 3, "removed from the end"),
    TailCase("log emptied", lambda f: keep(f, 0), 3, "removed from the end"),
    TailCase("log deleted", lambda f: f.log.unlink(), 3, "removed from the end"),
    TailCase("last two swapped", swap_last_two, 3, "removed or reordered"),
    TailCase("last record edited", edit_last, 3, "altered"),
    TailCase("head file forged", forge_head, 3, "not a head signed"),
    TailCase("records removed, head file deleted: the manifest catches it",
             lambda f: (keep(f, 2), f.head.unlink()), 3, "population version 1 manifest"),
    TailCase("records removed, head file rolled back to an older signed copy: the manifest catches it",
             lambda f: (keep(f, 2), shutil.copy(f.early_head, f.head)), 3, "population version 1 manifest"),
]


def pull(tmp_path: Path, n: int) -> None:
    assert main(["pull", "legal_entity", "--subscriber", "approval-general", "--purpose", "核验",
                 "--out", str(tmp_path / f"{n}.parquet")]) == 0


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_tampered_tail_is_exit_3(home, sources, tmp_path: Path, case: TailCase) -> None:
    assert main(["sync", "legal_entity"]) == 0
    pull(tmp_path, 0)
    files = Files(home.audit / "access-log.jsonl", home.state / "access-log-head.json", tmp_path / "early-head.json")
    shutil.copy(files.head, files.early_head)
    pull(tmp_path, 1)
    pull(tmp_path, 2)
    assert main(["sync", "population"]) == 0
    manifest = json.loads((home.store / "population" / "versions" / "00000001" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["access_log"]["count"] == 6

    case.tamper(files)
    result = subprocess.run([sys.executable, "-m", "govshare.cli", "audit", "verify"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == case.exit_code, result.stderr
    assert case.message in (result.stderr if case.exit_code else result.stdout)
    assert "Traceback" not in result.stderr


def test_a_delivery_without_its_completion_is_reported_started_not_confirmed(home, sources, tmp_path: Path, capsys) -> None:
    assert main(["sync", "legal_entity"]) == 0
    pull(tmp_path, 0)
    log = home.audit / "access-log.jsonl"
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    # a log whose completion was never written: the same pending record appended alone
    from keys.keystore import Keystore
    from lineage.audit import AccessLog

    access_log = AccessLog.of(home, Keystore(home.keystore))
    body = {k: v for k, v in records[0].items() if k not in ("seq", "time", "prev_hash", "hash", "signature")}
    started = access_log.append(body)
    capsys.readouterr()
    assert main(["audit", "verify"]) == 0
    out = capsys.readouterr().out
    assert f"delivery record {started['seq']} started, not confirmed" in out
    assert f"delivery record {records[0]['seq']} started" not in out
    assert main(["lineage", "legal_entity", "--format", "json", "--out", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert [d["outcome"] for d in report["deliveries"]] == ["confirmed", "started, not confirmed"]
