"""KeystoreKmsClient and column-key resolution against a fake keystore (no files)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import ConfigError, IntegrityError
from keys.kms import NONCE_BYTES, KeystoreKmsClient
from keys.protection import _resolve_column_keys

MASTER = bytes(range(32))


class FakeKeystore:
    """Two AES master keys with identical bytes (to show the AAD binds the key id) and an HMAC key."""

    path = "fake"

    def __init__(self) -> None:
        self.keys = {"a.v1": ("AES-256-GCM", MASTER), "b.v1": ("AES-256-GCM", MASTER), "h.v1": ("HMAC-SHA256", MASTER)}

    def algorithm(self, key_id: str) -> str:
        if key_id not in self.keys:
            raise ConfigError(f"key {key_id!r} is not in keystore fake: run 'govshare init'")
        return self.keys[key_id][0]

    def master_key(self, key_id: str) -> bytes:
        return self.keys[key_id][1]

    def active_key_id(self, name: str) -> str:
        return f"{name}.v1"


@pytest.fixture
def client() -> KeystoreKmsClient:
    return KeystoreKmsClient(FakeKeystore())  # type: ignore[arg-type]


@given(st.binary(min_size=16, max_size=32))
def test_wrap_unwrap_round_trip(key_bytes: bytes) -> None:
    client = KeystoreKmsClient(FakeKeystore())  # type: ignore[arg-type]
    wrapped = client.wrap_key(key_bytes, "a.v1")
    assert isinstance(wrapped, str)
    assert key_bytes not in base64.b64decode(wrapped)
    assert client.unwrap_key(wrapped, "a.v1") == key_bytes


def test_wrap_uses_a_fresh_nonce_each_time(client: KeystoreKmsClient) -> None:
    one, two = client.wrap_key(b"k" * 16, "a.v1"), client.wrap_key(b"k" * 16, "a.v1")
    assert one != two
    assert base64.b64decode(one)[:NONCE_BYTES] != base64.b64decode(two)[:NONCE_BYTES]


def test_unwrap_under_another_key_id_fails_even_with_same_key_bytes(client: KeystoreKmsClient) -> None:
    wrapped = client.wrap_key(b"k" * 16, "a.v1")
    with pytest.raises(IntegrityError, match="'b.v1'"):
        client.unwrap_key(wrapped, "b.v1")


@pytest.mark.parametrize("position", [0, NONCE_BYTES, -1])
def test_unwrap_of_a_flipped_byte_fails(client: KeystoreKmsClient, position: int) -> None:
    raw = bytearray(base64.b64decode(client.wrap_key(b"k" * 16, "a.v1")))
    raw[position] ^= 0x01
    with pytest.raises(IntegrityError) as info:
        client.unwrap_key(base64.b64encode(bytes(raw)).decode(), "a.v1")
    assert info.value.exit_code == 3
    assert MASTER.hex() not in str(info.value)


@pytest.mark.parametrize("garbage", ["", "not base64!", base64.b64encode(b"short").decode()])
def test_unwrap_of_garbage_fails_with_integrity_error(client: KeystoreKmsClient, garbage: str) -> None:
    with pytest.raises(IntegrityError):
        client.unwrap_key(garbage, "a.v1")


def test_non_aes_keys_cannot_wrap(client: KeystoreKmsClient) -> None:
    with pytest.raises(ConfigError, match="HMAC-SHA256"):
        client.wrap_key(b"k" * 16, "h.v1")


def test_unknown_master_key_is_a_config_error(client: KeystoreKmsClient) -> None:
    with pytest.raises(ConfigError, match="govshare init"):
        client.wrap_key(b"k" * 16, "nope.v1")


def test_column_keys_resolve_names_to_active_ids_and_drop_empty_lists() -> None:
    resolved = _resolve_column_keys(FakeKeystore(), {"p.cond": ["id_number", "name"], "p.none": []})  # type: ignore[arg-type]
    assert resolved == {"p.cond.v1": ["id_number", "name"]}


def test_a_column_under_two_keys_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        _resolve_column_keys(FakeKeystore(), {"k1": ["name"], "k2": ["name"]})  # type: ignore[arg-type]
    assert any("'name'" in p for p in info.value.problems)


def test_a_string_instead_of_a_column_list_is_refused() -> None:
    with pytest.raises(ConfigError):
        _resolve_column_keys(FakeKeystore(), {"k1": "name"})  # type: ignore[arg-type]
