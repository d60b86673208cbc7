"""Signature keys of either profile behind one face: Ed25519 (standard) and SM2 (国密, gm).

The keystore, the agent, request signing, checkpoints and the pins all hold a ``PublicKey`` or a
``PrivateKey`` from here and never branch on the algorithm themselves; the algorithm travels with
the key (``algorithm``: ``"Ed25519"`` or ``"SM2"``) and is checked against what a signature
document claims, so a signature cannot be passed off under another algorithm.

Encodings:

- Public keys are PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo). Ed25519 as ``cryptography`` writes
  it; SM2 as GmSSL and OpenSSL write it: algorithm id-ecPublicKey (1.2.840.10045.2.1) with the
  curve sm2p256v1 (1.2.156.10197.1.301) and the uncompressed point ``04 || x || y``.
  ``cryptography`` cannot load SM2 keys, so the SM2 form is written and parsed here, strictly
  (exactly the 27-byte prefix and a point on the curve).
- Private keys are PEM as well: Ed25519 PKCS#8 (``cryptography``); SM2 in govshare's own block
  ``GOVSHARE SM2 PRIVATE KEY`` holding ``d || x || y`` (the key files are wrapped by the root key
  anyway, and the block keeps the public key beside d, so a damaged file is caught).
- Raw public bytes (``raw``): 32 bytes for Ed25519, 64 bytes ``x || y`` for SM2.
- Signatures: 64 raw bytes (Ed25519); ASN.1 DER ``SEQUENCE {r, s}`` (SM2, over SM3(Z || M) with
  the default user ID of GM/T 0009-2012).

``verify`` returns False for any bad or malformed signature and never raises for it; malformed
keys are ``ConfigError``/``IntegrityError`` from the loaders. No message carries key material.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.errors import ConfigError, IntegrityError
from keys import gm

SignatureAlgorithm = Literal["Ed25519", "SM2"]
ALGORITHMS: tuple[SignatureAlgorithm, ...] = ("Ed25519", "SM2")

# SubjectPublicKeyInfo of an SM2 key up to the point: SEQUENCE { SEQUENCE { id-ecPublicKey,
# sm2p256v1 }, BIT STRING (0 unused bits) 04 || x || y }
_SM2_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d034200")
_SM2_PRIVATE_LABEL = "GOVSHARE SM2 PRIVATE KEY"
_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END \1-----\s*$")


@dataclass(frozen=True)
class PublicKey:
    algorithm: SignatureAlgorithm
    raw: bytes = field(repr=False)

    def verify(self, signature: bytes, data: bytes) -> bool:
        """Whether ``signature`` is this key's signature of ``data``; False for anything else."""
        if self.algorithm == "SM2":
            return gm.sm2_verify(self.raw, data, signature)
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(bytes(signature), bytes(data))
            return True
        except (InvalidSignature, ValueError, TypeError):
            return False

    def pem(self) -> bytes:
        if self.algorithm == "SM2":
            return _pem("PUBLIC KEY", _SM2_SPKI_PREFIX + b"\x04" + self.raw)
        return Ed25519PublicKey.from_public_bytes(self.raw).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class PrivateKey:
    algorithm: SignatureAlgorithm
    _material: bytes = field(repr=False)  # Ed25519: 32-byte seed; SM2: 32-byte d
    public: PublicKey

    def __repr__(self) -> str:  # never the material
        return f"PrivateKey({self.algorithm})"

    def sign(self, data: bytes) -> bytes:
        if self.algorithm == "SM2":
            return gm.sm2_sign(self._material, self.public.raw, bytes(data))
        return Ed25519PrivateKey.from_private_bytes(self._material).sign(bytes(data))

    def pem(self) -> bytes:
        if self.algorithm == "SM2":
            return _pem(_SM2_PRIVATE_LABEL, self._material + self.public.raw)
        return Ed25519PrivateKey.from_private_bytes(self._material).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def check_algorithm(algorithm: object) -> SignatureAlgorithm:
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"signature algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    return algorithm  # type: ignore[return-value]


def generate(algorithm: SignatureAlgorithm) -> PrivateKey:
    """A fresh key pair of ``algorithm``."""
    if check_algorithm(algorithm) == "SM2":
        private, public = gm.sm2_generate()
        return PrivateKey("SM2", private, PublicKey("SM2", public))
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return PrivateKey("Ed25519", seed, PublicKey("Ed25519", key.public_key().public_bytes_raw()))


def public_from_raw(algorithm: SignatureAlgorithm, raw: bytes) -> PublicKey:
    """A public key from its raw bytes (32 for Ed25519, 64 ``x || y`` for SM2), checked."""
    raw = bytes(raw)
    if check_algorithm(algorithm) == "SM2":
        try:
            point = gm._public_key(raw)
        except ConfigError:
            raise IntegrityError("the SM2 public key is not a point of sm2p256v1") from None
        return PublicKey("SM2", point)
    if len(raw) != 32:
        raise IntegrityError("an Ed25519 public key is 32 bytes")
    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise IntegrityError("the Ed25519 public key is malformed") from None
    return PublicKey("Ed25519", raw)


def load_public_pem(pem: bytes | str, where: str = "the public key") -> PublicKey:
    """An Ed25519 or SM2 public key from PEM (IntegrityError naming ``where`` when it is neither)."""
    text = pem.decode("ascii", "replace") if isinstance(pem, bytes) else str(pem)
    label, der = _unpem(text, where)
    if label != "PUBLIC KEY":
        raise IntegrityError(f"{where} is not a PEM public key")
    if der.startswith(_SM2_SPKI_PREFIX):
        point = der[len(_SM2_SPKI_PREFIX):]
        if len(point) != 65 or point[0] != 4:
            raise IntegrityError(f"{where} is not an uncompressed SM2 public key")
        return _named(public_from_raw, "SM2", point[1:], where)
    try:
        public = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        raise IntegrityError(f"{where} is neither an Ed25519 nor an SM2 public key") from None
    if not isinstance(public, Ed25519PublicKey):
        raise IntegrityError(f"{where} is neither an Ed25519 nor an SM2 public key")
    return PublicKey("Ed25519", public.public_bytes_raw())


def load_private_pem(pem: bytes, where: str = "the private key") -> PrivateKey:
    """An Ed25519 (PKCS#8) or SM2 (govshare block) private key from PEM, its public key checked."""
    label, der = _unpem(pem.decode("ascii", "replace"), where)
    if label == _SM2_PRIVATE_LABEL:
        if len(der) != gm.SM2_PRIVATE_BYTES + gm.SM2_PUBLIC_BYTES:
            raise IntegrityError(f"{where} is not an SM2 private key")
        private, public = der[:gm.SM2_PRIVATE_BYTES], _named(public_from_raw, "SM2", der[gm.SM2_PRIVATE_BYTES:], where)
        try:
            gm._private_key(private)
            gm.sm2_sign(private, public.raw, b"govshare-key-check")  # its public key is its own
        except ConfigError:
            raise IntegrityError(f"{where} is not a consistent SM2 key pair") from None
        return PrivateKey("SM2", private, public)
    if label != "PRIVATE KEY":
        raise IntegrityError(f"{where} is not a PEM private key")
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise IntegrityError(f"{where} is not a readable private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise IntegrityError(f"{where} is neither an Ed25519 nor an SM2 private key")
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return PrivateKey("Ed25519", seed, PublicKey("Ed25519", key.public_key().public_bytes_raw()))


def signature_bytes(text: object) -> bytes | None:
    """A base64 signature field decoded, or None when it is not base64."""
    try:
        return base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError):
        return None


def _named(make, algorithm: SignatureAlgorithm, raw: bytes, where: str) -> PublicKey:  # noqa: ANN001
    try:
        return make(algorithm, raw)
    except IntegrityError as exc:
        raise IntegrityError(f"{where}: {exc.message}") from None


def _pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).decode("ascii").replace("\n", "")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return ("\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"]) + "\n").encode("ascii")


def _unpem(text: str, where: str) -> tuple[str, bytes]:
    match = _PEM.match(text.strip() + "\n")
    if match is None:
        raise IntegrityError(f"{where} is not PEM")
    try:
        return match.group(1), base64.b64decode("".join(match.group(2).split()), validate=True)
    except (binascii.Error, ValueError):
        raise IntegrityError(f"{where} is not PEM") from None
