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
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.errors import ConfigError
from common.files import append_whole, replacing, write_json
from common.run import QuarantineUpdate
from common.times import utc_now
from keys.keystore import Keystore
from keys.masking import mask_keys
from keys.protection import Decryption, as_decryption, keystore_decryption
from keys.pseudonyms import KEY_REF, last_per_ref

RULES = "_rules"
REJECTED = "rejected-{part}.parquet"  # a run's rejected rows per part, in its work folder, until kept here
SEALED_AS = "rejected.parquet"  # the name a sealed (gm) rejected-rows file is bound to: they are renamed when kept
CASES_SCHEMA = pa.schema([
    (KEY_REF, pa.binary(16)), ("masked_key", pa.string()), ("rules", pa.string()), ("status", pa.string()),
    ("first_run", pa.string()), ("last_run", pa.string()), ("first_seen", pa.string()), ("last_seen", pa.string()),
    ("closed_at", pa.string()), ("closed_by", pa.string()), ("note", pa.string()),
])


class Quarantine:
    def __init__(self, folder: Path, decryption: Decryption | pq.FileDecryptionProperties) -> None:
        self.folder = folder
        self.decryption = as_decryption(decryption)  # the run files are encrypted with the quarantine key
        self.cases_path = folder / "cases.parquet"
        self.events_path = folder / "events.jsonl"
        self._cases: pa.Table | None = None

    def cases(self) -> pa.Table:
        """Every case (read once per Quarantine; this object's own writes keep it current)."""
        if self._cases is None:
            self._cases = pq.read_table(self.cases_path) if self.cases_path.is_file() else CASES_SCHEMA.empty_table()
        return self._cases

    def open_cases(self) -> pa.Table:
        cases = self.cases()
        return cases.filter(pc.equal(cases.column("status"), "open"))

    def update(self, run_id: str, rejected: pa.Table, good_refs: pa.Array, version: int | None) -> dict[str, int]:
        """Open or refresh a case per rejected key; close as corrected the open cases whose key
        arrived good in this run. ``rejected``: _key_ref, masked_key, rules (joined) of this run,
        one row per key. Columnar throughout: no Python loop over rows."""
        now = utc_now()
        cases = self.cases()
        good_refs = good_refs if len(good_refs) else pa.array([], pa.binary(16))
        rejected_refs = rejected.column(KEY_REF).combine_chunks()
        is_open = pc.equal(cases.column("status"), "open")
        corrected = pc.and_(is_open, pc.and_(pc.is_in(cases.column(KEY_REF), value_set=good_refs),
                                             pc.invert(pc.is_in(cases.column(KEY_REF), value_set=rejected_refs))))
        n_corrected = pc.sum(corrected.cast(pa.int64())).as_py() or 0
        note = f"arrived valid in run {run_id}" + (f", published in version {version}" if version else "")
        cases = _set_where(cases, corrected, status="corrected", closed_at=now, closed_by="source", note=note)

        refreshed = pc.is_in(cases.column(KEY_REF), value_set=rejected_refs)
        previous = cases.filter(pc.and_(refreshed, pc.equal(cases.column("status"), "open")))
        previous = previous.select([KEY_REF, "first_run", "first_seen"]).rename_columns([KEY_REF, "prev_run", "prev_seen"])
        joined = rejected.join(previous, keys=KEY_REF, join_type="left outer")
        n = joined.num_rows
        known = pc.is_valid(joined.column("prev_run"))
        fresh = pa.table({
            KEY_REF: joined.column(KEY_REF), "masked_key": joined.column("masked_key"), "rules": joined.column("rules"),
            "status": pa.repeat(pa.scalar("open"), n),
            "first_run": pc.if_else(known, joined.column("prev_run"), pa.scalar(run_id)),
            "last_run": pa.repeat(pa.scalar(run_id), n),
            "first_seen": pc.if_else(known, joined.column("prev_seen"), pa.scalar(now)),
            "last_seen": pa.repeat(pa.scalar(now), n),
            "closed_at": pa.nulls(n, pa.string()), "closed_by": pa.nulls(n, pa.string()), "note": pa.nulls(n, pa.string()),
        }, schema=CASES_SCHEMA)
        opened = n - (pc.sum(known.cast(pa.int64())).as_py() or 0)
        self._write(pa.concat_tables([cases.filter(pc.invert(refreshed)), fresh]))
        counts = {"opened": opened, "still_open": n - opened, "corrected": n_corrected}
        self._events([{"event": "run", "run_id": run_id, "version": version, **counts}])
        if n_corrected:  # only a closed case can leave a run file without an open case
            self.purge()
        return counts

    def release(self, key_ref: bytes, by: str, note: str) -> str:
        cases = self.cases()
        hit = pc.and_(pc.equal(cases.column("status"), "open"), pc.equal(cases.column(KEY_REF), pa.scalar(key_ref, pa.binary(16))))
        if not pc.any(hit).as_py():
            raise ConfigError("no open quarantine case for that key (see 'govshare quarantine list')")
        if not by.strip() or not note.strip():
            raise ConfigError("releasing a quarantined record needs --by (who decided) and --note (why)")
        masked = cases.filter(hit).column("masked_key")[0].as_py()
        self._write(_set_where(cases, hit, status="released", closed_at=utc_now(), closed_by=by.strip(), note=note.strip()))
        self._events([{"event": "released", "masked_key": masked, "by": by.strip(), "note": note.strip()}])
        self.purge()
        return masked

    def purge(self) -> list[str]:
        """Delete run files none of whose keys has an open case."""
        open_refs = self.open_cases().column(KEY_REF).combine_chunks()
        removed = []
        for path in sorted(self.folder.glob("*-*.parquet")):
            refs = self.decryption.read_table(path, [KEY_REF], name=SEALED_AS).column(KEY_REF)
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
        cases = cases.cast(CASES_SCHEMA)
        # dictionaries where values repeat (statuses, rule lists, runs, times); refs and masked keys are unique
        with replacing(self.cases_path) as tmp:
            pq.write_table(cases, tmp, compression="zstd", use_dictionary=[
                "rules", "status", "first_run", "last_run", "first_seen", "last_seen", "closed_at", "closed_by",
                "note"])
        self._cases = cases

    def _events(self, events: Iterable[dict[str, Any]]) -> None:
        lines = [json.dumps({"time": utc_now(), **e}, ensure_ascii=False) + "\n" for e in events]
        if lines:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.events_path, "a", encoding="utf-8") as fh:
                append_whole(fh.fileno(), "".join(lines))


def keep_rejected(folder: Path, run_id: str, rejected: Sequence[Path], failed_by_rule: dict[str, int],
                  version: int | None) -> list[str]:
    """Move a run's rejected-row files (encrypted, one per part) into the dataset's quarantine, with
    a small description of the run beside them; the names moved."""
    moved = []
    for part, path in enumerate(rejected):
        if path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{run_id}-{part}.parquet"
            shutil.move(str(path), folder / name)
            moved.append(name)
    if moved:
        write_json(folder / f"{run_id}.json", {"run_id": run_id, "version": version, "at": utc_now(), "files": moved,
                                               "rules": failed_by_rule})
    return moved


def run_files(folder: Path, run_id: str) -> list[Path]:
    """The quarantine files a run left (none once they were purged)."""
    meta = folder / f"{run_id}.json"
    names = json.loads(meta.read_text(encoding="utf-8"))["files"] if meta.is_file() else []
    return [folder / name for name in names]


def update_cases(folder: Path, key_field: str, keystore: Keystore, run_id: str, moved: Sequence[str],
                 good: Sequence[Path], version: int | None) -> QuarantineUpdate:
    """Open or refresh a case per key the run rejected (its ``moved`` files); close the open cases
    whose key arrived good (the ``_key_ref`` column of the ``good`` files: the run's markers when it
    published, none when the gate blocked it)."""
    decrypt = keystore_decryption(keystore)
    rejected = [decrypt.read_table(folder / f, [key_field, KEY_REF, RULES], name=SEALED_AS) for f in moved]
    cases = pa.table({KEY_REF: pa.array([], pa.binary(16)), "masked_key": pa.array([], pa.string()),
                      "rules": pa.array([], pa.string())})
    if rejected:
        rows = pa.concat_tables(rejected)
        rows = rows.filter(pc.is_valid(rows.column(KEY_REF)))
        cases = pa.table({KEY_REF: rows.column(KEY_REF), "masked_key": mask_keys(rows.column(key_field)),
                          "rules": pc.binary_join(rows.column(RULES), "|")})
        cases = last_per_ref(cases)  # a key rejected twice in a run keeps its latest rules
    quarantine = Quarantine(folder, decrypt)  # reads the cases once, for this and update()
    open_refs = quarantine.open_cases().column(KEY_REF).combine_chunks()
    found: list[pa.Array] = []
    if len(open_refs):  # which open cases came back valid: a streaming filter, bounded memory
        for path in good:
            for batch in pq.ParquetFile(path).iter_batches(columns=[KEY_REF]):
                found.append(batch.column(0).filter(pc.is_in(batch.column(0), value_set=open_refs)))
    good_refs = pa.concat_arrays(found) if found else pa.array([], pa.binary(16))
    return QuarantineUpdate(**quarantine.update(run_id, cases, good_refs, version))


def _set_where(cases: pa.Table, mask: pa.Array, **values: str) -> pa.Table:
    for name, value in values.items():
        column = pc.if_else(mask, pa.scalar(value, pa.string()), cases.column(name))
        cases = cases.set_column(cases.schema.get_field_index(name), name, column)
    return cases


