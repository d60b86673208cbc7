"""Which data keys of a version a grant covers, and (publisher side) the keys themselves.

A version's manifest lists its data keys by group (keys.datakeys): ``footer`` (every grantee)
and one group per 有条件共享 field it publishes. A grant's fields map onto groups: the footer,
plus the group of each encrypted field among them. Fields it does not list have no group it
receives, so nothing a subscriber is sent opens them.
"""

from __future__ import annotations

from collections.abc import Iterable

from common.errors import IntegrityError
from keys.datakeys import FOOTER, data_key, is_data_key_id, stored_data_key
from keys.keystore import Keystore
from sharing.store import Manifest


def manifest_keys(manifest: Manifest) -> dict[str, str]:
    """Group -> data key id, as the (verified) manifest lists them; {} for a version written
    before versions had data keys of their own (readable by the publisher alone)."""
    listed = manifest.doc.get("data_keys")
    if listed is None:
        return {}
    where = f"{manifest.doc.get('dataset')} version {manifest.version}"
    if not isinstance(listed, list):
        raise IntegrityError(f"{where}: the manifest's data_keys is not a list")
    keys: dict[str, str] = {}
    for entry in listed:
        group = entry.get("group") if isinstance(entry, dict) else None
        key_id = entry.get("key_id") if isinstance(entry, dict) else None
        if not isinstance(group, str) or not isinstance(key_id, str) or not is_data_key_id(key_id) or group in keys:
            raise IntegrityError(f"{where}: the manifest's data_keys entry {entry!r} is not a group and a data key id")
        keys[group] = key_id
    if FOOTER not in keys:
        raise IntegrityError(f"{where}: the manifest lists no footer data key")
    return keys


def encrypted_fields(manifest: Manifest) -> list[str]:
    """The published fields the version encrypts (each under its own group's data key)."""
    return [f["name"] for f in manifest.doc.get("schema", []) if f.get("protection") == "encrypted"]


def groups_for(manifest: Manifest, fields: Iterable[str]) -> list[str]:
    """The groups of the version that ``fields`` need: the footer, and each encrypted field's own."""
    keys = manifest_keys(manifest)
    encrypted = set(encrypted_fields(manifest))
    groups = [FOOTER, *(f for f in dict.fromkeys(fields) if f in encrypted)]
    missing = [g for g in groups if g not in keys]
    if missing:
        raise IntegrityError(f"{manifest.doc.get('dataset')} version {manifest.version}: the manifest lists no data key "
                             f"for {', '.join(missing)}")
    return groups


def version_keys(keystore: Keystore, manifest: Manifest, groups: Iterable[str]) -> dict[str, tuple[str, bytes]]:
    """Group -> (data key id, the key) for the given groups of a verified version: the publisher's
    keystore unwraps them; each must be the keystore's key of that dataset and group."""
    keys = manifest_keys(manifest)
    dataset = manifest.doc.get("dataset")
    found: dict[str, tuple[str, bytes]] = {}
    for group in groups:
        key_id = keys.get(group)
        if key_id is None:
            raise IntegrityError(f"{dataset} version {manifest.version}: the manifest lists no data key for {group}")
        stored = stored_data_key(keystore, key_id)
        if (stored.dataset, stored.group) != (dataset, group):
            raise IntegrityError(f"{dataset} version {manifest.version}: data key {key_id} is the keystore's key of "
                                 f"{stored.dataset}/{stored.group}, not of {dataset}/{group}")
        found[group] = (key_id, data_key(keystore, key_id))
    return found
