"""Canonical JSON (the bytes that get signed and chained), file digests and atomic writes.

Every write here is whole or not at all, also when the disk fills up half-way: no torn file,
no temporary file left behind, no torn last line of a log, so a retry finds what it left.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.oserrors import read_only


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable (fsync of the directory itself)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def canonical_json(doc: dict[str, Any]) -> bytes:
    """The exact bytes that get signed and chained."""
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    return digest_file(path, "SHA-256", chunk)


# The digests of published artifacts (manifests, their files): SHA-256 in the standard profile, SM3
# (GB/T 32905-2016) in the 国密 profile; each with the field name it is recorded under.
DIGEST_FIELDS = {"SHA-256": "sha256", "SM3": "sm3"}


def _hasher(algorithm: str):  # noqa: ANN202 - a hashlib object (SM3 is OpenSSL's, as keys.merkle's)
    if algorithm not in DIGEST_FIELDS:
        raise ValueError(f"{algorithm!r} is not a digest govshare knows ({', '.join(DIGEST_FIELDS)})")
    return hashlib.new(DIGEST_FIELDS[algorithm])


def digest_bytes(data: bytes, algorithm: str = "SHA-256") -> str:
    """Hex digest of ``data`` (SHA-256 or SM3)."""
    digest = _hasher(algorithm)
    digest.update(bytes(data))
    return digest.hexdigest()


def digest_file(path: Path, algorithm: str = "SHA-256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file, read in chunks (SHA-256 or SM3)."""
    digest = _hasher(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write into: renamed over ``path`` when the block ends,
    removed when it fails (a full disk leaves neither a torn ``path`` nor a stray ``.tmp``)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write ``path`` whole or not at all: a temporary file beside it, then one rename."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with replacing(path) as tmp:
        tmp.write_bytes(raw)
    return path


def append_whole(fd: int, text: str) -> None:
    """Append ``text`` to the file open (for appending, nothing buffered) as ``fd``, whole or not
    at all: a write cut short by a full disk is cut back, so the file never ends in a torn line."""
    size = os.fstat(fd).st_size
    pending = memoryview(text.encode("utf-8"))
    try:
        while pending:
            pending = pending[os.write(fd, pending):]
    except BaseException:
        os.ftruncate(fd, size)
        raise


def write_json(path: Path, doc: Any) -> Path:
    """A JSON document, human-readable, written atomically."""
    return write_atomic(path, json.dumps(doc, ensure_ascii=False, indent=2, default=str))


# -- files with personal data: 0600 in folders 0700, whatever the umask ----------------------

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


@contextmanager
def kept_private() -> Iterator[None]:
    """While the block runs, files and folders this process creates are its user's alone (0600 /
    0700), whatever the umask it was started with: pyarrow, SQLite and every other writer
    included. The command boundaries (the CLI, the Airflow task adapter) run inside it; the
    umask before it is restored after (a caller that embeds them keeps its own)."""
    before = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(before)


def private_dir(folder: Path) -> Path:
    """Make ``folder`` and its missing parents, each created 0700 (folders that already exist
    are left as they are: a pull into /tmp/x must not change /tmp)."""
    missing = []
    current = folder
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, PRIVATE_DIR)
        except FileExistsError:
            continue
        os.chmod(path, PRIVATE_DIR)  # mkdir's mode passes through the umask
    return folder


def private_file(path: Path) -> Path:
    """Create ``path`` empty and 0600 (or truncate it and set 0600) before any data goes in;
    writers that open it by name afterwards (pyarrow) keep the mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)
    return path


def private_tmp(path: Path) -> Path:
    """The temporary file beside ``path`` that an atomic write fills before its rename, created 0600."""
    private_dir(path.parent)
    return private_file(path.with_name(f".{path.name}.{os.getpid()}.tmp"))


def write_private(path: Path, data: bytes | str) -> Path:
    """Like write_atomic, for a file with personal data: 0600 from its first byte, in folders 0700."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = private_tmp(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(raw)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def inside(path: Path, folder: Path) -> bool:
    """Is ``path`` (symlinks resolved) ``folder`` or somewhere under it."""
    resolved, root = path.resolve(), folder.resolve()
    return resolved == root or root in resolved.parents


def check_output_file(raw: str, protected: dict[str, Path], option: str = "--out") -> Path:
    """The file a command is told to write, refused (ConfigError, exit 2, naming the path) when it
    lies inside one of the ``protected`` places (label -> folder; symlinks resolved) or cannot be
    written there: empty, an existing folder, under a file, or in a place that is not writable."""
    if not raw.strip():
        raise ConfigError(f"{option} is empty: name the file to write")
    path = Path(raw).expanduser().resolve()
    for label, folder in protected.items():
        if inside(path, folder):
            raise ConfigError(f"{option} {raw}: {path} is inside {label} ({folder.resolve()}); "
                              "write it somewhere else, nothing was written")
    if path.is_dir():
        raise ConfigError(f"{option} {raw}: {path} is a folder; name a file")
    existing = path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{option} {raw}: {existing} is a file, so nothing can be written under it")
    if read_only(existing):
        raise ConfigError(f"{option} {raw}: cannot write {path}: the file system is read-only; "
                          f"the folder {existing} is not writable")
    if not os.access(existing, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"{option} {raw}: {existing} is not writable")
    return path


def check_output_target(raw: str, protected: dict[str, Path]) -> str:
    """--out as a file path or a SQLAlchemy URL, refused like check_output_file when the file (or a
    SQLite URL's database file) lies inside one of the ``protected`` places or cannot be written."""
    if "://" not in raw:
        return str(check_output_file(raw, protected))
    if raw.split("://", 1)[0].split("+", 1)[0].lower() == "sqlite":
        database = raw.split("://", 1)[1].removeprefix("/").split("?", 1)[0]
        if database and database != ":memory:":
            check_output_file(database, protected, option="--out (SQLite database)")
    return raw
