"""Objections (异议): an approval system disputes a published record; the provider fixes it (校核纠错).

A dispute pins the record by its pseudonymous key ref and the fingerprint of the published row it
was raised against. While open, every pull shows ``_disputed = true`` on that record. It closes by
itself when the source changes the record (a later version publishes another fingerprint for the
key, or deletes it), or when the bureau resolves it. Every step is an event in an append-only,
hash-chained log (GOVSHARE_HOME/disputes/<dataset>.jsonl), read by lineage reports. Events hold
key refs and masked keys, never a plaintext identifier.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.catalog import Catalog, Dataset, Subscriber
from common.errors import AccessDenied, ConfigError, IntegrityError
from common.files import append_whole, canonical_json
from common.home import Home
from common.times import today as local_today
from common.times import utc_now

MAX_REASON = 500
GENESIS = "0" * 64


@dataclass(frozen=True)
class Dispute:
    id: str
    key_ref: str  # hex
    fingerprint: str  # hex, of the published row disputed
    masked_key: str
    subscriber: str
    reason: str
    raised_at: str
    version: int
    status: str  # open | cleared | resolved
    closed_by: dict[str, Any] | None = None


class DisputeLog:
    def __init__(self, home: Home, dataset_id: str) -> None:
        self.dataset_id = dataset_id
        self.path = home.root / "disputes" / f"{dataset_id}.jsonl"

    def events(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        events, prev = [], GENESIS
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
            event = json.loads(line)
            body = {k: v for k, v in event.items() if k != "hash"}
            if event.get("prev_hash") != prev or hashlib.sha256(canonical_json(body)).hexdigest() != event.get("hash"):
                raise IntegrityError(f"dispute log {self.path} event {number} was altered, removed or reordered")
            prev = event["hash"]
            events.append(event)
        return events

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                events = self.events()
                entry = {**event, "seq": len(events) + 1, "time": utc_now(),
                         "prev_hash": events[-1]["hash"] if events else GENESIS}
                entry["hash"] = hashlib.sha256(canonical_json(entry)).hexdigest()
                append_whole(fh.fileno(), json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return entry

    def disputes(self) -> dict[str, Dispute]:
        found: dict[str, Dispute] = {}
        for e in self.events():
            if e["event"] == "raised":
                found[e["dispute_id"]] = Dispute(e["dispute_id"], e["key_ref"], e["fingerprint"], e["masked_key"],
                                                 e["subscriber"], e["reason"], e["time"], e["version"], "open")
            elif e["event"] in ("cleared", "resolved") and e["dispute_id"] in found:
                d = found[e["dispute_id"]]
                found[d.id] = Dispute(**{**d.__dict__, "status": e["event"],
                                         "closed_by": {k: e.get(k) for k in ("time", "version", "by", "note")}})
        return found

    def open(self) -> list[Dispute]:
        return [d for d in self.disputes().values() if d.status == "open"]


def normalise_key(dataset: Dataset, key: str) -> str:
    from validation.rules import normalise_keys

    return normalise_keys(dataset, pa.array([key]))[0].as_py()


def raise_dispute(catalog: Catalog, home: Home, dataset_id: str, key: str, subscriber_id: str, reason: str) -> dict[str, Any]:
    from keys.keystore import Keystore
    from keys.masking import mask_keys
    from keys.pseudonyms import key_refs
    from sharing.index import StateIndex

    ds = catalog.dataset(dataset_id)
    subscriber = _disputing_subscriber(catalog, subscriber_id, ds.id, local_today())
    reason = (reason or "").strip()
    if not reason or len(reason) > MAX_REASON:
        raise ConfigError(f"--reason must be 1 to {MAX_REASON} characters (the objection as stated by the approval system)")
    normalised = normalise_key(ds, key)
    ref = key_refs(pa.array([normalised]), Keystore(home.keystore).hmac_key(), Keystore(home.keystore).hmac_algorithm())
    found = StateIndex(home.state, ds.id).lookup(ref[0].as_py())
    if found is None:
        raise ConfigError(f"{ds.id} has no published record with that key; only published records can be disputed")
    fingerprint, version = found
    log = DisputeLog(home, ds.id)
    number = len(log.disputes()) + 1
    return log.append({
        "event": "raised", "dispute_id": f"{ds.id}-{number}", "key_ref": ref[0].as_py().hex(),
        "fingerprint": fingerprint.hex(), "version": version,
        "masked_key": mask_keys(pa.array([normalised]))[0].as_py(), "subscriber": subscriber.id, "reason": reason,
    })


def _disputing_subscriber(catalog: Catalog, subscriber_id: str, dataset_id: str, today: date) -> Subscriber:
    """The subscriber, if it may dispute the dataset's records: registered, active, with a grant
    for the dataset whose approval (if any) is in force. Decided before the key is looked at, and
    refused with one message whatever the reason, so a refusal never tells whether a key exists."""
    subscriber = catalog.subscriber(subscriber_id)
    grant = subscriber.grant_for(dataset_id) if subscriber is not None and subscriber.active else None
    if subscriber is None or grant is None or (grant.approval is not None and grant.approval.in_force(today)):
        raise AccessDenied(f"subscriber {shown_subscriber(subscriber_id)!r} "
                           f"has no grant in force for {dataset_id} and cannot dispute its records; nothing was flagged")
    return subscriber


_PLAIN_ID = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")


def shown_subscriber(subscriber_id: str) -> str:
    """A subscriber id as given, for messages and the access log, only when it has the shape of a
    catalog id (a letter first): whatever else was typed there may be a person's identifier."""
    return subscriber_id if _PLAIN_ID.fullmatch(subscriber_id or "") else "(not a subscriber id; not shown)"


def resolve_dispute(catalog: Catalog, home: Home, dataset_id: str, dispute_id: str, by: str, note: str) -> dict[str, Any]:
    ds = catalog.dataset(dataset_id)
    log = DisputeLog(home, ds.id)
    dispute = log.disputes().get(dispute_id)
    if dispute is None:
        raise ConfigError(f"{ds.id} has no dispute {dispute_id!r} (see 'govshare dispute list {ds.id}')")
    if dispute.status != "open":
        raise ConfigError(f"dispute {dispute_id} is already {dispute.status}")
    if not by.strip() or not note.strip():
        raise ConfigError("resolving a dispute needs --by (who decided) and --note (what was decided)")
    return log.append({"event": "resolved", "dispute_id": dispute_id, "by": by.strip(), "note": note.strip()})


def clear_changed(home: Home, dataset_id: str, index_delta: Path, version: int) -> list[str]:
    """Close the open disputes whose record this version changed or deleted (校核纠错 done)."""
    from keys.pseudonyms import FINGERPRINT, KEY_REF

    log = DisputeLog(home, dataset_id)
    open_disputes = {bytes.fromhex(d.key_ref): d for d in log.open()}
    if not open_disputes:
        return []
    wanted = pa.array(list(open_disputes), pa.binary(16))
    cleared = []
    for batch in pq.ParquetFile(index_delta).iter_batches():
        for hit in batch.filter(pc.is_in(batch.column(KEY_REF), value_set=wanted)).to_pylist():
            d = open_disputes[hit[KEY_REF]]
            if hit["change"] == "delete" or hit[FINGERPRINT] != bytes.fromhex(d.fingerprint):
                note = "the source withdrew the record" if hit["change"] == "delete" else "the source changed the record"
                log.append({"event": "cleared", "dispute_id": d.id, "version": version, "note": note})
                cleared.append(d.id)
    return cleared


def disputed_mask(open_disputes: list[Dispute], key_ref: pa.ChunkedArray | pa.Array,
                  fingerprint: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Per row: is it the exact record one of the open disputes names."""
    if not open_disputes:
        return pa.repeat(pa.scalar(False), len(key_ref))
    pins = pa.array([bytes.fromhex(d.key_ref) + bytes.fromhex(d.fingerprint) for d in open_disputes], pa.binary())
    pinned = pc.binary_join_element_wise(key_ref.cast(pa.binary()), fingerprint.cast(pa.binary()), b"")
    return pc.fill_null(pc.is_in(pinned, value_set=pins), False)
