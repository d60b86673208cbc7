"""C2SP checkpoints in signed notes (keys.checkpoint): the format byte for byte, the Go reference
vector, an independent reading of what is written, and every refusal."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from keys.checkpoint import (
    MAX_NOTE,
    MAX_SIGNATURES,
    Checkpoint,
    CheckpointError,
    key_hash,
    note_text,
    parse_checkpoint,
    parse_vkey,
    sign_note,
    signatures,
    verify_note,
    vkey,
)

ORIGIN = "example.com/log42"
ROOT = hashlib.sha256(b"a root").digest()
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = KEY.public_key().public_bytes_raw()
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))

# golang.org/x/mod/sumdb/note: the documented example (package doc and note_test.go).
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = b"If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_NOTE = GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n".encode()


def _signed(body: bytes, name: str = ORIGIN, key: Ed25519PrivateKey = KEY) -> bytes:
    return sign_note(body, name, key.public_key().public_bytes_raw(), key.sign)


def _note(size: int = 20852163, origin: str = ORIGIN) -> bytes:
    return _signed(Checkpoint(origin, size, ROOT).body())


def _raw_sig_line(name: str, keyhash: bytes, sig: bytes) -> bytes:
    return f"\u2014 {name} {base64.b64encode(keyhash + sig).decode()}\n".encode()


def _independent_key_id(name: str, public: bytes) -> bytes:
    digest = hashlib.sha256()
    digest.update(name.encode("utf-8"))
    digest.update(bytes([0x0A, 0x01]))
    digest.update(public)
    return digest.digest()[0:4]


def _independent_open(note: bytes, name: str, public: Ed25519PublicKey) -> tuple[str, int, bytes]:
    """A minimal reader of a checkpoint note, from the specs alone."""
    text = note.decode("utf-8")
    head, _, tail = text.rpartition("\n\n")
    body = (head + "\n").encode("utf-8")
    want = _independent_key_id(name, public.public_bytes_raw())
    ok = False
    for line in tail.splitlines():
        dash, line_name, blob = line.split(" ")
        assert dash == "\u2014"
        raw = base64.standard_b64decode(blob)
        if line_name == name and raw[:4] == want:
            public.verify(raw[4:], body)
            ok = True
    assert ok
    origin, size, root = head.split("\n")[:3]
    return origin, int(size), base64.standard_b64decode(root)


# -- writing ---------------------------------------------------------------------------------

def test_the_body_is_the_three_lines_of_the_spec() -> None:
    body = Checkpoint(ORIGIN, 20852163, ROOT).body()
    assert body == f"{ORIGIN}\n20852163\n{base64.b64encode(ROOT).decode()}\n".encode()
    assert Checkpoint(ORIGIN, 0, ROOT, ("ext one",)).body().endswith(b"\next one\n")


def test_round_trip() -> None:
    note = _note()
    assert verify_note(note, ORIGIN, KEY.public_key()) == Checkpoint(ORIGIN, 20852163, ROOT)
    assert verify_note(_note(size=0), ORIGIN, KEY.public_key()).size == 0
    text = note.decode()
    assert text.count("\n\n") == 1 and text.endswith("\n") and "\n\u2014 " + ORIGIN + " " in text
    [(name, keyhash, sig)] = signatures(note)
    assert (name, keyhash, len(sig)) == (ORIGIN, key_hash(ORIGIN, PUBLIC), 64)
    assert note_text(note) == Checkpoint(ORIGIN, 20852163, ROOT).body()


def test_a_note_made_here_reads_with_an_independent_parser() -> None:
    assert _independent_open(_note(1234), ORIGIN, KEY.public_key()) == (ORIGIN, 1234, ROOT)


def test_the_key_hash_is_computed_per_spec() -> None:
    expected = _independent_key_id(ORIGIN, PUBLIC)
    assert key_hash(ORIGIN, PUBLIC) == expected
    typed_key = base64.b64encode(bytes([1]) + PUBLIC).decode()
    assert vkey(ORIGIN, PUBLIC) == f"{ORIGIN}+{expected.hex()}+{typed_key}"
    name, public = parse_vkey(vkey(ORIGIN, PUBLIC) + "\n")
    assert (name, public.public_bytes_raw()) == (ORIGIN, PUBLIC)


def test_the_go_reference_note_is_reproduced_byte_for_byte() -> None:
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert seed[0] == 0x01
    private = Ed25519PrivateKey.from_private_bytes(seed[1:])
    public = private.public_key().public_bytes_raw()
    assert vkey("PeterNeumann", public) == GO_VKEY
    assert key_hash("PeterNeumann", public).hex() == "c74f20a3"
    assert sign_note(GO_TEXT, "PeterNeumann", public, private.sign) == GO_NOTE
    name, verifier = parse_vkey(GO_VKEY)
    [(sig_name, keyhash, sig)] = signatures(GO_NOTE)
    assert (sig_name, keyhash.hex()) == (name, "c74f20a3")
    verifier.verify(sig, note_text(GO_NOTE))
    with pytest.raises(CheckpointError, match="at least three lines"):  # the signature holds; the text is no checkpoint
        verify_note(GO_NOTE, name, verifier)


def test_sign_note_checks_the_callback_and_the_text() -> None:
    body = Checkpoint(ORIGIN, 1, ROOT).body()
    with pytest.raises(CheckpointError, match="does not verify"):
        sign_note(body, ORIGIN, PUBLIC, OTHER.sign)
    with pytest.raises(CheckpointError, match="64-byte"):
        sign_note(body, ORIGIN, PUBLIC, lambda b: b"short")
    for bad_name in ["", "a b", "a+b", "a\tb", "a\u2003b"]:
        with pytest.raises(CheckpointError, match="key name"):
            sign_note(body, bad_name, PUBLIC, KEY.sign)
    for bad_body in [b"no final newline", b"ctrl\x01\n", b"\xff\n"]:
        with pytest.raises(CheckpointError):
            sign_note(bad_body, ORIGIN, PUBLIC, KEY.sign)
    with pytest.raises(CheckpointError, match="32 bytes"):
        sign_note(body, ORIGIN, PUBLIC[:31], KEY.sign)


@pytest.mark.parametrize("args", [
    ("", 1, ROOT), ("two\nlines", 1, ROOT), ("ctrl\x07", 1, ROOT), (ORIGIN, -1, ROOT), (ORIGIN, 1 << 64, ROOT),
    (ORIGIN, True, ROOT), (ORIGIN, "1", ROOT), (ORIGIN, 1, ROOT[:31]), (ORIGIN, 1, "x" * 32),
    (ORIGIN, 1, ROOT, ("",)), (ORIGIN, 1, ROOT, ("a\nb",)), (ORIGIN, 1, ROOT, ["list"]),
])
def test_a_checkpoint_that_cannot_be_written_is_refused(args: tuple) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint(*args)


# -- reading ---------------------------------------------------------------------------------

def _resigned(body: bytes) -> bytes:
    return _signed(body)


def _body(origin: str = ORIGIN, size: str = "7", root: str = base64.b64encode(ROOT).decode(),
          rest: str = "") -> bytes:
    return f"{origin}\n{size}\n{root}\n{rest}".encode()


def test_extension_lines_are_read() -> None:
    note = _resigned(_body(rest="first extension\nsecond\n"))
    assert verify_note(note, ORIGIN, KEY.public_key()).extensions == ("first extension", "second")


def _tamper(note: bytes, old: bytes, new: bytes) -> bytes:
    assert note.count(old) >= 1
    return note.replace(old, new, 1)


def test_a_signed_note_refuses_alterations() -> None:
    note = _note(size=20852163)
    root64 = base64.b64encode(ROOT).decode().encode()
    other_root = base64.b64encode(hashlib.sha256(b"other").digest())
    for altered in [
        _tamper(note, b"\n20852163\n", b"\n20852164\n"),
        _tamper(note, root64, other_root),
        _tamper(note, b"example.com/log42\n", b"example.com/log43\n"),
    ]:
        with pytest.raises(CheckpointError, match="does not verify"):
            verify_note(altered, ORIGIN, KEY.public_key())


def test_another_key_with_the_same_name_is_not_this_key() -> None:
    impostor = _signed(Checkpoint(ORIGIN, 5, ROOT).body(), key=OTHER)
    with pytest.raises(CheckpointError, match="no signature by"):
        verify_note(impostor, ORIGIN, KEY.public_key())
    # The impostor's line made to carry this key's ID: then it is this key's, and fails.
    [(name, _, sig)] = signatures(impostor)
    forged = note_text(impostor) + b"\n" + _raw_sig_line(name, key_hash(ORIGIN, PUBLIC), sig)
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_note(forged, ORIGIN, KEY.public_key())


def test_the_wrong_name_finds_no_signature() -> None:
    with pytest.raises(CheckpointError, match="no signature by example.com/other"):
        verify_note(_note(), "example.com/other", KEY.public_key())


@pytest.mark.parametrize("make, message", [
    (lambda n: n.replace(b"\n\n", b"\n"), "no blank line"),
    (lambda n: n.replace(b"\n\n", b"\n\x00\n"), "control character"),
    (lambda n: n + b"garbage\n", "does not start with an em dash"),
    (lambda n: n + b"garbage", "does not end with a newline"),
    (lambda n: n + b"\n", "no signature line"),
    (lambda n: n[:n.index(b"\n\n") + 2], "no signature line"),
    (lambda n: n.replace("\u2014 ".encode(), b"- "), "em dash"),
    (lambda n: n[:-2] + b"!\n", "base64"),
    (lambda n: n[:-2] + b"\n", "base64"),
    (lambda n: n.replace(f"\u2014 {ORIGIN} ".encode(), "\u2014 a+b ".encode()), "key name"),
    (lambda n: n.replace(f"\u2014 {ORIGIN} ".encode(), f"\u2014 {ORIGIN}".encode()), "no signature after"),
    (lambda n: b"\xff" + n, "UTF-8"),
])
def test_malformed_notes_are_refused(make: Callable[[bytes], bytes], message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        verify_note(make(_note()), ORIGIN, KEY.public_key())


@pytest.mark.parametrize("body, message", [
    (_body(size="007"), "leading zeros"),
    (_body(size="00"), "leading zeros"),
    (_body(size="-1"), "leading zeros"),
    (_body(size="+7"), "leading zeros"),
    (_body(size="7 "), "leading zeros"),
    (_body(size="\u0667"), "leading zeros"),  # an Arabic-Indic digit: int() would take it
    (_body(size=str(1 << 64)), "2\\^64-1"),
    (_body(root="not base64!"), "base64"),
    (_body(root=base64.b64encode(ROOT).decode().rstrip("=")), "base64"),
    (_body(root=base64.urlsafe_b64encode(b"\xfb" * 32).decode()), "base64"),
    (_body(root=base64.b64encode(ROOT[:31]).decode()), "31 bytes"),
    (_body(root=base64.b64encode(ROOT + b"\x00").decode()), "33 bytes"),
    (_body(origin=""), "origin"),
    (b"only\n2\n", "at least three lines"),
    (_body(rest="ext\n") + b"\xe2\x80\x83\n", None),  # a Unicode space is a line, not an empty one
])
def test_bodies_against_the_spec(body: bytes, message: str | None) -> None:
    note = _resigned(body)
    if message is None:
        assert verify_note(note, ORIGIN, KEY.public_key()).extensions == ("ext", "\u2003")
        return
    with pytest.raises(CheckpointError, match=message):
        verify_note(note, ORIGIN, KEY.public_key())


def test_non_canonical_base64_is_refused() -> None:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    text = base64.b64encode(ROOT).decode()
    sloppy = text[:-2] + alphabet[alphabet.index(text[-2]) ^ 1] + "="  # the same bytes, a stray trailing bit
    assert sloppy != text and base64.b64decode(sloppy) == ROOT
    with pytest.raises(CheckpointError, match="canonical"):
        parse_checkpoint(_body(root=sloppy))


def test_an_empty_extension_line_is_refused() -> None:
    with pytest.raises(CheckpointError, match="empty extension line"):
        parse_checkpoint(_body(rest="ext\n\n"))
    with pytest.raises(CheckpointError, match="empty extension line"):
        verify_note(_resigned(_body(rest="ext\n\n")), ORIGIN, KEY.public_key())
    assert parse_checkpoint(_body()).size == 7


def test_cosigner_lines_are_tolerated() -> None:
    note = _note()
    witness = Ed25519PrivateKey.from_private_bytes(b"w" * 32)
    witness_public = witness.public_key().public_bytes_raw()
    body = note_text(note)
    line = _raw_sig_line("witness.example/w1", key_hash("witness.example/w1", witness_public), witness.sign(body))
    odd = _raw_sig_line("cosig.example", b"\x00\x00\x00\x01", b"\x04" * 72)  # another algorithm entirely
    cosigned = body + b"\n" + line + note[len(body) + 1:] + odd
    assert verify_note(cosigned, ORIGIN, KEY.public_key()).size == 20852163
    assert [s[0] for s in signatures(cosigned)] == ["witness.example/w1", ORIGIN, "cosig.example"]
    assert verify_note(cosigned, "witness.example/w1", witness.public_key()).origin == ORIGIN


def test_a_failing_line_of_the_known_key_rejects_the_note() -> None:
    note = _note()
    keyhash = key_hash(ORIGIN, PUBLIC)
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_note(note + _raw_sig_line(ORIGIN, keyhash, b"\x00" * 64), ORIGIN, KEY.public_key())
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_note(note + _raw_sig_line(ORIGIN, keyhash, b"\x00" * 10), ORIGIN, KEY.public_key())


def test_limits() -> None:
    note = _note()
    keyhash = b"\x00\x00\x00\x00"
    filler = b"".join(_raw_sig_line(f"w{i}", keyhash, b"s" * 64) for i in range(MAX_SIGNATURES - 1))
    assert verify_note(note + filler, ORIGIN, KEY.public_key()).size == 20852163
    with pytest.raises(CheckpointError, match="more than 100 signature lines"):
        verify_note(note + filler + _raw_sig_line("one-more", keyhash, b"s" * 64), ORIGIN, KEY.public_key())
    big = _signed(_body(rest="x" * (MAX_NOTE - 200) + "\n"))
    assert verify_note(big, ORIGIN, KEY.public_key()).size == 7
    with pytest.raises(CheckpointError, match="larger than"):
        verify_note(big + _raw_sig_line("w", keyhash, b"s" * 64 * 3), ORIGIN, KEY.public_key())
    with pytest.raises(CheckpointError, match="larger than"):
        _signed(_body(rest="x" * MAX_NOTE + "\n"))


def test_a_verifier_key_whose_base64_holds_a_plus_is_read() -> None:
    name, public = parse_vkey("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6")
    assert name == "TEST" and key_hash(name, public.public_bytes_raw()).hex() == "7997405c"


@pytest.mark.parametrize("text", [
    "", "name+c74f20a3", "a b+00000000+AAAA", "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "PeterNeumann+c74f20a3+Apc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW+x",
    "Peter+Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "PeterNeumann+c74f20a3+AhpcvQcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
])
def test_bad_verifier_keys_are_refused(text: str) -> None:
    with pytest.raises(CheckpointError):
        parse_vkey(text)


def test_the_independent_parser_agrees_the_signature_binds_the_body() -> None:
    note = _tamper(_note(size=99), b"\n99\n", b"\n98\n")
    with pytest.raises(InvalidSignature):
        _independent_open(note, ORIGIN, KEY.public_key())
