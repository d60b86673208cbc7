"""Signed requests of the agent protocol: every request an enrolled agent makes carries an
Ed25519 signature (SM2 for a publisher in the 国密 profile) by the agent's own key over what
the request is.

Headers (values ASCII; purpose and case reference percent-encoded UTF-8):

    X-Govshare-Agent       the agent id the service gave at enrolment (``ag-<32 hex>``)
    X-Govshare-Timestamp   seconds since the epoch, UTC, as an integer
    X-Govshare-Nonce       128 random bits, base64url without padding (22 characters)
    X-Govshare-Purpose     申请事由 (1..200 characters once decoded)
    X-Govshare-Case        case reference (办件编号), optional (0..100 characters)
    X-Govshare-Signature   base64 of the Ed25519 (or SM2, DER) signature over the signing string

The signing string binds method, target (path and query exactly as sent), the SHA-256 of the
body, timestamp, nonce, purpose and case::

    govshare-agent-request/1\\n{METHOD}\\n{target}\\n{sha256(body) hex}\\n{ts}\\n{nonce}\\n{purpose}\\n{case}

The service refuses (401) a request whose signature does not verify under the agent's registered
key, whose timestamp is more than ``WINDOW`` seconds away from its clock, or whose nonce it has
seen from that agent within the window (a replay). ``verify_request`` checks the first two; the
nonce memory is the service's (service.enrolment).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from keys import sigalg

LABEL = "govshare-agent-request/1"
AGENT = "X-Govshare-Agent"
TIMESTAMP = "X-Govshare-Timestamp"
NONCE = "X-Govshare-Nonce"
PURPOSE = "X-Govshare-Purpose"
CASE = "X-Govshare-Case"
SIGNATURE = "X-Govshare-Signature"
WINDOW = 300  # seconds either side of the service's clock
MAX_CASE = 100
_AGENT_ID = re.compile(r"^ag-[0-9a-f]{32}$")
_NONCE = re.compile(r"^[A-Za-z0-9_-]{22}$")
_TS = re.compile(r"^[0-9]{1,12}$")


class BadRequestSignature(Exception):
    """The request does not authenticate its agent; ``reason`` is safe to log and to answer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SignedRequest:
    """What a verified request says of itself."""

    agent_id: str
    timestamp: int
    nonce: str
    purpose: str  # decoded, as sent (the service checks its length)
    case: str


def is_agent_id(value: str) -> bool:
    return bool(_AGENT_ID.fullmatch(value))


def new_agent_id() -> str:
    return "ag-" + secrets.token_hex(16)


def signing_string(method: str, target: str, body: bytes, timestamp: int, nonce: str, purpose: str,
                   case: str) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((LABEL, method.upper(), target, digest, str(int(timestamp)), nonce, purpose, case)).encode("utf-8")


def sign_request(private: Ed25519PrivateKey | sigalg.PrivateKey, agent_id: str, method: str, target: str, body: bytes, purpose: str,
                 case: str = "", now: float | None = None) -> dict[str, str]:
    """The headers that sign a request of ``agent_id`` (``target``: path and query as sent)."""
    timestamp = int(now if now is not None else time.time())
    nonce = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode("ascii")
    signature = private.sign(signing_string(method, target, body, timestamp, nonce, purpose, case))
    return {AGENT: agent_id, TIMESTAMP: str(timestamp), NONCE: nonce, PURPOSE: quote(purpose, safe=""),
            CASE: quote(case, safe=""), SIGNATURE: base64.b64encode(signature).decode("ascii")}


def claimed_agent(headers: Mapping[str, str]) -> str | None:
    """The agent id a request claims (unverified), when it is well-formed."""
    agent = _header(headers, AGENT)
    return agent if agent and is_agent_id(agent) else None


def verify_request(headers: Mapping[str, str], method: str, target: str, body: bytes,
                   public_key_of: Callable[[str], Ed25519PublicKey | sigalg.PublicKey | None], now: float | None = None) -> SignedRequest:
    """Check a request's signature headers; BadRequestSignature saying why when they fail.

    ``public_key_of`` returns the registered (active) signing key of an agent id, or None."""
    agent = _header(headers, AGENT)
    if not agent:
        raise BadRequestSignature(f"no {AGENT} header: requests of the agent protocol are signed by an enrolled agent")
    if not is_agent_id(agent):
        raise BadRequestSignature(f"{AGENT} is not an agent id")
    missing = [name for name in (TIMESTAMP, NONCE, SIGNATURE) if not _header(headers, name)]
    if missing:
        raise BadRequestSignature(f"the request lacks {', '.join(missing)}")
    ts_text, nonce = _header(headers, TIMESTAMP), _header(headers, NONCE)
    if not _TS.fullmatch(ts_text):
        raise BadRequestSignature(f"{TIMESTAMP} is not seconds since the epoch")
    if not _NONCE.fullmatch(nonce):
        raise BadRequestSignature(f"{NONCE} is not 128 bits in base64url")
    timestamp = int(ts_text)
    clock = now if now is not None else time.time()
    if abs(clock - timestamp) > WINDOW:
        raise BadRequestSignature(f"the request's timestamp is {int(clock - timestamp)} s away from the service's "
                                  f"clock (at most {WINDOW} s are accepted): a stale or replayed request, or a clock "
                                  "to set right")
    try:
        purpose = unquote(_header(headers, PURPOSE), encoding="utf-8", errors="strict")
        case = unquote(_header(headers, CASE), encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadRequestSignature(f"{PURPOSE} or {CASE} is not percent-encoded UTF-8") from None
    public = public_key_of(agent)
    if public is None:
        raise BadRequestSignature("unknown or revoked agent: enrol it with a new enrolment file")
    try:
        signature = base64.b64decode(_header(headers, SIGNATURE), validate=True)
        if public.verify(signature, signing_string(method, target, body, timestamp, nonce, purpose, case)) is False:
            raise InvalidSignature  # keys.sigalg keys answer False; cryptography's raise
    except (InvalidSignature, binascii.Error, ValueError):
        raise BadRequestSignature("the request's signature does not verify under the agent's registered key") from None
    return SignedRequest(agent, timestamp, nonce, purpose, case)


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return (value or "").strip()
