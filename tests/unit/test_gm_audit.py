"""The access log, its Merkle tree, proofs, archives and file URLs in the 国密 (gm) profile: SM3
for the chain and the tree, HMAC-SM3 for file URLs, the hash bound to the signing key (SM2 -> SM3,
Ed25519 -> SHA-256) so that a log re-hashed under SHA-256 is refused; and the standard profile
byte-identical to what it was (values pinned from the code before the gm profile reached it)."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from common.errors import IntegrityError
from common.files import canonical_json
from keys import gm, merkle, rootkey
from keys.archivecheck import ArchiveError, check_archive, digest, signed_statement
from keys.archivecheck import main as archivecheck_main
from keys.checkpoint import Checkpoint, sign_note
from keys.keystore import SERVICE, Keystore
from keys.merkle import SHA256, SM3
from keys.profile import GM, STANDARD
from keys.proofcheck import ProofError, check_proof, load_key
from keys.proofcheck import main as proofcheck_main
from lineage import retention
from lineage.audit import AccessLog
from lineage.logtree import entry_leaf
from service import filetokens

OLD = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def _keystore(tmp_path: Path, profile) -> Keystore:  # noqa: ANN001
    store = Keystore(tmp_path / "home" / "keystore", root=rootkey.FileRootKey(tmp_path / "outside" / "root.key"))
    store.init([], [], profile=profile)
    return store


def _log(store: Keystore, clock=lambda: OLD) -> AccessLog:  # noqa: ANN001
    home = store.path.parent
    return AccessLog(home / "audit", store, home / "state" / "access-log-head.json", clock)


def _fill(log: AccessLog, n: int = 5) -> None:
    for i in range(n):
        log.append({"event": "denied", "subscriber": f"city-{i}", "dataset": "population", "reason": "no grant"})


def _lines(log: AccessLog) -> list[dict]:
    return [json.loads(line) for line in log.path.read_text(encoding="utf-8").splitlines()]


def _write(log: AccessLog, docs: list[dict]) -> None:
    log.path.write_text("".join(json.dumps(d, ensure_ascii=False, sort_keys=True) + "\n" for d in docs),
                        encoding="utf-8")


@pytest.fixture
def gm_store(tmp_path: Path) -> Keystore:
    return _keystore(tmp_path, GM)


# -- an independent SM3 tree (RFC 6962 with gm.sm3 for SHA-256) ----------------------------------

def _leaf(data: bytes) -> bytes:
    return gm.sm3(b"\x00" + data)


def _mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return gm.sm3(b"")
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return gm.sm3(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:]))


def _path(m: int, leaves: list[bytes]) -> list[bytes]:  # RFC 9162 2.1.3.1, literally
    if len(leaves) <= 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return _path(m, leaves[:k]) + [_mth(leaves[k:])]
    return _path(m - k, leaves[k:]) + [_mth(leaves[:k])]


def _subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:  # RFC 9162 2.1.4.1
    n = len(leaves)
    if m == n:
        return [] if whole else [_mth(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return _subproof(m, leaves[:k], whole) + [_mth(leaves[k:])]
    return _subproof(m - k, leaves[k:], False) + [_mth(leaves[:k])]


def test_the_sm3_tree_is_rfc_6962_with_sm3_computed_independently(tmp_path: Path) -> None:
    data = [f"record-{i}".encode() for i in range(19)]
    leaves = [_leaf(d) for d in data]
    assert [SM3.leaf(d) for d in data] == leaves and SM3.empty == gm.sm3(b"") != merkle.EMPTY_ROOT
    assert merkle.root([], SM3) == gm.sm3(b"")
    levels = merkle.Levels(tmp_path / "tree", durable=False, hasher=SM3)
    frontier = merkle.Frontier(SM3)
    for n in range(1, len(leaves) + 1):
        levels.append(leaves[n - 1])
        frontier.append(leaves[n - 1])
        want = _mth(leaves[:n])
        assert merkle.root(leaves[:n], SM3) == levels.root() == frontier.root() == want
        assert n == 1 or merkle.root(leaves[:n]) != want  # the SHA-256 tree of the same leaves is another tree
        for m in range(n):
            path = merkle.inclusion_proof(m, n, levels)
            assert path == _path(m, leaves[:n])
            assert merkle.verify_inclusion(leaves[m], m, n, path, want, SM3)
            assert n == 1 or not merkle.verify_inclusion(leaves[m], m, n, path, want)  # nodes hashed with SHA-256
        for old in range(1, n + 1):
            proof = merkle.consistency_proof(old, n, levels)
            assert proof == _subproof(old, leaves[:n], True)
            assert merkle.verify_consistency(old, n, _mth(leaves[:old]), want, proof, SM3)
            if proof and old & (old - 1):
                assert not merkle.verify_consistency(old, n, _mth(leaves[:old]), want, proof)
    again = merkle.Frontier.from_json(frontier.to_json(), SM3)
    assert again.root() == frontier.root() and again.hasher is SM3


def test_the_hash_is_bound_to_the_signature_algorithm_as_the_profiles_pair_them() -> None:
    assert merkle.SIGNED_WITH == {p.signing: p.digest for p in (STANDARD, GM)}
    assert merkle.for_signature("Ed25519") is SHA256 and merkle.for_signature("SM2") is SM3
    assert merkle.tree_hash("SM3") is SM3
    with pytest.raises(ValueError):
        merkle.tree_hash("MD5")
    with pytest.raises(ValueError):
        merkle.for_signature("RSA")


# -- the standard profile, byte for byte as before ----------------------------------------------

def test_the_standard_tree_is_byte_identical_to_before(tmp_path: Path) -> None:
    import hashlib

    leaves = [merkle.leaf_hash(b"leaf-%d" % i) for i in range(13)]
    assert merkle.EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert merkle.root(leaves).hex() == "a8ef4844c8e1d5ba49c811cdb86e95791f5d32ca7d9709afda28fdf65e949a53"
    assert merkle.root(leaves[:7], SHA256).hex() == "0b007fb915eb9b2a146f54b1c86ec53b664f8e455b7660b0b6ee13edc0d921c0"
    hashes = merkle.ListHashes(leaves)
    assert hashlib.sha256(b"".join(merkle.inclusion_proof(3, 13, hashes))).hexdigest() == \
        "bd03131f6db6eeb1e893d68a9cd04f5b8ecbd6f1317381b3983dc7d9729e45fd"
    assert hashlib.sha256(b"".join(merkle.consistency_proof(5, 13, hashes))).hexdigest() == \
        "a09bf5d17d4d77a8ace8cdc544d54dce2d472b249df4018543b7f8abd948c703"
    frontier = merkle.Frontier()
    levels = merkle.Levels(tmp_path / "tree", durable=False)
    for leaf in leaves:
        frontier.append(leaf)
    levels.append_many(leaves)
    assert hashlib.sha256(json.dumps(frontier.to_json()).encode()).hexdigest() == \
        "a9edca647f06dd616f9af2e9bbc9df9a88fae19887fdc24503b5f2ba9594d8ec"
    assert levels.root() == merkle.root(leaves)
    record = {"event": "delivery", "seq": 1, "time": "2026-01-01T00:00:00.000+00:00", "prev_hash": "0" * 64,
              "hash": "ab" * 32, "signature": {"algorithm": "Ed25519", "key_id": "publisher.v1", "signature": "AAAA"}}
    assert entry_leaf(record).hex() == "04f8930f32f92e48eaf1a500411a4c310f586c1a553cc35abe7ae78bc09f58d7"
    assert digest({"format": "x", "records": [record], "signature": "s"}) == \
        "fd8ac9dbe82dacd95f22cc7a21ccbd57242fb5b623721034aaaaedb3c14db2fe"
    assert filetokens.issue(b"k" * 32, "city-a", "people/v1-abc.parquet", now=1700000000)[0] == (
        "eyJlIjoxNzAwMDAwOTAwLCJmIjoicGVvcGxlL3YxLWFiYy5wYXJxdWV0IiwicyI6ImNpdHktYSJ9."
        "vUoRu3WXOV_aX003fOcvmutz33Rn04cxyy6TSsgH5ms")


def test_a_standard_log_hashes_and_records_as_before(tmp_path: Path) -> None:
    store = _keystore(tmp_path, None)
    log = _log(store, lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    a = log.append({"event": "denied", "subscriber": "city-a", "dataset": "population", "reason": "no grant"})
    b = log.append({"event": "denied", "subscriber": "city-b", "dataset": "population", "reason": "no grant"})
    # the hashes the code made before the gm profile, for the same records at the same time
    assert a["hash"] == "65fb6e9ab2554250a0a76f61ee7a18b446ddc7a0b80ef11fd034da05f8b78f9a"
    assert b["hash"] == "cc9203fa40643a0e5bff24411d4b06a3a309488668c757133503c71abe5e6756"
    checkpoint = log.checkpoint("test")
    proof = log.prove(2)
    assert "hash_algorithm" not in a and "hash_algorithm" not in checkpoint and "hash_algorithm" not in proof
    assert checkpoint["root"] == merkle.root([merkle.leaf_hash(canonical_json(e)) for e in (a, b)]).hex()
    assert log.verify().records == 2
    _, key = load_key(proof["publisher_key"]["public_pem"])
    assert key.algorithm == "Ed25519" and check_proof(proof, key).seq == 2
    proof["hash_algorithm"] = "SM3"  # an Ed25519 proof claiming SM3 is refused too
    with pytest.raises(ProofError, match="Ed25519 key, whose logs are hashed with SHA-256"):
        check_proof(proof, key)


# -- an access log in a gm keystore ------------------------------------------------------------

def test_a_gm_log_hashes_its_records_and_tree_with_sm3_and_verifies(gm_store: Keystore) -> None:
    log = _log(gm_store)
    _fill(log)
    records = _lines(log)
    for record in records:
        body = {k: v for k, v in record.items() if k not in ("hash", "signature")}
        assert record["hash_algorithm"] == "SM3" and record["signature"]["algorithm"] == "SM2"
        assert record["hash"] == gm.sm3(canonical_json(body)).hex()
    checkpoint = log.checkpoint("test")
    assert checkpoint["hash_algorithm"] == "SM3"
    assert checkpoint["root"] == _mth([_leaf(canonical_json(r)) for r in records]).hex()
    summary = log.verify()
    assert (summary.records, summary.checkpoints) == (5, 1)


def test_an_altered_gm_record_is_caught(gm_store: Keystore) -> None:
    log = _log(gm_store)
    _fill(log)
    docs = _lines(log)
    docs[2]["reason"] = "granted"
    _write(log, docs)
    with pytest.raises(IntegrityError, match="record 3: its content does not match its hash"):
        log.verify()


@pytest.mark.parametrize("downgrade", [lambda r: r.update(hash_algorithm="SHA-256"), lambda r: r.pop("hash_algorithm")],
                         ids=["recorded-sha256", "removed"])
def test_an_sm3_log_rehashed_under_sha256_and_resigned_is_refused(gm_store: Keystore, downgrade) -> None:  # noqa: ANN001
    import hashlib

    log = _log(gm_store)
    _fill(log)
    prev = "0" * 64
    forged = []
    for record in _lines(log):  # re-chained, re-hashed with SHA-256 and signed again by the SM2 key itself
        record = {k: v for k, v in record.items() if k not in ("hash", "signature")}
        downgrade(record)
        record["prev_hash"] = prev
        record["hash"] = prev = hashlib.sha256(canonical_json(record)).hexdigest()
        record["signature"] = gm_store.sign(record["hash"].encode("ascii"))
        forged.append(record)
    _write(log, forged)
    log.head_path.unlink()
    with pytest.raises(IntegrityError, match="record 1: records the hash 'SHA-256', but it is signed by publisher.v1, "
                                             "an SM2 key, whose log is hashed with SM3"):
        log.verify()


def test_a_gm_checkpoint_record_that_drops_its_hash_is_refused(gm_store: Keystore) -> None:
    log = _log(gm_store)
    _fill(log, 3)
    log.checkpoint("test")
    record = json.loads(log.tree.checkpoints_path.read_text(encoding="utf-8"))
    del record["hash_algorithm"]
    log.tree.checkpoints_path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(IntegrityError, match="records the hash 'SHA-256' and is signed by an SM2 key"):
        log.verify()


# -- inclusion proofs ------------------------------------------------------------------------------

def test_a_gm_proof_checks_offline_and_a_sha256_one_signed_by_the_sm2_key_is_refused(
        gm_store: Keystore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from govshare.cli import main

    log = _log(gm_store)
    _fill(log)
    proof = log.prove(3)
    assert proof["hash_algorithm"] == "SM3" and proof["leaf_hash"] == _leaf(canonical_json(proof["record"])).hex()
    pem = tmp_path / "publisher.pem"
    pem.write_text(proof["publisher_key"]["public_pem"], encoding="utf-8")
    vkey = tmp_path / "publisher.vkey"
    vkey.write_text(proof["publisher_key"]["vkey"] + "\n", encoding="utf-8")
    for key_file in (pem, vkey):
        name, key = load_key(key_file.read_text(encoding="utf-8"))
        assert key.algorithm == "SM2" and check_proof(proof, key, name).seq == 3
    good = tmp_path / "proof.json"
    good.write_text(json.dumps(proof, ensure_ascii=False), encoding="utf-8")
    assert proofcheck_main([str(good), "--key", str(pem)]) == 0
    assert main(["audit", "check-proof", str(good), "--key", str(vkey)]) == 0  # offline: no home needed
    assert "record 3 is in the access log" in capsys.readouterr().out

    # the same records as a SHA-256 tree, its checkpoint signed by the SM2 key: still refused
    records = [e for e in log.entries()]
    leaves = [merkle.leaf_hash(canonical_json(e)) for e in records]
    origin = log.tree.origin()
    public = gm_store.public_key(gm_store.signing_key_id())
    note = sign_note(Checkpoint(origin, 5, merkle.root(leaves)).body(), origin, public.raw,
                     lambda body: base64.b64decode(gm_store.sign(body)["signature"]), "SM2")
    forged = {**proof, "checkpoint": note.decode("utf-8"), "leaf_hash": leaves[2].hex(), "tree_size": 5,
              "inclusion": [h.hex() for h in merkle.inclusion_proof(2, 5, merkle.ListHashes(leaves))]}
    del forged["hash_algorithm"]
    assert merkle.verify_inclusion(leaves[2], 2, 5, [bytes.fromhex(h) for h in forged["inclusion"]],
                                   merkle.root(leaves))  # a valid SHA-256 proof, by itself
    with pytest.raises(ProofError, match="SM2 key, whose logs are hashed with SM3"):
        check_proof(forged, public)
    bad = tmp_path / "forged.json"
    bad.write_text(json.dumps(forged, ensure_ascii=False), encoding="utf-8")
    assert proofcheck_main([str(bad), "--key", str(pem)]) == 3
    capsys.readouterr()
    assert main(["audit", "check-proof", str(bad), "--key", str(pem)]) == 3
    assert "hashed with SM3" in capsys.readouterr().err
    forged.update(hash_algorithm="SM3", leaf_hash=None)  # claiming SM3 over a SHA-256 tree does not help either
    with pytest.raises(ProofError, match="the record is not record 3 of the tree the checkpoint signs"):
        check_proof(forged, public)


# -- archives and purges --------------------------------------------------------------------------

def _archived(store: Keystore, tmp_path: Path) -> tuple[AccessLog, Path, dict]:
    log = _log(store)
    _fill(log)
    out = tmp_path / "archive.json"
    assert retention.write_archive(log, out) is not None
    return log, out, json.loads(out.read_text(encoding="utf-8"))


def test_a_gm_archive_is_sm3_checks_offline_and_purges(gm_store: Keystore, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from govshare.cli import main

    log, out, doc = _archived(gm_store, tmp_path)
    assert doc["hash_algorithm"] == "SM3"
    extension = doc["signature"].splitlines()[3]
    assert extension == f"govshare-archive 1-5 sm3:{digest(doc, SM3)}"
    assert digest(doc, SM3) == gm.sm3(canonical_json({k: v for k, v in doc.items() if k != "signature"})).hex()
    assert doc["root"] == _mth([_leaf(canonical_json(r)) for r in doc["records"]]).hex()
    public = gm_store.public_key(gm_store.signing_key_id())
    checked = check_archive(doc, [public], log.tree.origin())
    assert (checked.first, checked.last, checked.hash_algorithm) == (1, 5, "SM3")
    pem = tmp_path / "publisher.pem"
    pem.write_bytes(public.pem())
    assert archivecheck_main([str(out), "--key", str(pem)]) == 0
    assert main(["audit", "check-archive", str(out), "--key", str(pem)]) == 0
    assert "records 1..5" in capsys.readouterr().out

    log.clock = lambda: datetime.now(timezone.utc)
    done = retention.purge(log, out)
    anchor = json.loads(log.path.read_text(encoding="utf-8").splitlines()[0])
    assert anchor["hash_algorithm"] == "SM3" and "leaves_sha256" not in anchor
    assert anchor["leaves_sm3"] == gm.sm3(b"".join(_leaf(canonical_json(r)) for r in doc["records"])).hex()
    assert done.first == 1 and log.verify().purged == 5
    assert retention.verify_archive(log, out)[0].last == 5
    anchor["hash_algorithm"] = "SHA-256"  # the anchor rewritten to another hash
    docs = _lines(log)
    _write(log, [anchor, *docs[1:]])
    with pytest.raises(IntegrityError, match="retention anchor on line 1 records the hash 'SHA-256'"):
        log.verify()


def test_an_sm3_archive_rewritten_to_sha256_and_resigned_by_the_sm2_key_is_refused(
        gm_store: Keystore, tmp_path: Path) -> None:
    log, out, doc = _archived(gm_store, tmp_path)
    public = gm_store.public_key(gm_store.signing_key_id())
    origin = log.tree.origin()
    del doc["hash_algorithm"]
    frontier = merkle.Frontier()
    for record in doc["records"]:
        frontier.append(merkle.leaf_hash(canonical_json(record)))
    doc["root"] = frontier.root().hex()
    statement = signed_statement(origin, 1, 5, frontier.root(), digest(doc))
    doc["signature"] = sign_note(statement.body(), origin, public.raw,
                                 lambda body: base64.b64decode(gm_store.sign(body)["signature"]), "SM2").decode("utf-8")
    with pytest.raises(ArchiveError, match="the archive records the hash 'SHA-256', but it is signed by an SM2 key"):
        check_archive(doc, [public], origin)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    pem = tmp_path / "publisher.pem"
    pem.write_bytes(public.pem())
    assert archivecheck_main([str(bad), "--key", str(pem)]) == 3
    with pytest.raises(IntegrityError, match="signed by an SM2 key"):
        retention.purge(log, bad, now=datetime.now(timezone.utc))
    assert _lines(log)[0]["seq"] == 1  # nothing purged


def test_a_standard_archive_claiming_sm3_is_refused_against_its_ed25519_key(tmp_path: Path) -> None:
    store = _keystore(tmp_path, None)
    log, _, doc = _archived(store, tmp_path)
    assert "hash_algorithm" not in doc and " sha256:" in doc["signature"]
    public = store.public_key(store.signing_key_id())
    assert check_archive(doc, [public], log.tree.origin()).hash_algorithm == "SHA-256"
    doc["hash_algorithm"] = "SM3"
    with pytest.raises(ArchiveError, match="Ed25519 key, whose logs are hashed with SHA-256"):
        check_archive(doc, [public], log.tree.origin())


# -- file URLs ------------------------------------------------------------------------------------

FILE = "population/00000001-0123456789abcdef0123.parquet"


def test_file_tokens_under_an_hmac_sm3_key_verify_and_sha256_ones_of_its_bytes_are_refused(gm_store: Keystore) -> None:
    key = filetokens.service_key(gm_store, SERVICE)
    assert key.algorithm == "HMAC-SM3" and key.secret == gm_store.hmac_key(SERVICE)
    assert repr(key.secret) not in repr(key)
    token, _ = filetokens.issue(key, "approval-general", FILE, now=1000)
    body, mac = token.split(".")
    expected = gm.hmac_sm3(key.secret, b"govshare-file-url/1\n" + body.encode("ascii"))
    assert base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4)) == expected
    assert filetokens.check(key, token, now=1001).subscriber == "approval-general"
    sha_token, _ = filetokens.issue(key.secret, "approval-general", FILE, now=1000)  # HMAC-SHA256, same bytes
    assert sha_token.split(".")[0] == body and sha_token != token
    with pytest.raises(filetokens.InvalidFileToken, match="does not verify"):
        filetokens.check(key, sha_token, now=1001)
    with pytest.raises(filetokens.InvalidFileToken, match="does not verify"):
        filetokens.check(key.secret, token, now=1001)


def test_a_standard_service_key_is_hmac_sha256_and_its_tokens_are_as_before(tmp_path: Path) -> None:
    store = _keystore(tmp_path, None)
    key = filetokens.service_key(store, SERVICE)
    assert key.algorithm == "HMAC-SHA256"
    assert filetokens.issue(key, "a", FILE, now=5) == filetokens.issue(key.secret, "a", FILE, now=5)
