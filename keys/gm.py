"""The building blocks of a 国密 (GM, ShangMi) crypto profile: SM3, HMAC-SM3, SM4-GCM, SM2.

Not yet wired into publishing: this module is the GM counterpart of the primitives the standard
profile takes from ``cryptography`` (SHA-256, AES-256-GCM, Ed25519/X25519 + HPKE in
keys.datakeys), kept self-contained so that a profile switch can be added later.

Where each algorithm comes from, and why:

- SM3 (GB/T 32905-2016), HMAC-SM3 (RFC 2104 over SM3) and SM4-GCM (the GB/T 32907-2016 block
  cipher in GCM, as in GB/T 36624-2018 and RFC 8998) come from ``cryptography``, i.e. the
  OpenSSL already used everywhere else. Its SM4-GCM is about twice as fast as GmSSL's here, and
  it encrypts a whole buffer in one call: encrypt a column by handing over its values' buffer
  (e.g. a pyarrow buffer) once, never value by value in a Python loop.
  ``SM4GCM`` has the shape of ``cryptography``'s ``AESGCM`` (16-byte key, 12-byte nonce,
  ``encrypt(nonce, data, aad)`` returning ciphertext || 16-byte tag) so callers can swap AEADs;
  its tag failure, ``SM4TagMismatch``, is both an ``IntegrityError`` and an ``InvalidTag``, so
  code written for either keeps catching it.
- SM2 (GB/T 32918-2016, curve sm2p256v1) comes from ``gmssl-pyx`` (a C extension over GmSSL):
  ``cryptography`` has no SM2. Never the PyPI package ``gmssl``: its signing nonces come from
  ``random``. Encodings, as gmssl-pyx 2.1.0 uses them (read from its stub and C source, and
  checked against the published vectors in tests/unit/test_gm.py):

  - private key: 32 bytes, big-endian d, 1 <= d <= n-2;
  - public key: 64 bytes x || y (what ``sm2_generate`` returns); 65-byte ``04 || x || y`` and
    33-byte compressed points are accepted as input and must lie on the curve;
  - signature: ASN.1 DER ``SEQUENCE { r INTEGER, s INTEGER }`` (GM/T 0009-2012 SM2Signature),
    parsed strictly (trailing or non-minimal bytes fail). The library computes Z itself:
    e = SM3(Z || M) with Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA), ID defaulting
    to ``1234567812345678`` (GM/T 0009-2012); it takes xA, yA from the point derived from the
    private key. ``sm2_z`` computes the same Z here, for interop with devices that sign digests;
  - ciphertext: ASN.1 DER ``SEQUENCE { x INTEGER, y INTEGER, hash OCTET STRING (C3, 32 bytes),
    ciphertext OCTET STRING (C2) }`` (GM/T 0009-2012 SM2Cipher, i.e. the C1C3C2 order of GB/T
    32918.4-2016 in DER form), for 1 to 255 plaintext bytes.

- ``seal_sm2`` / ``open_sm2``: the GM counterpart of keys.datakeys.seal / open_sealed (HPKE).
  A fresh 16-byte SM4 key is SM2-encrypted to the subscriber's public key and the data key is
  SM4-GCM encrypted under it with AAD = ``info`` (e.g. keys.datakeys.envelope_info), so an
  envelope opens only for the dataset, version, group and subscriber it was made for. Layout:
  ``0x01 || len(W) (2 bytes, big-endian) || W (SM2 ciphertext of the SM4 key) || nonce (12) ||
  SM4-GCM(data key) || tag (16)``. A wrong key and a wrong ``info`` fail alike, with one message.

GmSSL prints a file:line trace to the process's stderr (fd 2, from C) whenever a verify or a
decryption fails or a key is refused. That must never reach users, so every gmssl-pyx call runs
with fd 2 pointed at /dev/null (``_quiet_fd2``: dup2, restored in a ``finally``). fd 2 is
process-wide, so a lock keeps two such calls from tangling their saves and restores; anything
another thread writes to fd 2 during such a call (a few microseconds) is lost too.

Errors: a bad signature is ``False`` from ``sm2_verify``; a ciphertext, tag or envelope that
does not authenticate raises ``IntegrityError``; a malformed key or argument raises
``ConfigError``. Messages are plain and never carry key material or plaintext.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import gmssl_pyx
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from common.errors import ConfigError, IntegrityError, InternalError

SM3_BYTES = 32
SM4_KEY_BYTES = 16
GCM_NONCE_BYTES = 12
GCM_TAG_BYTES = 16
SM2_PRIVATE_BYTES = 32
SM2_PUBLIC_BYTES = 64
SM2_DEFAULT_ID = b"1234567812345678"  # GM/T 0009-2012, section 10
SM2_MAX_ID_BYTES = 8191  # ENTL is the ID's length in bits, in 2 bytes
SM2_MAX_PLAINTEXT_BYTES = 255  # gmssl-pyx's limit for one SM2 encryption
ENVELOPE_VERSION = 1

# sm2p256v1, GB/T 32918.5-2017 (GM/T 0003.5-2012)
_P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
_A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
_B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
_N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
_GX = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
_GY = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0
_Z_CURVE = b"".join(v.to_bytes(32, "big") for v in (_A, _B, _GX, _GY))

_ENVELOPE_HEAD = struct.Struct(">BH")  # version, length of the SM2 ciphertext
_FD2_LOCK = threading.Lock()
_T = TypeVar("_T")


# -- SM3 ---------------------------------------------------------------------------------------

def sm3(data: bytes) -> bytes:
    """The SM3 digest of ``data`` (32 bytes)."""
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


def hmac_sm3(key: bytes, data: bytes) -> bytes:
    """HMAC-SM3 of ``data`` under ``key`` (32 bytes)."""
    mac = hmac.HMAC(key, hashes.SM3())
    mac.update(data)
    return mac.finalize()


# -- SM4-GCM -----------------------------------------------------------------------------------

class SM4TagMismatch(IntegrityError, InvalidTag):
    """An SM4-GCM ciphertext that does not authenticate: caught as IntegrityError by govshare,
    and as InvalidTag by code written for cryptography's AEADs."""


def sm4_gcm_encrypt(key: bytes, nonce: bytes, data: bytes, aad: bytes | None) -> bytes:
    """``data`` encrypted under SM4-GCM: ciphertext || 16-byte tag. One call for a whole buffer;
    never reuse a nonce under the same key."""
    _check_sm4(key, nonce)
    encryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
    if aad:
        encryptor.authenticate_additional_data(aad)
    body = encryptor.update(data) + encryptor.finalize()
    return body + encryptor.tag


def sm4_gcm_decrypt(key: bytes, nonce: bytes, data: bytes, aad: bytes | None) -> bytes:
    """The plaintext of ``data`` (ciphertext || tag); SM4TagMismatch (an IntegrityError) if it does
    not authenticate under this key, nonce and ``aad``. Nothing is returned before the tag checks."""
    _check_sm4(key, nonce)
    if len(data) < GCM_TAG_BYTES:
        raise _tag_mismatch()
    view = memoryview(data)
    decryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce, bytes(view[-GCM_TAG_BYTES:]))).decryptor()
    if aad:
        decryptor.authenticate_additional_data(aad)
    plain = decryptor.update(view[:-GCM_TAG_BYTES])
    try:
        decryptor.finalize()
    except InvalidTag:
        raise _tag_mismatch() from None
    return plain


class SM4GCM:
    """SM4-GCM with the interface of cryptography's AESGCM, so callers can swap AEADs."""

    def __init__(self, key: bytes) -> None:
        _check_sm4_key(key)
        self._key = bytes(key)

    @classmethod
    def generate_key(cls, bit_length: int = 128) -> bytes:
        if bit_length != SM4_KEY_BYTES * 8:
            raise ConfigError(f"an SM4 key has 128 bits, not {bit_length}")
        return os.urandom(SM4_KEY_BYTES)

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        return sm4_gcm_encrypt(self._key, nonce, data, associated_data)

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        return sm4_gcm_decrypt(self._key, nonce, data, associated_data)


def _check_sm4(key: bytes, nonce: bytes) -> None:
    _check_sm4_key(key)
    if len(nonce) != GCM_NONCE_BYTES:
        raise ConfigError(f"an SM4-GCM nonce is {GCM_NONCE_BYTES} bytes, not {len(nonce)}")


def _check_sm4_key(key: bytes) -> None:
    if len(key) != SM4_KEY_BYTES:
        raise ConfigError(f"an SM4 key is {SM4_KEY_BYTES} bytes, not {len(key)}")


def _tag_mismatch() -> SM4TagMismatch:
    return SM4TagMismatch("SM4-GCM data does not authenticate under this key, nonce and associated data: "
                          "it was altered, or was not made with them")


# -- SM2 ---------------------------------------------------------------------------------------

def sm2_generate() -> tuple[bytes, bytes]:
    """A fresh SM2 key pair: (32-byte private key, 64-byte public key x || y)."""
    try:
        public, private = _quietly(gmssl_pyx.sm2_key_generate)
    except gmssl_pyx.GmsslInnerError:
        raise InternalError("the SM2 library could not make a key pair") from None
    return private, public


def sm2_sign(private: bytes, public: bytes, message: bytes, user_id: bytes = SM2_DEFAULT_ID) -> bytes:
    """The SM2 signature (DER) of ``message``, over e = SM3(Z || message) with Z from ``user_id``
    and the key. ConfigError if ``public`` is not ``private``'s public key."""
    scalar, point, uid = _private_key(private), _public_key(public), _user_id(user_id)
    try:
        signature = _quietly(gmssl_pyx.sm2_sign, scalar, point, bytes(message), signer_id=uid)
    except gmssl_pyx.GmsslInnerError:
        raise InternalError("the SM2 library could not sign") from None
    if not sm2_verify(point, message, signature, uid):
        raise ConfigError("the SM2 public key given to sign is not the private key's public key")
    return signature


def sm2_verify(public: bytes, message: bytes, signature: bytes, user_id: bytes = SM2_DEFAULT_ID) -> bool:
    """Whether ``signature`` (DER) is ``public``'s SM2 signature of ``message`` for ``user_id``.
    False for any bad or malformed signature, silently; ConfigError only for a malformed key or ID."""
    point, uid = _public_key(public), _user_id(user_id)
    if not signature:
        return False
    try:
        return bool(_quietly(gmssl_pyx.sm2_verify, point, bytes(message), bytes(signature), signer_id=uid))
    except gmssl_pyx.GmsslInnerError:
        return False


def sm2_z(public: bytes, user_id: bytes = SM2_DEFAULT_ID) -> bytes:
    """Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA) (GB/T 32918.2-2016, 5.5)."""
    uid = _user_id(user_id)
    return sm3((len(uid) * 8).to_bytes(2, "big") + uid + _Z_CURVE + _public_key(public))


def sm2_encrypt(public: bytes, plaintext: bytes) -> bytes:
    """``plaintext`` (1 to 255 bytes) SM2-encrypted to ``public``: DER SM2Cipher (C1, C3, C2)."""
    point = _public_key(public)
    if not 1 <= len(plaintext) <= SM2_MAX_PLAINTEXT_BYTES:
        raise ConfigError(f"SM2 encrypts 1 to {SM2_MAX_PLAINTEXT_BYTES} bytes, not {len(plaintext)}: "
                          "encrypt a key with it, and the data under that key")
    try:
        return _quietly(gmssl_pyx.sm2_encrypt, point, bytes(plaintext))
    except gmssl_pyx.GmsslInnerError:
        raise InternalError("the SM2 library could not encrypt") from None


def sm2_decrypt(private: bytes, ciphertext: bytes) -> bytes:
    """The plaintext of an SM2 ciphertext (DER SM2Cipher); IntegrityError, silently, if it was
    altered or made for another key."""
    scalar = _private_key(private)
    try:
        return _quietly(gmssl_pyx.sm2_decrypt, scalar, bytes(ciphertext))
    except gmssl_pyx.GmsslInnerError:
        raise IntegrityError("an SM2 ciphertext does not decrypt with this private key: it was altered, "
                             "or made for another key") from None


def _private_key(private: bytes) -> bytes:
    raw = bytes(private)
    if len(raw) != SM2_PRIVATE_BYTES or not 1 <= int.from_bytes(raw, "big") <= _N - 2:
        raise ConfigError(f"an SM2 private key is {SM2_PRIVATE_BYTES} bytes holding 1 <= d <= n-2; this one is not")
    return raw


def _public_key(public: bytes) -> bytes:
    try:
        return gmssl_pyx.normalize_sm2_public_key(bytes(public))
    except (gmssl_pyx.InvalidValueError, TypeError, ValueError):
        raise ConfigError("an SM2 public key is a point of sm2p256v1 as 64 bytes x || y, 65 bytes 04 || x || y "
                          "or 33 compressed bytes; this one is not") from None


def _user_id(user_id: bytes) -> bytes:
    uid = bytes(user_id)
    if not 1 <= len(uid) <= SM2_MAX_ID_BYTES:
        raise ConfigError(f"an SM2 user ID is 1 to {SM2_MAX_ID_BYTES} bytes, not {len(uid)}")
    return uid


# -- sealed envelopes of data keys ---------------------------------------------------------------

def seal_sm2(public: bytes, key: bytes, info: bytes) -> bytes:
    """``key`` sealed to ``public`` for ``info``: a fresh SM4 key SM2-encrypted to ``public``, and
    ``key`` under it in SM4-GCM with AAD = ``info``."""
    if not key:
        raise ConfigError("there is no key to seal")
    wrapping = os.urandom(SM4_KEY_BYTES)
    wrapped = sm2_encrypt(public, wrapping)
    nonce = os.urandom(GCM_NONCE_BYTES)
    return (_ENVELOPE_HEAD.pack(ENVELOPE_VERSION, len(wrapped)) + wrapped + nonce
            + sm4_gcm_encrypt(wrapping, nonce, bytes(key), info))


def open_sm2(private: bytes, sealed: bytes, info: bytes) -> bytes:
    """The key in an envelope sealed to ``private``'s public key for ``info``; IntegrityError if it
    was altered, sealed to another key or made for another ``info`` (one message for all three)."""
    scalar = _private_key(private)  # a malformed key is the caller's ConfigError, not the envelope's
    try:
        wrapped, nonce, body = _envelope_parts(bytes(sealed))
        wrapping = sm2_decrypt(scalar, wrapped)
        if len(wrapping) != SM4_KEY_BYTES:
            raise IntegrityError("no SM4 key")
        return sm4_gcm_decrypt(wrapping, nonce, body, info)
    except IntegrityError:
        raise IntegrityError("a key envelope does not open with this key: it was altered, or made for another "
                             "subscriber, version or field") from None


def _envelope_parts(blob: bytes) -> tuple[bytes, bytes, bytes]:
    if len(blob) < _ENVELOPE_HEAD.size:
        raise IntegrityError("too short")
    version, size = _ENVELOPE_HEAD.unpack_from(blob)
    start = _ENVELOPE_HEAD.size
    wrapped = blob[start:start + size]
    nonce = blob[start + size:start + size + GCM_NONCE_BYTES]
    body = blob[start + size + GCM_NONCE_BYTES:]
    if version != ENVELOPE_VERSION or len(wrapped) != size or len(nonce) != GCM_NONCE_BYTES \
            or len(body) <= GCM_TAG_BYTES:
        raise IntegrityError("not an envelope")
    return wrapped, nonce, body


# -- keeping GmSSL's C-level noise off fd 2 ------------------------------------------------------

def _quietly(call: Callable[..., _T], *args: object, **kwargs: object) -> _T:
    with _quiet_fd2():
        return call(*args, **kwargs)


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    """fd 2 on /dev/null for the duration, restored after (or closed again if it was closed, so the
    noise cannot land in whatever file would take fd 2)."""
    with _FD2_LOCK:
        flush = getattr(sys.stderr, "flush", None)
        if flush is not None:
            with contextlib.suppress(OSError, ValueError):
                flush()  # what Python already wrote goes out first
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            saved: int | None = os.dup(2)
        except OSError:
            saved = None
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            if saved is None:
                os.close(2)
            else:
                os.dup2(saved, 2)
                os.close(saved)
            os.close(devnull)
