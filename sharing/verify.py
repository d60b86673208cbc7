"""Verification of published versions: signatures, the manifest chain and file digests.

Any mismatch raises IntegrityError (exit 3). Nothing is trusted that was not checked: readers
(``govshare pull``) verify the chain up to the version they serve and every file they read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from common.errors import IntegrityError
from common.files import sha256_file
from keys.keystore import Keystore
from sharing.store import MANIFEST, SIGNATURE, Manifest, SharingStore


@dataclass(frozen=True)
class VerifiedChain:
    dataset: str
    manifests: tuple[Manifest, ...]  # versions 1..N, index i holds version i+1
    files_checked: int

    @property
    def head(self) -> Manifest:
        return self.manifests[-1]

    def manifest(self, version: int) -> Manifest:
        return self.manifests[version - 1]


def verify_chain(store: SharingStore, keystore: Keystore, upto: int) -> tuple[Manifest, ...]:
    """Check signature, numbering and back-link of every manifest 1..upto."""
    published = store.versions()
    expected = list(range(1, upto + 1))
    present = [v for v in published if v <= upto]
    if present != expected:
        missing = sorted(set(expected) - set(present))
        raise IntegrityError(
            f"{store.dataset_id}: the manifest chain is broken: version(s) {_ranges(missing)} are missing from {store.versions_dir}"
        )
    manifests: list[Manifest] = []
    previous: Manifest | None = None
    for version in expected:
        manifest = store.read_manifest(version)
        try:
            keystore.verify(manifest.raw, store.read_signature(version))
        except IntegrityError as exc:
            raise IntegrityError(f"{store.dataset_id} version {version}: manifest signature does not verify ({exc.message})") from None
        doc = manifest.doc
        if doc.get("dataset") != store.dataset_id or doc.get("version") != version:
            raise IntegrityError(f"{store.dataset_id} version {version}: manifest names dataset {doc.get('dataset')!r} version {doc.get('version')!r}")
        link = doc.get("previous")
        if previous is None:
            if link is not None:
                raise IntegrityError(f"{store.dataset_id} version 1: manifest links to a predecessor; the chain was rewritten")
        elif not isinstance(link, dict) or link.get("version") != version - 1 or link.get("manifest_sha256") != previous.digest:
            raise IntegrityError(
                f"{store.dataset_id} version {version}: the digest of manifest {version - 1} does not match its back-link; "
                "a manifest was altered or replaced"
            )
        manifests.append(manifest)
        previous = manifest
    return tuple(manifests)


def verify_files(store: SharingStore, manifest: Manifest, roles: Iterable[str] | None = None) -> int:
    """Check the SHA-256 and size of the manifest's files, and that nothing else lies beside them."""
    folder = store.version_dir(manifest.version)
    wanted = set(roles) if roles is not None else None
    listed = {f["path"] for f in manifest.files()}
    if wanted is None:
        extra = sorted(p.name for p in folder.iterdir() if p.name not in listed | {MANIFEST, SIGNATURE})
        if extra:
            raise IntegrityError(f"{store.dataset_id} version {manifest.version}: files not in the manifest: {', '.join(extra)}")
    checked = 0
    for entry in manifest.files():
        if wanted is not None and entry["role"] not in wanted:
            continue
        path = _inside(folder, entry["path"], store.dataset_id, manifest.version)
        if not path.is_file():
            raise IntegrityError(f"{store.dataset_id} version {manifest.version}: file {entry['path']} is missing")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise IntegrityError(
                f"{store.dataset_id} version {manifest.version}: file {entry['path']} does not match its SHA-256 in the manifest"
            )
        checked += 1
    return checked


def verify_dataset(store: SharingStore, keystore: Keystore, version: int | None = None) -> VerifiedChain:
    """Full check of versions 1..N (default: latest): chain, signatures and every file."""
    upto = store.require_version(version)
    manifests = verify_chain(store, keystore, upto)
    files = sum(verify_files(store, m) for m in manifests)
    return VerifiedChain(dataset=store.dataset_id, manifests=manifests, files_checked=files)


def _inside(folder: Path, relative: str, dataset: str, version: int) -> Path:
    path = (folder / relative).resolve()
    if path.parent != folder.resolve():
        raise IntegrityError(f"{dataset} version {version}: manifest names a file outside its version folder")
    return path


def _ranges(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers[:10]) + (" ..." if len(numbers) > 10 else "")
