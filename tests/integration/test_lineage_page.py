"""The lineage page as auditors read it: one self-contained page per version with its flow drawn
as inline SVG (numbers equal to the manifest's), Chinese first, Beijing time, no raw JSON, no
external resource, no record value; `lineage --all` writes an index of every dataset, version and
run; and headless Chromium renders both (screenshots kept under tests/artifacts/lineage/)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from govshare.cli import main

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "lineage"
PURPOSE = "核验"
COUNT = re.compile(r"""<text\b[^>]*\bdata-count=["']([^"']+)["'][^>]*>([^<]*)</text>""")
LINK = re.compile(r"""\b(?:href|src)=["']([^"']*)["']""")
OLD_REPORT_KEYS = {"report", "generated_at", "dataset", "version", "source", "rows", "checks", "quarantine_by_rule",
                   "protection", "manifest", "deliveries", "cross_dataset", "quality_feedback", "quarantine_cases",
                   "disputes", "blocked_runs", "openlineage_events"}


def pull(dataset: str, subscriber: str, out: Path) -> None:
    assert main(["pull", dataset, "--subscriber", subscriber, "--purpose", PURPOSE, "--out", str(out)]) == 0


@pytest.fixture
def published(home, sources, tmp_path: Path) -> Path:
    """population and legal_entity published and delivered (legal_entity twice); e_license never synced."""
    assert main(["sync", "population"]) == 0
    assert main(["sync", "legal_entity"]) == 0
    pull("population", "approval-household", tmp_path / "p.parquet")
    pull("legal_entity", "approval-general", tmp_path / "l1.parquet")
    pull("legal_entity", "approval-general", tmp_path / "l2.parquet")
    return tmp_path


def report_and_page(tmp_path: Path, dataset: str, *extra: str) -> tuple[dict, str]:
    assert main(["lineage", dataset, "--format", "json", "--out", str(tmp_path / f"{dataset}.json")]) == 0
    assert main(["lineage", dataset, *extra, "--out", str(tmp_path / f"{dataset}.html")]) == 0
    report = json.loads((tmp_path / f"{dataset}.json").read_text(encoding="utf-8"))
    return report, (tmp_path / f"{dataset}.html").read_text(encoding="utf-8")


def counts(markup: str) -> dict[str, int]:
    found = {name: int(value.strip()) for name, value in COUNT.findall(markup)}
    assert found, "no <text data-count=...> in the page"
    return found


def expected_counts(report: dict) -> dict[str, int]:
    delivered: dict[str, int] = {}
    for d in report["deliveries"]:
        delivered[d["subscriber"]] = delivered.get(d["subscriber"], 0) + d["rows"]
    return {"rows_read": report["source"]["rows_read"], "upserts": report["rows"]["upserts"],
            "deletes": report["rows"]["deletes"], "quarantined": report["rows"]["quarantined"],
            **{f"quarantined:{rule}": n for rule, n in report["quarantine_by_rule"].items()},
            **{f"delivered:{s}": n for s, n in delivered.items()}}


def assert_counts_match(markup: str, report: dict) -> None:
    shown = counts(markup)
    for name, value in expected_counts(report).items():
        assert shown.get(name) == value, (name, shown.get(name), value)
    assert not {n for n in shown if n.startswith("quarantined:")} - {f"quarantined:{r}" for r in report["quarantine_by_rule"]}
    assert shown["rows_checked"] == report["checks"]["rows_checked"]
    assert shown["rows_passed"] == report["checks"]["rows_passed"]


def body(markup: str) -> str:
    return markup.split("<body>", 1)[1]


def source_values(db: Path, column: str) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return [v for (v,) in con.execute(f"SELECT {column} FROM population_person") if v]
    finally:
        con.close()


def test_version_page_draws_the_flow_with_the_manifests_numbers(published):
    report, page = report_and_page(published, "population")
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "viewBox=" in page
    assert report["quarantine_by_rule"] and report["deliveries"]
    assert_counts_match(page, report)
    shown = counts(page)
    assert shown["delivered:approval-household"] == report["manifest"]["rows"]["upserts"]
    assert shown["withheld"] == len(report["manifest"]["withheld_fields"])
    assert shown["plain"] + shown["encrypted"] + shown["withheld"] == len(report["protection"])
    legal, legal_page = report_and_page(published, "legal_entity")
    assert counts(legal_page)["delivered:approval-general"] == 2 * legal["rows"]["upserts"]
    assert counts(legal_page)["deliveries:approval-general"] == 2


def test_page_has_no_raw_json_no_script_no_external_resource(published):
    report, page = report_and_page(published, "population")
    text = body(page)
    assert "<pre" not in page and '{"' not in text and "{'" not in text and "<script" not in page
    assert not [link for link in LINK.findall(page) if link.startswith(("http://", "https://", "//"))]
    assert "@media print" in page and "size:A4" in page.replace(" ", "") and "max-width:1300px" in page
    # the gate and the manifest as readable tables
    gate = report["checks"]["gate"]
    assert "rejected_share" in text and f"{gate['rejected_share'] * 100:.2f}%" in text
    for f in report["manifest"]["files"]:
        assert f["sha256"][:16] in text and f["path"] in text
    for k in report["manifest"]["data_keys"]:
        assert k["key_id"] in text


def test_chinese_first_english_on_request(published):
    _, zh = report_and_page(published, "population")
    assert "<html lang='zh-CN'>" in zh and "数据血缘" in zh and "北京时间" in zh
    report, en = report_and_page(published, "population", "--lang", "en")
    assert "<html lang='en'>" in en and "Beijing time" in en and "数据血缘" not in en
    assert_counts_match(en, report)


def test_dates_are_beijing_time(published):
    report, page = report_and_page(published, "population")
    created = report["version"]["created_at"]
    assert created.endswith("+00:00")
    local = datetime.fromisoformat(created).astimezone(ZoneInfo("Asia/Shanghai"))
    assert f"{local:%Y-%m-%d %H:%M:%S} (北京时间)" in page
    assert f"datetime='{local.isoformat(timespec='seconds')}'" in page and local.isoformat().endswith("+08:00")
    assert created not in page and report["deliveries"][0]["time"] not in page


def test_no_record_value_in_the_pages(published, sources):
    db = sources["population_db"]
    values = {v.strip().upper() for v in source_values(db, "id_number")} | set(source_values(db, "phone")) \
        | {v for v in source_values(db, "name") if len(v) > 1}
    assert main(["lineage", "--all", "--out", str(published / "pages")]) == 0
    _, single = report_and_page(published, "population", "--lang", "en")
    for page in [single, *(p.read_text(encoding="utf-8") for p in (published / "pages").rglob("*.html"))]:
        leaked = [v for v in values if v in page]
        assert not leaked, f"{len(leaked)} record values in a lineage page"


def test_all_writes_an_index_of_every_dataset_version_and_run(published, home):
    assert main(["sync", "population", "--full"]) == 0  # version 2, chained to version 1
    out = published / "pages"
    assert main(["lineage", "--all", "--out", str(out)]) == 0
    index = (out / "index.html").read_text(encoding="utf-8")
    links = LINK.findall(index)
    assert set(links) == {"population/v1.html", "population/v2.html", "legal_entity/v1.html"}
    assert "上一版本清单" in (out / "population" / "v2.html").read_text(encoding="utf-8")
    for link in links:
        page = (out / link).read_text(encoding="utf-8")
        assert "<svg" in page and "<pre" not in page and '{"' not in body(page)
        for back in LINK.findall(page):
            assert (out / link).parent.joinpath(back).resolve().is_file(), back
    assert "e_license" in index and "尚无已发布版本" in index
    for dataset in ("population", "legal_entity"):
        for run in (home.lineage / "runs" / dataset).glob("*.json"):
            assert run.stem in index
    assert "已发布" in index
    for path in [out, *out.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    assert main(["lineage", "--all", "--lang", "en", "--out", str(published / "en")]) == 0
    assert "<html lang='en'>" in (published / "en" / "index.html").read_text(encoding="utf-8")
    assert "No published version yet." in (published / "en" / "index.html").read_text(encoding="utf-8")


def test_all_with_nothing_published_lists_every_dataset_as_such(home, tmp_path):
    assert main(["lineage", "--all", "--out", str(tmp_path / "pages")]) == 0
    index = (tmp_path / "pages" / "index.html").read_text(encoding="utf-8")
    assert index.count("尚无已发布版本") == 3 and not LINK.findall(index)
    assert sorted(p.name for p in (tmp_path / "pages").iterdir()) == ["index.html"]


def test_dataset_and_all_exclude_each_other(published, capsys):
    assert main(["lineage", "population", "--all", "--out", str(published / "x")]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert main(["lineage", "--out", str(published / "y.html")]) == 2
    assert not (published / "x").exists() and not (published / "y.html").exists()


def test_json_report_keeps_its_fields(published):
    report, _ = report_and_page(published, "population")
    assert OLD_REPORT_KEYS <= set(report)
    assert report["report"] == "govshare-lineage/1" and report["manifest"]["rows"] == report["rows"]


# -- seen as a person sees it ------------------------------------------------------------------

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1366,900")


def chromium() -> str:
    """The browser, installed when missing and we are root; without it the test is skipped, or
    fails when GOVSHARE_REQUIRE_BROWSER=1 (CI, where scripts/test-servers.sh installs it)."""
    required = os.environ.get("GOVSHARE_REQUIRE_BROWSER") == "1"
    found = shutil.which("chromium")
    if found is None and required and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium", "fonts-wqy-microhei"],
                           capture_output=True, timeout=1200, env=env, check=False)
        except (OSError, subprocess.TimeoutExpired):
            pass  # said below: still missing
        found = shutil.which("chromium")
    if found is None:
        why = ("chromium is not installed (Debian package 'chromium': apt-get install --no-install-recommends "
               "chromium, or run scripts/test-servers.sh start as root)")
        if required:
            pytest.fail(f"GOVSHARE_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    return found


def browse(browser: str, page: Path, tmp_path: Path, *what: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()
    done = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *what, page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_chromium_renders_the_index_and_a_version_page(published):
    browser = chromium()
    out = published / "pages"
    assert main(["lineage", "--all", "--out", str(out)]) == 0
    assert main(["lineage", "population", "--format", "json", "--out", str(published / "r.json")]) == 0
    report = json.loads((published / "r.json").read_text(encoding="utf-8"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for page, shot in ((out / "index.html", ARTIFACTS / "index.png"),
                       (out / "population" / "v1.html", ARTIFACTS / "population-v1.png")):
        shot.unlink(missing_ok=True)
        browse(browser, page, published, f"--screenshot={shot}")
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, (shot, len(data))
    dom = browse(browser, out / "population" / "v1.html", published, "--dump-dom").stdout
    assert "<svg" in dom and "<pre" not in dom
    assert_counts_match(dom, report)
    index_dom = browse(browser, out / "index.html", published, "--dump-dom").stdout
    assert "population/v1.html" in index_dom and "legal_entity/v1.html" in index_dom
