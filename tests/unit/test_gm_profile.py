"""The 国密 profile in the keys floor: SM2 signing keys (keys.sigalg), a keystore made in the gm
profile (SM4-GCM master keys, HMAC-SM3, SM2 publisher keys, key files wrapped with SM4-GCM by
the root key), SM2 signed notes, and agents' pins across algorithms."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

from common.errors import ConfigError, IntegrityError
from common.files import canonical_json
from keys import gm, rootkey, sigalg
from keys.agentproto import PinnedPublisher
from keys.checkpoint import Checkpoint, CheckpointError, parse_any_vkey, sign_note, verify_note, vkey
from keys.datakeys import create_data_key, data_key
from keys.keystore import AUDIT, PUBLISHER, Keystore
from keys.profile import GM, STANDARD, aead_for, digest_for, from_environment, mac_for, profile


@pytest.fixture
def gm_keystore(tmp_path):
    root = rootkey.FileRootKey(tmp_path / "outside" / "root.key")
    store = Keystore(tmp_path / "home" / "keystore", root=root)
    store.init(["population.conditional"], ["approval-local"], profile=GM)
    return store


# -- keys.sigalg -------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["Ed25519", "SM2"])
def test_keys_of_either_algorithm_sign_verify_and_round_trip_through_pem(algorithm) -> None:
    key = sigalg.generate(algorithm)
    signature = key.sign(b"manifest")
    assert key.public.verify(signature, b"manifest")
    assert not key.public.verify(signature, b"manifest!")
    assert not key.public.verify(b"\x00" * len(signature), b"manifest")
    assert sigalg.load_public_pem(key.public.pem()) == key.public
    again = sigalg.load_private_pem(key.pem())
    assert again.public == key.public and key.public.verify(again.sign(b"x"), b"x")
    assert "PRIVATE" not in repr(key) and key.pem().hex() not in repr(key)


def test_an_sm2_public_key_is_the_standard_spki_form_openssl_reads(tmp_path) -> None:
    key = sigalg.generate("SM2")
    (tmp_path / "k.pem").write_bytes(key.public.pem())
    try:
        shown = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(tmp_path / "k.pem"), "-noout", "-text"],
                               capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        pytest.skip("no openssl command")
    assert shown.returncode == 0, shown.stderr
    assert ("04:" + ":".join(f"{b:02x}" for b in key.public.raw[:4])) in shown.stdout.replace("\n    ", "")


def test_a_signature_of_one_algorithm_never_verifies_under_the_other() -> None:
    ed, sm = sigalg.generate("Ed25519"), sigalg.generate("SM2")
    assert not sm.public.verify(ed.sign(b"m"), b"m")
    assert not ed.public.verify(sm.sign(b"m"), b"m")


def test_malformed_keys_are_refused_naming_where() -> None:
    with pytest.raises(IntegrityError, match="the pin"):
        sigalg.load_public_pem("not pem", "the pin")
    bad_point = sigalg._pem("PUBLIC KEY", sigalg._SM2_SPKI_PREFIX + b"\x04" + b"\x01" * 64)
    with pytest.raises(IntegrityError, match="sm2p256v1"):
        sigalg.load_public_pem(bad_point, "the pin")
    good = sigalg.generate("SM2")
    other = sigalg.generate("SM2")
    mixed = sigalg._pem(sigalg._SM2_PRIVATE_LABEL, good._material + other.public.raw)
    with pytest.raises(IntegrityError, match="consistent"):
        sigalg.load_private_pem(mixed, "k")
    with pytest.raises(ConfigError):
        sigalg.generate("RSA")  # type: ignore[arg-type]


# -- keys.profile ------------------------------------------------------------------------------

def test_profiles_are_named_strictly() -> None:
    assert from_environment(None) is None and from_environment(" ") is None
    assert from_environment("gm") is GM and from_environment("standard") is STANDARD
    for typo in ("GM", "sm", "guomi", "standard,gm"):
        with pytest.raises(ConfigError, match="GOVSHARE_CRYPTO_PROFILE"):
            profile(typo)


def test_the_gm_primitives_behind_the_profile_match_their_vectors() -> None:
    # GB/T 32905-2016 appendix A: SM3("abc")
    assert digest_for("SM3", b"abc").hex() == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    # (the SM4 and SM4-GCM vectors themselves are in tests/unit/test_gm.py)
    key = bytes.fromhex("0123456789abcdeffedcba9876543210")
    sealed = aead_for("SM4-GCM", key).encrypt(b"\x00" * 12, b"data", b"aad")
    assert aead_for("SM4-GCM", key).decrypt(b"\x00" * 12, sealed, b"aad") == b"data"
    assert mac_for("HMAC-SM3", b"k", b"m") == gm.hmac_sm3(b"k", b"m") != mac_for("HMAC-SHA256", b"k", b"m")
    with pytest.raises(ConfigError):
        aead_for("HMAC-SM3", key)


# -- a keystore in the gm profile ---------------------------------------------------------------

def test_a_gm_keystore_makes_sm2_sm4_and_hmac_sm3_keys(gm_keystore) -> None:
    store = gm_keystore
    assert store.profile is GM
    algorithms = {e.name: e.algorithm for e in store.entries().values()}
    assert algorithms[PUBLISHER] == "SM2" and algorithms["subscriber.approval-local"] == "SM2"
    assert algorithms["population.conditional"] == "SM4-GCM" and algorithms["govshare.staging"] == "SM4-GCM"
    assert algorithms[AUDIT] == "HMAC-SM3"
    assert len(store.master_key(store.active_key_id("population.conditional"))) == 16
    assert len(store.hmac_key()) == 32
    index = json.loads((store.path / "keys.json").read_text())
    assert index["profile"] == "gm"
    for entry in store.entries().values():
        head = (store.path / entry.file).read_bytes().partition(b"\n")[0]
        assert head.endswith(b" alg=SM4-GCM"), entry.key_id  # every key file wrapped with SM4-GCM


def test_gm_signatures_are_sm2_and_verify_only_unaltered(gm_keystore) -> None:
    doc = gm_keystore.sign(b"manifest bytes")
    assert doc["algorithm"] == "SM2" and doc["key_id"] == "publisher.v1"
    gm_keystore.verify(b"manifest bytes", doc)
    with pytest.raises(IntegrityError):
        gm_keystore.verify(b"manifest bytez", doc)
    with pytest.raises(IntegrityError, match="algorithm"):
        gm_keystore.verify(b"manifest bytes", {**doc, "algorithm": "Ed25519"})
    assert sigalg.load_public_pem(gm_keystore.public_key_pem("publisher.v1")).algorithm == "SM2"


def test_gm_data_keys_wrap_under_sm4_master_keys(gm_keystore) -> None:
    master = gm_keystore.active_key_id("population.conditional")
    key_id = create_data_key(gm_keystore, "population", "conditional", master)
    assert len(data_key(gm_keystore, key_id)) == 16  # an SM4 key: the column key of sealed files (keys.chunkseal)
    doc = json.loads((gm_keystore.path / "datakeys" / f"{key_id}.json").read_text(encoding="utf-8"))
    assert doc["master_key_id"] == master and gm_keystore.algorithm(master) == "SM4-GCM"


def test_a_home_never_changes_profile_in_place(gm_keystore) -> None:
    gm_keystore.init(["population.conditional"], ["approval-local"], profile=GM)  # the same: fine
    gm_keystore.init(["population.conditional"], ["approval-local"])  # unset: the home's own
    before = (gm_keystore.path / "keys.json").read_bytes()
    with pytest.raises(ConfigError, match="GOVSHARE_CRYPTO_PROFILE=standard.*never changes profile"):
        gm_keystore.init(["population.conditional"], ["approval-local"], profile=STANDARD)
    assert (gm_keystore.path / "keys.json").read_bytes() == before


def test_a_standard_key_file_dropped_into_a_gm_home_is_refused(gm_keystore, tmp_path) -> None:
    entry = gm_keystore.entries()["population.conditional.v1"]
    path = gm_keystore.path / entry.file
    plain = rootkey.open_file(gm_keystore.root(), path.read_bytes(), b"govshare-key/1\npopulation.conditional.v1\n"
                              + entry.file.encode(), "f")
    path.write_bytes(rootkey.seal_file(gm_keystore.root(), plain, b"govshare-key/1\npopulation.conditional.v1\n"
                                       + entry.file.encode()))  # AES-GCM wrapping, same key
    with pytest.raises(IntegrityError, match="wrapped with AES-256-GCM"):
        gm_keystore.master_key("population.conditional.v1")


def test_a_copied_gm_home_without_its_root_key_opens_nothing(gm_keystore, tmp_path) -> None:
    stranger = Keystore(gm_keystore.path, root=rootkey.FileRootKey(tmp_path / "other.key"))
    stranger.root().create()
    with pytest.raises(IntegrityError):
        stranger.master_key("population.conditional.v1")


def test_a_gm_home_refuses_a_pkcs11_root_key_that_has_no_sm4() -> None:
    token = rootkey.Pkcs11RootKey("govshare-test", "0000", "/nonexistent.so")
    with pytest.raises(ConfigError, match="no SM4 mechanism"):
        rootkey.seal_file(token, b"k" * 16, b"aad", rootkey.SM4)


def test_rotation_keeps_the_profile(gm_keystore) -> None:
    old, new = gm_keystore.rotate("population.conditional")
    assert gm_keystore.algorithm(new) == "SM4-GCM" and len(gm_keystore.master_key(old)) == 16
    old_pub, new_pub = gm_keystore.rotate_publisher()
    assert gm_keystore.algorithm(new_pub) == "SM2"
    (record,) = gm_keystore.transitions(old_pub, new_pub)
    assert record["transition"]["algorithm"] == "SM2"
    gm_keystore.verify(canonical_json(record["transition"]), record["signature"])


# -- SM2 signed notes --------------------------------------------------------------------------

def test_sm2_checkpoints_sign_and_verify_as_signed_notes() -> None:
    key = sigalg.generate("SM2")
    body = Checkpoint("govshare.local/access-log/x", 3, b"\x07" * 32).body()
    note = sign_note(body, "govshare.local/access-log/x", key.public.raw, key.sign, algorithm="SM2")
    assert verify_note(note, "govshare.local/access-log/x", key.public).size == 3
    name, parsed = parse_any_vkey(vkey("govshare.local/access-log/x", key.public.raw, "SM2"))
    assert parsed == key.public and name == "govshare.local/access-log/x"
    with pytest.raises(CheckpointError):
        verify_note(note, "govshare.local/access-log/x", sigalg.generate("SM2").public)
    with pytest.raises(CheckpointError):
        verify_note(note.replace(b"\n3\n", b"\n4\n"), "govshare.local/access-log/x", key.public)
    ed = sigalg.generate("Ed25519")
    with pytest.raises(CheckpointError):  # an Ed25519 key never stands for the SM2 one
        verify_note(note, "govshare.local/access-log/x", ed.public)


# -- agents' pins across algorithms ------------------------------------------------------------

def _sig(key: sigalg.PrivateKey, key_id: str, data: bytes) -> dict:
    return {"algorithm": key.algorithm, "key_id": key_id, "signature": base64.b64encode(key.sign(data)).decode()}


def test_an_agent_follows_an_announced_change_to_sm2_and_refuses_an_unannounced_one() -> None:
    old, sm2, stranger = sigalg.generate("Ed25519"), sigalg.generate("SM2"), sigalg.generate("SM2")
    pinned = PinnedPublisher([{"key_id": "publisher.v1", "public_pem": old.public.pem().decode()}])
    pinned.verify(b"m1", _sig(old, "publisher.v1", b"m1"))
    # the same key id, re-signed in SM2 by someone else: refused, the pinned key is Ed25519
    with pytest.raises(IntegrityError, match="change of crypto profile"):
        pinned.verify(b"m2", _sig(stranger, "publisher.v1", b"m2"))
    with pytest.raises(IntegrityError, match="neither pinned"):
        pinned.verify(b"{}", _sig(sm2, "publisher.v2", b"{}"))
    transition = {"format": "govshare-key-transition/1", "from": "publisher.v1", "to": "publisher.v2",
                  "algorithm": "SM2", "public_pem": sm2.public.pem().decode()}
    lying = {**transition, "algorithm": "Ed25519"}
    bad = json.dumps({"key_transitions": [{"transition": lying,
                                           "signature": _sig(old, "publisher.v1", canonical_json(lying))}]}).encode()
    with pytest.raises(IntegrityError, match="names algorithm"):
        PinnedPublisher([{"key_id": "publisher.v1", "public_pem": old.public.pem().decode()}]).verify(
            bad, _sig(sm2, "publisher.v2", bad))
    announced = json.dumps({"key_transitions": [{"transition": transition, "signature": _sig(
        old, "publisher.v1", canonical_json(transition))}]}).encode()
    pinned.verify(announced, _sig(sm2, "publisher.v2", announced))
    assert pinned.learned == [{"key_id": "publisher.v2", "algorithm": "SM2", "public_pem": sm2.public.pem().decode()}]
    pinned.verify(b"m3", _sig(sm2, "publisher.v2", b"m3"))
    assert [k.algorithm for k in pinned.public_keys()] == ["Ed25519", "SM2"]


# -- govshare init ------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "says"), [("GM", "one of standard, gm"), ("standrd", "one of standard, gm"),
                                             ("sm", "one of standard, gm")])
def test_init_refuses_a_profile_it_cannot_honour_and_makes_nothing(tmp_path, monkeypatch, capsys, value, says) -> None:
    from govshare.cli import main

    monkeypatch.setenv("GOVSHARE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GOVSHARE_ROOT_KEY", f"file:{tmp_path / 'root.key'}")
    monkeypatch.setenv("GOVSHARE_CRYPTO_PROFILE", value)
    assert main(["init"]) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "home").exists() and not (tmp_path / "root.key").exists()


def test_init_makes_a_gm_home(tmp_path, monkeypatch, capsys) -> None:
    from govshare.cli import main

    monkeypatch.setenv("GOVSHARE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GOVSHARE_ROOT_KEY", f"file:{tmp_path / 'root.key'}")
    monkeypatch.setenv("GOVSHARE_CRYPTO_PROFILE", "gm")
    assert main(["init"]) == 0
    ks = Keystore(tmp_path / "home" / "keystore")
    assert ks.profile.name == "gm"
    assert {e.algorithm for e in ks.entries().values()} <= {"SM2", "SM4-GCM", "HMAC-SM3"}
    monkeypatch.setenv("GOVSHARE_CRYPTO_PROFILE", "standard")
    assert main(["init"]) == 2  # never changes profile in place
    assert "never changes profile" in capsys.readouterr().err


# -- agents of a gm publisher: SM2 request signatures and SM2 envelopes ---------------------------

def _agent_keys(algorithm: str):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from keys.agentproto import agent_algorithms, raw_public

    signing_algorithm, envelope_algorithm = agent_algorithms(algorithm)
    signing = sigalg.generate(signing_algorithm)
    envelope = sigalg.generate("SM2") if envelope_algorithm == "SM2" else X25519PrivateKey.generate()
    envelope_pub = envelope.public if isinstance(envelope, sigalg.PrivateKey) else envelope.public_key()
    return signing, envelope, raw_public(signing.public), raw_public(envelope_pub)


def test_an_sm2_agent_proves_possession_and_mixed_profiles_are_refused() -> None:
    from keys.agentproto import check_proof, enrolment_proof

    token = "t" * 43
    signing, _, signing_pub, envelope_pub = _agent_keys("SM2")
    proof = base64.b64encode(signing.sign(enrolment_proof(token, "approval-x", signing_pub, envelope_pub))).decode()
    check_proof(token, "approval-x", signing_pub, envelope_pub, proof)
    with pytest.raises(ValueError, match="does not verify"):
        check_proof(token, "approval-y", signing_pub, envelope_pub, proof)
    _, _, _, x25519_pub = _agent_keys("Ed25519")
    mixed = base64.b64encode(signing.sign(enrolment_proof(token, "approval-x", signing_pub, x25519_pub))).decode()
    with pytest.raises(ValueError, match="different profiles"):
        check_proof(token, "approval-x", signing_pub, x25519_pub, mixed)


def test_sm2_envelopes_open_only_for_their_agent_and_purpose() -> None:
    from keys.datakeys import envelope_info, open_sealed, seal

    _, envelope, _, _ = _agent_keys("SM2")
    info = envelope_info("population", 3, "conditional", "dk-" + "0" * 32, "approval-x")
    key = bytes(range(32))
    sealed = seal(key, envelope.public, info)
    assert open_sealed(sealed, envelope, info) == key
    with pytest.raises(IntegrityError):
        open_sealed(sealed, envelope, envelope_info("population", 4, "conditional", "dk-" + "0" * 32, "approval-x"))
    with pytest.raises(IntegrityError):
        open_sealed(sealed, sigalg.generate("SM2"), info)
    with pytest.raises(ConfigError):
        seal(key, sigalg.generate("Ed25519").public, info)  # a signing key is no envelope key


def test_sm2_signed_requests_verify_and_refuse_tampering() -> None:
    from keys.requestsig import BadRequestSignature, sign_request, verify_request

    signing = sigalg.generate("SM2")
    agent = "ag-" + "1" * 32
    headers = sign_request(signing, agent, "GET", "/agent/v1/datasets", b"", "核验身份")
    signed = verify_request(headers, "GET", "/agent/v1/datasets", b"", lambda a: signing.public if a == agent else None)
    assert signed.purpose == "核验身份"
    with pytest.raises(BadRequestSignature, match="does not verify"):
        verify_request(headers, "GET", "/agent/v1/datasets?x=1", b"", lambda a: signing.public)
    with pytest.raises(BadRequestSignature, match="does not verify"):
        verify_request(headers, "GET", "/agent/v1/datasets", b"", lambda a: sigalg.generate("SM2").public)


def test_a_gm_publisher_enrols_only_sm2_agents(gm_keystore) -> None:
    from common.home import Home
    from keys.agentproto import enrolment_proof
    from service.enrolment import EnrolmentRefused, enrol, issue

    home = Home(gm_keystore.path.parent)

    def attempt(algorithm: str):
        issued = issue(home, "approval-x", hours=1)
        signing, _, signing_pub, envelope_pub = _agent_keys(algorithm)
        proof = signing.sign(enrolment_proof(issued.token, "approval-x", signing_pub, envelope_pub))
        return enrol(home, issued.token, "approval-x", signing_pub, envelope_pub, base64.b64encode(proof).decode())

    with pytest.raises(EnrolmentRefused, match=r"Ed25519.*\(gm\) takes SM2"):
        attempt("Ed25519")
    agent = attempt("SM2")
    assert agent.signing_key.algorithm == "SM2" and agent.encryption_key.algorithm == "SM2"
