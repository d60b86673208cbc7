"""The keystore with real keys in a temporary folder."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from common.errors import ConfigError, GovshareError, IntegrityError
from keys.keystore import Keystore

pytestmark = pytest.mark.integration

MASTERS = ["population.footer", "population.conditional"]
SUBSCRIBERS = ["approval-general", "approval-household"]


@pytest.fixture
def keystore(tmp_path: Path) -> Keystore:
    ks = Keystore(tmp_path / "keystore")
    ks.init(MASTERS, SUBSCRIBERS)
    return ks


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def secret_forms(folder: Path) -> list[str]:
    """Every way key material could leak as text: raw, hex, base64, and private PEM bodies."""
    from keys.rootkey import configured, is_wrapped, open_file

    forms: list[str] = []
    for path in folder.glob("*.key"):
        raw = path.read_bytes()
        if is_wrapped(raw):  # the material as the root key unwraps it
            key_id = path.name.removesuffix(".key")
            raw = open_file(configured(folder.parent), raw, f"govshare-key/1\n{key_id}\n{path.name}".encode(), str(path))
        if raw.startswith(b"-----BEGIN"):
            forms.append(raw.decode().splitlines()[1])
            private = serialization.load_pem_private_key(raw, password=None)
            raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                        serialization.NoEncryption())
        forms += [raw.hex(), base64.b64encode(raw).decode(), repr(raw)[2:-1]]
    return forms


def test_init_creates_every_key_with_versioned_ids(tmp_path: Path) -> None:
    created = Keystore(tmp_path / "ks").init(MASTERS, SUBSCRIBERS)
    assert sorted(created) == sorted([
        "publisher.v1", "population.footer.v1", "population.conditional.v1", "govshare.staging.v1",
        "govshare.quarantine.v1", "govshare.audit.v1", "govshare.service.v1",
        "subscriber.approval-general.v1", "subscriber.approval-household.v1",
    ])


def test_second_init_creates_nothing_and_keeps_every_byte(keystore: Keystore) -> None:
    before = snapshot(keystore.path)
    assert keystore.init(MASTERS, SUBSCRIBERS) == []
    assert snapshot(keystore.path) == before


def test_init_adds_only_what_is_new(keystore: Keystore) -> None:
    before = snapshot(keystore.path)
    created = keystore.init([*MASTERS, "legal_entity.footer"], [*SUBSCRIBERS, "tax-office"])
    assert created == ["legal_entity.footer.v1", "subscriber.tax-office.v1"]
    after = snapshot(keystore.path)
    assert all(after[name] == content for name, content in before.items() if name != "keys.json")


def test_folder_is_0700_and_every_file_0600(keystore: Keystore) -> None:
    assert stat.S_IMODE(keystore.path.stat().st_mode) == 0o700
    files = list(keystore.path.iterdir())
    assert len(files) >= 10
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}


def test_index_lists_metadata_and_no_material(keystore: Keystore) -> None:
    index_text = (keystore.path / "keys.json").read_text()
    doc = json.loads(index_text)
    algorithms = {e["key_id"]: e["algorithm"] for e in doc["keys"]}
    assert algorithms["population.footer.v1"] == "AES-256-GCM"
    assert algorithms["govshare.audit.v1"] == "HMAC-SHA256"
    assert algorithms["publisher.v1"] == "Ed25519"
    assert {e["status"] for e in doc["keys"]} == {"active"}
    assert all((keystore.path / e["file"]).is_file() and e["created"] for e in doc["keys"])
    assert not [s for s in secret_forms(keystore.path) if s in index_text]


def test_no_temp_files_are_left_behind(keystore: Keystore) -> None:
    assert not list(keystore.path.glob(".tmp-*"))


def test_key_accessors(keystore: Keystore) -> None:
    assert keystore.active_key_id("population.conditional") == "population.conditional.v1"
    assert keystore.signing_key_id() == "publisher.v1"
    assert keystore.subscriber_key_id("approval-general") == "subscriber.approval-general.v1"
    master = keystore.master_key("population.conditional.v1")
    stored = (keystore.path / "population.conditional.v1.key").read_bytes()
    assert len(master) == 32 and master not in stored  # the file holds it wrapped by the root key, never raw
    assert stored.startswith(b"govshare-wrapped-key/1 ")
    assert master != keystore.master_key("population.footer.v1")
    assert len(keystore.hmac_key("govshare.audit")) == 32


def test_keys_are_used_only_for_their_purpose(keystore: Keystore) -> None:
    with pytest.raises(ConfigError, match="govshare.audit.v1"):
        keystore.master_key("govshare.audit.v1")
    with pytest.raises(ConfigError):
        keystore.hmac_key("population.footer")
    with pytest.raises(ConfigError):
        keystore.sign(b"x", key_id="subscriber.approval-general.v1")


def test_sign_verify_round_trip(keystore: Keystore) -> None:
    doc = keystore.sign(b"manifest bytes")
    assert set(doc) == {"algorithm", "key_id", "signature"}
    assert doc["algorithm"] == "Ed25519" and doc["key_id"] == "publisher.v1"
    json.dumps(doc)
    keystore.verify(b"manifest bytes", doc)


def test_signature_checks_with_an_independent_verifier(keystore: Keystore) -> None:
    doc = keystore.sign(b"manifest bytes")
    public = serialization.load_pem_public_key(keystore.public_key_pem("publisher.v1"))
    public.verify(base64.b64decode(doc["signature"]), b"manifest bytes")  # raises if wrong


@pytest.mark.parametrize("flip", ["data", "signature"])
def test_verify_fails_on_a_flipped_byte(keystore: Keystore, flip: str) -> None:
    data = bytearray(b"manifest bytes")
    doc = keystore.sign(bytes(data))
    if flip == "data":
        data[3] ^= 0x01
    else:
        sig = bytearray(base64.b64decode(doc["signature"]))
        sig[10] ^= 0x01
        doc = {**doc, "signature": base64.b64encode(bytes(sig)).decode()}
    with pytest.raises(IntegrityError) as info:
        keystore.verify(bytes(data), doc)
    assert info.value.exit_code == 3


@pytest.mark.parametrize(
    "change",
    [{"key_id": "publisher.v9"}, {"key_id": "population.footer.v1"}, {"key_id": None},
     {"algorithm": "SM2"}, {"signature": "%%%not-base64"}],
)
def test_verify_fails_on_unknown_key_or_malformed_doc(keystore: Keystore, change: dict) -> None:
    doc = {**keystore.sign(b"data"), **change}
    with pytest.raises(IntegrityError):
        keystore.verify(b"data", doc)


def test_subscriber_signatures(keystore: Keystore) -> None:
    doc = keystore.sign_as_subscriber("approval-household", b"request")
    assert doc["key_id"] == "subscriber.approval-household.v1"
    assert keystore.verify_subscriber(b"request", doc) == "approval-household"
    with pytest.raises(IntegrityError):
        keystore.verify_subscriber(b"request!", doc)
    with pytest.raises(IntegrityError):  # a subscriber cannot pass as the publisher ...
        keystore.verify(b"request", doc)
    with pytest.raises(IntegrityError):  # ... nor the publisher as a subscriber
        keystore.verify_subscriber(b"request", keystore.sign(b"request"))


def test_missing_keystore_says_run_init(tmp_path: Path) -> None:
    ks = Keystore(tmp_path / "absent")
    for call in (lambda: ks.active_key_id("population.footer"), lambda: ks.sign(b"x"),
                 lambda: ks.master_key("population.footer.v1")):
        with pytest.raises(ConfigError, match="govshare init"):
            call()


def test_missing_key_names_the_key(keystore: Keystore) -> None:
    with pytest.raises(ConfigError, match="'legal_entity.footer'.*govshare init"):
        keystore.active_key_id("legal_entity.footer")
    with pytest.raises(ConfigError, match="'legal_entity.footer.v1'.*govshare init"):
        keystore.master_key("legal_entity.footer.v1")


def test_missing_key_file_is_a_config_error(keystore: Keystore) -> None:
    (keystore.path / "population.footer.v1.key").unlink()
    with pytest.raises(ConfigError, match="population.footer.v1"):
        keystore.master_key("population.footer.v1")


def test_tampered_master_key_file_is_detected(keystore: Keystore) -> None:
    path = keystore.path / "population.footer.v1.key"
    raw = bytearray(path.read_bytes())
    raw[0] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="population.footer.v1"):
        keystore.master_key("population.footer.v1")


def test_replaced_public_key_is_detected(keystore: Keystore, tmp_path: Path) -> None:
    other = Keystore(tmp_path / "other")
    other.init([], [])
    (keystore.path / "publisher.v1.pub").write_bytes((other.path / "publisher.v1.pub").read_bytes())
    with pytest.raises(IntegrityError):
        keystore.verify(b"data", other.sign(b"data"))


def test_key_file_readable_by_others_is_refused(keystore: Keystore) -> None:
    (keystore.path / "population.footer.v1.key").chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        keystore.master_key("population.footer.v1")


def test_init_never_overwrites_an_unlisted_key_file(tmp_path: Path) -> None:
    folder = tmp_path / "ks"
    folder.mkdir()
    orphan = folder / "publisher.v1.key"
    orphan.write_bytes(b"left over from a crash")
    with pytest.raises(ConfigError, match="never overwrites"):
        Keystore(folder).init([], [])
    assert orphan.read_bytes() == b"left over from a crash"


def test_nothing_secret_in_repr_or_error_messages(keystore: Keystore) -> None:
    messages = [repr(keystore), str(keystore)]
    (keystore.path / "population.footer.v1.key").write_bytes(b"\x00" * 32)
    for call in (lambda: keystore.master_key("population.footer.v1"),
                 lambda: keystore.verify(b"x", {**keystore.sign(b"y")})):
        with pytest.raises(GovshareError) as info:
            call()
        messages.append(str(info.value))
    forms = secret_forms(keystore.path)
    assert len(forms) > 20
    assert not [s for s in forms for m in messages if s in m]
