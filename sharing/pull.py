"""A subscriber's granted view of a verified version, or of the changes since one.

Access is decided before anything is read: a known, active subscriber, a grant for the dataset,
its approval in force (required for 有条件共享 fields), and a stated purpose (申请事由, 1..200
characters). The output is written 0600 (folders made for it 0700), whatever the umask.
A pull (govshare.delivery) puts these together with the access log's record of the delivery.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.catalog import Catalog, Dataset, Grant, Subscriber
from common.errors import AccessDenied, ConfigError, GovshareError
from common.files import private_tmp, sha256_file
from common.home import Home
from common.oserrors import storage_error
from common.schema import CHANGE_TYPE, COMMIT_VERSION, DISPUTED
from keys.keystore import Keystore
from keys.protection import keystore_decryption
from keys.pseudonyms import FINGERPRINT, KEY_REF
from sharing.deliver import check_target, deliver
from sharing.disputes import DisputeLog, disputed_mask, shown_subscriber
from sharing.feed import DELETE
from sharing.read import base_version, read_view
from sharing.schema_change import check_catalog, check_span
from sharing.store import SharingStore
from sharing.verify import verify_chain, verify_files

MAX_PURPOSE = 200


def check_purpose(purpose: str | None) -> str:
    text = (purpose or "").strip()
    if not text:
        raise AccessDenied("a pull needs --purpose: the stated reason (申请事由) for receiving the data, 1 to 200 characters")
    if len(text) > MAX_PURPOSE:
        raise AccessDenied(f"--purpose is {len(text)} characters long; at most {MAX_PURPOSE} are allowed")
    return text


def authorise(catalog: Catalog, subscriber_id: str, dataset_id: str, today: date) -> tuple[Subscriber, Grant]:
    """The subscriber and its grant for the dataset, or AccessDenied saying why: unknown, suspended
    or revoked subscriber; no grant; an approval that is not in force (not yet valid, expired,
    suspended or revoked); conditional fields without an approval."""
    subscriber = catalog.subscriber(subscriber_id)
    if subscriber is None:
        raise AccessDenied(f"subscriber {shown_subscriber(subscriber_id)!r} is not registered in the catalog; "
                           "no data is shared with it")
    if not subscriber.active:
        raise AccessDenied(f"subscriber {subscriber.id} is {subscriber.status}; no data is shared with it")
    grant = subscriber.grant_for(dataset_id)
    if grant is None:
        raise AccessDenied(f"subscriber {subscriber_id} has no grant for dataset {dataset_id}")
    ds = catalog.dataset(dataset_id)
    conditional = [f for f in grant.fields if ds.field(f).sharing == "conditional"]
    if conditional and grant.approval is None:  # the loader refuses this; kept as a second lock
        raise AccessDenied(f"subscriber {subscriber_id}: conditional fields of {dataset_id} need a recorded approval")
    why_not = grant.approval.in_force(today) if grant.approval else None
    if why_not:
        raise AccessDenied(f"subscriber {subscriber_id}: {why_not}; its grant for {dataset_id} is not in force")
    return subscriber, grant


@dataclass(frozen=True)
class GrantedView:
    """What a subscriber's grant lets it see of a verified version (or of the changes since one)."""

    table: pa.Table  # the granted fields, _change_type, _commit_version, _disputed
    version: int  # the version the view is of
    first: int  # the first version read (a full view starts at the latest snapshot)
    manifest_sha256: str
    deletes: int


def granted_view(home: Home, dataset: Dataset, grant: Grant, version: int | None = None,
                 since: int | None = None) -> GrantedView:
    """Verify the chain and the files a view needs, then read the grant's fields of them,
    decrypted, folded per key, with open disputes flagged."""
    if version is not None and since is not None:
        raise ConfigError("--version and --since exclude each other")
    ds = dataset
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

    columns = view_columns(ds, grant)
    # one schema from the subscriber's copy (version N of --since N) to upto, and the catalog's
    check_catalog(ds, check_span(ds.id, manifests, since or first, upto), columns, upto)
    disputes = DisputeLog(home, ds.id).open()
    view = read_view(store, keystore_decryption(keystore), ds, manifests, columns, first, upto, keep_deletes=since is not None,
                     with_refs=bool(disputes))
    disputed = (disputed_mask(disputes, view.column(KEY_REF), view.column(FINGERPRINT)) if disputes
                else pa.repeat(pa.scalar(False), view.num_rows))
    delivered = granted_columns(view, grant).append_column(DISPUTED, disputed)
    deletes = int(pc.sum(pc.equal(delivered.column(CHANGE_TYPE), DELETE)).as_py() or 0)
    return GrantedView(delivered, upto, first, manifests[upto - 1].digest, deletes)


def view_columns(dataset: Dataset, grant: Grant) -> list[str]:
    """The version columns a grant's view reads: the grant's (masked fields from their masked
    column), and the key, whose deletes a changes view carries, unless the grant receives it
    masked (then its plain column is never read: the view folds by the key's pseudonym)."""
    columns = list(grant.columns)
    if dataset.key not in grant.fields:
        columns.insert(0, dataset.key)
    return columns


def granted_columns(view: pa.Table, grant: Grant) -> pa.Table:
    """The grant's fields of a folded view, each under its field name (a masked column renamed to
    its field), then _change_type and _commit_version."""
    table = view.select([*grant.columns, CHANGE_TYPE, COMMIT_VERSION])
    return table.rename_columns([*grant.fields, CHANGE_TYPE, COMMIT_VERSION])


Confirm = Callable[[dict[str, str]], None]


def check_output(dataset: Dataset, grant: Grant, out: str) -> None:
    """Refuse, before anything is logged or read, an output the view cannot go to (ConfigError)."""
    if "://" in out:
        check_target(dataset, grant.fields, out, grant.masked)


def write_view(view: GrantedView, dataset: Dataset, grant: Grant, out: str, confirm: Confirm) -> dict[str, str]:
    """Write the view as Parquet at ``out``, or apply it to the database a SQLAlchemy URL names;
    what the access log records of the output. ``confirm`` (the access log's completion record)
    is called with it after everything is written and before it becomes visible: the file's
    rename, the transaction's commit. If it fails, nothing is delivered."""
    if "://" in out:  # a SQLAlchemy URL: apply the changes to the subscriber's database
        result = deliver(view.table, dataset, grant.fields, out,
                         before_commit=lambda done: confirm({"target": done.target}), masked=grant.masked)
        return {"target": result.target}
    target = Path(out).resolve()
    try:
        tmp = private_tmp(target)
    except OSError as exc:
        raise _unwritable(exc, out, target) from None
    try:
        try:
            pq.write_table(view.table, tmp, compression="zstd")
        except OSError as exc:
            raise _unwritable(exc, out, target) from None
        output = {"output_sha256": sha256_file(tmp)}
        confirm(output)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return output


def _unwritable(exc: OSError, out: str, target: Path) -> GovshareError:
    """A pull's output that cannot be written: a full disk is worth a retry (75), the rest is exit 2."""
    mapped = storage_error(exc, None, target.parent)
    if mapped is not None:
        return type(mapped)(f"--out {out}: {mapped.message}; nothing was delivered")
    return ConfigError(f"--out {out}: cannot write {target} ({exc.strerror or exc}); nothing was delivered")
