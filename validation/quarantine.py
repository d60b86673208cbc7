"""The quarantine's cases: each rejected record is held until the source corrects it or the bureau
releases it.

Rejected rows themselves stay in the run's encrypted files (GOVSHARE_HOME/quarantine/<dataset>/
<run>-<part>.parquet). Beside them, ``cases.parquet`` lists one case per rejected key: its
pseudonymous key ref, masked key, the rules it broke, when it was first and last rejected, and its
status (open, corrected, released). ``events.jsonl`` keeps every transition for lineage. A run
file is deleted once none of its keys has an open case: personal data is kept no longer than the
case needs it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from govshare.errors import ConfigError
from sharing.changes import KEY_REF

RULES = "_rules"
CASES_SCHEMA = pa.schema([
    (KEY_REF, pa.binary(16)), ("masked_key", pa.string()), ("rules", pa.string()), ("status", pa.string()),
    ("first_run", pa.string()), ("last_run", pa.string()), ("first_seen", pa.string()), ("last_seen", pa.string()),
    ("closed_at", pa.string()), ("closed_by", pa.string()), ("note", pa.string()),
])


class Quarantine:
    def __init__(self, folder: Path, decryption: pq.FileDecryptionProperties) -> None:
        self.folder = folder
        self.decryption = decryption  # the run files are encrypted with the quarantine key
        self.cases_path = folder / "cases.parquet"
        self.events_path = folder / "events.jsonl"

    def cases(self) -> pa.Table:
        return pq.read_table(self.cases_path) if self.cases_path.is_file() else CASES_SCHEMA.empty_table()

    def open_cases(self) -> pa.Table:
        cases = self.cases()
        return cases.filter(pc.equal(cases.column("status"), "open"))

    def update(self, run_id: str, rejected: pa.Table, good_refs: pa.Array, version: int | None) -> dict[str, int]:
        """Open or refresh a case per rejected key; close as corrected the open cases whose key
        arrived good in this run. ``rejected``: _key_ref, masked_key, rules (joined) of this run."""
        now = _now()
        cases = self.cases()
        good_refs = good_refs if len(good_refs) else pa.array([], pa.binary(16))
        is_open = pc.equal(cases.column("status"), "open")
        corrected = pc.and_(is_open, pc.is_in(cases.column(KEY_REF), value_set=good_refs))
        refreshed = pc.is_in(cases.column(KEY_REF), value_set=rejected.column(KEY_REF).combine_chunks())
        closed_refs = cases.filter(corrected).column(KEY_REF).to_pylist()
        note = f"arrived valid in run {run_id}" + (f", published in version {version}" if version else "")
        cases = _set_where(cases, corrected, status="corrected", closed_at=now, closed_by="source", note=note)
        previous = {r[KEY_REF]: r for r in cases.filter(refreshed).to_pylist()}
        kept = cases.filter(pc.invert(refreshed))
        fresh = [
            {KEY_REF: r[KEY_REF], "masked_key": r["masked_key"], "rules": r["rules"], "status": "open",
             "first_run": previous.get(r[KEY_REF], {}).get("first_run") or run_id, "last_run": run_id,
             "first_seen": previous.get(r[KEY_REF], {}).get("first_seen") or now, "last_seen": now,
             "closed_at": None, "closed_by": None, "note": None}
            for r in rejected.to_pylist()
        ]
        opened = sum(1 for r in fresh if r[KEY_REF] not in previous or previous[r[KEY_REF]]["status"] != "open")
        self._write(pa.concat_tables([kept, pa.Table.from_pylist(fresh, schema=CASES_SCHEMA)]))
        self._events([{"event": "corrected", "masked_key": m, "run_id": run_id, "version": version}
                      for m in cases.filter(corrected).column("masked_key").to_pylist()]
                     + [{"event": "quarantined", "masked_key": r["masked_key"], "rules": r["rules"].split("|"), "run_id": run_id}
                        for r in fresh if r[KEY_REF] not in previous or previous[r[KEY_REF]]["status"] != "open"])
        self.purge()
        return {"opened": opened, "still_open": len(fresh) - opened, "corrected": len(closed_refs)}

    def release(self, key_ref: bytes, by: str, note: str) -> str:
        cases = self.cases()
        hit = pc.and_(pc.equal(cases.column("status"), "open"), pc.equal(cases.column(KEY_REF), pa.scalar(key_ref, pa.binary(16))))
        if not pc.any(hit).as_py():
            raise ConfigError("no open quarantine case for that key (see 'govshare quarantine list')")
        if not by.strip() or not note.strip():
            raise ConfigError("releasing a quarantined record needs --by (who decided) and --note (why)")
        masked = cases.filter(hit).column("masked_key")[0].as_py()
        self._write(_set_where(cases, hit, status="released", closed_at=_now(), closed_by=by.strip(), note=note.strip()))
        self._events([{"event": "released", "masked_key": masked, "by": by.strip(), "note": note.strip()}])
        self.purge()
        return masked

    def purge(self) -> list[str]:
        """Delete run files none of whose keys has an open case."""
        open_refs = self.open_cases().column(KEY_REF).combine_chunks()
        removed = []
        for path in sorted(self.folder.glob("*-*.parquet")):
            refs = pq.ParquetFile(path, decryption_properties=self.decryption).read(columns=[KEY_REF]).column(KEY_REF)
            if not pc.any(pc.is_in(refs, value_set=open_refs)).as_py():
                path.unlink()
                removed.append(path.name)
        if removed:
            self._events([{"event": "purged", "files": removed, "why": "no open case left in them"}])
        return removed

    def events(self) -> list[dict[str, Any]]:
        if not self.events_path.is_file():
            return []
        return [json.loads(line) for line in self.events_path.read_text(encoding="utf-8").splitlines()]

    def _write(self, cases: pa.Table) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.cases_path.with_suffix(f".{os.getpid()}.tmp")
        pq.write_table(cases.cast(CASES_SCHEMA), tmp, compression="zstd")
        os.replace(tmp, self.cases_path)

    def _events(self, events: Iterable[dict[str, Any]]) -> None:
        lines = [json.dumps({"time": _now(), **e}, ensure_ascii=False) + "\n" for e in events]
        if lines:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.events_path, "a", encoding="utf-8") as fh:
                fh.writelines(lines)


def _set_where(cases: pa.Table, mask: pa.Array, **values: str) -> pa.Table:
    for name, value in values.items():
        column = pc.if_else(mask, pa.scalar(value, pa.string()), cases.column(name))
        cases = cases.set_column(cases.schema.get_field_index(name), name, column)
    return cases


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
