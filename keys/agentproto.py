"""What publisher and agent agree on, outside the requests themselves: the enrolment file, the
proof of possession an agent sends when it enrols, and the pinned publisher key.

The enrolment file (``govshare subscriber enroll``; JSON, 0600, format ``govshare-enrolment/1``)::

    subscriber        the subscriber id it enrols
    service_url       where the agent reaches the sharing service (https://host:port)
    ca_pem            the CA certificate the service's TLS certificate verifies against
    publisher_key     {key_id, algorithm, public_pem}: the key that signs manifests now
    publisher_keys    every publisher key up to now, oldest first (older versions are signed by them)
    token             one-time enrolment token (256 bits, base64url); the service keeps its SHA-256
    expires_at        ISO 8601 UTC; the token is refused after it, and after its first use

Enrolment: the agent makes its own Ed25519 (request signing) and X25519 (key envelopes) key
pairs, or two SM2 key pairs when the publisher's key is SM2 (the 国密 profile; ``agent_algorithms``),
and sends both public keys with the token and a signature over ``enrolment_proof``, so the
service registers only a signing key whose holder is present. Raw public keys tell their
algorithm by their size: 32 bytes Ed25519/X25519, 64 bytes SM2.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from common.errors import ConfigError, IntegrityError
from common.files import canonical_json
from keys import sigalg

ENROLMENT_FORMAT = "govshare-enrolment/1"
PROOF_LABEL = "govshare-enrol/1"
PREFIX = "/agent/v1"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")
_SUBSCRIBER = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


def raw_public(key: Ed25519PublicKey | X25519PublicKey | sigalg.PublicKey) -> str:
    """A public key as base64 of its raw bytes (32 for Ed25519 and X25519, 64 ``x || y`` for SM2)."""
    if isinstance(key, sigalg.PublicKey):
        return base64.b64encode(key.raw).decode()
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def signing_public(text: str) -> sigalg.PublicKey:
    """An agent's signing key from base64 raw bytes: 32 bytes Ed25519, 64 bytes SM2 (ValueError otherwise)."""
    raw = _raw(text, (32, 64))
    try:
        return sigalg.public_from_raw("Ed25519" if len(raw) == 32 else "SM2", raw)
    except IntegrityError as exc:
        raise ValueError(exc.message) from None


def envelope_public(text: str) -> X25519PublicKey | sigalg.PublicKey:
    """An agent's envelope key: 32 bytes X25519 (HPKE), 64 bytes SM2 (SM2 encryption + SM4-GCM)."""
    raw = _raw(text, (32, 64))
    if len(raw) == 32:
        return X25519PublicKey.from_public_bytes(raw)
    try:
        return sigalg.public_from_raw("SM2", raw)
    except IntegrityError as exc:
        raise ValueError(exc.message) from None


def agent_algorithms(publisher_algorithm: str) -> tuple[str, str]:
    """(signing, envelope) algorithms of an agent enrolling with a publisher whose key is
    ``publisher_algorithm``: the agent takes the publisher's profile."""
    return ("SM2", "SM2") if publisher_algorithm == "SM2" else ("Ed25519", "X25519")


def ed25519_public(text: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(_raw32(text))


def x25519_public(text: str) -> X25519PublicKey:
    return X25519PublicKey.from_public_bytes(_raw32(text))


def _raw32(text: str) -> bytes:
    return _raw(text, (32,))


def _raw(text: str, sizes: tuple[int, ...]) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError("not base64") from None
    if len(raw) not in sizes:
        raise ValueError(f"not a public key of {' or '.join(map(str, sizes))} bytes")
    return raw


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def enrolment_proof(token: str, subscriber: str, signing_pub: str, encryption_pub: str) -> bytes:
    """What the enrolling agent signs with its new signing key (never the token itself)."""
    return "\n".join((PROOF_LABEL, token_digest(token), subscriber, signing_pub, encryption_pub)).encode("utf-8")


def check_proof(token: str, subscriber: str, signing_pub: str, encryption_pub: str, proof: str) -> None:
    """ValueError when ``proof`` is not the signing key's signature of the enrolment."""
    signing, envelope = signing_public(signing_pub), envelope_public(encryption_pub)
    if agent_algorithms(signing.algorithm)[1] != ("SM2" if isinstance(envelope, sigalg.PublicKey) else "X25519"):
        raise ValueError("the signing and envelope keys sent are of different profiles (Ed25519 with X25519, "
                         "or SM2 with SM2)")
    signature = sigalg.signature_bytes(proof)
    if signature is None or not signing.verify(signature, enrolment_proof(token, subscriber, signing_pub,
                                                                          encryption_pub)):
        raise ValueError("the proof of possession does not verify under the signing key sent")


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
    publisher_keys: tuple[dict[str, str], ...] = ()  # every publisher key, oldest first (the current last)

    @property
    def pinned(self) -> list[dict[str, str]]:
        """What the agent pins: every publisher key, the current one last."""
        keys = [dict(k) for k in self.publisher_keys if k.get("key_id") != self.publisher_key_id]
        return [*keys, {"key_id": self.publisher_key_id, "algorithm": self.publisher_algorithm,
                        "public_pem": self.publisher_pem}]

    def to_json(self) -> str:
        return json.dumps({"format": ENROLMENT_FORMAT, "subscriber": self.subscriber, "service_url": self.service_url,
                           "ca_pem": self.ca_pem,
                           "publisher_key": {"key_id": self.publisher_key_id, "algorithm": self.publisher_algorithm,
                                             "public_pem": self.publisher_pem},
                           "publisher_keys": self.pinned,
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
        public = sigalg.load_public_pem(str(pem), "publisher_key.public_pem")
        if str(key.get("algorithm") or "Ed25519") != public.algorithm:
            problems.append(f"publisher_key.algorithm is not its key's ({public.algorithm})")
    except IntegrityError:
        problems.append("publisher_key.public_pem is not an Ed25519 or SM2 public key in PEM")
    if not isinstance(key.get("key_id"), str) or not key.get("key_id"):
        problems.append("publisher_key.key_id is missing")
    history = doc.get("publisher_keys", [])
    if not isinstance(history, list) or not all(
            isinstance(k, dict) and isinstance(k.get("key_id"), str) and isinstance(k.get("public_pem"), str)
            for k in history):
        problems.append("publisher_keys is not a list of publisher keys")
        history = []
    if problems:
        raise ConfigError(f"{where} is not a usable enrolment file", problems=problems)
    return Enrolment(subscriber, url.rstrip("/"), ca, key["key_id"], str(key.get("algorithm") or "Ed25519"), pem,
                     token, when, tuple({"key_id": k["key_id"], "algorithm": str(k.get("algorithm") or "Ed25519"),
                                         "public_pem": k["public_pem"]} for k in history))


class PinnedPublisher:
    """Verifies publisher signatures with the keys the agent pinned at enrolment (every publisher
    key up to then, oldest first) and the keys announced since by transition records.

    A manifest signed by a key the agent does not know is accepted only when it carries a
    ``key_transitions`` chain whose first record is signed by a pinned key (each record names the
    next key and is signed by the one before): the new key is then pinned (``learned``, for the
    agent to keep). Within one chain of versions, a key older than one that already signed is
    refused (a retired key signing after its successor). Anything else is IntegrityError (exit 3).
    """

    def __init__(self, keys: Sequence[Mapping[str, str]]) -> None:
        if not keys:
            raise ConfigError("no publisher key is pinned")
        self._keys: dict[str, sigalg.PublicKey] = {}
        self._order: list[str] = []
        for key in keys:
            self._pin(str(key.get("key_id")), str(key.get("public_pem")))
        self.learned: list[dict[str, str]] = []
        self._floor = 0

    @property
    def key_id(self) -> str:
        """The newest pinned key."""
        return self._order[-1]

    def __repr__(self) -> str:
        return f"PinnedPublisher({', '.join(self._order)})"

    def _pin(self, key_id: str, pem: str) -> None:
        public = sigalg.load_public_pem(pem, f"publisher key {key_id}")
        if key_id not in self._keys:
            self._order.append(key_id)
        self._keys[key_id] = public

    def _check(self, key_id: str, data: bytes, signature_doc: Mapping[str, Any]) -> None:
        public = self._keys[key_id]
        if signature_doc.get("algorithm") != public.algorithm:
            raise IntegrityError(f"signature algorithm {signature_doc.get('algorithm')!r} is not the pinned key's "
                                 f"({public.algorithm}): a change of crypto profile is refused unless a transition "
                                 "signed by the pinned key announces the new key")
        signature = sigalg.signature_bytes(signature_doc.get("signature", ""))
        if signature is None or not public.verify(signature, data):
            raise IntegrityError(f"the signature does not verify under the pinned publisher key {key_id}: the data "
                                 "was altered or signed by another key") from None

    def _learn(self, data: bytes) -> None:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return
        chain = doc.get("key_transitions") if isinstance(doc, dict) else None
        for record in chain if isinstance(chain, list) else []:
            transition = record.get("transition") if isinstance(record, dict) else None
            signature = record.get("signature") if isinstance(record, dict) else None
            if not isinstance(transition, dict) or not isinstance(signature, dict):
                raise IntegrityError("a key transition record is malformed")
            old, new = transition.get("from"), transition.get("to")
            if new in self._keys:
                continue
            if old not in self._keys or signature.get("key_id") != old:
                raise IntegrityError(f"publisher key {new!r} is announced by a transition not signed by a pinned key")
            self._check(str(old), canonical_json(transition), signature)
            self._pin(str(new), str(transition.get("public_pem")))
            algorithm = self._keys[str(new)].algorithm
            if transition.get("algorithm", "Ed25519") != algorithm:
                raise IntegrityError(f"the transition to publisher key {new!r} names algorithm "
                                     f"{transition.get('algorithm')!r}, but the key it announces is {algorithm}")
            self.learned.append({"key_id": str(new), "algorithm": algorithm, "public_pem": str(transition["public_pem"])})

    def public_keys(self) -> list[sigalg.PublicKey]:
        """Every pinned publisher key, oldest first (checkpoints outlive rotations)."""
        return [self._keys[k] for k in self._order]

    def verify(self, data: bytes, signature_doc: Mapping[str, Any]) -> None:
        key_id = signature_doc.get("key_id") if isinstance(signature_doc, Mapping) else None
        if key_id not in self._keys:
            self._learn(data)
        if key_id not in self._keys:
            raise IntegrityError(f"signed by key {key_id!r}, which is neither pinned at enrolment nor announced by a "
                                 f"transition signed by a pinned key (pinned: {', '.join(self._order)})")
        rank = self._order.index(str(key_id))
        if rank < self._floor:
            raise IntegrityError(f"signed by publisher key {key_id}, which {self._order[self._floor]} replaced: a "
                                 "retired key signed after its successor")
        self._check(str(key_id), data, signature_doc)
        self._floor = rank
