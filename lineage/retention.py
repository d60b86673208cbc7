"""Retention of the access log: records kept at least 180 days, then archived and purged.

网络安全法 (Cybersecurity Law) art. 21 asks that network logs be kept no less than six months: the
retention period is ``GOVSHARE_AUDIT_RETENTION_DAYS`` (default and minimum 180; a value below it or
not a whole number is refused, never replaced by the default).

- ``govshare audit archive --out FILE [--before DATE]`` exports the records older than the
  retention period (``--before`` may only move that cut earlier) as one signed archive
  (keys.archivecheck describes it): the records verbatim, the checkpoints that cover them (with a
  fresh one when none covers the last), the tree before them and the consistency proofs, so that
  anyone with the publisher's public key checks offline that they are exactly those leaves of the
  signed tree (``govshare audit check-archive FILE --key PEM``).
- ``govshare audit purge --archive FILE`` removes them from the live log, only once the log
  verifies and the archive is the next segment of it (same records, same tree, still older than
  the retention period): one rename under the log's lock (AccessLog.commit_purge), a ``purge``
  record that names the archive's SHA-256 and the checkpoint it is anchored to, then a checkpoint.
  The purged records' leaf hashes are kept (they are hashes, not personal data), so the tree and
  every old checkpoint still verify.

In a home of the 国密 profile the archive's records, tree and digest are SM3 (the log's hash,
recorded in the archive as ``hash_algorithm`` and checked against the signing key's algorithm by
keys.archivecheck); the archive file itself is still named by its SHA-256 in the purge record and
the anchor (an identifier of the file, as ``sha256sum`` prints it, not the log's integrity).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from common.errors import ConfigError, IntegrityError
from common.files import write_private
from common.times import SOURCE_ZONE
from keys import sigalg
from keys.archivecheck import (
    ARCHIVE_FORMAT,
    GENESIS,
    ArchiveError,
    CheckedArchive,
    check_archive,
    digest,
    read_archive,
    signed_statement,
)
from keys.merkle import Frontier, consistency_proof
from lineage.audit import ANCHOR_FORMAT, PURGE, AccessLog, LogHead, leaves_field
from lineage.logtree import entry_leaf, publisher_keys, tagged

RETENTION_ENV = "GOVSHARE_AUDIT_RETENTION_DAYS"
MIN_DAYS = 180
MAX_DAYS = 36500
LAW = "网络安全法 art. 21: network logs are kept no less than six months"


@dataclass(frozen=True)
class Archived:
    path: Path
    first: int
    last: int
    sha256: str
    tree_size: int  # of the checkpoint the archive leads to
    before: str


@dataclass(frozen=True)
class Purged:
    first: int
    last: int
    sha256: str
    record: int  # the purge record's seq
    checkpoint: int  # the size of the checkpoint made after it


def retention_days() -> int:
    """The retention period in days: GOVSHARE_AUDIT_RETENTION_DAYS, 180 when unset; ConfigError
    below 180, above 36500 or not a whole number."""
    raw = os.environ.get(RETENTION_ENV, "").strip()
    if not raw:
        return MIN_DAYS
    if not re.fullmatch(r"[0-9]{1,9}", raw):
        raise ConfigError(f"{RETENTION_ENV}={raw!r} is not a whole number of days; set {MIN_DAYS} or more ({LAW})")
    days = int(raw)
    if days < MIN_DAYS:
        raise ConfigError(f"{RETENTION_ENV}={days}: access-log records are kept at least {MIN_DAYS} days ({LAW}); "
                          f"set {MIN_DAYS} or more")
    if days > MAX_DAYS:
        raise ConfigError(f"{RETENTION_ENV}={days}: more than {MAX_DAYS} days; leave the records in the live log instead")
    return days


def parse_when(text: str, option: str = "--before") -> datetime:
    """An ISO 8601 date (midnight in Asia/Shanghai, the bureau's day) or date and time (Asia/Shanghai
    when it names no zone)."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not a date (2025-01-31) or an ISO 8601 time") from None
    return when if when.tzinfo else when.replace(tzinfo=SOURCE_ZONE)


def cut_time(days: int, before: str | None, now: datetime) -> datetime:
    """Records older than this are archived: now minus the retention period, or ``--before`` when
    that is earlier (a later one is refused: it would archive records still to be kept)."""
    limit = now - timedelta(days=days)
    if before is None:
        return limit
    when = parse_when(before)
    if when > limit:
        raise ConfigError(f"--before {before}: later than {limit.isoformat(timespec='seconds')}, so it would archive "
                          f"records younger than the retention period of {days} days ({RETENTION_ENV}; {LAW}); "
                          "--before may only move the cut earlier")
    return when


def _time(entry: dict[str, Any]) -> datetime:
    when = datetime.fromisoformat(str(entry.get("time")))
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _prefix(access_log: AccessLog, anchor: dict[str, Any] | None) -> Frontier:
    """The tree of the records purged before: the leaves kept for them."""
    frontier = Frontier(access_log.hasher)
    for leaf in access_log.purged_leaves(anchor) if anchor else ():
        frontier.append(leaf)
    return frontier


def write_archive(access_log: AccessLog, out: Path, heads: Iterable[tuple[str, LogHead]] = (),
                  before: str | None = None, now: datetime | None = None) -> Archived | None:
    """Export the records older than the cut (from the first retained one on, as long as they are
    older) as a signed archive at ``out``; None (nothing written) when there is none."""
    days = retention_days()
    now = now or datetime.now(timezone.utc)
    cut = cut_time(days, before, now)
    with access_log.exclusive():
        access_log.verify(heads)  # only an intact log is archived
        levels = access_log.synced_tree()
        anchor = access_log.anchor()
        records = []
        for entry in access_log.entries():
            if _time(entry) >= cut:
                break
            records.append(entry)
        if not records:
            return None
        first, last = records[0]["seq"], records[-1]["seq"]
        frontier = _prefix(access_log, anchor)
        prefix = frontier.to_json()
        hasher = access_log.hasher
        for entry in records:
            frontier.append(entry_leaf(entry, hasher))
        root = frontier.root()
        tree = access_log.tree
        origin, key_id = tree.origin(create=True), access_log.keystore.signing_key_id()
        top = tree.latest()
        if top is None or top["size"] < last or top.get("key_id") != key_id:
            top = tree.checkpoint(levels, "archive")
        covering = [c for _, c in tree.checkpoints() if first - 1 < c["size"] <= top["size"]]
        covering = [c for c in covering if c is not top and c != top] + [top]
        doc = tagged({
            "format": ARCHIVE_FORMAT, "origin": origin, "created": now.isoformat(timespec="seconds"),
            "retention_days": days, "before": cut.isoformat(timespec="milliseconds"),
            "first_seq": first, "last_seq": last, "prev_hash": anchor["prev_hash"] if anchor else GENESIS,
            "prefix": prefix, "root": root.hex(), "records": records,
            "checkpoints": [{"size": c["size"], "root": c["root"], "time": c.get("time"), "reason": c.get("reason"),
                             "key_id": c.get("key_id"), "note": c["note"],
                             "consistency": [h.hex() for h in consistency_proof(c["size"], top["size"], levels)]}
                            for c in covering],
            "consistency": [h.hex() for h in consistency_proof(last, top["size"], levels)],
            "publisher_keys": [{k: key[k] for k in ("key_id", "algorithm", "public_pem")}
                               for key in access_log.keystore.publisher_keys()],
        }, hasher)
        note, _ = tree.sign(signed_statement(origin, first, last, root, digest(doc, hasher), hasher))
        doc["signature"] = note.decode("utf-8")
    _check(doc, [k.public for k in publisher_keys(access_log.keystore)], origin, "the archive just made")
    text = json.dumps(doc, ensure_ascii=False, indent=1) + "\n"
    write_private(out, text)
    return Archived(out, first, last, hashlib.sha256(text.encode("utf-8")).hexdigest(), top["size"], doc["before"])


def _check(doc: Any, keys: Sequence[sigalg.PublicKey], origin: str, what: str,  # noqa: ANN401
           log_hash: str | None = None) -> CheckedArchive:
    try:
        checked = check_archive(doc, keys, origin)
    except ArchiveError as exc:
        raise IntegrityError(f"{what}: {exc}") from None
    if log_hash is not None and checked.hash_algorithm != log_hash:
        raise IntegrityError(f"{what}: the archive is {checked.hash_algorithm}, but the access log is {log_hash}")
    return checked


def _read(path: Path) -> tuple[str, Any]:
    """The archive's SHA-256 and document; ConfigError when the file cannot be read, IntegrityError
    when it is not JSON."""
    if not path.is_file():
        raise ConfigError(f"--archive {path}: no such file (govshare audit archive --out FILE writes one)")
    try:
        raw, doc = read_archive(path)
    except ArchiveError as exc:
        raise IntegrityError(f"{exc}; it is not an access-log archive") from None
    return hashlib.sha256(raw).hexdigest(), doc


def purge(access_log: AccessLog, path: Path, heads: Iterable[tuple[str, LogHead]] = (),
          now: datetime | None = None) -> Purged:
    """Remove the records the archive at ``path`` holds from the live log, once the log verifies
    and the archive is its next segment, signed by the publisher, and still past retention."""
    days = retention_days()
    limit = (now or datetime.now(timezone.utc)) - timedelta(days=days)
    sha256, doc = _read(path)
    nothing = "; nothing was purged"
    with access_log.exclusive():
        access_log.verify(heads)
        origin = access_log.tree.origin()
        checked = _check(doc, [k.public for k in publisher_keys(access_log.keystore)], origin,
                         f"--archive {path}: not an archive of this log signed by the publisher{nothing}",
                         access_log.hasher.name)
        anchor = access_log.anchor()
        boundary = anchor["first_seq"] if anchor else 1
        if checked.first != boundary:
            raise ConfigError(f"--archive {path} holds records {checked.first}..{checked.last}, but the live log starts "
                              f"at record {boundary}" + (" (they were purged already)" if checked.first < boundary
                                                          else " (archive the records before them first)") + nothing)
        records = doc["records"]
        live = [e for _, e in zip(range(len(records)), access_log.entries(), strict=False)]
        for archived, entry in zip(records, live, strict=False):
            if archived != entry:
                raise IntegrityError(f"--archive {path}: record {archived.get('seq')} is not the live log's record "
                                     f"{entry.get('seq')}{nothing}")
        if len(live) != len(records):
            raise ConfigError(f"--archive {path} holds records up to {checked.last}, beyond the live log{nothing}")
        prefix = _prefix(access_log, anchor)
        if doc["prefix"] != prefix.to_json():
            raise IntegrityError(f"--archive {path}: the tree before record {checked.first} is not the live log's"
                                 f"{nothing}")
        young = next((e for e in records if _time(e) >= limit), None)
        if young is not None:
            raise ConfigError(f"--archive {path}: record {young['seq']} is from {young['time']}, within the retention "
                              f"period of {days} days ({RETENTION_ENV}; {LAW}){nothing}")
        hasher = access_log.hasher
        leaves = b"".join(access_log.purged_leaves(anchor)) if anchor else b""
        leaves += b"".join(entry_leaf(e, hasher) for e in records)
        new_anchor = tagged({
            "format": ANCHOR_FORMAT, "first_seq": checked.last + 1, "prev_hash": records[-1]["hash"],
            leaves_field(hasher): hasher.digest(leaves).hex(), "root": checked.root.hex(),
            "archives": [*(anchor["archives"] if anchor else []),
                         {"first": checked.first, "last": checked.last, "sha256": sha256,
                          "last_time": records[-1]["time"]}],
        }, hasher)
        record = {"event": PURGE, "purged": [checked.first, checked.last], "archive_sha256": sha256,
                  "checkpoint": {"size": checked.tree_size, "root": checked.tree_root.hex()}, "retention_days": days,
                  "before": doc["before"]}
        entry = access_log.commit_purge(checked.last, new_anchor, record, leaves)
        after = access_log.tree.checkpoint(access_log.synced_tree(), "purge")
    return Purged(checked.first, checked.last, sha256, entry["seq"], after["size"])


def verify_archive(access_log: AccessLog, path: Path) -> tuple[CheckedArchive, str]:
    """An archive checked against the live log after its purge: signed by the publisher, named by
    the retention anchor (so by a purge record), and its records the purged leaves."""
    sha256, doc = _read(path)
    checked = _check(doc, [k.public for k in publisher_keys(access_log.keystore)], access_log.tree.origin(),
                     f"--archive {path}", access_log.hasher.name)
    anchor = access_log.anchor()
    named = list(anchor["archives"] if anchor else [])
    if not any(a.get("sha256") == sha256 and (a.get("first"), a.get("last")) == (checked.first, checked.last)
               for a in named):
        raise IntegrityError(f"--archive {path} (SHA-256 {sha256}, records {checked.first}..{checked.last}) is not an "
                             "archive the purge records name (" + (", ".join(
                                 f"{a.get('first')}..{a.get('last')} {str(a.get('sha256'))[:16]}" for a in named)
                                 or "no purge yet") + "): it was swapped")
    leaves = [entry_leaf(e, access_log.hasher) for e in doc["records"]]
    for index, leaf in enumerate(access_log.purged_leaves(anchor)):  # type: ignore[arg-type]
        if checked.first - 1 <= index < checked.last and leaf != leaves[index - checked.first + 1]:
            raise IntegrityError(f"--archive {path}: record {index + 1} is not the record that was purged")
    return checked, sha256


def archived_note(anchor: dict[str, Any] | None) -> str | None:
    """One line on what a purge took out of the live log, for ``audit list`` and ``audit subject``."""
    if anchor is None:
        return None
    archives = anchor["archives"]
    return (f"access-log records 1..{anchor['first_seq'] - 1}, up to {archives[-1].get('last_time')}, are archived in "
            + ", ".join(f"{str(a.get('sha256'))[:16]}… ({a.get('first')}..{a.get('last')})" for a in archives)
            + " and purged from the live log")
