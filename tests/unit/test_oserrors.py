"""OS errors of govshare's own writes as govshare errors naming the path: one row per errno."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from common.errors import ConfigError, TemporaryFailure
from common.oserrors import storage_error

HOME = Path("/srv/govshare-home")

CASES = [
    # (errno, filename, message, expected class (None: not a storage error), words in the message)
    (errno.ENOSPC, str(HOME / "store/population/.staging/r1/upserts.parquet"), "No space left on device",
     TemporaryFailure, ["no space left on the device holding", "upserts.parquet", "free space and run again"]),
    (errno.EDQUOT, str(HOME / "state/population.json"), "Disk quota exceeded", TemporaryFailure,
     ["disk quota exceeded", "population.json"]),
    (errno.EROFS, str(HOME / "work/population"), "Read-only file system", ConfigError,
     ["read-only", f"GOVSHARE_HOME {HOME} must be writable"]),
    (errno.EACCES, str(HOME / "audit/access-log.jsonl"), "Permission denied", ConfigError,
     ["permission denied", "access-log.jsonl", "GOVSHARE_HOME"]),
    (errno.EPERM, str(HOME / "keystore"), "Operation not permitted", ConfigError, ["not permitted", "keystore"]),
    (errno.ENOENT, str(HOME / "work/population/r1/plan.json"), "No such file or directory", ConfigError,
     ["vanished", "plan.json", "govshare init"]),
    # pyarrow: errno set, no filename, the path quoted in the message
    (errno.EROFS, None, f"Failed to open local file '{HOME}/quarantine/population/cases.parquet'. Detail: "
                        "[errno 30] Read-only file system", ConfigError, ["cases.parquet", "read-only"]),
    # a missing file outside what govshare writes, and an errno that is no disk condition: not mapped
    (errno.ENOENT, "/etc/nowhere.conf", "No such file or directory", None, []),
    (errno.ECONNREFUSED, None, "Connection refused", None, []),
]


@pytest.mark.parametrize(("code", "filename", "message", "expected", "words"), CASES,
                         ids=[f"{errno.errorcode[c[0]]}-{i}" for i, c in enumerate(CASES)])
def test_an_os_error_becomes_the_govshare_error_naming_the_path(code, filename, message, expected, words) -> None:
    exc = OSError(code, message) if filename is None else OSError(code, message, filename)
    error = storage_error(exc, HOME)
    if expected is None:
        assert error is None
        return
    assert type(error) is expected
    assert error.exit_code == (75 if expected is TemporaryFailure else 2)
    for word in words:
        assert word in error.message


def test_an_os_error_wrapped_by_a_library_is_found_under_its_cause() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", str(HOME / "lineage/runs/population/r1.json"))
        except OSError as inner:
            raise RuntimeError("writer failed") from inner
    except RuntimeError as outer:
        error = storage_error(outer, HOME)
    assert isinstance(error, TemporaryFailure) and "r1.json" in error.message
