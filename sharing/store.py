"""The sharing store: immutable, signed, chained versions of each dataset's sharing set.

Layout under GOVSHARE_HOME/store/<dataset>/:

    versions/00000001/manifest.json   canonical JSON (schema, rows, files + SHA-256, watermarks,
                      manifest.sig    digest of manifest N-1) and its Ed25519 signature
                      upserts.parquet rows inserted or changed by this version (protected)
                      deletes.parquet keys withdrawn by this version (protected like the key)
    .staging/<run>/                   a version being assembled; invisible to readers
    .publish.lock                     serialises publishers

A version becomes visible by one rename of its complete folder, so a reader sees version N
whole or not at all. Version numbers are 1, 2, 3, ... and never reused.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError, IntegrityError, PublishConflict
from common.files import canonical_json

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MANIFEST_FORMAT = "govshare-manifest/1"
_VERSION_DIGITS = 8


@dataclass(frozen=True)
class Manifest:
    """A version's manifest as published: the signed bytes and their parsed form."""

    version: int
    raw: bytes
    doc: dict[str, Any]

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def kind(self) -> str:
        return self.doc["kind"]

    def files(self, role: str | None = None) -> list[dict[str, Any]]:
        return [f for f in self.doc["files"] if role is None or f["role"] == role]


class SharingStore:
    def __init__(self, root: Path, dataset_id: str) -> None:
        self.dataset_id = dataset_id
        self.root = root / dataset_id
        self.versions_dir = self.root / "versions"
        self.staging_dir = self.root / ".staging"

    # -- reading -------------------------------------------------------------------------

    def versions(self) -> list[int]:
        """Published version numbers, ascending (gaps are the verifier's business)."""
        if not self.versions_dir.is_dir():
            return []
        found = []
        for entry in self.versions_dir.iterdir():
            if entry.is_dir() and entry.name.isdigit() and len(entry.name) == _VERSION_DIGITS:
                found.append(int(entry.name))
        return sorted(found)

    def latest(self) -> int | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def version_dir(self, version: int) -> Path:
        return self.versions_dir / f"{version:0{_VERSION_DIGITS}d}"

    def require_version(self, version: int | None) -> int:
        latest = self.latest()
        if latest is None:
            raise ConfigError(f"dataset {self.dataset_id} has no published version yet: run 'govshare sync {self.dataset_id}'")
        if version is None:
            return latest
        if version < 1 or version > latest:
            raise ConfigError(f"dataset {self.dataset_id} has versions 1..{latest}; there is no version {version}")
        return version

    def read_manifest(self, version: int) -> Manifest:
        path = self.version_dir(version) / MANIFEST
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"{self.dataset_id} version {version}: manifest is missing ({path})") from None
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise IntegrityError(f"{self.dataset_id} version {version}: manifest is not valid JSON ({path})") from None
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            raise IntegrityError(f"{self.dataset_id} version {version}: manifest has an unknown format ({path})")
        return Manifest(version=version, raw=raw, doc=doc)

    def read_signature(self, version: int) -> dict[str, Any]:
        path = self.version_dir(version) / SIGNATURE
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise IntegrityError(f"{self.dataset_id} version {version}: signature is missing ({path})") from None
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise IntegrityError(f"{self.dataset_id} version {version}: signature is unreadable ({path})") from None
        if not isinstance(doc, dict):
            raise IntegrityError(f"{self.dataset_id} version {version}: signature is unreadable ({path})")
        return doc

    # -- writing -------------------------------------------------------------------------

    def stage(self, run_id: str) -> Path:
        """A fresh private folder to assemble a version in (replaces an earlier attempt of the run)."""
        path = self.staging_dir / run_id
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def discard(self, run_id: str) -> None:
        shutil.rmtree(self.staging_dir / run_id, ignore_errors=True)

    @contextmanager
    def publish_lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".publish.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def commit(self, staged: Path, version: int, manifest: bytes, signature: dict[str, Any]) -> Path:
        """Write manifest and signature into the staged folder and make it version N atomically.

        Call under publish_lock(), with version == latest() + 1.
        """
        (staged / MANIFEST).write_bytes(manifest)
        (staged / SIGNATURE).write_bytes(canonical_json(signature))
        _fsync_tree(staged)
        target = self.version_dir(version)
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        if target.exists():
            raise PublishConflict(f"{self.dataset_id} version {version} already exists: another publisher was first; retry the run")
        os.rename(staged, target)  # atomic on one filesystem: the version appears whole
        _fsync_dir(self.versions_dir)
        return target


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
