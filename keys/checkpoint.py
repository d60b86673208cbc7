"""Transparency-log checkpoints (C2SP tlog-checkpoint) in signed notes (C2SP signed-note), Ed25519.

What this is: the text format in which a log states its Merkle tree head, and the signature that
makes the statement the log's. A checkpoint's body is three lines (https://c2sp.org/tlog-checkpoint)::

    <origin>
    <tree size, decimal, no leading zeros>
    <root hash, standard base64 of 32 bytes>

(then optional, opaque extension lines, accepted when reading and never needed when writing).
A signed note (https://c2sp.org/signed-note) is the body, a blank line, and one or more
signature lines::

    — <key name> <base64(4-byte key ID || 64-byte Ed25519 signature over the body)>

with ``—`` the em dash U+2014. The Ed25519 key ID is the first four bytes of
``SHA-256(key name || 0x0A || 0x01 || 32-byte public key)``; a verifier key is written as
``<name>+<key ID hex>+<base64(0x01 || public key)>`` (the "vkey" of golang.org/x/mod/sumdb/note).

Why this format: it is the one transparency-log tooling (Go's sumdb note package, the
transparency-dev witnesses and verifiers, Sigstore, static CT logs) reads, so a checkpoint made
here can be checked with no software of ours, and witnesses can add their cosignatures as further
signature lines. Such lines from other keys are parsed (``signatures``) and ignored, as the spec
requires of unknown keys.

SM2 (the 国密 profile) signs notes too: signature type 0xff followed by the identifier
``govshare.sm2-with-sm3/1`` (signed-note reserves 0xff for unassigned types), a 64-byte public
key ``x || y``, and a DER signature; key IDs stay SHA-256 as the spec defines them (an identifier,
not a security property). Standard note tooling verifies the Ed25519 ones only.

This module is pure (the standard library, ``cryptography`` and keys.sigalg): the private key never enters it
(``sign_note`` takes a signing callback), so it serves both the log and an offline checker.
Refused: notes over ``MAX_NOTE`` bytes or with more than ``MAX_SIGNATURES`` signature lines,
notes that are not UTF-8 or carry control characters other than newline, malformed bodies and
signature lines; every refusal is a ``CheckpointError`` saying why.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from common.errors import GovshareError
from keys import sigalg

MAX_NOTE = 1 << 20  # bytes
MAX_SIGNATURES = 100
MAX_SIZE = (1 << 64) - 1  # tree sizes are uint64 in every implementation
ED25519 = 0x01  # the signed-note signature type byte of Ed25519
# SM2 has no assigned type byte: 0xff ("reserved for signature types without an identifier byte")
# followed by a longer identifier, as c2sp.org/signed-note recommends
SM2_TYPE = b"\xff" + b"govshare.sm2-with-sm3/1"
SIGNATURE_PREFIX = "\u2014 "  # em dash, space
HASH_SIZE = 32
KEY_HASH_SIZE = 4
_SIZE = re.compile(r"(0|[1-9][0-9]*)")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # signed-note: no ASCII control but newline


class CheckpointError(ValueError):
    """A checkpoint, note or key is malformed, or its signature is missing or does not verify."""


def _b64decode(text: str, what: str) -> bytes:
    """Strict standard base64 (RFC 4648 §4): the alphabet, padding, and canonical trailing bits."""
    if not _BASE64.fullmatch(text):
        raise CheckpointError(f"{what} is not standard base64")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise CheckpointError(f"{what} is not canonical base64")
    return raw


def check_name(name: str) -> str:
    """A key name as signed-note requires: non-empty, no Unicode space, no '+', no control
    character. Returns it; raises ``CheckpointError``."""
    if not isinstance(name, str) or not name:
        raise CheckpointError("a key name must be a non-empty string")
    if any(c.isspace() for c in name) or "+" in name or _CONTROL.search(name):
        raise CheckpointError(f"key name {name!r} has a space, a '+' or a control character")
    return name


def _check_text(text: str, what: str) -> None:
    if _CONTROL.search(text):
        raise CheckpointError(f"{what} has a control character other than newline")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CheckpointError(f"{what} is not valid UTF-8") from None


def _check_origin(origin: str) -> None:
    if not isinstance(origin, str) or not origin:
        raise CheckpointError("a checkpoint's origin must be a non-empty string")
    if "\n" in origin:
        raise CheckpointError("a checkpoint's origin must be one line")
    _check_text(origin, "the checkpoint's origin")


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: origin (the log's identity), tree size and RFC 6962 root hash."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_origin(self.origin)
        if not isinstance(self.size, int) or isinstance(self.size, bool) or not 0 <= self.size <= MAX_SIZE:
            raise CheckpointError(f"a checkpoint's tree size must be an integer in 0..2^64-1, not {self.size!r}")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise CheckpointError(f"a checkpoint's root hash must be {HASH_SIZE} bytes")
        if not isinstance(self.extensions, tuple):
            raise CheckpointError("a checkpoint's extension lines must be a tuple")
        for line in self.extensions:
            if not isinstance(line, str) or not line or "\n" in line:
                raise CheckpointError("a checkpoint's extension lines must be non-empty single lines")
            _check_text(line, "a checkpoint extension line")

    def body(self) -> bytes:
        """The note text: ``origin\\nsize\\nbase64(root)\\n`` and any extension lines."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode("ascii"), *self.extensions]
        return "".join(line + "\n" for line in lines).encode("utf-8")


def parse_checkpoint(body: bytes) -> Checkpoint:
    """The checkpoint a note text states (tlog-checkpoint "Note text"); raises ``CheckpointError``."""
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError("the checkpoint is not valid UTF-8") from None
    if not text.endswith("\n"):
        raise CheckpointError("the checkpoint does not end with a newline")
    _check_text(text, "the checkpoint")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("a checkpoint has at least three lines: origin, tree size, root hash")
    origin, size, root, *extensions = lines
    if not origin:
        raise CheckpointError("the checkpoint's origin line is empty")
    if not _SIZE.fullmatch(size):
        raise CheckpointError(f"the checkpoint's tree size {size!r} is not a decimal number without leading zeros")
    if int(size) > MAX_SIZE:
        raise CheckpointError(f"the checkpoint's tree size {size} is beyond 2^64-1")
    raw = _b64decode(root, "the checkpoint's root hash")
    if len(raw) != HASH_SIZE:
        raise CheckpointError(f"the checkpoint's root hash is {len(raw)} bytes, not {HASH_SIZE}")
    if any(not line for line in extensions):
        raise CheckpointError("the checkpoint has an empty extension line")
    return Checkpoint(origin, int(size), raw, tuple(extensions))


def _type_of(algorithm: str) -> bytes:
    if algorithm == "Ed25519":
        return bytes([ED25519])
    if algorithm == "SM2":
        return SM2_TYPE
    raise CheckpointError(f"signed notes here are Ed25519 or SM2, not {algorithm}")


def _raw_size(algorithm: str) -> int:
    return 32 if algorithm == "Ed25519" else 64


def key_hash(name: str, public_raw: bytes, algorithm: str = "Ed25519") -> bytes:
    """The 4-byte key ID: SHA-256(name || 0x0A || signature type || public key)[:4], the type
    being 0x01 for Ed25519 and ``SM2_TYPE`` (0xff and an identifier) for SM2."""
    # SHA-256 in every profile, SM2 keys too: c2sp.org/signed-note fixes the key ID as the first
    # four bytes of SHA-256(name || 0x0A || type || key), and this is an identifier that lets a
    # verifier pick the line to check, not what the note's integrity rests on (the signature is
    # SM2 over SM3, and the tree an SM2 note signs is SM3: keys.merkle.SIGNED_WITH)
    check_name(name)
    if not isinstance(public_raw, bytes) or len(public_raw) != _raw_size(algorithm):
        raise CheckpointError(f"an {algorithm} public key is {_raw_size(algorithm)} bytes")
    return hashlib.sha256(name.encode("utf-8") + b"\n" + _type_of(algorithm) + public_raw).digest()[:KEY_HASH_SIZE]


def vkey(name: str, public_raw: bytes, algorithm: str = "Ed25519") -> str:
    """The verifier key string: ``<name>+<key ID hex>+<base64(type || public key)>``."""
    keyhash = key_hash(name, public_raw, algorithm)
    return f"{name}+{keyhash.hex()}+{base64.b64encode(_type_of(algorithm) + public_raw).decode('ascii')}"


def parse_any_vkey(text: str) -> tuple[str, sigalg.PublicKey]:
    """The name and key (Ed25519 or SM2) of a verifier key string; CheckpointError otherwise."""
    if isinstance(text, str) and "+" in text.strip():
        parts = text.strip().split("+", 2)
        if len(parts) == 3:
            try:
                key = base64.b64decode(parts[2], validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if key.startswith(SM2_TYPE):
                name, hex_id = parts[0], parts[1]
                check_name(name)
                raw = key[len(SM2_TYPE):]
                if len(raw) != 64 or not re.fullmatch(r"[0-9a-fA-F]{8}", hex_id):
                    raise CheckpointError("the verifier key is not an SM2 key (64 bytes) with an 8-hex-digit key ID")
                if key_hash(name, raw, "SM2") != bytes.fromhex(hex_id):
                    raise CheckpointError("the verifier key's key ID does not match its name and key")
                try:
                    return name, sigalg.public_from_raw("SM2", raw)
                except GovshareError as exc:
                    raise CheckpointError(f"the verifier key: {exc.message}") from None
    name, public = parse_vkey(text)
    return name, sigalg.PublicKey("Ed25519", public.public_bytes_raw())


def parse_vkey(text: str) -> tuple[str, Ed25519PublicKey]:
    """The name and Ed25519 key of a verifier key string (surrounding whitespace ignored); raises
    ``CheckpointError`` when it is malformed, not Ed25519, or its key ID does not match."""
    if not isinstance(text, str):
        raise CheckpointError("a verifier key is a string")
    parts = text.strip().split("+", 2)  # the base64 key may itself hold a '+'
    if len(parts) != 3:
        raise CheckpointError("a verifier key is <name>+<key ID hex>+<base64 key>")
    name, hex_id, encoded = parts
    check_name(name)
    if not re.fullmatch(r"[0-9a-fA-F]{8}", hex_id):
        raise CheckpointError("a verifier key's key ID is 8 hex digits")
    key = _b64decode(encoded, "the verifier key's public key")
    if len(key) != 33 or key[0] != ED25519:
        raise CheckpointError("the verifier key is not an Ed25519 key (type 0x01 and 32 bytes)")
    if key_hash(name, key[1:]) != bytes.fromhex(hex_id):
        raise CheckpointError("the verifier key's key ID does not match its name and key")
    return name, Ed25519PublicKey.from_public_bytes(key[1:])


def _split_note(note: bytes) -> tuple[bytes, list[tuple[str, bytes, bytes]]]:
    """The note text (up to and including its final newline) and its signature lines."""
    if not isinstance(note, bytes | bytearray):
        raise CheckpointError("a signed note is bytes")
    if len(note) > MAX_NOTE:
        raise CheckpointError(f"the note is larger than {MAX_NOTE} bytes")
    try:
        text = bytes(note).decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError("the note is not valid UTF-8") from None
    _check_text(text, "the note")
    if not text.endswith("\n"):
        raise CheckpointError("the note does not end with a newline")
    cut = text.rfind("\n\n")  # the text ends at the last blank line
    if cut < 0:
        raise CheckpointError("the note has no blank line between its text and its signatures")
    body, block = text[:cut + 1], text[cut + 2:]
    lines = block[:-1].split("\n") if block else []
    if not lines:
        raise CheckpointError("the note has no signature line")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError(f"the note has more than {MAX_SIGNATURES} signature lines")
    found = []
    for number, line in enumerate(lines, start=1):
        if not line.startswith(SIGNATURE_PREFIX):
            raise CheckpointError(f"signature line {number} does not start with an em dash and a space")
        name, space, encoded = line[len(SIGNATURE_PREFIX):].partition(" ")
        if not space:
            raise CheckpointError(f"signature line {number} has no signature after the key name")
        try:
            check_name(name)
        except CheckpointError as e:
            raise CheckpointError(f"signature line {number}: {e}") from None
        raw = _b64decode(encoded, f"the signature of line {number}")
        if len(raw) <= KEY_HASH_SIZE:
            raise CheckpointError(f"the signature of line {number} is too short")
        found.append((name, raw[:KEY_HASH_SIZE], raw[KEY_HASH_SIZE:]))
    return body.encode("utf-8"), found


def signatures(note: bytes) -> list[tuple[str, bytes, bytes]]:
    """Every signature line of a note as (key name, 4-byte key ID, signature), in order, checked
    for form only (not verified): the seam for cosignatures and witnesses."""
    return _split_note(note)[1]


def note_text(note: bytes) -> bytes:
    """The text a note's signatures sign (unverified: use it only after ``verify_note``)."""
    return _split_note(note)[0]


def sign_note(body: bytes, name: str, public_raw: bytes, sign: Callable[[bytes], bytes],
              algorithm: str = "Ed25519") -> bytes:
    """A signed note of ``body`` with one signature line by key ``name`` (Ed25519, or SM2).

    ``sign`` returns the raw signature of the bytes it is given (64 bytes for Ed25519, DER for
    SM2; the private key stays with the caller); it is checked against ``public_raw`` before use.
    """
    if not isinstance(body, bytes | bytearray):
        raise CheckpointError("a note text is bytes")
    body = bytes(body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError("the note text is not valid UTF-8") from None
    if not text.endswith("\n"):
        raise CheckpointError("the note text must end with a newline")
    _check_text(text, "the note text")
    keyhash = key_hash(name, public_raw, algorithm)
    signature = sign(body)
    if not isinstance(signature, bytes) or (algorithm == "Ed25519" and len(signature) != 64):
        raise CheckpointError("the signing callback did not return a 64-byte Ed25519 signature" if algorithm == "Ed25519"
                              else f"the signing callback did not return an {algorithm} signature")
    if not sigalg.public_from_raw(algorithm, public_raw).verify(signature, body):  # type: ignore[arg-type]
        raise CheckpointError(f"the signing callback's signature does not verify under the key of {name}") from None
    line = f"{SIGNATURE_PREFIX}{name} {base64.b64encode(keyhash + signature).decode('ascii')}\n"
    note = body + b"\n" + line.encode("utf-8")
    if len(note) > MAX_NOTE:
        raise CheckpointError(f"the note would be larger than {MAX_NOTE} bytes")
    return note


def verify_note(note: bytes, name: str, public_key: Ed25519PublicKey | sigalg.PublicKey) -> Checkpoint:
    """The checkpoint of a signed note, once a signature by key ``name`` verifies over it.

    Signature lines of other keys (another name, or the same name with another key ID) are
    ignored; every line of this key must verify (signed-note: a failing known signature rejects
    the note). Raises ``CheckpointError``.
    """
    body, found = _split_note(note)
    if isinstance(public_key, Ed25519PublicKey):
        public_key = sigalg.PublicKey("Ed25519", public_key.public_bytes_raw())
    keyhash = key_hash(name, public_key.raw, public_key.algorithm)
    mine = [sig for sig_name, sig_hash, sig in found if sig_name == name and sig_hash == keyhash]
    if not mine:
        raise CheckpointError(f"the note has no signature by {name} (key ID {keyhash.hex()})")
    for sig in mine:
        if (public_key.algorithm == "Ed25519" and len(sig) != 64) or not public_key.verify(sig, body):
            raise CheckpointError(f"the signature by {name} (key ID {keyhash.hex()}) does not verify") from None
    return parse_checkpoint(body)
