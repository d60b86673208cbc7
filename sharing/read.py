"""Reading published versions back: only the wanted columns, decrypted, folded across versions.

Readers pass what opens the versions (a ``keys.protection.Decryption``, or bare PME decryption
properties): the publisher's (``keys.protection.keystore_decryption(keystore)``, every version) or a
subscriber agent's (``keys.protection.decryption_for_keys(keys)``: only the data keys its
envelopes hold; PME files in the standard profile, sealed SM4 files in the gm profile). Views fold by the
pseudonymous ``_key_ref`` that every version's upserts and deletes hold, so a grant without the
key field folds exactly like one with it; versions written before deletes carried ``_key_ref``
fold by the key, which only the publisher can read.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from common.catalog import Dataset
from common.errors import ConfigError
from keys.protection import Decryption, as_decryption
from keys.pseudonyms import KEY_REF
from sharing.changes import REF_FIELDS
from sharing.feed import VersionChanges, fold
from sharing.schema_change import arrow_schema, check_span
from sharing.store import Manifest, SharingStore


def base_version(manifests: Sequence[Manifest], upto: int) -> int:
    """The latest snapshot at or before ``upto``: a full view needs nothing older."""
    for manifest in reversed(manifests[:upto]):
        if manifest.kind == "snapshot":
            return manifest.version
    return 1


def folds_by_ref(manifest: Manifest) -> bool:
    """Whether the version's deletes carry ``_key_ref`` (versions with per-version data keys do)."""
    return "data_keys" in manifest.doc


def read_changes(store: SharingStore, decryption: Decryption | pq.FileDecryptionProperties, manifest: Manifest,
                 columns: Sequence[str], by: str) -> VersionChanges:
    """A version's upserts (``columns``) and deletes (``by``, and the columns among ``columns``
    that a deletes file holds: the key and its ref)."""
    folder = store.version_dir(manifest.version)
    opener = as_decryption(decryption)
    upserts = opener.open(folder / manifest.files("upserts")[0]["path"])
    deletes = opener.open(folder / manifest.files("deletes")[0]["path"])
    try:
        held = set(deletes.schema_arrow.names)
        wanted = [by, *(c for c in columns if c in held and c != by)]
        return VersionChanges(version=manifest.version, upserts=upserts.read(columns=list(columns)),
                              deletes=deletes.read(columns=wanted))
    finally:
        upserts.close()
        deletes.close()


def read_view(store: SharingStore, decryption: Decryption | pq.FileDecryptionProperties, dataset: Dataset,
              manifests: Sequence[Manifest], columns: Sequence[str], first: int, last: int, keep_deletes: bool,
              with_refs: bool = False) -> pa.Table:
    """Fold versions first..last (inclusive) over ``columns``, and with_refs: the pseudonymous
    _key_ref and _fingerprint columns too (_fingerprint null on deletes).

    The columns are read under the schema the versions were published with (their manifests),
    never the catalog's; versions that published them differently are refused (exit 2)."""
    published = check_span(dataset.id, manifests, min(first, last), last, columns)
    schema = arrow_schema(published, columns)
    span = manifests[first - 1:last]
    by = KEY_REF if all(folds_by_ref(m) for m in span) else dataset.key
    if by == dataset.key and dataset.key not in columns:
        raise ConfigError(f"{dataset.id}: versions {first}..{last} were published before deletes carried key refs, so "
                          f"they fold by {dataset.key}, which this view does not hold: publish a full snapshot "
                          f"('govshare sync {dataset.id} --full') and read from it")
    read = schema.append(REF_FIELDS[0]).append(REF_FIELDS[1])
    changes = [read_changes(store, decryption, manifests[v - 1], read.names, by) for v in range(first, last + 1)]
    view = fold(changes, by, read, keep_deletes)
    return view if with_refs else view.drop_columns([f.name for f in REF_FIELDS])
