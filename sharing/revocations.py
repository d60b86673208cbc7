"""Revocations of subscribers by the bureau (``govshare subscriber revoke ID --reason TEXT``),
kept in GOVSHARE_HOME/state/revocations.jsonl, one JSON line each, appended and fsynced.

A revocation overrides the catalog: from the next request or command on, the subscriber is
``revoked`` (``effective_catalog``), so its profile tokens and agents are refused (401), no key
envelope is made for it, and previews of its view are denied (exit 4). It cannot take back data
already delivered. It is undone only by the bureau editing the file, which the access log
records nowhere: so it is not offered as a command.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from common.catalog import Catalog
from common.errors import ConfigError, IntegrityError
from common.files import private_dir
from common.home import Home
from common.times import utc_now

MAX_REASON = 500
FORMAT = "govshare-revocation/1"


def revocations_path(home: Home) -> Path:
    return home.state / "revocations.jsonl"


def revoked(home: Home) -> dict[str, dict[str, Any]]:
    """Subscriber id -> its revocation record."""
    path = revocations_path(home)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    found: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            raise IntegrityError(f"{path} line {number} is not JSON: restore the revocation list") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("subscriber"), str):
            raise IntegrityError(f"{path} line {number} is not a revocation")
        found.setdefault(doc["subscriber"], doc)
    return found


def effective_catalog(catalog: Catalog, home: Home) -> Catalog:
    """The catalog with the home's revocations applied."""
    return catalog.revoking(revoked(home))


def revoke(home: Home, subscriber: str, reason: str) -> dict[str, Any]:
    text = (reason or "").strip()
    if not text:
        raise ConfigError("a revocation needs --reason: why the subscriber's access ends (kept in the access log)")
    if len(text) > MAX_REASON:
        raise ConfigError(f"--reason is {len(text)} characters long; at most {MAX_REASON} are allowed")
    record = {"format": FORMAT, "subscriber": subscriber, "reason": text, "revoked_at": utc_now()}
    path = revocations_path(home)
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return record
