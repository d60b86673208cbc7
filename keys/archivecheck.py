"""Checking an access-log archive offline, with the publisher's public key alone.

``govshare audit archive --out FILE`` exports the records older than the retention period as one
JSON document (format ``govshare-access-log-archive/1``) before ``govshare audit purge`` removes
them from the live log::

    origin            the log's name (the origin line of every checkpoint)
    first_seq, last_seq   the archived records are seq first_seq..last_seq: leaves
                      [first_seq - 1, last_seq) of the log's Merkle tree
    prev_hash         the hash the first archived record links to (64 zeros for record 1)
    prefix            the tree before the first archived record, as its perfect subtrees
                      (keys.merkle.Frontier.to_json; size first_seq - 1, empty for the first archive)
    root              hex RFC 6962 root of the tree of last_seq leaves
    records           the records as stored (fields, seq, time, prev_hash, hash, signature)
    before            every archived record is older than this (ISO 8601); retention_days, created
    checkpoints       the kept checkpoints that cover archived records (size > first_seq - 1), the
                      last one (size >= last_seq) the one the others and ``consistency`` lead to:
                      each with its signed note and the consistency proof from its size to the last
    consistency       hex consistency proof from the tree of last_seq leaves to the last checkpoint
    publisher_keys    every publisher key (key_id, algorithm, public_pem): the keys of old records
                      and checkpoints, vouched for by the archive's signature
    signature         a signed note by the publisher (C2SP signed-note) of a tlog-checkpoint of the
                      tree of last_seq leaves, with one extension line
                      ``govshare-archive FIRST-LAST sha256:<hex>``: the SHA-256 of the canonical
                      JSON of the document without ``signature`` (``sm3:<hex>``, the SM3, in a
                      国密 log)
    hash_algorithm    ``"SM3"`` in a log of the 国密 profile; absent for SHA-256: the hash of the
                      records' chain, the tree and the digest above

The hash is learnt from the archive and bound to the key that checks it: an archive signed with an
Ed25519 key must be SHA-256, one signed with an SM2 key SM3 (keys.merkle.SIGNED_WITH), and so must
every record's and checkpoint's key; anything else is refused, so an archive cannot be re-hashed
under a weaker algorithm than its key's.

What is checked here: the signature under the given key (and its origin), the digest it names;
the records in order, each linked to the one before, its hash its content's and its signature by
a listed publisher key; that the prefix and the records' leaves make the root the signature signs
(so the records are exactly those leaves of the signed tree); every checkpoint's signature and its
consistency with the last one, and the consistency of the signed root with it. Like
keys.proofcheck, this needs only the standard library, ``cryptography`` (and ``gmssl-pyx`` for SM2
keys, through keys.sigalg) and keys.merkle and keys.checkpoint:
``python -m keys.archivecheck FILE --key publisher.pem`` (an Ed25519 or SM2 key, PEM or vkey).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from common.errors import IntegrityError
from keys import sigalg
from keys.checkpoint import Checkpoint, CheckpointError, note_text, parse_checkpoint, verify_note
from keys.merkle import SHA256, Frontier, TreeHash, verify_consistency
from keys.proofcheck import (
    ProofError,
    as_public,
    bound_hash,
    canonical,
    key_fingerprint,
    load_key,
    read_bounded_json,
    recorded_hash,
)

ARCHIVE_FORMAT = "govshare-access-log-archive/1"
EXTENSION = "govshare-archive"
GENESIS = "0" * 64
MAX_ARCHIVE_BYTES = 1 << 30
CHAIN_FIELDS = ("hash", "signature")


class ArchiveError(ValueError):
    """The archive does not hold; the message says which part."""


@dataclass(frozen=True)
class CheckedArchive:
    origin: str
    first: int
    last: int
    root: bytes
    tree_size: int  # the last checkpoint's
    tree_root: bytes
    checkpoints: int
    before: str
    hash_algorithm: str = SHA256.name


def digest(doc: dict[str, Any], hasher: TreeHash = SHA256) -> str:
    """The digest the archive's signature names (SHA-256, or SM3 in a 国密 log): of the canonical
    JSON without ``signature``."""
    return hasher.digest(canonical({k: v for k, v in doc.items() if k != "signature"})).hex()


def extension(first: int, last: int, body_digest: str, hasher: TreeHash = SHA256) -> str:
    label = "sha256" if hasher is SHA256 else hasher.name.lower()
    return f"{EXTENSION} {first}-{last} {label}:{body_digest}"


def signed_statement(origin: str, first: int, last: int, root: bytes, body_digest: str,
                     hasher: TreeHash = SHA256) -> Checkpoint:
    """What the archive's signed note states: the tree of ``last`` leaves, and the archive's digest."""
    return Checkpoint(origin, last, root, (extension(first, last, body_digest, hasher),))


def read_archive(path: Path) -> tuple[bytes, Any]:
    """The archive file's bytes and its JSON; ArchiveError when it cannot be read or is not JSON."""
    return read_bounded_json(path, MAX_ARCHIVE_BYTES, ArchiveError, "an archive")


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _hashes(values: object, what: str) -> list[bytes]:
    try:
        if not isinstance(values, list):
            raise TypeError
        found = [bytes.fromhex(v) for v in values]
    except (TypeError, ValueError):
        raise ArchiveError(f"{what} is not a list of hex hashes") from None
    return found


def _time(value: object, what: str) -> datetime:
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        raise ArchiveError(f"{what} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise ArchiveError(f"{what} has no time zone")
    return when


def listed_keys(doc: dict[str, Any]) -> dict[str, sigalg.PublicKey]:
    """key_id -> key of the publisher keys the archive lists (only trusted once its signature is)."""
    found = {}
    for item in doc.get("publisher_keys") or []:
        try:
            public = sigalg.load_public_pem(str(item["public_pem"]), "a listed publisher key")
        except (KeyError, TypeError, IntegrityError):
            raise ArchiveError("publisher_keys holds an entry that is not a key id and a PEM public key") from None
        if item.get("algorithm", public.algorithm) != public.algorithm:
            raise ArchiveError(f"publisher key {item.get('key_id')!r} is listed as {item.get('algorithm')!r} but is an "
                               f"{public.algorithm} key")
        found[str(item.get("key_id"))] = public
    return found


def _verify_signature(doc: dict[str, Any], keys: Sequence[sigalg.PublicKey],
                      name: str | None) -> tuple[Checkpoint, sigalg.PublicKey]:
    note = doc.get("signature")
    if not isinstance(note, str):
        raise ArchiveError("the archive has no signature (a signed note)")
    try:
        stated = parse_checkpoint(note_text(note.encode("utf-8")))
    except CheckpointError as exc:
        raise ArchiveError(f"the archive's signature is not a signed checkpoint: {exc}") from None
    for key in keys:
        try:
            return verify_note(note.encode("utf-8"), name or stated.origin, key), key
        except CheckpointError:
            continue
    raise ArchiveError("the archive's signature does not verify under the given key: it was altered or signed by "
                       "another key")


def _check_records(doc: dict[str, Any], first: int, last: int, keys: dict[str, sigalg.PublicKey],
                   hasher: TreeHash) -> Frontier:
    """The records in order and linked, each hash (``hasher``'s, which each one records and its
    key is bound to) and signature good; the tree through the last."""
    records = doc.get("records")
    if not isinstance(records, list) or len(records) != last - first + 1:
        raise ArchiveError(f"records must be a list of the {last - first + 1} record(s) {first}..{last}")
    try:
        frontier = Frontier.from_json(doc.get("prefix"), hasher)
    except ValueError as exc:
        raise ArchiveError(f"prefix is not the tree before record {first}: {exc}") from None
    if frontier.size != first - 1:
        raise ArchiveError(f"prefix is a tree of {frontier.size} leaves, not of the {first - 1} before record {first}")
    prev = doc.get("prev_hash")
    if first == 1 and prev != GENESIS:
        raise ArchiveError("record 1 must link to the genesis hash (64 zeros)")
    before = _time(doc.get("before"), "before")
    for seq, record in enumerate(records, start=first):
        where = f"archived record {seq}"
        if not isinstance(record, dict) or record.get("seq") != seq:
            found = record.get("seq") if isinstance(record, dict) else None
            raise ArchiveError(f"{where}: missing or out of order (seq {found!r})")
        if record.get("prev_hash") != prev:
            raise ArchiveError(f"{where}: does not link to the record before it; a record was removed or reordered")
        if recorded_hash(record) != hasher.name:
            raise ArchiveError(f"{where}: records the hash {recorded_hash(record)!r}, not the archive's {hasher.name}")
        body = {k: v for k, v in record.items() if k not in CHAIN_FIELDS}
        if hasher.digest(canonical(body)).hex() != record.get("hash"):
            raise ArchiveError(f"{where}: its content does not match its hash; the record was altered")
        _check_record_signature(record, keys, where, hasher)
        if _time(record.get("time"), f"{where}'s time") >= before:
            raise ArchiveError(f"{where} is from {record.get('time')}, not before the archive's cut {doc.get('before')}")
        prev = record["hash"]
        frontier.append(hasher.leaf(canonical(record)))
    return frontier


def _check_record_signature(record: dict[str, Any], keys: dict[str, sigalg.PublicKey], where: str,
                            hasher: TreeHash) -> None:
    signature = record.get("signature") if isinstance(record.get("signature"), dict) else {}
    key = keys.get(str(signature.get("key_id")))
    if key is None or signature.get("algorithm") != key.algorithm:
        raise ArchiveError(f"{where}: signed by key {signature.get('key_id')!r} ({signature.get('algorithm')!r}), which "
                           "is not a publisher key of that algorithm the archive lists")
    bound_hash(key, hasher.name, where, ArchiveError)
    raw = sigalg.signature_bytes(signature.get("signature"))
    if raw is None or not key.verify(raw, str(record["hash"]).encode("ascii")):
        raise ArchiveError(f"{where}: the publisher's signature does not verify")


def _check_checkpoints(doc: dict[str, Any], origin: str, first: int, last: int, root: bytes,
                       keys: Sequence[sigalg.PublicKey], hasher: TreeHash) -> tuple[Checkpoint, int]:
    """Every checkpoint signed and consistent with the last one, and the archive's tree with it."""
    items = doc.get("checkpoints")
    if not isinstance(items, list) or not items or not all(isinstance(c, dict) for c in items):
        raise ArchiveError("checkpoints must be a non-empty list")
    checked = []
    for number, item in enumerate(items, start=1):
        note = item.get("note")
        if not isinstance(note, str):
            raise ArchiveError(f"checkpoint {number} has no signed note")
        for key in keys:
            try:
                checked.append(verify_note(note.encode("utf-8"), origin, key))
            except CheckpointError:
                continue
            bound_hash(key, hasher.name, f"checkpoint {number} (of the archive's hash)", ArchiveError)
            break
        else:
            raise ArchiveError(f"checkpoint {number} is not signed by a publisher key the archive lists (origin {origin})")
    top = checked[-1]
    if top.size < last:
        raise ArchiveError(f"the last checkpoint signs a tree of {top.size} record(s); it does not cover record {last}")
    for number, (item, checkpoint) in enumerate(zip(items, checked, strict=True), start=1):
        if checkpoint.size < first or checkpoint.size > top.size:
            raise ArchiveError(f"checkpoint {number} (size {checkpoint.size}) covers no archived record or is larger "
                               "than the last")
        if item.get("size") != checkpoint.size or item.get("root") != checkpoint.root.hex():
            raise ArchiveError(f"checkpoint {number}: its size or root differs from what its signed note says")
        proof = _hashes(item.get("consistency"), f"checkpoint {number}'s consistency proof")
        if not verify_consistency(checkpoint.size, top.size, checkpoint.root, top.root, proof, hasher):
            raise ArchiveError(f"checkpoint {number} (size {checkpoint.size}) is not consistent with the last one "
                               f"(size {top.size}): the log was rewritten between them")
    if not verify_consistency(last, top.size, root, top.root, _hashes(doc.get("consistency"), "consistency"), hasher):
        raise ArchiveError(f"the tree of the {last} record(s) is not a prefix of the tree the last checkpoint signs")
    return top, len(checked)


def check_archive(doc: Any, keys: Sequence[sigalg.PublicKey | Ed25519PublicKey],  # noqa: ANN401 - JSON
                  name: str | None = None) -> CheckedArchive:
    """Check an archive against the publisher's key (any of ``keys``); ArchiveError naming what
    fails. The hash is the one the archive records, once it is the one the key that verifies the
    archive's signature is bound to."""
    keys = [as_public(k) for k in keys]
    if not isinstance(doc, dict) or doc.get("format") != ARCHIVE_FORMAT:
        raise ArchiveError(f"not a {ARCHIVE_FORMAT} document")
    first, last = doc.get("first_seq"), doc.get("last_seq")
    if not (_int(first) and _int(last)) or not 1 <= first <= last:
        raise ArchiveError("first_seq and last_seq must be integers with 1 <= first_seq <= last_seq")
    stated, signer = _verify_signature(doc, keys, name)
    hasher = bound_hash(signer, recorded_hash(doc), "the archive", ArchiveError)
    if stated.origin != doc.get("origin"):
        raise ArchiveError(f"the archive names the log {doc.get('origin')!r} but its signature the log {stated.origin!r}")
    if stated.extensions != (extension(first, last, digest(doc, hasher), hasher),):
        raise ArchiveError("the archive is not the one its signature signs (its digest differs): it was altered")
    publisher = listed_keys(doc)
    frontier = _check_records(doc, first, last, publisher, hasher)
    root = frontier.root()
    if stated.size != last or stated.root != root or doc.get("root") != root.hex():
        raise ArchiveError(f"the records are not leaves {first - 1}..{last - 1} of the tree the archive's signature "
                           "signs: a record or the prefix was altered")
    top, count = _check_checkpoints(doc, stated.origin, first, last, root, [*keys, *publisher.values()], hasher)
    return CheckedArchive(stated.origin, first, last, root, top.size, top.root, count, str(doc.get("before")),
                          hasher.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keys.archivecheck",
                                     description="Check a govshare access-log archive offline.")
    parser.add_argument("archive", type=Path)
    parser.add_argument("--key", type=Path, required=True, help="the publisher's public key: PEM or vkey file")
    args = parser.parse_args(argv)
    try:
        name, key = load_key(args.key.read_text(encoding="utf-8"))
        raw, doc = read_archive(args.archive)
        checked = check_archive(doc, [key], name)
    except OSError as exc:
        print(f"archivecheck: {args.key}: cannot be read ({exc.strerror})", file=sys.stderr)
        return 2
    except (ArchiveError, ProofError) as exc:
        print(f"archivecheck: {exc}", file=sys.stderr)
        return 3
    print(summary(checked, hashlib.sha256(raw).hexdigest(), key))
    return 0


def summary(checked: CheckedArchive, sha256: str, key: sigalg.PublicKey | Ed25519PublicKey) -> str:
    return (f"records {checked.first}..{checked.last} (before {checked.before}) are leaves {checked.first - 1}.."
            f"{checked.last - 1} of the access log {checked.origin}, consistent with {checked.checkpoints} signed "
            f"checkpoint(s) up to a tree of {checked.tree_size}, as signed by the key {key_fingerprint(key)[:16]}; "
            f"archive SHA-256 {sha256}")


if __name__ == "__main__":
    raise SystemExit(main())
