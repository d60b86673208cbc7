"""A pull: what an approval system receives, and the access log's record of it.

The granted view comes from sharing.pull (access decided before anything is read, the chain and
files verified); the record of the delivery goes into the access log (lineage.audit).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from common.catalog import Catalog
from common.home import Home
from common.times import today as local_today
from keys.keystore import Keystore
from lineage.audit import AccessLog
from sharing.pull import authorise, check_purpose, granted_view, write_view


@dataclass(frozen=True)
class PullResult:
    dataset: str
    subscriber: str
    version: int
    since: int | None
    rows: int
    deletes: int
    fields: tuple[str, ...]
    out: Path | str
    delivery: int  # sequence number of the access-log record


def pull(catalog: Catalog, home: Home, dataset_id: str, subscriber_id: str, purpose: str | None, out: str,
         version: int | None = None, since: int | None = None, today: date | None = None) -> PullResult:
    ds = catalog.dataset(dataset_id)
    purpose = check_purpose(purpose)
    subscriber, grant = authorise(catalog, subscriber_id, ds.id, today or local_today())
    view = granted_view(home, ds, grant, version, since)
    output = write_view(view, ds, grant, out)
    entry = AccessLog(home.audit, Keystore(home.keystore)).append({
        "event": "delivery",
        "subscriber": subscriber.id,
        "dataset": ds.id,
        "version": view.version,
        "since": since,
        "versions_read": [view.first, view.version] if view.first <= view.version else [],
        "manifest_sha256": view.manifest_sha256,
        "purpose": purpose,
        "approval_id": grant.approval.id if grant.approval else None,
        "fields": list(grant.fields),
        "rows": view.table.num_rows,
        "deletes": view.deletes,
        **output,
    })
    target: Path | str = output.get("target") or Path(out).resolve()
    return PullResult(ds.id, subscriber.id, view.version, since, view.table.num_rows, view.deletes, grant.fields,
                      target, entry["seq"])
