"""What an attacker holding the publisher's keys can do to the access log: rewrite a record and
re-sign the whole log (chain, signatures, head file, tree cache and checkpoints), so that the
log alone looks whole. Only a witness holding an older checkpoint can tell (tests use this).

Run in-process (``rewrite_and_resign(home)``) or as ``python -m tests.logforge HOME SEQ`` with
the publisher's environment (GOVSHARE_ROOT_KEY)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from common.home import Home
from keys.keystore import Keystore
from lineage.audit import AccessLog

CHAIN_FIELDS = ("seq", "time", "prev_hash", "hash", "signature")


def rewrite_and_resign(root: Path, seq: int, purpose: str = "改写的事由") -> int:
    """Give record ``seq`` another purpose and re-append every record under the publisher's key;
    returns the number of records. The log's origin is kept (a changed one is noticed anyway)."""
    home = Home(root)
    log = AccessLog.of(home, Keystore(home.keystore))
    records = [{k: v for k, v in e.items() if k not in CHAIN_FIELDS} for e in log.entries()]
    records[seq - 1]["purpose"] = purpose
    log.path.unlink()
    log.head_path.unlink(missing_ok=True)
    log.tree.checkpoints_path.unlink(missing_ok=True)
    shutil.rmtree(log.tree.tree_dir, ignore_errors=True)
    for record in records:
        log.append(record)
    log.checkpoint("rewritten")
    return len(records)


if __name__ == "__main__":
    print(json.dumps({"records": rewrite_and_resign(Path(sys.argv[1]), int(sys.argv[2]))}))
