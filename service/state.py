"""The service's own state: one SQLite database under GOVSHARE_HOME/service (0600), holding
credentials only as digests (profile tokens, enrolment tokens), agents' public keys and the
nonces seen. Each module that owns tables registers a function creating them in TABLE_GROUPS;
``connect`` creates them all (idempotent) and returns a connection in autocommit-off mode.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

from common.files import private_dir
from common.home import Home

STATE_FILE = "state.db"
TABLE_GROUPS: list[Callable[[sqlite3.Connection], None]] = []


def service_dir(home: Home) -> Path:
    return home.root / "service"


def connect(home: Home) -> sqlite3.Connection:
    folder = service_dir(home)
    private_dir(folder)
    path = folder / STATE_FILE
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=30000")
    for create in TABLE_GROUPS:
        create(conn)
    return conn


def token_digest(token: str) -> str:
    """What is stored of a bearer or enrolment token: its SHA-256 (tokens are 256-bit random)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
