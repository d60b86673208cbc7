"""Crypto profiles: which algorithms a home uses for each purpose, chosen once at ``govshare init``.

    profile    signatures   key wrapping / master keys   HMAC keys    digests
    standard   Ed25519      AES-256-GCM (32-byte keys)    HMAC-SHA256  SHA-256
    gm (国密)   SM2          SM4-GCM (16-byte keys)        HMAC-SM3     SM3

``GOVSHARE_CRYPTO_PROFILE`` names it (``standard`` when unset); the keystore index records it and
a home never changes profile in place: another value for an existing home is refused (exit 2),
never silently ignored. Each stored key also names its own algorithm, so code that uses a key
asks the key (``aead_for``, ``mac_for``), not the profile.
"""

from __future__ import annotations

import hashlib
import hmac as std_hmac
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.errors import ConfigError
from keys import gm

ProfileName = Literal["standard", "gm"]
PROFILES: tuple[ProfileName, ...] = ("standard", "gm")
PROFILE_ENV = "GOVSHARE_CRYPTO_PROFILE"


@dataclass(frozen=True)
class Profile:
    name: ProfileName
    signing: Literal["Ed25519", "SM2"]
    master: Literal["AES-256-GCM", "SM4-GCM"]
    hmac: Literal["HMAC-SHA256", "HMAC-SM3"]
    digest: Literal["SHA-256", "SM3"]


STANDARD = Profile("standard", "Ed25519", "AES-256-GCM", "HMAC-SHA256", "SHA-256")
GM = Profile("gm", "SM2", "SM4-GCM", "HMAC-SM3", "SM3")
_BY_NAME = {p.name: p for p in (STANDARD, GM)}

SYMMETRIC_BYTES = {"AES-256-GCM": 32, "SM4-GCM": gm.SM4_KEY_BYTES, "HMAC-SHA256": 32, "HMAC-SM3": 32}


def profile(name: object) -> Profile:
    """The profile called ``name`` (ConfigError naming the variable for anything else)."""
    found = _BY_NAME.get(name) if isinstance(name, str) else None
    if found is None:
        raise ConfigError(f"{PROFILE_ENV}={name!r}: the crypto profile is one of {', '.join(PROFILES)} "
                          "(standard: Ed25519, AES-256-GCM, SHA-256; gm: SM2, SM4-GCM, SM3)")
    return found


def from_environment(value: str | None) -> Profile | None:
    """The profile ``GOVSHARE_CRYPTO_PROFILE`` asks for, or None when it is unset or empty."""
    if value is None or not value.strip():
        return None
    return profile(value.strip())


def aead_for(algorithm: str, key: bytes) -> AESGCM | gm.SM4GCM:
    """The AEAD of a key by its algorithm: both take ``encrypt(nonce12, data, aad)``."""
    if algorithm == "AES-256-GCM":
        return AESGCM(key)
    if algorithm == "SM4-GCM":
        return gm.SM4GCM(key)
    raise ConfigError(f"a {algorithm} key does not encrypt")


def mac_for(algorithm: str, key: bytes, data: bytes) -> bytes:
    """HMAC of ``data`` under ``key`` by the key's algorithm (32 bytes either way)."""
    if algorithm == "HMAC-SHA256":
        return std_hmac.new(key, data, hashlib.sha256).digest()
    if algorithm == "HMAC-SM3":
        return gm.hmac_sm3(key, data)
    raise ConfigError(f"a {algorithm} key is not an HMAC key")


def digest_for(algorithm: str, data: bytes) -> bytes:
    if algorithm == "SHA-256":
        return hashlib.sha256(data).digest()
    if algorithm == "SM3":
        return gm.sm3(data)
    raise ConfigError(f"{algorithm} is not a digest govshare knows")
