"""The plain view a stock Delta Sharing client reads: only the 无条件共享 fields of a grant.

Stock clients hold no keys, so the service decrypts for them, and only what may leave without an
approval: the grant's fields whose catalog sharing class is ``unconditional``. Never a
有条件共享 field (even under an approval in force: those reach a subscriber only through its
agent, decrypted with its own keys), never a 不予共享 one (never published at all). The key field
is in the plain view only when it is itself unconditional: population's ``id_number`` is
conditional, so population's plain view has no key.

Views are read from verified versions (sharing.pull.granted_view: chain, signatures, file
digests) with the publisher's keys, and written unencrypted (Parquet, zstd) to a cache under
GOVSHARE_HOME/service/cache/<dataset>/ (files 0600, folders 0700, written atomically), named by
what determines their content: the version (or ``changes-V-V``), and a digest of the field list
and of the open disputes. A file already there is served again; versions never change. Before
any file is served, the chain up to the version is verified again (signatures: cheap).

Columns: the fields, then ``_disputed`` (bool: an open dispute 数据异议 names exactly this record;
kept, so that subscribers of the plain view see what the agent's subscribers see). A change file
(one per version) also has ``_change_type``: ``insert`` (a key the previous version did not
hold), ``update_postimage`` (a key it held) or ``delete``; the stock client adds
``_commit_version`` and ``_commit_timestamp`` from the file's action. No ``update_preimage`` rows
are written: the versions hold what changed, not what it was before. A delete row carries what
the deletes hold of the view: the key when the key is in the view, otherwise nothing but nulls.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.catalog import Dataset, Grant
from common.errors import AccessDenied
from common.files import private_dir, private_file
from common.home import Home
from common.schema import CHANGE_TYPE, DISPUTED
from keys.keystore import Keystore
from keys.protection import keystore_decryption
from keys.pseudonyms import FINGERPRINT, KEY_REF, REF_TYPE
from service.state import service_dir
from sharing.disputes import DisputeLog, disputed_mask
from sharing.feed import DELETE
from sharing.pull import granted_view
from sharing.read import base_version, read_view
from sharing.schema_change import arrow_schema, check_catalog, check_span, manifest_schema
from sharing.store import Manifest, SharingStore
from sharing.verify import verify_chain, verify_files

INSERT, UPDATE, CDF_DELETE = "insert", "update_postimage", "delete"
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


@dataclass(frozen=True)
class PlainFile:
    name: str  # <dataset>/<stem>.parquet, relative to the cache folder
    path: Path
    rows: int
    size: int
    version: int
    timestamp_ms: int  # when that version was published

    @property
    def id(self) -> str:
        return hashlib.sha256(self.name.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class PlainSnapshot:
    file: PlainFile
    version: int
    first: int  # the first version read (the latest snapshot at or before ``version``)
    manifest_sha256: str


@dataclass(frozen=True)
class PlainChanges:
    files: tuple[PlainFile, ...]  # one per version with changes, oldest first
    first: int
    last: int
    rows: int
    manifest_sha256: str  # of ``last``


def plain_fields(dataset: Dataset, grant: Grant) -> tuple[str, ...]:
    """The grant's fields that the plain view holds: those the catalog shares unconditionally and
    the grant receives plain (masked values are encrypted: they reach the subscriber through its agent)."""
    return tuple(f for f in grant.fields if dataset.field(f).sharing == "unconditional" and f not in grant.masked)


def plain_grant(dataset: Dataset, grant: Grant) -> Grant:
    fields = plain_fields(dataset, grant)
    if not fields:
        raise AccessDenied(f"the grant for {dataset.id} holds no 无条件共享 field, so it has no plain view "
                           "(its fields reach the subscriber through its agent)")
    return replace(grant, fields=fields, masked=())


def cache_dir(home: Home) -> Path:
    return service_dir(home) / "cache"


def published_ms(manifest: Manifest) -> int:
    return int(datetime.fromisoformat(manifest.doc["created_at"]).timestamp() * 1000)


def verified_manifests(home: Home, dataset: Dataset, upto: int | None = None) -> tuple[Manifest, ...]:
    """Manifests 1..upto (default: the latest), signatures and chain verified."""
    store = SharingStore(home.store, dataset.id)
    last = store.require_version(upto)
    return verify_chain(store, Keystore(home.keystore), last)


def view_schema(dataset: Dataset, grant: Grant, manifest: Manifest) -> pa.Schema:
    """The plain view's Arrow schema as ``manifest``'s version publishes the fields, plus _disputed."""
    fields = plain_grant(dataset, grant).fields
    published = manifest_schema(manifest)
    check_catalog(dataset, published, fields, manifest.version)
    return arrow_schema(published, fields).append(pa.field(DISPUTED, pa.bool_(), nullable=False))


def _stem_digest(dataset: Dataset, fields: Sequence[str], home: Home) -> str:
    disputes = sorted(f"{d.key_ref}:{d.fingerprint}" for d in DisputeLog(home, dataset.id).open())
    text = "fields=" + ",".join(fields) + ";disputes=" + ",".join(disputes)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def _lock(name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(name, threading.Lock())


def _write(path: Path, table: pa.Table) -> None:
    private_dir(path.parent)
    tmp = private_file(path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"))
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _plain_file(home: Home, name: str, manifest: Manifest) -> PlainFile:
    path = cache_dir(home) / name
    return PlainFile(name, path, pq.ParquetFile(path).metadata.num_rows, path.stat().st_size, manifest.version,
                     published_ms(manifest))


def snapshot(home: Home, dataset: Dataset, grant: Grant, version: int | None = None) -> PlainSnapshot:
    """The plain view of ``version`` (default: the latest), from the cache or made now."""
    plain = plain_grant(dataset, grant)
    manifests = verified_manifests(home, dataset, version)
    manifest = manifests[-1]
    name = f"{dataset.id}/{manifest.version:08d}-{_stem_digest(dataset, plain.fields, home)}.parquet"
    path = cache_dir(home) / name
    with _lock(name):
        if not path.is_file():
            view = granted_view(home, dataset, plain, version=manifest.version)
            _write(path, view.table.select([*plain.fields, DISPUTED]))
    return PlainSnapshot(_plain_file(home, name, manifest), manifest.version, base_version(manifests, manifest.version),
                         manifest.digest)


def changes(home: Home, dataset: Dataset, grant: Grant, first: int, last: int) -> PlainChanges:
    """The plain view's change feed of versions first..last (inclusive): a file per version."""
    plain = plain_grant(dataset, grant)
    manifests = verified_manifests(home, dataset, last)
    fields = plain.fields
    digest = _stem_digest(dataset, fields, home)
    names = {v: f"{dataset.id}/changes-{v:08d}-{v:08d}-{digest}.parquet" for v in range(first, last + 1)}
    missing = [v for v, n in names.items() if not (cache_dir(home) / n).is_file()]
    if missing:
        with _lock(f"{dataset.id}/changes-{digest}"):
            _make_changes(home, dataset, fields, manifests, missing[0], last, names)
    files = tuple(f for f in (_plain_file(home, names[v], manifests[v - 1]) for v in range(first, last + 1)) if f.rows)
    return PlainChanges(files, first, last, sum(f.rows for f in files), manifests[last - 1].digest)


def _make_changes(home: Home, dataset: Dataset, fields: tuple[str, ...], manifests: Sequence[Manifest], start: int,
                  last: int, names: dict[int, str]) -> None:
    """Write the change files of versions start..last that are missing, walking the versions
    forward from the state at start-1 (only its key refs are read) to tell inserts from updates."""
    store = SharingStore(home.store, dataset.id)
    decryption = keystore_decryption(Keystore(home.keystore))
    columns = list(fields) if dataset.key in fields else [dataset.key, *fields]
    check_catalog(dataset, check_span(dataset.id, manifests, start, last, columns), columns, last)
    base = base_version(manifests, start - 1) if start > 1 else start
    for v in range(base, last + 1):
        verify_files(store, manifests[v - 1])
    if start > 1:
        state = read_view(store, decryption, dataset, manifests, [dataset.key], base, start - 1, keep_deletes=False,
                          with_refs=True)
        alive = state.column(KEY_REF).combine_chunks()
    else:
        alive = pa.array([], REF_TYPE)
    disputes = DisputeLog(home, dataset.id).open()
    for v in range(start, last + 1):
        view = read_view(store, decryption, dataset, manifests, columns, v, v, keep_deletes=True, with_refs=True)
        refs = view.column(KEY_REF).combine_chunks()
        deleted = pc.equal(view.column(CHANGE_TYPE).combine_chunks(), DELETE)
        held = pc.is_in(refs, value_set=alive) if len(alive) else pa.repeat(pa.scalar(False), len(refs))
        change = pc.if_else(deleted, CDF_DELETE, pc.if_else(held, UPDATE, INSERT))
        disputed = disputed_mask(disputes, view.column(KEY_REF), view.column(FINGERPRINT))
        out = view.select(list(fields)).append_column(pa.field(DISPUTED, pa.bool_(), nullable=False), disputed)
        out = out.append_column(pa.field(CHANGE_TYPE, pa.string(), nullable=False), change)
        path = cache_dir(home) / names[v]
        if not path.is_file():
            _write(path, out)
        upserted = refs.filter(pc.invert(deleted))
        alive = pa.concat_arrays([alive.filter(pc.invert(pc.is_in(alive, value_set=refs))), upserted.cast(alive.type)])
