"""Delta Sharing profiles: bearer tokens for a subscriber's stock client, bound to a purpose.

A token is 256 bits of randomness (``secrets.token_urlsafe(32)``), handed out once in the
profile file (``govshare subscriber profile``) and stored only as its SHA-256
(service.state.token_digest) in the ``profiles`` table, with the subscriber, the purpose
(申请事由) every request made with it is recorded under, when it was made and when it expires.
A token that is unknown or expired authenticates nobody (401).
"""

from __future__ import annotations

import re
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from common.home import Home
from service import state

MAX_DAYS = 366
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")


def create(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS profiles ("
                 " digest TEXT PRIMARY KEY,"
                 " subscriber TEXT NOT NULL,"
                 " purpose TEXT NOT NULL,"
                 " created TEXT NOT NULL,"
                 " expires_at TEXT NOT NULL)")


if create not in state.TABLE_GROUPS:
    state.TABLE_GROUPS.append(create)


class Unauthenticated(Exception):
    """No profile authenticates the request; ``reason`` is safe to log (it holds no token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Binding:
    """What a valid bearer token stands for."""

    subscriber: str
    purpose: str
    expires_at: datetime


@dataclass(frozen=True)
class Issued:
    token: str
    subscriber: str
    expires_at: datetime

    @property
    def expiration_time(self) -> str:
        """ISO 8601 in UTC with a Z, as profile files write it."""
        return iso_z(self.expires_at)


def iso_z(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc(now: datetime | None) -> datetime:
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(microsecond=0)


def issue(home: Home, subscriber: str, purpose: str, days: int, now: datetime | None = None) -> Issued:
    """A new token for ``subscriber``, valid ``days`` days from ``now``; only its digest is kept."""
    created = _utc(now)
    expires = created + timedelta(days=days)
    token = secrets.token_urlsafe(32)
    conn = state.connect(home)
    try:
        conn.execute("INSERT INTO profiles (digest, subscriber, purpose, created, expires_at) VALUES (?, ?, ?, ?, ?)",
                     (state.token_digest(token), subscriber, purpose, created.isoformat(), expires.isoformat()))
    finally:
        conn.close()
    return Issued(token, subscriber, expires)


def authenticate(home: Home, authorization: str | None, now: datetime | None = None) -> Binding:
    """The binding of the request's ``Authorization: Bearer`` token, or Unauthenticated."""
    if not authorization:
        raise Unauthenticated("no bearer token: send the profile's bearerToken as 'Authorization: Bearer ...'")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("the Authorization header is not 'Bearer <token>'")
    if not _TOKEN.fullmatch(token):
        raise Unauthenticated("unknown bearer token")
    conn = state.connect(home)
    try:
        row = conn.execute("SELECT subscriber, purpose, expires_at FROM profiles WHERE digest = ?",
                           (state.token_digest(token),)).fetchone()
    finally:
        conn.close()
    if row is None:
        raise Unauthenticated("unknown bearer token")
    expires = datetime.fromisoformat(row[2])
    if _utc(now) >= expires:
        raise Unauthenticated(f"the bearer token expired at {iso_z(expires)}; ask the bureau for a new profile")
    return Binding(subscriber=row[0], purpose=row[1], expires_at=expires)


def revoke(home: Home, subscriber: str) -> int:
    """Forget every profile token of ``subscriber`` (they authenticate nobody from now on); how many."""
    conn = state.connect(home)
    try:
        return conn.execute("DELETE FROM profiles WHERE subscriber = ?", (subscriber,)).rowcount
    finally:
        conn.close()
