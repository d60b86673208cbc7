"""Verification of published versions: signatures, the manifest chain and file digests; and of
the store against the sync state and the state index (``check_consistency``).

Any mismatch raises IntegrityError (exit 3). Nothing is trusted that was not checked: readers
(``govshare pull``) verify the chain up to the version they serve and every file they read, and
a sync checks store, state and index against each other before it reads a row and again before
it publishes.

What store and state may be (N: the store's newest version; S: the version the state records):

- no store, no state: a fresh dataset, fine;
- S == N, the state's manifest digest that of N, the index at N: fine;
- N == S + 1 (S none: N == 1): a publish made N visible and was interrupted before it recorded
  it (``pending``); the pipeline finishes that run's publish from its work folder;
- S > N, or the digest of S differs: versions were removed or replaced in the store. Never
  repaired by a sync (it would reuse the numbers): restore the store;
- the store holds versions but there is no state (or a state several versions behind, or an
  index that is missing or at another version): the state is refused; ``govshare sync DATASET
  --full`` adopts the store after verifying its chain and head files, and its snapshot version
  N+1 rebuilds state and index (``repair=True``);
- an unreadable state file or index file: exit 3 naming the file, never repaired silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from common.errors import IntegrityError
from common.files import digest_file
from keys.keystore import Keystore
from keys.profile import GM, STANDARD
from sharing.index import StateIndex
from sharing.state import SyncState, read_state, state_exists, state_path
from sharing.store import MANIFEST, SIGNATURE, Manifest, SharingStore

# each crypto profile's signature algorithm -> its digest (Ed25519: SHA-256, SM2: SM3)
SIGNATURE_DIGEST = {p.signing: p.digest for p in (STANDARD, GM)}

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


class SignatureVerifier(Protocol):
    """What checks a publisher's signature: the publisher's keystore, or an agent's pinned key."""

    def verify(self, data: bytes, signature_doc: Mapping[str, Any]) -> None:
        """Return if ``signature_doc`` is the publisher's signature of ``data``; IntegrityError otherwise."""


def verify_chain(store: SharingStore, keystore: SignatureVerifier, upto: int) -> tuple[Manifest, ...]:
    """Check signature, numbering and back-link of every manifest 1..upto (``keystore``: anything
    that verifies the publisher's signatures, e.g. an agent's pinned publisher key)."""
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
        signature = store.read_signature(version)
        try:
            keystore.verify(manifest.raw, signature)
        except IntegrityError as exc:
            raise IntegrityError(f"{store.dataset_id} version {version}: manifest signature does not verify ({exc.message})") from None
        # the digest goes with the signature's profile (Ed25519: SHA-256, SM2: SM3), never weaker
        wanted = SIGNATURE_DIGEST.get(str(signature.get("algorithm")))
        if manifest.digest_algorithm != wanted:
            raise IntegrityError(f"{store.dataset_id} version {version}: the manifest is digested with "
                                 f"{manifest.digest_algorithm} but signed with {signature.get('algorithm')}, whose profile "
                                 f"digests with {wanted}: a manifest re-digested under another algorithm is refused")
        doc = manifest.doc
        if doc.get("dataset") != store.dataset_id or doc.get("version") != version:
            raise IntegrityError(f"{store.dataset_id} version {version}: manifest names dataset {doc.get('dataset')!r} version {doc.get('version')!r}")
        link = doc.get("previous")
        if previous is None:
            if link is not None:
                raise IntegrityError(f"{store.dataset_id} version 1: manifest links to a predecessor; the chain was rewritten")
        elif not isinstance(link, dict) or link.get("version") != version - 1 or link.get(manifest.link_field) != previous.digest:
            raise IntegrityError(
                f"{store.dataset_id} version {version}: the digest of manifest {version - 1} does not match its back-link; "
                "a manifest was altered or replaced"
            )
        manifests.append(manifest)
        previous = manifest
    return tuple(manifests)


def verify_files(store: SharingStore, manifest: Manifest, roles: Iterable[str] | None = None) -> int:
    """Check the digest (SHA-256, or SM3 in the gm profile) and size of the manifest's files, and
    that nothing else lies beside them."""
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
        if path.stat().st_size != entry["bytes"] or digest_file(path, manifest.digest_algorithm) != entry.get(manifest.digest_field):
            raise IntegrityError(
                f"{store.dataset_id} version {manifest.version}: file {entry['path']} does not match its "
                f"{manifest.digest_algorithm} in the manifest"
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


@dataclass(frozen=True)
class Consistency:
    """What check_consistency found: the verified head, the state, and a pending version."""

    head: Manifest | None
    state: SyncState
    index_version: int | None
    pending: Manifest | None  # the head, made visible by a publish that did not record it

    @property
    def pending_run(self) -> str | None:
        return self.pending.doc.get("run_id") if self.pending else None


def check_consistency(store: SharingStore, keystore: Keystore, state_dir: Path, repair: bool = False) -> Consistency:
    """Check the store (chain, signatures, the head's files), the state and the index against each
    other (see the module's docstring). ``repair``: a full snapshot is about to rebuild state and
    index, so only the store must be sound and no version may be missing."""
    ds = store.dataset_id
    state = read_state(state_dir, ds)
    index_version = StateIndex(state_dir, ds).check()
    latest = store.latest()
    head = verify_chain(store, keystore, latest)[-1] if latest else None
    if head is not None:
        verify_files(store, head)
    recorded = state.version or 0
    _check_not_lost(store, state_dir, state, latest, index_version)
    if state.version is not None and state.manifest_sha256 is not None:
        found = store.read_manifest(state.version).digest
        if found != state.manifest_sha256:
            raise IntegrityError(
                f"{ds} version {state.version}: its manifest is not the one published (sha256 {found[:16]}..., the sync "
                f"state {state_path(state_dir, ds)} recorded {state.manifest_sha256[:16]}...): the version was replaced; "
                "restore the store from a backup")
    pending = head if latest is not None and latest == recorded + 1 else None
    if not repair:
        _check_state_follows(store, state_dir, state, latest, index_version, pending)
    return Consistency(head, state, index_version, pending)


def _check_not_lost(store: SharingStore, state_dir: Path, state: SyncState, latest: int | None,
                    index_version: int | None) -> None:
    """State and index never name a version the store does not hold: publishing would reuse it."""
    ds = store.dataset_id
    for witness, version in ((f"the sync state {state_path(state_dir, ds)}", state.version),
                             (f"the state index {StateIndex(state_dir, ds).folder}", index_version)):
        if version is not None and version > (latest or 0):
            newest = f"is version {latest}" if latest else "is missing (no version at all)"
            raise IntegrityError(
                f"{ds}: {witness} is at version {version} but the store's newest version {newest}: "
                f"version(s) {_ranges(list(range((latest or 0) + 1, version + 1)))} are missing from {store.versions_dir}; "
                "restore the store from a backup (a sync would reuse the version numbers, so none runs)")


def _check_state_follows(store: SharingStore, state_dir: Path, state: SyncState, latest: int | None,
                         index_version: int | None, pending: Manifest | None) -> None:
    """The state (and the index) are at the store's head, or one behind it with the head pending."""
    ds = store.dataset_id
    repair = f"run 'govshare sync {ds} --full' to adopt the verified store and rebuild the state with a full snapshot"
    if latest is not None and pending is None and (state.version or 0) < latest:
        if not state_exists(state_dir, ds):
            raise IntegrityError(f"{ds}: the store holds versions 1..{latest} but there is no sync state "
                                 f"({state_path(state_dir, ds)}); {repair}")
        raise IntegrityError(f"{ds}: the sync state {state_path(state_dir, ds)} is at version {state.version} "
                             f"but the store's newest version is {latest}; {repair}")
    index = StateIndex(state_dir, ds)
    if state.version is not None and not index.exists():
        raise IntegrityError(f"{ds}: the state index {index.folder} is missing (the state is at version "
                             f"{state.version}); {repair}")
    if state.manifest_sha256 is not None and index.exists() and index_version is None:
        raise IntegrityError(f"{ds}: the state index {index.folder} has no index.json (the state is at version "
                             f"{state.version}); {repair}")
    allowed = {state.version} | ({pending.version} if pending else set())
    if index_version is not None and index_version not in allowed:
        raise IntegrityError(f"{ds}: the state index {index.folder} is at version {index_version} but the sync state "
                             f"is at version {state.version}; {repair}")
