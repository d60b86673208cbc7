"""The agent protocol's request signatures and enrolment files, without a service."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.errors import ConfigError, IntegrityError
from keys.agentproto import PinnedPublisher, parse_enrolment
from keys.requestsig import WINDOW, BadRequestSignature, new_agent_id, sign_request, verify_request

KEY = Ed25519PrivateKey.generate()
AGENT = new_agent_id()
NOW = 1_800_000_000.0


def _verify(headers, method="POST", target="/agent/v1/x?a=1", body=b"{}", now=NOW, key=KEY):  # noqa: ANN001, ANN202
    return verify_request(headers, method, target, body, lambda a: key.public_key() if a == AGENT else None, now)


def _headers(**kw):  # noqa: ANN003, ANN202
    args = {"method": "POST", "target": "/agent/v1/x?a=1", "body": b"{}", "purpose": "户籍迁移 核验", "case": "BJ-1"}
    args.update(kw)
    return sign_request(KEY, AGENT, args["method"], args["target"], args["body"], args["purpose"], args["case"], now=NOW)


def test_a_signed_request_verifies_and_carries_purpose_and_case() -> None:
    signed = _verify(_headers())
    assert (signed.agent_id, signed.purpose, signed.case) == (AGENT, "户籍迁移 核验", "BJ-1")


@pytest.mark.parametrize("change", [{"method": "GET"}, {"target": "/agent/v1/x?a=2"}, {"body": b'{"a":1}'}])
def test_the_signature_binds_method_target_and_body(change: dict) -> None:
    with pytest.raises(BadRequestSignature, match="does not verify"):
        _verify(_headers(), **change)


@pytest.mark.parametrize("header,value", [("X-Govshare-Purpose", "other"), ("X-Govshare-Case", "BJ-2"),
                                          ("X-Govshare-Nonce", "A" * 22), ("X-Govshare-Timestamp", str(int(NOW) + 1))])
def test_the_signature_binds_purpose_case_nonce_and_time(header: str, value: str) -> None:
    with pytest.raises(BadRequestSignature):
        _verify({**_headers(), header: value})


def test_stale_unknown_and_malformed_requests_are_refused() -> None:
    with pytest.raises(BadRequestSignature, match="clock"):
        _verify(_headers(), now=NOW + WINDOW + 1)
    with pytest.raises(BadRequestSignature, match="unknown"):
        _verify({**_headers(), "X-Govshare-Agent": new_agent_id()})
    with pytest.raises(BadRequestSignature, match="not an agent id"):
        _verify({**_headers(), "X-Govshare-Agent": "admin"})
    with pytest.raises(BadRequestSignature, match="lacks"):
        _verify({k: v for k, v in _headers().items() if k != "X-Govshare-Signature"})
    with pytest.raises(BadRequestSignature, match="does not verify"):
        _verify(_headers(), key=Ed25519PrivateKey.generate())


def _pem(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_a_malformed_enrolment_file_names_each_problem() -> None:
    with pytest.raises(ConfigError, match="not JSON"):
        parse_enrolment("{", "f")
    with pytest.raises(ConfigError) as info:
        parse_enrolment(json.dumps({"format": "govshare-enrolment/1", "subscriber": "X", "token": "short",
                                    "service_url": "ftp://x", "expires_at": "tomorrow"}), "f")
    problems = " ".join(info.value.problems)
    for word in ("subscriber", "service_url", "ca_pem", "token", "expires_at", "public_pem"):
        assert word in problems


def test_the_pinned_publisher_refuses_other_keys_and_follows_only_announced_ones() -> None:
    from common.files import canonical_json

    old, new, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    pinned = PinnedPublisher([{"key_id": "publisher.v1", "public_pem": _pem(old)}])

    def sig(key: Ed25519PrivateKey, key_id: str, data: bytes) -> dict:
        import base64

        return {"algorithm": "Ed25519", "key_id": key_id, "signature": base64.b64encode(key.sign(data)).decode()}

    pinned.verify(b"m1", sig(old, "publisher.v1", b"m1"))
    with pytest.raises(IntegrityError):
        pinned.verify(b"m1", sig(stranger, "publisher.v1", b"m1"))
    with pytest.raises(IntegrityError, match="neither pinned"):
        pinned.verify(b"{}", sig(new, "publisher.v2", b"{}"))
    transition = {"format": "govshare-key-transition/1", "from": "publisher.v1", "to": "publisher.v2",
                  "algorithm": "Ed25519", "public_pem": _pem(new)}
    forged = json.dumps({"key_transitions": [{"transition": transition,
                                              "signature": sig(stranger, "publisher.v1", canonical_json(transition))}]})
    with pytest.raises(IntegrityError):
        pinned.verify(forged.encode(), sig(new, "publisher.v2", forged.encode()))
    announced = json.dumps({"key_transitions": [{"transition": transition,
                                                 "signature": sig(old, "publisher.v1", canonical_json(transition))}]})
    pinned.verify(announced.encode(), sig(new, "publisher.v2", announced.encode()))
    assert pinned.key_id == "publisher.v2" and [k["key_id"] for k in pinned.learned] == ["publisher.v2"]
    with pytest.raises(IntegrityError, match="retired"):
        pinned.verify(b"m3", sig(old, "publisher.v1", b"m3"))  # the old key after its successor
