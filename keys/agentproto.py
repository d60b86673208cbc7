"""What publisher and agent agree on, outside the requests themselves: the enrolment file, the
proof of possession an agent sends when it enrols, and the pinned publisher key.

The enrolment file (``govshare subscriber enroll``; JSON, 0600, format ``govshare-enrolment/1``)::

    subscriber        the subscriber id it enrols
    service_url       where the agent reaches the sharing service (https://host:port)
    ca_pem            the CA certificate the service's TLS certificate verifies against
    publisher_key     {key_id, algorithm, public_pem}: the key that signs every manifest
    token             one-time enrolment token (256 bits, base64url); the service keeps its SHA-256
    expires_at        ISO 8601 UTC; the token is refused after it, and after its first use

Enrolment: the agent makes its own Ed25519 (request signing) and X25519 (key envelopes) key
pairs and sends both public keys with the token and an Ed25519 signature over
``enrolment_proof``, so the service registers only a signing key whose holder is present.

The agent pins the publisher key: ``PinnedPublisher`` verifies manifest signatures with it and
nothing else (sharing.verify's SignatureVerifier), so a store re-signed with another key, or a
service that is not the enrolled publisher's, fails verification (exit 3).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from common.errors import ConfigError, IntegrityError

ENROLMENT_FORMAT = "govshare-enrolment/1"
PROOF_LABEL = "govshare-enrol/1"
PREFIX = "/agent/v1"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")
_SUBSCRIBER = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


def raw_public(key: Ed25519PublicKey | X25519PublicKey) -> str:
    """A public key as base64 of its 32 raw bytes."""
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def ed25519_public(text: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(_raw32(text))


def x25519_public(text: str) -> X25519PublicKey:
    return X25519PublicKey.from_public_bytes(_raw32(text))


def _raw32(text: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError("not base64") from None
    if len(raw) != 32:
        raise ValueError("not a 32-byte public key")
    return raw


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def enrolment_proof(token: str, subscriber: str, signing_pub: str, encryption_pub: str) -> bytes:
    """What the enrolling agent signs with its new signing key (never the token itself)."""
    return "\n".join((PROOF_LABEL, token_digest(token), subscriber, signing_pub, encryption_pub)).encode("utf-8")


def check_proof(token: str, subscriber: str, signing_pub: str, encryption_pub: str, proof: str) -> None:
    """ValueError when ``proof`` is not the signing key's signature of the enrolment."""
    try:
        ed25519_public(signing_pub).verify(base64.b64decode(proof, validate=True),
                                           enrolment_proof(token, subscriber, signing_pub, encryption_pub))
        x25519_public(encryption_pub)
    except (InvalidSignature, binascii.Error, TypeError):
        raise ValueError("the proof of possession does not verify under the signing key sent") from None


@dataclass(frozen=True)
class Enrolment:
    subscriber: str
    service_url: str
    ca_pem: str
    publisher_key_id: str
    publisher_algorithm: str
    publisher_pem: str
    token: str
    expires_at: datetime

    def to_json(self) -> str:
        return json.dumps({"format": ENROLMENT_FORMAT, "subscriber": self.subscriber, "service_url": self.service_url,
                           "ca_pem": self.ca_pem,
                           "publisher_key": {"key_id": self.publisher_key_id, "algorithm": self.publisher_algorithm,
                                             "public_pem": self.publisher_pem},
                           "token": self.token,
                           "expires_at": self.expires_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")},
                          indent=2) + "\n"


def parse_enrolment(text: str, where: str) -> Enrolment:
    """An enrolment file's content, or ConfigError naming each problem."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        raise ConfigError(f"{where} is not an enrolment file (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != ENROLMENT_FORMAT:
        raise ConfigError(f"{where} is not an enrolment file (format {ENROLMENT_FORMAT} expected)")
    problems = []
    key = doc.get("publisher_key") if isinstance(doc.get("publisher_key"), dict) else {}
    subscriber, url, ca = doc.get("subscriber"), doc.get("service_url"), doc.get("ca_pem")
    token, expires = doc.get("token"), doc.get("expires_at")
    if not isinstance(subscriber, str) or not _SUBSCRIBER.fullmatch(subscriber):
        problems.append("subscriber is not a subscriber id")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("https", "http") or not urlsplit(url).hostname:
        problems.append("service_url is not a service URL")
    if not isinstance(ca, str) or "BEGIN CERTIFICATE" not in ca:
        problems.append("ca_pem is not a PEM certificate")
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        problems.append("token is not an enrolment token")
    when = None
    try:
        when = datetime.strptime(str(expires), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        problems.append("expires_at is not an ISO 8601 UTC time")
    pem = key.get("public_pem")
    try:
        public = serialization.load_pem_public_key(str(pem).encode())
        if not isinstance(public, Ed25519PublicKey):
            problems.append("publisher_key is not an Ed25519 public key")
    except ValueError:
        problems.append("publisher_key.public_pem is not a PEM public key")
    if not isinstance(key.get("key_id"), str) or not key.get("key_id"):
        problems.append("publisher_key.key_id is missing")
    if problems:
        raise ConfigError(f"{where} is not a usable enrolment file", problems=problems)
    return Enrolment(subscriber, url.rstrip("/"), ca, key["key_id"], str(key.get("algorithm") or "Ed25519"), pem,
                     token, when)


class PinnedPublisher:
    """Verifies publisher signatures with the one key the agent pinned at enrolment."""

    def __init__(self, key_id: str, public_pem: str) -> None:
        public = serialization.load_pem_public_key(public_pem.encode())
        if not isinstance(public, Ed25519PublicKey):
            raise ConfigError("the pinned publisher key is not an Ed25519 public key")
        self.key_id = key_id
        self._public = public

    def __repr__(self) -> str:
        return f"PinnedPublisher({self.key_id})"

    def verify(self, data: bytes, signature_doc: Mapping[str, Any]) -> None:
        key_id = signature_doc.get("key_id") if isinstance(signature_doc, Mapping) else None
        if key_id != self.key_id:
            raise IntegrityError(f"signed by key {key_id!r}, not by the publisher key {self.key_id} pinned at enrolment")
        if signature_doc.get("algorithm") != "Ed25519":
            raise IntegrityError(f"signature algorithm {signature_doc.get('algorithm')!r} is not the pinned key's (Ed25519)")
        try:
            self._public.verify(base64.b64decode(str(signature_doc.get("signature", "")), validate=True), data)
        except (InvalidSignature, binascii.Error, ValueError):
            raise IntegrityError(f"the signature does not verify under the publisher key {self.key_id} pinned at "
                                 "enrolment: the data was altered or signed by another key") from None
