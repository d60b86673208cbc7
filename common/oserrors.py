"""OS errors of govshare's own writes, as govshare errors that name the path.

A full disk, a read-only or unwritable home and a home folder removed under a running command
are conditions of the machine, not bugs: the command boundary (the CLI's ``main``, the Airflow
task adapter) turns the ``OSError`` into a ``TemporaryFailure`` (exit 75: free space and run
again) or a ``ConfigError`` (exit 2: make the folder writable). pyarrow raises plain ``OSError``
(``pyarrow.lib.ArrowIOError`` is the same class) with the errno set, no ``filename``, and the
path, when it says one, quoted in the message; a write that fails half-way names no path at all,
so the error names the folder govshare was writing to whose device is full or read-only.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from common.errors import ConfigError, GovshareError, TemporaryFailure

Condition = Literal["full", "read-only", "denied", "vanished"]


@dataclass(frozen=True)
class _Kind:
    condition: Condition
    retriable: bool
    says: str


_KINDS: dict[int, _Kind] = {
    errno.ENOSPC: _Kind("full", True, "no space left on the device holding {path}; free space and run again"),
    errno.EDQUOT: _Kind("full", True, "disk quota exceeded on the device holding {path}; free space and run again"),
    errno.EROFS: _Kind("read-only", False,
                       "cannot write {path}: the file system is read-only; {folder} must be writable"),
    errno.EACCES: _Kind("denied", False, "permission denied on {path}; {folder} must be writable by this user"),
    errno.EPERM: _Kind("denied", False, "operation not permitted on {path}; {folder} must be writable by this user"),
    errno.ENOENT: _Kind("vanished", False, "{path} vanished while govshare was using it: was {folder} or a folder in "
                                           "it removed? Run 'govshare init' if the home is gone, then run again"),
}
_QUOTED_PATH = re.compile(r"'(/[^']+)'")


def storage_error(exc: BaseException, home: Path | None, *written: Path) -> GovshareError | None:
    """The govshare error for an OS error raised while writing under ``home`` (None: no home is
    involved) or one of the ``written`` paths (a pull's --out, a report's file), or None when
    ``exc`` is not one."""
    found = _os_error(exc)
    if found is None or found.errno not in _KINDS:
        return None
    kind = _KINDS[found.errno]
    roots = tuple(p for p in (home, *written) if p is not None)
    path = _named_path(found) or _likely_root(kind.condition, roots)
    if kind.condition == "vanished" and not any(_within(path, root) for root in roots):
        return None  # a missing file outside what govshare writes is not a vanished home
    folder = f"GOVSHARE_HOME {home}" if home is not None and _within(path, home) else f"the folder {_existing(path)}"
    message = kind.says.format(path=path, folder=folder)
    return TemporaryFailure(message) if kind.retriable else ConfigError(message)


def _os_error(exc: BaseException | None) -> OSError | None:
    """``exc`` or the first OSError it was raised from (``raise ... from``: a library may wrap the
    original; an error merely raised while handling one is not taken for it)."""
    for _ in range(8):
        if exc is None:
            return None
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        exc = exc.__cause__
    return None


def _named_path(exc: OSError) -> Path | None:
    if isinstance(exc.filename, (str, bytes)):
        return Path(os.fsdecode(exc.filename))
    quoted = _QUOTED_PATH.search(str(exc))
    return Path(quoted.group(1)) if quoted else None


def read_only(path: Path) -> bool:
    """Is the file system that holds ``path`` (or would hold it) mounted read-only."""
    stat = _statvfs(path)
    return bool(stat and stat.f_flag & os.ST_RDONLY)


def _likely_root(condition: Condition, roots: Sequence[Path]) -> Path:
    """The written-to folder on the full (least free space) or read-only device."""
    stats = [(root, _statvfs(root)) for root in roots]
    if condition == "full":
        return min(stats, key=lambda pair: pair[1].f_bavail if pair[1] else 1 << 62)[0]
    if condition == "read-only":
        return next((root for root, stat in stats if stat and stat.f_flag & os.ST_RDONLY), roots[0])
    return roots[0]


def _statvfs(path: Path) -> os.statvfs_result | None:
    try:
        return os.statvfs(_existing(path))
    except OSError:
        return None


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (the folder a file would be written into)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate if candidate.is_dir() else candidate.parent
    return path


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
