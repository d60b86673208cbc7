"""What an approval system runs: its granted view of a verified version, or the changes since one.

Access is decided before anything is read: a known subscriber, a grant for the dataset, an
approval in force for 有条件共享 fields, and a stated purpose (申请事由, 1..200 characters).
Every delivery goes into the access log.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.catalog import Catalog, Grant, Subscriber
from common.errors import AccessDenied, ConfigError
from common.home import Home
from common.schema import CHANGE_TYPE, COMMIT_VERSION, DISPUTED
from keys.keystore import Keystore
from lineage.audit import AccessLog
from sharing.changes import FINGERPRINT, KEY_REF
from sharing.disputes import DisputeLog, disputed_mask
from sharing.feed import DELETE
from sharing.read import base_version, read_view
from sharing.store import SharingStore, sha256_file
from sharing.verify import verify_chain, verify_files

MAX_PURPOSE = 200


@dataclass(frozen=True)
class PullResult:
    dataset: str
    subscriber: str
    version: int
    since: int | None
    rows: int
    deletes: int
    fields: tuple[str, ...]
    out: Path
    delivery: int  # sequence number of the access-log record


def check_purpose(purpose: str | None) -> str:
    text = (purpose or "").strip()
    if not text:
        raise AccessDenied("a pull needs --purpose: the stated reason (申请事由) for receiving the data, 1 to 200 characters")
    if len(text) > MAX_PURPOSE:
        raise AccessDenied(f"--purpose is {len(text)} characters long; at most {MAX_PURPOSE} are allowed")
    return text


def authorise(catalog: Catalog, subscriber_id: str, dataset_id: str, today: date) -> tuple[Subscriber, Grant]:
    subscriber = catalog.subscriber(subscriber_id)
    if subscriber is None:
        raise AccessDenied(f"subscriber {subscriber_id!r} is not registered in the catalog; no data is shared with it")
    grant = subscriber.grant_for(dataset_id)
    if grant is None:
        raise AccessDenied(f"subscriber {subscriber_id} has no grant for dataset {dataset_id}")
    ds = catalog.dataset(dataset_id)
    conditional = [f for f in grant.fields if ds.field(f).sharing == "conditional"]
    if conditional:
        approval = grant.approval
        if approval is None:  # the loader refuses this; kept as a second lock
            raise AccessDenied(f"subscriber {subscriber_id}: conditional fields of {dataset_id} need a recorded approval")
        if approval.expires_on is not None and approval.expires_on < today:
            raise AccessDenied(
                f"subscriber {subscriber_id}: approval {approval.id} for {dataset_id} expired on {approval.expires_on}"
            )
    return subscriber, grant


def pull(catalog: Catalog, home: Home, dataset_id: str, subscriber_id: str, purpose: str | None, out: str,
         version: int | None = None, since: int | None = None, today: date | None = None) -> PullResult:
    from govshare.pipeline import today as local_today

    ds = catalog.dataset(dataset_id)
    purpose = check_purpose(purpose)
    subscriber, grant = authorise(catalog, subscriber_id, ds.id, today or local_today())
    if version is not None and since is not None:
        raise ConfigError("--version and --since exclude each other")
    home.require_initialised()
    keystore = Keystore(home.keystore)
    store = SharingStore(home.store, ds.id)
    upto = store.require_version(None if since is not None else version)
    if since is not None and not 0 <= since <= upto:
        raise ConfigError(f"--since {since}: dataset {ds.id} has versions 1..{upto}")
    manifests = verify_chain(store, keystore, upto)
    first = since + 1 if since is not None else base_version(manifests, upto)
    for v in range(first, upto + 1):
        verify_files(store, manifests[v - 1])

    columns = list(grant.fields) if ds.key in grant.fields else [ds.key, *grant.fields]
    disputes = DisputeLog(home, ds.id).open()
    view = read_view(store, keystore, ds, manifests, columns, first, upto, keep_deletes=since is not None,
                     with_refs=bool(disputes))
    disputed = (disputed_mask(disputes, view.column(KEY_REF), view.column(FINGERPRINT)) if disputes
                else pa.repeat(pa.scalar(False), view.num_rows))
    delivered = view.select([*grant.fields, CHANGE_TYPE, COMMIT_VERSION]).append_column(DISPUTED, disputed)
    if "://" in out:  # a SQLAlchemy URL: apply the changes to the subscriber's database
        from sharing.deliver import deliver

        target: Path | str = deliver(delivered, ds, grant.fields, out).target
        output = {"target": target}
    else:
        target = Path(out).resolve()
        _write_atomically(delivered, target)
        output = {"output_sha256": sha256_file(target)}
    deletes = int(pc.sum(pc.equal(delivered.column(CHANGE_TYPE), DELETE)).as_py() or 0)
    entry = AccessLog(home.audit, keystore).append({
        "event": "delivery",
        "subscriber": subscriber.id,
        "dataset": ds.id,
        "version": upto,
        "since": since,
        "versions_read": [first, upto] if first <= upto else [],
        "manifest_sha256": manifests[upto - 1].digest,
        "purpose": purpose,
        "approval_id": grant.approval.id if grant.approval else None,
        "fields": list(grant.fields),
        "rows": delivered.num_rows,
        "deletes": deletes,
        **output,
    })
    return PullResult(ds.id, subscriber.id, upto, since, delivered.num_rows, deletes, grant.fields, target, entry["seq"])


def _write_atomically(table, target: Path) -> None:  # noqa: ANN001 - a pyarrow table
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
