"""Who received my record (个人信息保护法): every delivery that contained the record with a key.

The access log never holds a key: it names, per delivery, the dataset, the versions read
(``versions_read`` = [first, last]), whether it was a change feed (``since``) and the fields. The
versions are immutable, so which records a delivery contained is computed exactly from them:

- the record's pseudonym (``_key_ref``: the keyed hash the versions and the state index hold) is
  looked up in every version's upserts and deletes (only that column is read and decrypted);
- a change feed (``--since N``, versions N+1..M) contained the record when one of those versions
  changed it (an upsert or a delete);
- a full view of version M (folded from its base snapshot B..M) contained it when the last change
  in B..M is an upsert (a record deleted before M is not in it).

A quarantined record never published is in no version, so in no delivery. Deliveries are listed
whatever their outcome (confirmed, released, failed, started and not confirmed), which is shown.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from common.catalog import Catalog, Dataset
from common.home import Home
from keys.keystore import Keystore
from keys.protection import Decryption, keystore_decryption
from keys.pseudonyms import KEY_REF, key_refs
from lineage.audit import COMPLETE, DELIVERY, AccessLog
from sharing.disputes import normalise_key
from sharing.store import SharingStore

Changes = dict[int, str]  # version -> "upsert" | "delete"


def record_changes(store: SharingStore, decryption: Decryption, dataset: Dataset, ref: bytes,
                   secret: bytes, algorithm: str = "HMAC-SHA256") -> Changes:
    """The versions that changed the record with pseudonym ``ref``, and how."""
    found: Changes = {}
    wanted = pa.scalar(ref, pa.binary(16))
    for version in store.versions():
        manifest = store.read_manifest(version)
        folder = store.version_dir(version)
        for role, kind in (("upserts", "upsert"), ("deletes", "delete")):
            for entry in manifest.files(role):
                refs = _refs(folder / entry["path"], decryption, dataset, secret, algorithm)
                if len(refs) and pc.any(pc.equal(refs, wanted)).as_py():
                    found[version] = kind
    return found


def _refs(path: Any, decryption: Decryption, dataset: Dataset, secret: bytes, algorithm: str = "HMAC-SHA256") -> pa.Array:  # noqa: ANN401
    handle = decryption.open(path)
    try:
        if KEY_REF in handle.schema_arrow.names:
            return handle.read(columns=[KEY_REF]).column(KEY_REF).combine_chunks().cast(pa.binary(16))
        keys = handle.read(columns=[dataset.key]).column(dataset.key).combine_chunks()  # versions before deletes had refs
    finally:
        handle.close()
    return key_refs(keys, secret, algorithm) if len(keys) else pa.array([], pa.binary(16))


def contained(changes: Changes, entry: dict[str, Any]) -> str | None:
    """How a delivery held the record: 'upsert', 'delete', or None when it did not hold it."""
    span = entry.get("versions_read") or []
    if len(span) != 2:
        return None
    first, last = int(span[0]), int(span[1])
    touched = [changes[v] for v in range(first, last + 1) if v in changes]
    if not touched:
        return None
    if entry.get("since") is not None:
        return touched[-1]
    return "upsert" if touched[-1] == "upsert" else None


def deliveries_of(catalog: Catalog, home: Home, key: str) -> list[dict[str, Any]]:
    """Every delivery that contained the record with ``key`` in any dataset, in log order."""
    keystore = Keystore(home.keystore)
    secret = keystore.hmac_key()
    algorithm = keystore.hmac_algorithm()
    decryption = keystore_decryption(keystore)
    changes: dict[str, Changes] = {}
    for ds in catalog.datasets.values():
        store = SharingStore(home.store, ds.id)
        if store.latest() is None:
            continue
        normalised = normalise_key(ds, key)
        if not normalised:
            continue
        ref = key_refs(pa.array([normalised], pa.string()), secret, algorithm)[0].as_py()
        found = record_changes(store, decryption, ds, ref, secret, algorithm)
        if found:
            changes[ds.id] = found
    if not changes:
        return []
    entries = list(_entries(AccessLog.of(home, keystore)))
    outcomes = {e.get("delivery"): e.get("outcome") for e in entries if e.get("event") == COMPLETE}
    found_rows = []
    for e in entries:
        if e.get("event") != DELIVERY or e.get("dataset") not in changes:
            continue
        how = contained(changes[e["dataset"]], e)
        if how is None:
            continue
        outcome = e.get("outcome")
        if outcome == "pending":
            outcome = outcomes.get(e["seq"]) or "started, not confirmed"
        found_rows.append({
            "seq": e["seq"], "time": e.get("time"), "subscriber": e.get("subscriber"), "channel": e.get("channel"),
            "purpose": e.get("purpose"), "case": e.get("case"), "approval_id": e.get("approval_id"),
            "dataset": e["dataset"], "version": e.get("version"), "since": e.get("since"),
            "versions_read": e.get("versions_read"), "fields": e.get("fields"), "as": how, "outcome": outcome,
        })
    return found_rows


def _entries(log: AccessLog) -> Iterator[dict[str, Any]]:
    yield from log.entries()
