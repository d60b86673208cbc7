"""Enrolment tokens, enrolled agents and the nonces they used (in service.state's database).

- ``enrolments``: one row per enrolment file, the token only as its SHA-256, when it expires and
  when it was used. A token enrols one agent, once, before it expires.
- ``agents``: the agent id the service gave, its subscriber, its signing key and envelope key
  (base64 raw: Ed25519 and X25519, or SM2 and SM2 when the publisher's profile is gm; the home's
  profile decides which an enrolment accepts), when it enrolled and its status (``active`` or
  ``revoked``).
  A subscriber may run several agents (several 前置机); each has its own keys.
- ``nonces``: (agent, nonce) seen within the signature window; a second use is a replay (401).
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from common.home import Home
from keys import sigalg
from keys.agentproto import check_proof, envelope_public, signing_public
from keys.keystore import Keystore
from keys.requestsig import WINDOW, new_agent_id
from service import state

MAX_HOURS = 24 * 30


def create(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS enrolments ("
                 " digest TEXT PRIMARY KEY, subscriber TEXT NOT NULL, created TEXT NOT NULL,"
                 " expires_at TEXT NOT NULL, used_at TEXT, agent_id TEXT)")
    conn.execute("CREATE TABLE IF NOT EXISTS agents ("
                 " agent_id TEXT PRIMARY KEY, subscriber TEXT NOT NULL, signing_pub TEXT NOT NULL UNIQUE,"
                 " encryption_pub TEXT NOT NULL, enrolled_at TEXT NOT NULL, status TEXT NOT NULL)")
    conn.execute("CREATE TABLE IF NOT EXISTS nonces ("
                 " agent_id TEXT NOT NULL, nonce TEXT NOT NULL, seen_at REAL NOT NULL,"
                 " PRIMARY KEY (agent_id, nonce))")
    conn.execute("CREATE TABLE IF NOT EXISTS agent_deliveries ("
                 " seq INTEGER PRIMARY KEY, agent_id TEXT NOT NULL, subscriber TEXT NOT NULL,"
                 " dataset TEXT NOT NULL, completed_at TEXT)")


if create not in state.TABLE_GROUPS:
    state.TABLE_GROUPS.append(create)


class EnrolmentRefused(Exception):
    """Why an enrolment is refused (401); safe to log: it holds no token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Agent:
    agent_id: str
    subscriber: str
    signing_pub: str
    encryption_pub: str
    enrolled_at: str
    status: str

    @property
    def signing_key(self) -> sigalg.PublicKey:
        return signing_public(self.signing_pub)

    @property
    def encryption_key(self) -> X25519PublicKey | sigalg.PublicKey:
        return envelope_public(self.encryption_pub)


@dataclass(frozen=True)
class IssuedEnrolment:
    token: str
    subscriber: str
    expires_at: datetime


def _utc(now: datetime | None) -> datetime:
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(microsecond=0)


def issue(home: Home, subscriber: str, hours: int, now: datetime | None = None) -> IssuedEnrolment:
    created = _utc(now)
    expires = created + timedelta(hours=hours)
    token = secrets.token_urlsafe(32)
    conn = state.connect(home)
    try:
        conn.execute("INSERT INTO enrolments (digest, subscriber, created, expires_at) VALUES (?, ?, ?, ?)",
                     (state.token_digest(token), subscriber, created.isoformat(), expires.isoformat()))
    finally:
        conn.close()
    return IssuedEnrolment(token, subscriber, expires)


def enrol(home: Home, token: str, subscriber: str, signing_pub: str, encryption_pub: str, proof: str,
          now: datetime | None = None) -> Agent:
    """Register an agent's public keys against a valid, unused enrolment token (used up by it)."""
    try:
        check_proof(token, subscriber, signing_pub, encryption_pub, proof)
        sent = signing_public(signing_pub).algorithm
    except ValueError as exc:
        raise EnrolmentRefused(str(exc)) from None
    profile = Keystore(home.keystore).profile
    if sent != profile.signing:
        raise EnrolmentRefused(f"the agent's keys are {sent}, and this publisher's crypto profile ({profile.name}) "
                               f"takes {profile.signing} agent keys")
    moment = _utc(now)
    conn = state.connect(home)
    try:
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute("SELECT subscriber, expires_at, used_at FROM enrolments WHERE digest = ?",
                           (state.token_digest(token),)).fetchone()
        why = None
        if row is None:
            why = "unknown enrolment token"
        elif row[2] is not None:
            why = "the enrolment token was already used; ask the bureau for a new enrolment file"
        elif moment >= datetime.fromisoformat(row[1]):
            why = "the enrolment token expired; ask the bureau for a new enrolment file"
        elif row[0] != subscriber:
            why = "the enrolment token was issued for another subscriber"
        elif conn.execute("SELECT 1 FROM agents WHERE signing_pub = ?", (signing_pub,)).fetchone():
            why = "this signing key is already registered"
        if why:
            conn.execute("ROLLBACK")
            raise EnrolmentRefused(why)
        agent = Agent(new_agent_id(), subscriber, signing_pub, encryption_pub, moment.isoformat(), "active")
        conn.execute("INSERT INTO agents VALUES (?, ?, ?, ?, ?, ?)",
                     (agent.agent_id, agent.subscriber, agent.signing_pub, agent.encryption_pub, agent.enrolled_at,
                      agent.status))
        conn.execute("UPDATE enrolments SET used_at = ?, agent_id = ? WHERE digest = ?",
                     (moment.isoformat(), agent.agent_id, state.token_digest(token)))
        conn.execute("COMMIT")
        return agent
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def agent(home: Home, agent_id: str) -> Agent | None:
    conn = state.connect(home)
    try:
        row = conn.execute("SELECT agent_id, subscriber, signing_pub, encryption_pub, enrolled_at, status FROM agents"
                           " WHERE agent_id = ?", (agent_id,)).fetchone()
    finally:
        conn.close()
    return Agent(*row) if row else None


def first_use(home: Home, agent_id: str, nonce: str, now: float) -> bool:
    """Record the nonce; False when the agent used it before within the window (a replay)."""
    conn = state.connect(home)
    try:
        conn.execute("DELETE FROM nonces WHERE seen_at < ?", (now - 2 * WINDOW,))
        try:
            conn.execute("INSERT INTO nonces (agent_id, nonce, seen_at) VALUES (?, ?, ?)", (agent_id, nonce, now))
        except sqlite3.IntegrityError:
            return False
        return True
    finally:
        conn.close()


def record_delivery(home: Home, seq: int, agent_id: str, subscriber: str, dataset: str) -> None:
    """Which agent a pending delivery record (access-log seq) belongs to, so only it completes it."""
    conn = state.connect(home)
    try:
        conn.execute("INSERT INTO agent_deliveries (seq, agent_id, subscriber, dataset) VALUES (?, ?, ?, ?)",
                     (seq, agent_id, subscriber, dataset))
    finally:
        conn.close()


def delivery(home: Home, seq: int) -> tuple[str, str, str | None] | None:
    """(agent id, dataset, completed at) of an agent delivery, or None."""
    conn = state.connect(home)
    try:
        row = conn.execute("SELECT agent_id, dataset, completed_at FROM agent_deliveries WHERE seq = ?",
                           (seq,)).fetchone()
    finally:
        conn.close()
    return (row[0], row[1], row[2]) if row else None


def complete_delivery(home: Home, seq: int, when: str) -> bool:
    """Mark the delivery completed; False when it was already (only the first completion counts)."""
    conn = state.connect(home)
    try:
        return conn.execute("UPDATE agent_deliveries SET completed_at = ? WHERE seq = ? AND completed_at IS NULL",
                            (when, seq)).rowcount == 1
    finally:
        conn.close()


def revoke_agents(home: Home, subscriber: str) -> int:
    """Refuse every agent of ``subscriber`` from now on, and its unused enrolment tokens; how many agents."""
    conn = state.connect(home)
    try:
        done = conn.execute("UPDATE agents SET status = 'revoked' WHERE subscriber = ? AND status != 'revoked'",
                            (subscriber,)).rowcount
        conn.execute("DELETE FROM enrolments WHERE subscriber = ? AND used_at IS NULL", (subscriber,))
        return done
    finally:
        conn.close()


def reopen_delivery(home: Home, seq: int) -> None:
    """Undo complete_delivery when its access-log record could not be written."""
    conn = state.connect(home)
    try:
        conn.execute("UPDATE agent_deliveries SET completed_at = NULL WHERE seq = ?", (seq,))
    finally:
        conn.close()
