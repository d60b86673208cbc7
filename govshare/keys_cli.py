"""``govshare keys list | rotate NAME`` and ``govshare subscriber revoke ID --reason TEXT``."""

from __future__ import annotations

import argparse
import json

from common.catalog import load_catalog
from common.errors import ConfigError
from common.home import home
from keys.keystore import Keystore
from lineage.audit import AccessLog

KEY_ROTATED = "key-rotated"
SUBSCRIBER_REVOKED = "subscriber-revoked"


def list_keys(args: argparse.Namespace) -> int:
    h = home().require_initialised()
    keystore = Keystore(h.keystore)
    rows = [{"key_id": e.key_id, "name": e.name, "version": e.version, "algorithm": e.algorithm, "purpose": e.purpose,
             "status": e.status, "created": e.created} for e in sorted(keystore.entries().values(),
                                                                        key=lambda e: (e.name, e.version))]
    root, profile = keystore.root().root_id, keystore.profile
    if args.json:
        print(json.dumps({"root_key": root, "profile": profile.name, "keys": rows}, indent=2, ensure_ascii=False))
        return 0
    print(f"crypto profile {profile.name} (signatures {profile.signing}, key wrapping {profile.master})")
    print(f"root key {root} (wraps every key below; it lives outside GOVSHARE_HOME)")
    print(f"{'key id':40}  {'algorithm':12}  {'purpose':8}  {'status':8}  created")
    for r in rows:
        print(f"{r['key_id']:40}  {r['algorithm']:12}  {r['purpose']:8}  {r['status']:8}  {r['created']}")
    return 0


def rotate(args: argparse.Namespace) -> int:
    from keys.kms import forget_cached_keys

    if sum((bool(args.name), bool(args.publisher), bool(args.root))) != 1:
        raise ConfigError("usage: govshare keys rotate NAME | --publisher | --root")
    h = home().require_initialised()
    keystore = Keystore(h.keystore)
    if args.root:
        old_root, new_root, files = keystore.rotate_root()
        AccessLog.of(h, keystore).append({"event": KEY_ROTATED, "key": "root", "retired": old_root,
                                          "active": new_root, "files": files})
        print(f"root key: {new_root} wraps every key file now ({files} re-wrapped); {old_root} is destroyed, so a "
              "copy of the home taken before today opens with nothing that is kept")
        return 0
    if args.publisher:
        old, new = keystore.rotate_publisher()
        AccessLog.of(h, keystore).append({"event": KEY_ROTATED, "key": "publisher", "retired": old, "active": new})
        print(f"publisher: {new} signs from now on; {old} is retired (it still verifies what it signed). The next "
              f"version of each dataset carries the transition {old} -> {new}, signed by {old}, so pinned agents "
              "move to the new key by themselves; new enrolment files pin both")
        return 0
    old, new = keystore.rotate(args.name)
    forget_cached_keys(keystore)
    AccessLog.of(h, keystore).append({"event": KEY_ROTATED, "key": args.name, "retired": old, "active": new})
    print(f"{args.name}: {new} is active for new data; {old} is retired and still opens what it protected "
          "(nothing published was rewritten)")
    return 0


def revoke(args: argparse.Namespace) -> int:
    from service import enrolment, profiles
    from sharing.disputes import shown_subscriber
    from sharing.revocations import revoke as record_revocation
    from sharing.revocations import revoked

    h = home().require_initialised()
    catalog = load_catalog()
    if catalog.subscriber(args.id) is None:
        raise ConfigError(f"subscriber {shown_subscriber(args.id)!r} is not in the catalog; nothing to revoke")
    if args.id in revoked(h):
        print(f"subscriber {args.id} is revoked already (since {revoked(h)[args.id]['revoked_at']})")
        return 0
    record = record_revocation(h, args.id, args.reason or "")
    agents = enrolment.revoke_agents(h, args.id)
    tokens = profiles.revoke(h, args.id)
    AccessLog.of(h, Keystore(h.keystore)).append({"event": SUBSCRIBER_REVOKED, "subscriber": args.id,
                                                  "reason": record["reason"], "agents": agents,
                                                  "profile_tokens": tokens})
    print(f"subscriber {args.id} revoked: {agents} agent(s) and {tokens} profile token(s) refused from the next "
          "request on, no key envelope for it from now on; what it already received stays delivered")
    return 0
