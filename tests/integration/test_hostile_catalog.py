"""Hostile catalogs, as data: one row per case, each run through the real CLI.

A row is the YAML change (file, the text replaced once, its replacement; or a whole new file),
the exit code, and a fragment the output must contain. Every case runs `govshare versions
population` with GOVSHARE_CATALOG at a temp copy of catalogs/ and an initialised GOVSHARE_HOME
(so exit 2 can only come from the catalog), and must answer within seconds, in a few lines, without
a traceback or a terminal escape. Adding a case is adding a row.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.catalog import MAX_LISTED_PROBLEMS, PROJECT_ROOT
from common.yaml_strict import MAX_DEPTH, MAX_FILE_BYTES, MAX_SCALAR_CHARS

GOVSHARE = PROJECT_ROOT / ".venv" / "bin" / "govshare"
SECONDS = 10.0
MAX_STDERR_LINES = MAX_LISTED_PROBLEMS + 2  # the headline, the listed problems, "... and N more"
MAX_LINE_CHARS = 400

BILLION_LAUGHS = "kind: dataset\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9)
)


def line_of(file: str, text: str) -> int:
    """The line of the shipped catalog file on which `text` starts, so a case survives edits above it."""
    content = (PROJECT_ROOT / "catalogs" / file).read_text(encoding="utf-8")
    assert content.count(text) == 1, f"{text!r} must occur once in catalogs/{file}"
    return content[: content.index(text)].count("\n") + 1


SHARING_NONE = "    sharing: none               # 不予共享"
EXPIRES_ON = "          expires_on: 2027-12-31"


@dataclass(frozen=True)
class Case:
    id: str
    file: str | None  # None: the shipped catalog, unchanged
    old: str | None  # replaced exactly once; None: `new` is the whole file
    new: str
    exit: int
    fragment: str


CASES = [
    Case("shipped-catalog-loads", None, None, "", 0, "no published version yet"),
    # repeated keys: the last value would win silently
    Case("repeated-sharing-makes-withheld-field-public", "population.yaml", SHARING_NONE,
         "    sharing: none\n    sharing: unconditional", 2,
         f"population.yaml: line {line_of('population.yaml', SHARING_NONE) + 1}: key 'sharing' is repeated "
         f"(first on line {line_of('population.yaml', SHARING_NONE)})"),
    Case("repeated-field", "population.yaml", "  person_status:\n",
         "  phone:\n    type: string\n    sharing: unconditional\n    sensitivity: public\n  person_status:\n", 2, "key 'phone' is repeated"),
    Case("text-check-on-an-int-field", "population.yaml", "    type: string\n    sharing: unconditional      # 无条件共享\n    sensitivity: personal\n    checks: [{code_list: {list: sex}}]",
         "    type: int\n    sharing: unconditional      # 无条件共享\n    sensitivity: personal\n    checks: [{code_list: {list: sex}}]", 2,
         "check 'code_list' applies to string fields, not to a 'int' field"),
    Case("repeated-top-level-key", "population.yaml", "key: id_number", "key: id_number\nkey: phone", 2, "key 'key' is repeated"),
    Case("repeated-expires-on", "subscribers.yaml", EXPIRES_ON,
         EXPIRES_ON + "\n          expires_on: 2099-12-31", 2,
         f"subscribers.yaml: line {line_of('subscribers.yaml', EXPIRES_ON) + 1}: key 'expires_on' is repeated"),
    Case("repeated-key-in-flow-mapping", "population.yaml", "{code_list: {list: sex}}", "{code_list: {list: sex, list: ethnicity}}", 2,
         "key 'list' is repeated"),
    # unknown keys: a misspelt control is not a control switched off
    Case("misspelt-checks", "population.yaml", "    checks: [{code_list: {list: ethnicity}}]", "    chekcs: [{code_list: {list: ethnicity}}]", 2,
         f"population.yaml: fields[3].chekcs: unknown key (line {line_of('population.yaml', '    checks: [{code_list: {list: ethnicity}}]')}); did you mean checks?"),
    Case("misspelt-required", "population.yaml", "    required: true\n    checks: [id_number]", "    requird: true\n    checks: [id_number]", 2,
         "fields[0].requird: unknown key (line 28); did you mean required?"),
    Case("misspelt-gate", "population.yaml", "gate:                          # past", "gaet:                          # past", 2,
         "population.yaml: gaet: unknown key (line 17); did you mean gate?"),
    Case("misspelt-gate-threshold", "population.yaml", "max_rejected_share: 0.5", "max_rejected_shares: 0.5", 2,
         "gate.max_rejected_shares: unknown key (line 18); did you mean max_rejected_share?"),
    Case("misspelt-source-key", "population.yaml", "  lookback: 1h", "  look_back: 1h", 2, "source.look_back: unknown key (line 11); did you mean lookback?"),
    Case("misspelt-protection-key", "population.yaml", "  footer_key: population.footer", "  footerkey: population.footer", 2,
         "protection.footerkey: unknown key (line 15); did you mean footer_key?"),
    Case("unknown-top-level-key", "population.yaml", "kind: dataset", "kind: dataset\nowner: someone", 2, "population.yaml: owner: unknown key (line 3)"),
    Case("misspelt-expires-on", "subscribers.yaml", "          expires_on: 2027-12-31", "          expires_in: 2027-12-31", 2,
         f"subscribers.yaml: subscribers[1].grants[0].approval.expires_in: unknown key (line {line_of('subscribers.yaml', EXPIRES_ON)}); did you mean expires_on?"),
    Case("misspelt-subscriber-key", "subscribers.yaml", "    name: 一网通办", "    nmae: 一网通办", 2,
         f"subscribers[0].nmae: unknown key (line {line_of('subscribers.yaml', '    name: 一网通办')}); did you mean name?"),
    Case("misspelt-grant-key", "subscribers.yaml", "        fields: [unconditional, conditional]", "        field: [unconditional, conditional]", 2,
         f"subscribers[1].grants[0].field: unknown key (line {line_of('subscribers.yaml', '        fields: [unconditional, conditional]')}); did you mean fields?"),
    Case("yaml-boolean-key", "population.yaml", "  lookback: 1h", "  lookback: 1h\n  on: 1", 2, "source.True: unknown key"),
    Case("unknown-check-parameter", "population.yaml", "{code_list: {list: sex}}", "{code_list: {list: sex, lenient: yes}}", 2,
         "check 'code_list' has no parameter 'lenient'"),
    Case("bad-watermark-unknown-choice", "population.yaml", "  lookback: 1h", "  lookback: 1h\n  bad_watermark: ignore", 2,
         "source.bad_watermark 'ignore' must be one of: quarantine, fail"),
    Case("future-tolerance-not-a-duration", "population.yaml", "  lookback: 1h", "  lookback: 1h\n  future_tolerance: 1 week", 2,
         "source.future_tolerance '1 week' must be a duration"),
    Case("future-tolerance-too-long", "population.yaml", "  lookback: 1h", "  lookback: 1h\n  future_tolerance: 400d", 2,
         "at most 366d"),
    Case("flood-of-unknown-keys", "population.yaml", "kind: dataset", "kind: dataset\n" + "".join(f"k{n}: 1\n" for n in range(5000)), 2,
         f"and {5000 - MAX_LISTED_PROBLEMS} more problem(s) not listed"),
    # statuses and approval dates
    Case("suspended-subscriber-loads", "subscribers.yaml", "    keys: local\n    grants:\n      - dataset: population\n        fields: [unconditional, conditional]",
         "    keys: local\n    status: suspended\n    grants:\n      - dataset: population\n        fields: [unconditional, conditional]", 0, "no published version yet"),
    Case("approval-approved-in-the-future-loads", "subscribers.yaml", "approved_on: 2026-01-15\n          expires_on: 2027-12-31",
         "approved_on: 2099-01-15\n          expires_on: 2100-12-31", 0, "no published version yet"),
    Case("unknown-subscriber-status", "subscribers.yaml", "    name: 一网通办", "    status: paused\n    name: 一网通办", 2,
         "status 'paused' must be one of active, suspended, revoked"),
    Case("unknown-approval-status", "subscribers.yaml", "          expires_on: 2027-12-31", "          expires_on: 2027-12-31\n          status: pending", 2,
         "approval: status 'pending' must be one of active, suspended, revoked"),
    Case("approval-expires-before-approved", "subscribers.yaml", "approved_on: 2026-01-15", "approved_on: 2028-01-15", 2,
         "expires (2027-12-31) before it was approved (2028-01-15)"),
    Case("approval-date-with-a-time", "subscribers.yaml", "approved_on: 2026-01-15", "approved_on: 2026-01-15 10:00:00", 2,
         "approval.approved_on must be a date (YYYY-MM-DD)"),
    Case("impossible-date", "subscribers.yaml", "expires_on: 2027-12-31", "expires_on: 2027-02-30", 2, "'2027-02-30' is not a real date"),
    # values of the wrong kind never crash the loader
    Case("sharing-as-a-list", "population.yaml", "    sharing: none               # 不予共享", "    sharing: [none]", 2, "sharing ['none'] must be"),
    Case("key-as-a-list", "population.yaml", "key: id_number", "key: [id_number]", 2, "key ['id_number'] is not one of its fields"),
    Case("gate-as-a-number", "population.yaml", "gate:                          # past", "gate: 1\nx_gate:                          # past", 2,
         "'gate' must be a mapping, not 1"),
    Case("required-as-a-string", "population.yaml", "    required: true\n    checks: [id_number]", '    required: "no"\n    checks: [id_number]', 2,
         "required must be true or false, not 'no'"),
    Case("dataset-as-a-mapping", "subscribers.yaml", "      - dataset: e_license", "      - dataset: {e_license: 1}", 2, "dataset {'e_license': 1} is not in the catalog"),
    Case("kind-as-a-list", "population.yaml", "kind: dataset", "kind: [dataset]", 2, "'kind' must be 'dataset' or 'subscribers', not ['dataset']"),
    Case("empty-file", "population.yaml", None, "", 2, "population.yaml: 'kind' must be 'dataset' or 'subscribers', not None"),
    Case("terminal-escape-in-a-value", "population.yaml", "    sharing: none               # 不予共享", '    sharing: "\\e[31mred"', 2, "sharing '\\x1b[31mred'"),
    # hostile YAML: aliases, merge keys, size, depth, tags, documents
    Case("billion-laughs", "population.yaml", None, BILLION_LAUGHS, 2, "population.yaml: line 3, column 8: alias *a is not allowed"),
    Case("alias-in-a-grant", "subscribers.yaml", "        fields: [unconditional]\n      - dataset: legal_entity\n        fields: [unconditional]",
         "        fields: &plain [unconditional]\n      - dataset: legal_entity\n        fields: *plain", 2, "alias *plain is not allowed"),
    Case("merge-key", "population.yaml", "    sharing: none               # 不予共享", "    <<: {sharing: unconditional}\n    sharing: none", 2, "merge key << is not allowed"),
    Case("huge-value", "population.yaml", "label: 联系电话", "label: " + "x" * 10_000, 2, f"over the limit of {MAX_SCALAR_CHARS}"),
    Case("huge-file", "population.yaml", "kind: dataset", "kind: dataset\n" + "# padding\n" * 3_000_000, 2, f"is larger than {MAX_FILE_BYTES} bytes"),
    Case("deep-nesting", "population.yaml", "checks: [id_number]", "checks: " + "[" * 100_000 + "]" * 100_000, 2, f"nesting deeper than {MAX_DEPTH} levels"),
    Case("python-tag", "population.yaml", "title: 人口基础信息", 'title: !!python/object/apply:os.system ["true"]', 2, "could not determine a constructor"),
    Case("second-document", "population.yaml", "kind: dataset", "kind: dataset\n---\nkind: dataset", 2, "expected a single document"),
    Case("not-yaml", "population.yaml", None, "kind: dataset\nid: [unclosed\n", 2, "population.yaml: line 3, column 1: cannot be read as YAML"),
]


@pytest.fixture(scope="module")
def initialised_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    result = subprocess.run([str(GOVSHARE), "init"], env={**os.environ, "GOVSHARE_HOME": str(home)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return home


def hostile_catalog(case: Case, target: Path) -> Path:
    shutil.copytree(PROJECT_ROOT / "catalogs", target)
    if case.file is None:
        return target
    path = target / case.file
    if case.old is None:
        path.write_text(case.new, encoding="utf-8")
        return target
    text = path.read_text(encoding="utf-8")
    assert text.count(case.old) == 1, f"{case.id}: the text to replace must occur once in {case.file}"
    path.write_text(text.replace(case.old, case.new), encoding="utf-8")
    return target


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_catalog(case: Case, initialised_home: Path, tmp_path: Path) -> None:
    catalogs = hostile_catalog(case, tmp_path / "catalogs")
    env = {**os.environ, "GOVSHARE_HOME": str(initialised_home), "GOVSHARE_CATALOG": str(catalogs)}
    env.pop("GOVSHARE_DEBUG", None)
    started = time.monotonic()
    result = subprocess.run([str(GOVSHARE), "versions", "population"], env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started

    assert result.returncode == case.exit, result.stderr
    assert case.fragment in (result.stderr if case.exit else result.stdout), result.stderr
    assert elapsed < SECONDS, f"{case.id} took {elapsed:.1f} s"
    assert "Traceback" not in result.stderr
    assert "\x1b" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) <= MAX_STDERR_LINES, f"{case.id}: {len(lines)} lines of errors"
    assert all(len(line) <= MAX_LINE_CHARS for line in lines), f"{case.id}: an error line of {max(map(len, lines))} chars"
    if case.exit == 2:
        assert lines[0].startswith(f"govshare: the catalog in {catalogs} has ")
        assert result.stdout == ""
