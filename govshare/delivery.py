"""A pull on the publisher's machine: the bureau's own preview of what a subscriber receives,
and the access log's record of it (channel ``preview``). Approval systems receive their data
through their own agents over the sharing service (service/, agent/), which logs alike.

The granted view comes from sharing.pull (access decided before anything is read, the chain and
files verified); the record of the delivery goes into the access log (lineage.audit), as part of
the delivery, in this order:

1. access decided: a denial (unknown, suspended or revoked subscriber, no grant, approval not in
   force, missing or bad purpose) is a ``denied`` record (subscriber as given, dataset, reason),
   then exit 4;
2. the output is checked as far as it can be without writing (a database URL, a grant with the
   key field for a table keyed on it), and the view is verified and read;
3. a ``delivery`` record with outcome ``pending`` (subscriber, purpose, versions, fields, rows):
   if it cannot be written, nothing is delivered (exit 2, nothing written anywhere);
4. the output is written out of sight (a temporary file; the target database's open transaction);
5. a ``delivery-complete`` record (``delivery`` = 3.'s seq, outcome ``confirmed``, the file's
   SHA-256 or the target) is written, and only then the output becomes visible (the rename, the
   commit). If that record cannot be written, the temporary file is removed and the transaction
   rolled back: nothing is delivered.

A failure after 3. adds a ``delivery-complete`` record with outcome ``failed`` when it can; a
pending record without a completion is shown by ``govshare audit verify`` and the lineage report
as "started, not confirmed" (a crash, or the log failing between 3. and 5.).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from common.catalog import Catalog
from common.errors import AccessDenied, ConfigError, GovshareError
from common.home import Home
from common.progress import Progress
from common.times import today as local_today
from keys.keystore import Keystore
from lineage.audit import COMPLETE, DELIVERY, DENIED, AccessLog
from sharing.pull import authorise, check_output, check_purpose, granted_view, shown_subscriber, write_view

log = logging.getLogger(__name__)


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
    access_log = AccessLog.of(home, Keystore(home.keystore))
    try:
        purpose = check_purpose(purpose)
        subscriber, grant = authorise(catalog, subscriber_id, ds.id, today or local_today())
    except AccessDenied as denied:
        raise _recorded_denial(access_log, subscriber_id, ds.id, denied) from None
    check_output(ds, grant, out)
    progress = Progress(f"pull {ds.id}")
    progress.stage("verifying and reading")
    try:
        view = granted_view(home, ds, grant, version, since)
    finally:
        progress.done()
    try:
        pending = access_log.append({
            "event": DELIVERY,
            "channel": "preview",  # run on the publisher's machine with its keys: the bureau's own preview
            "outcome": "pending",
            "subscriber": subscriber.id,
            "dataset": ds.id,
            "version": view.version,
            "since": since,
            "versions_read": [view.first, view.version] if view.first <= view.version else [],
            "manifest_sha256": view.manifest_sha256,
            "purpose": purpose,
            "approval_id": grant.approval.id if grant.approval else None,
            "fields": list(grant.fields),
            **({"masked": list(grant.masked)} if grant.masked else {}),
            "rows": view.table.num_rows,
            "deletes": view.deletes,
        })
    except ConfigError as exc:
        raise ConfigError(f"{exc.message}: the delivery could not be recorded, so nothing was delivered") from None

    def confirm(output: dict[str, str]) -> None:
        try:
            access_log.append(_completion(pending, "confirmed", output))
        except ConfigError as exc:
            raise ConfigError(f"{exc.message}: the delivery's completion could not be recorded, so nothing was "
                              f"delivered (access log record {pending['seq']} stays 'started, not confirmed')") from None

    try:
        output = write_view(view, ds, grant, out, confirm)
    except GovshareError as failure:
        _record_failure(access_log, pending, failure)
        raise
    target: Path | str = output.get("target") or Path(out).resolve()
    return PullResult(ds.id, subscriber.id, view.version, since, view.table.num_rows, view.deletes, grant.fields,
                      target, pending["seq"])


def _completion(pending: dict[str, Any], outcome: str, detail: dict[str, str]) -> dict[str, Any]:
    return {"event": COMPLETE, "delivery": pending["seq"], "outcome": outcome, "subscriber": pending["subscriber"],
            "dataset": pending["dataset"], **detail}


def _recorded_denial(access_log: AccessLog, subscriber_id: str, dataset_id: str, denied: AccessDenied) -> AccessDenied:
    """The denial, recorded in the access log (never the purpose: it is free text)."""
    try:
        access_log.append({"event": DENIED, "subscriber": shown_subscriber(subscriber_id),
                           "dataset": dataset_id, "reason": denied.message})
    except ConfigError as exc:
        return AccessDenied(denied.message, problems=[*denied.problems, f"the denial could not be recorded: {exc.message}"])
    return denied


def _record_failure(access_log: AccessLog, pending: dict[str, Any], failure: GovshareError) -> None:
    """Close the pending record as failed; if the log refuses that too, the record stays
    'started, not confirmed', which audit verify reports, and the delivery's own error is raised."""
    try:
        access_log.append(_completion(pending, "failed", {"reason": failure.message}))
    except ConfigError as exc:
        log.warning("access log record %s stays 'started, not confirmed': %s", pending["seq"], exc.message)
