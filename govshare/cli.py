"""The ``govshare`` command: the product's outside (see README and the contract).

Exit codes: 0 done, 1 unexpected failure (a bug), 2 bad usage or configuration, 3 integrity
failure, 4 access denied, 5 the validation gate blocked publication, 75 a temporary failure
(a source or target unreachable, a full disk, another run holding the dataset). Errors are a few plain lines on
stderr, never a traceback (GOVSHARE_DEBUG=1 shows one), never a plaintext identifier.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import ConfigError, GovshareError, IntegrityError
from common.files import kept_private
from common.oserrors import storage_error

if TYPE_CHECKING:
    from common.home import Home
    from lineage.audit import AccessLog


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors: one line, exit 2
        raise ConfigError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="govshare", description="Shared foundational databases: sync, publish, verify, pull, lineage.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("init", help="prepare GOVSHARE_HOME: keystore and local subscribers' key pairs (idempotent)")

    p = sub.add_parser("demo-data", help="write the three demo source databases (SQLite)")
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--seed", type=int, default=20261127)
    p.add_argument("--out", type=Path, default=None, help="folder (default GOVSHARE_HOME/demo)")

    p = sub.add_parser("sync", help="one sync outside Airflow")
    p.add_argument("dataset")
    p.add_argument("--full", action="store_true", help="re-read everything and publish a full snapshot version")

    p = sub.add_parser("versions", help="published versions, newest last")
    p.add_argument("dataset")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("verify", help="check signatures, file digests and the manifest chain")
    p.add_argument("dataset")
    p.add_argument("--version", type=int)

    p = sub.add_parser("pull", help="the bureau's preview of a subscriber's granted view, decrypted (logged as a preview); "
                                    "approval systems pull through their agents ('govshare agent pull')")
    p.add_argument("dataset")
    p.add_argument("--subscriber", required=True)
    p.add_argument("--purpose", default=None, help="申请事由, 1..200 characters (mandatory)")
    p.add_argument("--out", required=True)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--version", type=int)
    which.add_argument("--since", type=int)

    p = sub.add_parser("lineage", help="the lineage report of a version; --all: an index page and one page per version",
                       description="govshare lineage DATASET [--version N] [--format html|json] [--lang zh|en] --out FILE | "
                                   "lineage --all [--lang zh|en] --out DIR")
    p.add_argument("dataset", nargs="?")
    p.add_argument("--all", action="store_true", help="DIR/index.html of every dataset, version and run, "
                                                      "and DIR/<dataset>/v<N>.html per version")
    p.add_argument("--version", type=int)
    p.add_argument("--format", choices=("html", "json"), default=None)
    p.add_argument("--lang", choices=("zh", "zh-CN", "en"), default="zh", help="labels of the HTML pages (default zh-CN)")
    p.add_argument("--out", required=True)

    p = sub.add_parser("dispute", help="objections (异议) to published records",
                       description="govshare dispute DATASET KEY --subscriber ID --reason TEXT | "
                                   "dispute resolve DATASET DISPUTE_ID --by WHO --note TEXT | dispute list DATASET")
    p.add_argument("words", nargs="+", metavar="DATASET KEY | resolve DATASET DISPUTE_ID | list DATASET")
    p.add_argument("--subscriber")
    p.add_argument("--reason")
    p.add_argument("--by")
    p.add_argument("--note")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("quarantine", help="rejected records held until corrected at the source or released",
                       description="govshare quarantine list DATASET [--all] [--json] | "
                                   "quarantine release DATASET KEY --by WHO --note TEXT")
    p.add_argument("action", choices=("list", "release"))
    p.add_argument("dataset")
    p.add_argument("key", nargs="?")
    p.add_argument("--all", action="store_true", help="closed cases too")
    p.add_argument("--json", action="store_true")
    p.add_argument("--by", default="")
    p.add_argument("--note", default="")

    p = sub.add_parser("audit", help="the access log: verify it, list its records, prove one, checkpoint it, "
                                     "archive and purge what is past retention",
                       description="govshare audit verify [--archive FILE] | audit list [--dataset D] [--subscriber S] "
                                   "[--event E] [--json] | audit subject KEY [--json] | audit prove SEQ --out FILE | "
                                   "audit checkpoint | audit check-proof FILE --key PEM | "
                                   "audit archive --out FILE [--before DATE] (records older than "
                                   "GOVSHARE_AUDIT_RETENTION_DAYS, at least 180 days: 网络安全法 art. 21) | "
                                   "audit purge --archive FILE | audit check-archive FILE --key PEM")
    p.add_argument("action", choices=("verify", "list", "subject", "prove", "checkpoint", "check-proof", "archive",
                                      "purge", "check-archive"))
    p.add_argument("key", nargs="?", help="audit subject: the record's key (ID number, USCC or license id); "
                                          "audit prove: the record's seq; audit check-proof / check-archive: the file")
    p.add_argument("--out", help="audit prove: where the proof is written; audit archive: where the archive is written")
    p.add_argument("--key", dest="key_file", help="audit check-proof / check-archive: the publisher's public key "
                                                  "(PEM or vkey file)")
    p.add_argument("--before", help="audit archive: archive only records older than this date (ISO 8601, Asia/Shanghai "
                                    "unless it names a zone); never later than the retention period allows")
    p.add_argument("--archive", type=Path, help="audit purge: the archive to purge; audit verify: also check an "
                                                "archive against the purge record that names it")
    p.add_argument("--dataset")
    p.add_argument("--subscriber")
    p.add_argument("--event", help="only records of this event (request, delivery, delivery-complete, denied, ...)")
    p.add_argument("--json", action="store_true", help="one JSON object per line, for auditors' scripts")

    p = sub.add_parser("serve", help="the HTTPS sharing service: Delta Sharing and the agent protocol")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8443, help="0 picks a free port (printed)")
    p.add_argument("--insecure-http", action="store_true", help="plain HTTP, on a loopback address only (tests, debugging)")

    p = sub.add_parser("subscriber", help="credentials of a subscriber: agent enrolment, Delta Sharing profile")
    subscriber = p.add_subparsers(dest="subscriber_command", required=True, parser_class=_Parser)
    q = subscriber.add_parser("enroll", help="a one-time enrolment file for the subscriber's agent")
    q.add_argument("id")
    q.add_argument("--out", required=True)
    q.add_argument("--server", default=None, help="the service URL the agent reaches (default https://127.0.0.1:8443)")
    q.add_argument("--hours", type=int, default=72, help="how long the enrolment token stays valid (default 72)")
    q = subscriber.add_parser("revoke", help="end a subscriber's access from the next request on (logged)")
    q.add_argument("id")
    q.add_argument("--reason", default=None, help="why (kept in the access log), 1..500 characters")
    q = subscriber.add_parser("profile", help="a Delta Sharing profile (bearer token) for a stock client")
    q.add_argument("id")
    q.add_argument("--purpose", default=None, help="申请事由, 1..200 characters (mandatory)")
    q.add_argument("--out", required=True)
    q.add_argument("--days", type=int, default=30)
    q.add_argument("--server", default=None, help="the service URL (default https://127.0.0.1:8443)")

    p = sub.add_parser("keys", help="the keystore: list keys (never material), rotate a key",
                       description="govshare keys list [--json] | keys rotate NAME")
    keys = p.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    q = keys.add_parser("list", help="key ids, versions, algorithms, purposes, statuses; the root key's id")
    q.add_argument("--json", action="store_true")
    q = keys.add_parser("rotate", help="a new version of a key; nothing published is rewritten",
                        description="govshare keys rotate NAME | --publisher | --root")
    q.add_argument("name", nargs="?", help="a master key or the service's HMAC key")
    q.add_argument("--publisher", action="store_true",
                   help="a new publisher signing key, announced to pinned agents by a record signed with the old one")
    q.add_argument("--root", action="store_true", help="a new root key (file root keys): every key file re-wrapped")

    p = sub.add_parser("agent", help="a subscriber's agent, over its own GOVSHARE_AGENT_HOME")
    agent = p.add_subparsers(dest="agent_command", required=True, parser_class=_Parser)
    q = agent.add_parser("init", help="generate the agent's keys, register them, pin the publisher")
    q.add_argument("--enrollment", required=True, type=Path)
    q = agent.add_parser("datasets", help="the datasets this agent may read and the fields of each grant")
    q.add_argument("--json", action="store_true")
    q = agent.add_parser("pull", help="a granted view over HTTPS, verified, decrypted with the agent's own keys")
    q.add_argument("dataset")
    q.add_argument("--purpose", default=None, help="申请事由, 1..200 characters (mandatory)")
    q.add_argument("--case", default=None, help="case reference (办件编号)")
    q.add_argument("--out", required=True)
    which = q.add_mutually_exclusive_group()
    which.add_argument("--version", type=int)
    which.add_argument("--since", type=int)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    with kept_private():  # personal data in everything written: 0600 files, 0700 folders
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    quiet_libraries()
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)
        handler: Callable[[argparse.Namespace], int] = _COMMANDS[args.command]
        return handler(args)
    except GovshareError as exc:
        return _failed(exc)
    except KeyboardInterrupt:
        print("govshare: interrupted", file=sys.stderr)
        return 1
    except Exception as exc:  # a full disk or read-only home is no bug; anything else: say what, never dump values
        storage = storage_error(exc, *_written_paths(args))
        if storage is not None:
            return _failed(storage)
        if os.environ.get("GOVSHARE_DEBUG"):
            raise
        command = (argv or sys.argv[1:] or ["?"])[0]
        print(f"govshare: unexpected failure in '{command}': {exc.__class__.__name__} "
              "(a bug; rerun with GOVSHARE_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


def _failed(exc: GovshareError) -> int:
    for line in exc.lines():
        print(f"govshare: {line}", file=sys.stderr)
    return exc.exit_code


def _written_paths(args: argparse.Namespace | None) -> list[Path]:
    """GOVSHARE_HOME and the command's --out (a file or folder; a database URL is not a path)."""
    from common.home import home

    out = getattr(args, "out", None)
    return [home().root, *([Path(out).resolve()] if out is not None and "://" not in str(out) else [])]


def _init(args: argparse.Namespace) -> int:
    from common.catalog import load_catalog
    from common.files import private_dir
    from common.home import home
    from keys.keystore import Keystore
    from keys.profile import PROFILE_ENV, from_environment

    wanted = from_environment(os.environ.get(PROFILE_ENV))  # a typo is exit 2, never the default
    catalog = load_catalog()
    h = home()
    private_dir(h.root)  # 0700 when made here: everything below it is the bureau's alone
    keystore = Keystore(h.keystore)
    created = keystore.init(catalog.key_names(), [s.id for s in catalog.subscribers.values() if s.keys == "local"],
                            profile=wanted)
    if not h.marker.exists():
        h.marker.write_text(json.dumps({"format": "govshare-home/1"}) + "\n", encoding="utf-8")
    print(f"GOVSHARE_HOME {h.root}: " + (f"created keys {', '.join(created)}" if created else "already initialised; no key replaced")
          + f" (crypto profile {keystore.profile.name})")
    if keystore.migrated:
        print(f"wrapped {len(keystore.migrated)} key file(s) of a home made before root keys under the root key "
              f"{keystore.root().root_id}")
    from service.tls import ensure_local_tls

    made = ensure_local_tls(h)
    if made:
        print(f"service TLS: made the {' and the '.join(made)} under {h.root / 'service' / 'tls'} "
              "(a bureau sets GOVSHARE_TLS_CERT, GOVSHARE_TLS_KEY and GOVSHARE_TLS_CA instead)")
    return 0


def _demo_data(args: argparse.Namespace) -> int:
    from common.home import home
    from govshare.demo import write_demo_sources

    if args.rows < 10:
        raise ConfigError("--rows must be at least 10")
    out = (args.out or home().root / "demo").resolve()
    demo = write_demo_sources(out, rows=args.rows, seed=args.seed)
    env_file = out / "connections.env"
    env_file.write_text("".join(f"export {name}={uri}\n" for name, uri in demo.environment().items()), encoding="utf-8")
    print("\n".join(demo.summary_lines()))
    print(f"(also written to {env_file}: source it to point the connections at these files)")
    return 0


def _sync(args: argparse.Namespace) -> int:
    from govshare import pipeline

    result = pipeline.sync(args.dataset, full=args.full)
    if result.version is None:
        extra = f"; {result.quarantined} row(s) quarantined" if result.quarantined else ""
        print(f"{result.dataset}: nothing new to publish ({result.reason}){extra}")
    else:
        print(f"{result.dataset}: published version {result.version} "
              f"({result.upserts} upserted, {result.deletes} deleted, {result.quarantined} quarantined)")
    return 0


def _versions(args: argparse.Namespace) -> int:
    from common.catalog import load_catalog
    from common.home import home
    from sharing.store import SharingStore

    ds = load_catalog().dataset(args.dataset)
    h = home().require_initialised()
    store = SharingStore(h.store, ds.id)
    rows = []
    for v in store.versions():
        m = store.read_manifest(v)
        d = m.doc
        rows.append({"version": v, "created_at": d["created_at"], "kind": d["kind"], "upserts": d["rows"]["upserts"],
                     "deletes": d["rows"]["deletes"], "quarantined": d["rows"]["quarantined"],
                     "watermark_from": d["source"]["watermark"]["from"], "watermark_to": d["source"]["watermark"]["to"],
                     "manifest_sha256": m.digest})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"{ds.id}: no published version yet")
        return 0
    print(f"{'version':>7}  {'created (UTC)':25}  {'kind':8}  {'upserts':>8}  {'deletes':>7}  {'watermark to':19}  manifest sha256")
    for r in rows:
        print(f"{r['version']:>7}  {r['created_at']:25}  {r['kind']:8}  {r['upserts']:>8}  {r['deletes']:>7}  "
              f"{(r['watermark_to'] or '')[:19]:19}  {r['manifest_sha256']}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from common.catalog import load_catalog
    from common.errors import IntegrityError
    from common.home import home
    from keys.keystore import Keystore
    from sharing.store import SharingStore
    from sharing.verify import check_consistency, verify_dataset

    ds = load_catalog().dataset(args.dataset)
    h = home().require_initialised()
    store, keystore = SharingStore(h.store, ds.id), Keystore(h.keystore)
    found = check_consistency(store, keystore, h.state)  # store, sync state and state index agree
    if found.pending is not None:
        raise IntegrityError(f"{ds.id}: version {found.pending.version} (run {found.pending_run}) is visible but its "
                             f"publish was interrupted before the sync state recorded it; the next "
                             f"'govshare sync {ds.id}' finishes it")
    chain = verify_dataset(store, keystore, args.version)
    print(f"{ds.id}: versions 1..{chain.head.version} verified: signatures, manifest chain, "
          f"{chain.files_checked} file digests, sync state and state index at version {found.state.version}; "
          f"head manifest sha256 {chain.head.digest}")
    return 0


def _pull(args: argparse.Namespace) -> int:
    from common.catalog import load_catalog
    from common.home import home
    from govshare.delivery import pull
    from sharing.revocations import effective_catalog

    h = home().require_initialised()
    result = pull(effective_catalog(load_catalog(), h), h, args.dataset, args.subscriber, args.purpose,
                  _checked_out(args.out), version=args.version, since=args.since)
    scope = f"changes after version {result.since} up to {result.version}" if result.since is not None else f"version {result.version}"
    print(f"{result.dataset} {scope} for {result.subscriber}: {result.rows} rows ({result.deletes} deletes), "
          f"{len(result.fields)} fields -> {result.out} (access log record {result.delivery})")
    return 0


def _lineage(args: argparse.Namespace) -> int:
    from common.catalog import load_catalog
    from common.home import home
    from lineage.report import build_report, write_all, write_report

    if args.all:
        if args.dataset is not None:
            raise ConfigError("govshare lineage: DATASET and --all exclude each other: name one dataset or --all")
        if args.version is not None or args.format == "json":
            raise ConfigError("govshare lineage --all: writes HTML pages of every version; --version and --format json "
                              "go with one DATASET")
        out_dir = Path(_checked_out(str(Path(args.out) / "index.html"))).parent
        index, pages = write_all(load_catalog(), home().require_initialised(), out_dir, args.lang)
        print(f"lineage: index of every dataset -> {index} ({len(pages)} version pages)")
        return 0
    if args.dataset is None:
        raise ConfigError("govshare lineage: name a DATASET, or --all for every dataset")
    out = Path(_checked_out(args.out))
    fmt = args.format or ("json" if out.suffix.lower() == ".json" else "html")
    report = build_report(load_catalog(), home().require_initialised(), args.dataset, args.version)
    path = write_report(report, out, fmt, args.lang)
    print(f"{args.dataset} version {report['version']['number']}: lineage report ({fmt}) -> {path}")
    return 0


def _dispute(args: argparse.Namespace) -> int:
    from common.catalog import load_catalog
    from common.home import home
    from sharing.disputes import DisputeLog, raise_dispute, resolve_dispute

    catalog, h = load_catalog(), home().require_initialised()
    words = args.words
    if words[0] == "list" and len(words) == 2:
        disputes = DisputeLog(h, catalog.dataset(words[1]).id).disputes()
        rows = [d.__dict__ for d in disputes.values()]
        if args.json:
            print(json.dumps(rows, ensure_ascii=False, indent=2))
        for d in ([] if args.json else disputes.values()):
            print(f"{d.id}  {d.status:8}  {d.masked_key}  v{d.version}  {d.subscriber}  {d.raised_at}  {d.reason}")
        return 0
    if words[0] == "resolve" and len(words) == 3:
        entry = resolve_dispute(catalog, h, words[1], words[2], args.by or "", args.note or "")
        print(f"dispute {entry['dispute_id']} resolved by {entry['by']}")
        return 0
    if len(words) == 2 and words[0] not in ("list", "resolve"):
        if not args.subscriber:
            raise ConfigError("govshare dispute DATASET KEY needs --subscriber ID and --reason TEXT")
        entry = raise_dispute(catalog, h, words[0], words[1], args.subscriber, args.reason or "")
        print(f"dispute {entry['dispute_id']} raised by {entry['subscriber']} on {entry['masked_key']} "
              f"(version {entry['version']}); subscribers see _disputed = true until the source corrects it or it is resolved")
        return 0
    raise ConfigError("usage: govshare dispute DATASET KEY --subscriber ID --reason TEXT | "
                      "dispute resolve DATASET DISPUTE_ID --by WHO --note TEXT | dispute list DATASET")


def _quarantine(args: argparse.Namespace) -> int:
    import pyarrow as pa

    from common.catalog import load_catalog
    from common.home import home
    from keys.keystore import Keystore
    from keys.pseudonyms import KEY_REF, key_refs
    from sharing.disputes import normalise_key
    from validation.quarantine import Quarantine

    ds = load_catalog().dataset(args.dataset)
    h = home().require_initialised()
    from keys.protection import keystore_decryption

    quarantine = Quarantine(h.quarantine / ds.id, keystore_decryption(Keystore(h.keystore)))
    if args.action == "release":
        if not args.key:
            raise ConfigError("govshare quarantine release DATASET KEY --by WHO --note TEXT")
        ref = key_refs(pa.array([normalise_key(ds, args.key)]), Keystore(h.keystore).hmac_key(),
                       Keystore(h.keystore).hmac_algorithm())[0].as_py()
        masked = quarantine.release(ref, args.by, args.note)
        print(f"{ds.id}: released {masked} from quarantine ({args.by.strip()})")
        return 0
    cases = quarantine.cases() if args.all else quarantine.open_cases()
    rows = [{k: v for k, v in r.items() if k != KEY_REF} for r in cases.to_pylist()]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    print(f"{ds.id}: {len(rows)} {'' if args.all else 'open '}case(s)")
    for r in rows:
        print(f"{r['masked_key']}  {r['status']:9}  since {r['first_seen']}  {r['rules']}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from common.home import home
    from keys.keystore import Keystore
    from lineage.audit import AccessLog, manifest_heads

    if args.action == "check-proof":  # offline: needs no home, only the proof and the key
        return _audit_check_proof(args)
    if args.action == "check-archive":
        return _audit_check_archive(args)
    h = home().require_initialised()
    keystore = Keystore(h.keystore)
    if args.action in ("archive", "purge"):
        return _audit_retention(h, AccessLog.of(h, keystore), args)
    if args.action == "list":
        return _audit_list(AccessLog.of(h, keystore), args)
    if args.action == "subject":
        return _audit_subject(h, args)
    if args.action == "prove":
        return _audit_prove(AccessLog.of(h, keystore), args)
    if args.key:
        raise ConfigError(f"govshare audit {args.action} takes no KEY")
    if args.action == "checkpoint":
        record = AccessLog.of(h, keystore).checkpoint("on demand")
        print(f"access log: checkpoint of {record['size']} record(s), root {record['root']}, signed by "
              f"{record['key_id']}")
        print(record["note"], end="")
        return 0
    access_log = AccessLog.of(h, keystore)
    summary = access_log.verify(manifest_heads(h.store, keystore))
    purged = f" (the first {summary.purged} archived and purged)" if summary.purged else ""
    print(f"access log: {summary.records} record(s){purged}, chain and signatures verified, "
          f"against {len(summary.heads)} signed head(s) (head file and manifests) and the Merkle tree against "
          f"{summary.checkpoints} signed checkpoint(s)"
          + (f", {summary.mirrored} of them the copies on the object store" if summary.mirrored else ""))
    for seq in summary.unconfirmed:
        print(f"access log: delivery record {seq} started, not confirmed (nothing confirmed as delivered)")
    if args.archive is not None:
        from lineage.retention import verify_archive

        checked, sha256 = verify_archive(access_log, args.archive)
        print(f"archive {args.archive}: records {checked.first}..{checked.last}, SHA-256 {sha256}, is the one the purge "
              "record names, and its records are the purged leaves of the tree")
    return 0


def _audit_retention(h: Home, access_log: AccessLog, args: argparse.Namespace) -> int:
    """audit archive: the records past retention as a signed archive; audit purge: out of the live log."""
    from keys.keystore import Keystore
    from lineage.audit import manifest_heads
    from lineage.retention import purge, write_archive

    if args.key:
        raise ConfigError(f"govshare audit {args.action} takes no KEY")
    heads = manifest_heads(h.store, Keystore(h.keystore))
    if args.action == "purge":
        if args.archive is None:
            raise ConfigError("govshare audit purge --archive FILE: name the archive 'audit archive' wrote")
        done = purge(access_log, args.archive, heads)
        print(f"access log: records {done.first}..{done.last} purged (archive SHA-256 {done.sha256}); purge record "
              f"{done.record}, checkpoint of {done.checkpoint} record(s)")
        return 0
    if not args.out:
        raise ConfigError("govshare audit archive --out FILE: name the file the archive is written to")
    archived = write_archive(access_log, Path(_checked_out(args.out)), heads, args.before)
    if archived is None:
        print("access log: no record is older than the cut; nothing archived, nothing written")
        return 0
    print(f"access log: records {archived.first}..{archived.last} (before {archived.before}) archived to "
          f"{archived.path}, SHA-256 {archived.sha256}, consistent with a checkpoint of {archived.tree_size} record(s)")
    print(f"check it offline: govshare audit check-archive {archived.path} --key PUBLISHER.pem; then remove them from "
          f"the live log: govshare audit purge --archive {archived.path}")
    return 0


def _audit_check_archive(args: argparse.Namespace) -> int:
    import hashlib

    from keys.archivecheck import check_archive, read_archive, summary

    def check(path: Path, key, name: str | None) -> str:  # noqa: ANN001 - an Ed25519 public key
        if not path.is_file():
            raise ConfigError(f"govshare audit check-archive {path}: no such file")
        raw, doc = read_archive(path)
        return summary(check_archive(doc, [key], name), hashlib.sha256(raw).hexdigest(), key)

    return _offline_check(args, "archive", check)


def _offline_check(args: argparse.Namespace, what: str, check: Callable[..., str]) -> int:
    """audit check-proof / check-archive: FILE checked with the publisher's key alone (no home);
    ``check(path, key, name)`` returns the line to print."""
    from keys.archivecheck import ArchiveError
    from keys.proofcheck import ProofError, load_key

    if not args.key or not args.key_file:
        raise ConfigError(f"govshare audit {args.action} FILE --key PEM: name the {what} file and the publisher's "
                          "public key")
    try:
        text = Path(args.key_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--key {args.key_file}: cannot be read ({getattr(exc, 'strerror', None) or 'not text'})") from None
    try:
        name, key = load_key(text)
        print(check(Path(args.key), key, name))
    except (ArchiveError, ProofError) as exc:
        raise IntegrityError(f"{args.key}: {exc}") from None
    return 0


def _audit_prove(access_log: AccessLog, args: argparse.Namespace) -> int:
    """An inclusion proof of one record in a fresh signed checkpoint (keys.proofcheck checks it)."""
    if not args.key or not args.key.isdigit() or not 0 < len(args.key) <= 18:
        raise ConfigError("govshare audit prove SEQ --out FILE: SEQ is the record's sequence number (audit list shows it)")
    if not args.out:
        raise ConfigError("govshare audit prove SEQ --out FILE: name the file the proof is written to")
    from common.files import write_private

    proof = access_log.prove(int(args.key))
    out = Path(args.out)
    try:
        write_private(out, json.dumps(proof, ensure_ascii=False, indent=2) + "\n")
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot be written ({exc.strerror or exc.__class__.__name__})") from None
    key = proof["publisher_key"]
    print(f"access log: record {args.key} is in the tree of {proof['tree_size']} record(s); proof written to {out}")
    print(f"check it offline: govshare audit check-proof {out} --key PUBLISHER.pem (the key {key['key_id']}, "
          f"SHA-256 {key['sha256'][:16]}..., as the bureau publishes it)")
    return 0


def _audit_check_proof(args: argparse.Namespace) -> int:
    from keys.proofcheck import check_proof, key_fingerprint, read_proof

    def check(path: Path, key, name: str | None) -> str:  # noqa: ANN001 - an Ed25519 public key
        checked = check_proof(read_proof(path), key, name)
        return (f"record {checked.seq} is in the access log {checked.origin} of {checked.tree_size} record(s), as "
                f"signed by the key with SHA-256 {key_fingerprint(key)[:16]}...")

    return _offline_check(args, "proof", check)


AUDIT_COLUMNS = ("seq", "time", "event", "channel", "subscriber", "purpose", "case", "dataset", "version",
                 "versions_read", "fields", "rows", "outcome", "reason", "delivery", "method", "path", "status", "purged",
                 "archive_sha256")


def _audit_list(access_log: AccessLog, args: argparse.Namespace) -> int:
    """The records for auditors: time, subscriber (as authenticated), purpose, case reference,
    dataset, versions, fields, rows, outcome or the denial's reason; filtered, in log order."""
    count = 0
    for entry in access_log.entries():
        if args.dataset and entry.get("dataset") != args.dataset:
            continue
        if args.subscriber and entry.get("subscriber") != args.subscriber:
            continue
        if args.event and entry.get("event") != args.event:
            continue
        count += 1
        row = {k: entry[k] for k in AUDIT_COLUMNS if entry.get(k) is not None}
        if args.json:
            print(json.dumps(row, ensure_ascii=False, sort_keys=True))
            continue
        versions = row.get("versions_read") or ([row["version"]] if "version" in row else [])
        span = f"v{versions[0]}..{versions[-1]}" if len(versions) == 2 and versions[0] != versions[1] else (
            f"v{versions[0]}" if versions else "")
        what = row.get("path") if row.get("event") == "request" else row.get("event")
        print("  ".join(str(x) for x in (
            row["seq"], row.get("time", ""), row.get("subscriber") or "-", row.get("dataset") or "-", span or "-",
            what, row.get("outcome") or row.get("status") or "", f"purpose={row['purpose']}" if "purpose" in row else "",
            f"case={row['case']}" if "case" in row else "", f"rows={row['rows']}" if "rows" in row else "",
            f"fields={','.join(row['fields'])}" if row.get("fields") else "", row.get("reason") or "",
            f"records={row['purged'][0]}..{row['purged'][-1]} archive={str(row.get('archive_sha256'))[:16]}"
            if row.get("purged") else "") if x != ""))
    if not args.json:
        from lineage.retention import archived_note

        note = archived_note(access_log.anchor())
        print(f"{count} record(s)" + (f" ({note})" if note else ""))
    return 0


def _audit_subject(h: Home, args: argparse.Namespace) -> int:
    """Every delivery that contained the record with KEY (lineage.subject); the key itself is
    never printed, and the query is in the access log (by the record's pseudonym only)."""
    from common.catalog import load_catalog
    from keys.keystore import Keystore
    from lineage.audit import AccessLog
    from lineage.subject import deliveries_of

    if not args.key or not args.key.strip():
        raise ConfigError("govshare audit subject KEY: name the record's key (ID number, USCC or license id)")
    from lineage.retention import archived_note

    found = deliveries_of(load_catalog(), h, args.key)
    access_log = AccessLog.of(h, Keystore(h.keystore))
    access_log.append({
        "event": "subject-query", "deliveries": len(found), "datasets": sorted({r["dataset"] for r in found})})
    note = archived_note(access_log.anchor())
    if note:  # deliveries recorded in purged records are not listed: say so, and where they are
        print(f"{'govshare: ' if args.json else ''}{note}; deliveries recorded there are not listed",
              file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(found, ensure_ascii=False, indent=2))
        return 0
    print(f"{len(found)} delivery(ies) contained this record (the key is not shown)")
    for r in found:
        scope = (f"changes after v{r['since']} up to v{r['version']}" if r.get("since") is not None
                 else f"version {r['version']}")
        print(f"  {r['time']}  {r['subscriber']}  {r['dataset']} {scope} ({r['as']}, {r['outcome']}, {r['channel']})  "
              f"purpose={r.get('purpose') or '-'}  case={r.get('case') or '-'}  fields={','.join(r.get('fields') or [])}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from govshare import service_cli

    return service_cli.serve(args)


def _subscriber(args: argparse.Namespace) -> int:
    if args.subscriber_command == "revoke":
        from govshare import keys_cli

        return keys_cli.revoke(args)
    if args.subscriber_command == "profile":
        from govshare import profile_cli

        return profile_cli.profile(args)
    from govshare import service_cli

    return service_cli.enroll(args)


def _keys(args: argparse.Namespace) -> int:
    from govshare import keys_cli

    return {"list": keys_cli.list_keys, "rotate": keys_cli.rotate}[args.keys_command](args)


def _agent(args: argparse.Namespace) -> int:
    from govshare import agent_cli

    return {"init": agent_cli.init, "datasets": agent_cli.datasets, "pull": agent_cli.pull}[args.agent_command](args)


def _checked_out(raw: str) -> str:
    """--out as a file path or a SQLAlchemy URL, refused (exit 2, nothing written) inside
    GOVSHARE_HOME, the catalog folder or the project's source tree, or where it cannot be written."""
    from common.catalog import PROJECT_ROOT, catalog_dir
    from common.files import check_output_target
    from common.home import home

    return check_output_target(raw, {"GOVSHARE_HOME": home().root, "the catalog folder (GOVSHARE_CATALOG)": catalog_dir(),
                                     "the project's source tree": PROJECT_ROOT})


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "init": _init,
    "demo-data": _demo_data,
    "sync": _sync,
    "versions": _versions,
    "verify": _verify,
    "pull": _pull,
    "lineage": _lineage,
    "dispute": _dispute,
    "quarantine": _quarantine,
    "audit": _audit,
    "serve": _serve,
    "subscriber": _subscriber,
    "keys": _keys,
    "agent": _agent,
}


def quiet_libraries() -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.basicConfig(level=logging.WARNING, format="govshare: %(levelname)s %(name)s: %(message)s")
    for name in ("great_expectations", "openlineage", "airflow"):
        logging.getLogger(name).setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
