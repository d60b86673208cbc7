"""Checking an access-log inclusion proof offline, with the publisher's public key alone.

``govshare audit prove SEQ --out FILE`` writes a JSON document (format
``govshare-inclusion-proof/1``)::

    record          the access-log record as stored (its fields, seq, time, hashes, signature)
    leaf_index      seq - 1
    tree_size       the size of the tree the checkpoint signs
    leaf_hash       hex SHA-256(0x00 || canonical JSON of the record)            (RFC 6962)
                    (SM3 for SHA-256 throughout in a 国密 log: see hash_algorithm)
    inclusion       hex audit path from the leaf to the root                     (RFC 9162 2.1.3)
    checkpoint      a C2SP tlog-checkpoint in a signed note (origin, size, base64 root)
    publisher_key   the key the checkpoint was signed with: name, vkey, PEM (for convenience only:
                    an auditor checks against the key they obtained from the bureau, not this one)
    hash_algorithm  "SM3" in a log of the 国密 profile (SM2 keys); absent for SHA-256 (Ed25519)

The tree's hash is bound to the key that signs it (keys.merkle.SIGNED_WITH: Ed25519 -> SHA-256,
SM2 -> SM3): the check takes it from the given key, and refuses a proof (or a record) that
records another one, so a log cannot be passed off as re-hashed under a weaker algorithm.

What is checked here: the checkpoint's signature under the given key and its origin; that the
leaf hash is the record's; that the audit path leads from it to the checkpoint's root at that
index and size. Canonical JSON is ``json.dumps(record, sort_keys=True, ensure_ascii=False,
separators=(",", ":"))`` in UTF-8. This module needs only the standard library, ``cryptography``
(and ``gmssl-pyx`` for SM2 keys, through keys.sigalg) and its neighbours (keys.merkle,
keys.checkpoint, keys.sigalg), so it runs on an auditor's machine:
``python -m keys.proofcheck FILE --key publisher.pem``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from common.errors import IntegrityError
from keys import sigalg
from keys.checkpoint import CheckpointError, note_text, parse_any_vkey, parse_checkpoint, verify_note
from keys.merkle import TREE_HASHES, TreeHash, for_signature, verify_inclusion

PROOF_FORMAT = "govshare-inclusion-proof/1"
# where a record, a proof, a checkpoint record, a retention anchor or an archive records the hash
# of its log; absent means SHA-256 (every file from before the 国密 profile)
HASH_FIELD = "hash_algorithm"
DEFAULT_HASH = "SHA-256"
MAX_PROOF_BYTES = 4 * 1024 * 1024


class ProofError(ValueError):
    """The proof does not hold; the message says which part."""


@dataclass(frozen=True)
class CheckedProof:
    seq: int
    tree_size: int
    origin: str
    record: dict[str, Any]


def load_key(text: str) -> tuple[str | None, sigalg.PublicKey]:
    """A publisher key (Ed25519 or SM2) given as a PEM public key or as a C2SP vkey line
    (name+hash+base64)."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            return None, sigalg.load_public_pem(text, "the key")
        except IntegrityError as exc:
            raise ProofError(f"the key is not an Ed25519 or SM2 PEM public key: {exc.message}") from None
    try:
        return parse_any_vkey(text)
    except CheckpointError as exc:
        raise ProofError(f"the key is neither a PEM public key nor a vkey: {exc}") from None


def as_public(key: sigalg.PublicKey | Ed25519PublicKey) -> sigalg.PublicKey:
    """A key of either form as keys.sigalg holds it."""
    if isinstance(key, Ed25519PublicKey):
        return sigalg.PublicKey("Ed25519", key.public_bytes_raw())
    return key


def recorded_hash(doc: dict[str, Any]) -> str:
    """The hash ``doc`` records for its log (SHA-256 when it records none)."""
    return doc.get(HASH_FIELD, DEFAULT_HASH)  # type: ignore[no-any-return]


def bound_hash(key: sigalg.PublicKey | Ed25519PublicKey, recorded: object, what: str,
               error: type[Exception]) -> TreeHash:
    """The tree hash of a log signed by ``key`` (Ed25519: SHA-256, SM2: SM3), once what ``what``
    records (``recorded``) is that one; ``error`` otherwise: a log re-hashed under another
    algorithm than its key's is refused, never followed."""
    algorithm = as_public(key).algorithm
    bound = for_signature(algorithm)
    if recorded != bound.name:
        named = f"records the hash {recorded!r}" if recorded in TREE_HASHES else f"names an unknown hash {recorded!r}"
        raise error(f"{what} {named}, but it is signed by an {algorithm} key, whose logs are hashed with "
                    f"{bound.name}: refused (a log re-hashed under another algorithm than its key's)")
    return bound


def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def signed_tree_hash(note: bytes, name: str, keys: Iterable[sigalg.PublicKey | Ed25519PublicKey]) -> TreeHash:
    """The hash of the tree a checkpoint note signs: the one bound to the key (of ``keys``) whose
    signature on it verifies (Ed25519: SHA-256, SM2: SM3), for checking proofs against it;
    CheckpointError when no key's signature verifies."""
    for key in keys:
        try:
            verify_note(note, name, key)
        except CheckpointError:
            continue
        return for_signature(as_public(key).algorithm)
    raise CheckpointError(f"the note has no signature by {name} that verifies under the given keys")


def check_proof(doc: Any, key: sigalg.PublicKey | Ed25519PublicKey, name: str | None = None) -> CheckedProof:  # noqa: ANN401
    """Check a proof document against the publisher's key; ProofError naming what fails."""
    key = as_public(key)
    if not isinstance(doc, dict) or doc.get("format") != PROOF_FORMAT:
        raise ProofError(f"not a {PROOF_FORMAT} document")
    record, index, size = doc.get("record"), doc.get("leaf_index"), doc.get("tree_size")
    note, path = doc.get("checkpoint"), doc.get("inclusion")
    if not isinstance(record, dict) or not isinstance(note, str) or not isinstance(path, list):
        raise ProofError("record, checkpoint or inclusion is missing or of the wrong type")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (index, size)) or not 0 <= index < size:
        raise ProofError("leaf_index and tree_size must be integers with 0 <= leaf_index < tree_size")
    if record.get("seq") != index + 1:
        raise ProofError(f"the record is seq {record.get('seq')!r}, not record {index + 1} of the proof")
    try:
        origin = name or parse_checkpoint(note_text(note.encode("utf-8"))).origin
        checkpoint = verify_note(note.encode("utf-8"), origin, key)
    except CheckpointError as exc:
        raise ProofError(f"the checkpoint does not verify under the given key: {exc}") from None
    if checkpoint.size != size:
        raise ProofError(f"the checkpoint signs a tree of {checkpoint.size} record(s), the proof claims {size}")
    hasher = bound_hash(key, recorded_hash(doc), "the proof", ProofError)
    bound_hash(key, recorded_hash(record), f"record {index + 1}", ProofError)
    leaf = hasher.leaf(canonical(record))
    if doc.get("leaf_hash") not in (None, leaf.hex()):
        raise ProofError("leaf_hash is not the hash of the record")
    try:
        proof = [bytes.fromhex(h) for h in path]
    except (TypeError, ValueError):
        raise ProofError("the inclusion path is not a list of hex hashes") from None
    if not verify_inclusion(leaf, index, size, proof, checkpoint.root, hasher):
        raise ProofError(f"the record is not record {index + 1} of the tree the checkpoint signs: the record or "
                         "the path was altered")
    return CheckedProof(index + 1, size, checkpoint.origin, record)


def read_proof(path: Path) -> Any:  # noqa: ANN401 - JSON
    return read_bounded_json(path, MAX_PROOF_BYTES, ProofError, "a proof")[1]


def read_bounded_json(path: Path, limit: int, error: type[Exception], what: str) -> tuple[bytes, Any]:
    """A JSON file of at most ``limit`` bytes, as (bytes, document); ``error`` saying why otherwise."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(limit + 1)
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc.__class__.__name__})") from None
    if len(raw) > limit:
        raise error(f"{path}: larger than {limit} bytes; not {what}")
    try:
        return raw, json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise error(f"{path}: not JSON") from None


def key_fingerprint(key: sigalg.PublicKey | Ed25519PublicKey) -> str:
    """SHA-256 of the raw public key: a name for the key to show (the bureau publishes it), not a
    log digest, so it is SHA-256 in either profile."""
    return hashlib.sha256(as_public(key).raw).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keys.proofcheck",
                                     description="Check a govshare access-log inclusion proof offline.")
    parser.add_argument("proof", type=Path)
    parser.add_argument("--key", type=Path, required=True, help="the publisher's public key: PEM or vkey file")
    args = parser.parse_args(argv)
    try:
        name, key = load_key(args.key.read_text(encoding="utf-8"))
        checked = check_proof(read_proof(args.proof), key, name)
    except OSError as exc:
        print(f"proofcheck: {args.key}: cannot be read ({exc.strerror})", file=sys.stderr)
        return 2
    except ProofError as exc:
        print(f"proofcheck: {exc}", file=sys.stderr)
        return 3
    print(f"record {checked.seq} is in the access log {checked.origin} of {checked.tree_size} record(s), "
          f"as signed by the key {key_fingerprint(key)[:16]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
