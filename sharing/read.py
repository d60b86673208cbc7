"""Reading published versions back: only the wanted columns, decrypted, folded across versions."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from common.catalog import Dataset
from keys.keystore import Keystore
from keys.protection import decryption_properties
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


def read_changes(store: SharingStore, keystore: Keystore, manifest: Manifest, columns: Sequence[str], key: str) -> VersionChanges:
    folder = store.version_dir(manifest.version)
    decrypt = decryption_properties(keystore)
    upserts = pq.ParquetFile(folder / manifest.files("upserts")[0]["path"], decryption_properties=decrypt)
    deletes = pq.ParquetFile(folder / manifest.files("deletes")[0]["path"], decryption_properties=decrypt)
    return VersionChanges(
        version=manifest.version,
        upserts=upserts.read(columns=list(columns)),
        deletes=deletes.read(columns=[key]),
    )


def read_view(store: SharingStore, keystore: Keystore, dataset: Dataset, manifests: Sequence[Manifest],
              columns: Sequence[str], first: int, last: int, keep_deletes: bool, with_refs: bool = False) -> pa.Table:
    """Fold versions first..last (inclusive) over ``columns`` (which must include the key), and
    with_refs: the pseudonymous _key_ref and _fingerprint columns too (null on deletes).

    The columns are read under the schema the versions were published with (their manifests),
    never the catalog's; versions that published them differently are refused (exit 2)."""
    published = check_span(dataset.id, manifests, min(first, last), last, columns)
    schema = arrow_schema(published, columns)
    if with_refs:
        schema = schema.append(REF_FIELDS[0]).append(REF_FIELDS[1])
    changes = [read_changes(store, keystore, manifests[v - 1], schema.names, dataset.key) for v in range(first, last + 1)]
    return fold(changes, dataset.key, schema, keep_deletes)
