"""The GM (国密) building blocks of keys.gm: published vectors, round trips, refusals, silence.

Where each vector comes from (hex as published; nothing here was computed by the code under test):

- SM4: GB/T 32907-2016 (= GM/T 0002-2012), Appendix A, example 1 (single block).
- SM3: GB/T 32905-2016 (= GM/T 0004-2012), Appendix A.1 ("abc") and A.2 ("abcd" * 16).
- HMAC-SM3: draft-guo-ipsecme-ikev2-using-shangmi-03, Appendix A.5, as quoted by public
  implementations' test suites (the draft's own text could not be read here).
- SM4-GCM: RFC 8998, Appendix A.1; the same values are in pyca/cryptography's
  tests/hazmat/primitives/test_sm4.py and GmSSL's tests/sm4_gcmtest.c.
- SM2, recommended curve sm2p256v1: GM/T 0003.5-2012 / GB/T 32918.5-2017, Annex A (signature of
  "message digest" with ID 1234567812345678, fixed k) and Annex C (encryption of "encryption
  standard", fixed k), as reproduced in OpenSSL's test/sm2_internal_test.c (which serialises the
  Annex C ciphertext as the DER SM2Cipher of GM/T 0009-2012). Z_A and e are the annex's
  intermediate values, as quoted in other implementations' test suites. gmssl-pyx cannot take a fixed k, so
  the published signature is verified rather than reproduced.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import gmssl_pyx
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.errors import ConfigError, IntegrityError
from keys import gm

ROOT = Path(__file__).resolve().parents[2]

# GB/T 32907-2016 Appendix A, example 1
SM4_KEY = bytes.fromhex("0123456789abcdeffedcba9876543210")
SM4_PLAIN = bytes.fromhex("0123456789abcdeffedcba9876543210")
SM4_CIPHER = bytes.fromhex("681edf34d206965e86b3e94f536e4246")

# GB/T 32905-2016 Appendix A.1 and A.2
SM3_ABC = bytes.fromhex("66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0")
SM3_ABCD16 = bytes.fromhex("debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732")

# draft-guo-ipsecme-ikev2-using-shangmi-03 Appendix A.5
HMAC_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
HMAC_DATA = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
HMAC_SM3 = bytes.fromhex("dc813339153491ad81477754eb3df00dbb3cc3e6a69f9cacce737db7e61342ff")

# RFC 8998 Appendix A.1
GCM_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
GCM_IV = bytes.fromhex("00001234567800000000ABCD")
GCM_AAD = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
GCM_PLAIN = bytes.fromhex("AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
                          "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA")
GCM_CIPHER = bytes.fromhex("17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
                           "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D")
GCM_TAG = bytes.fromhex("83DE3541E4C2B58177E065A9BF7B62EC")

# GM/T 0003.5-2012 / GB/T 32918.5-2017 Annex A (signature) and Annex C (encryption), sm2p256v1
SM2_D = bytes.fromhex("3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8")
SM2_PUBLIC = bytes.fromhex("09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
                           "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13")
SM2_ID = b"1234567812345678"
SM2_MESSAGE = b"message digest"
SM2_ZA = bytes.fromhex("B2E14C5C79C6DF5B85F4FE7ED8DB7A262B9DA7E07CCB0EA9F4747B8CCDA8A4F3")
SM2_E = bytes.fromhex("F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640")
SM2_R = 0xF5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3
SM2_S = 0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA
SM2_ANNEX_C_PLAIN = b"encryption standard"
SM2_ANNEX_C_CIPHER = bytes.fromhex(
    "307C"
    "0220" "04EBFC718E8D1798620432268E77FEB6415E2EDE0E073C0F4F640ECD2E149A73"
    "0221" "00E858F9D81E5430A57B36DAAB8F950A3C64E6EE6A63094D99283AFF767E124DF0"
    "0420" "59983C18F809E262923C53AEC295D30383B54E39D609D160AFCB1908D0BD8766"
    "0413" "21886CA989CA9C7D58087307CA93092D651EFA")


def _der_signature(r: int, s: int) -> bytes:
    """DER SEQUENCE { INTEGER r, INTEGER s } (GM/T 0009-2012 SM2Signature)."""
    def integer(value: int) -> bytes:
        raw = value.to_bytes(value.bit_length() // 8 + 1, "big")  # a leading 0 keeps it positive
        return b"\x02" + bytes([len(raw)]) + raw
    body = integer(r) + integer(s)
    return b"\x30" + bytes([len(body)]) + body


@pytest.fixture(scope="module")
def pair() -> tuple[bytes, bytes]:
    return gm.sm2_generate()


# -- published vectors -------------------------------------------------------------------------

def test_sm4_block_matches_gbt_32907_example_1() -> None:
    encryptor = Cipher(algorithms.SM4(SM4_KEY), modes.ECB()).encryptor()
    assert encryptor.update(SM4_PLAIN) + encryptor.finalize() == SM4_CIPHER


def test_sm3_matches_gbt_32905_examples() -> None:
    assert gm.sm3(b"abc") == SM3_ABC
    assert gm.sm3(b"abcd" * 16) == SM3_ABCD16


def test_hmac_sm3_matches_the_published_vector() -> None:
    assert gm.hmac_sm3(HMAC_KEY, HMAC_DATA) == HMAC_SM3


def test_sm4_gcm_matches_rfc_8998_a1() -> None:
    assert gm.sm4_gcm_encrypt(GCM_KEY, GCM_IV, GCM_PLAIN, GCM_AAD) == GCM_CIPHER + GCM_TAG
    assert gm.sm4_gcm_decrypt(GCM_KEY, GCM_IV, GCM_CIPHER + GCM_TAG, GCM_AAD) == GCM_PLAIN
    aead = gm.SM4GCM(GCM_KEY)
    assert aead.encrypt(GCM_IV, GCM_PLAIN, GCM_AAD) == GCM_CIPHER + GCM_TAG
    assert aead.decrypt(GCM_IV, GCM_CIPHER + GCM_TAG, GCM_AAD) == GCM_PLAIN


def test_sm2_z_and_digest_match_gbt_32918_5_annex_a() -> None:
    za = gm.sm2_z(SM2_PUBLIC, SM2_ID)
    assert za == SM2_ZA
    assert gm.sm3(za + SM2_MESSAGE) == SM2_E
    assert gm.sm2_z(b"\x04" + SM2_PUBLIC) == SM2_ZA  # the default ID, the 65-byte encoding


def test_the_published_sm2_signature_verifies() -> None:
    signature = _der_signature(SM2_R, SM2_S)
    assert gm.sm2_verify(SM2_PUBLIC, SM2_MESSAGE, signature, SM2_ID)
    assert gm.sm2_verify(b"\x04" + SM2_PUBLIC, SM2_MESSAGE, signature)
    # the library hashes Z in itself: the same signature is over e = SM3(Z || M)
    assert gmssl_pyx.sm2_verify_sm3_digest(SM2_PUBLIC, SM2_E, signature)
    assert not gm.sm2_verify(SM2_PUBLIC, b"message digesT", signature, SM2_ID)
    assert not gm.sm2_verify(SM2_PUBLIC, SM2_MESSAGE, signature, b"ALICE123@YAHOO.COM")
    assert not gm.sm2_verify(SM2_PUBLIC, SM2_MESSAGE, _der_signature(SM2_R, SM2_S ^ 1), SM2_ID)


def test_the_published_sm2_private_key_signs_for_the_published_public_key() -> None:
    # sm2_sign refuses a public key that is not the private key's, so this ties d to (x, y)
    signature = gm.sm2_sign(SM2_D, SM2_PUBLIC, SM2_MESSAGE, SM2_ID)
    assert gm.sm2_verify(SM2_PUBLIC, SM2_MESSAGE, signature, SM2_ID)


def test_the_published_sm2_ciphertext_decrypts() -> None:
    assert gm.sm2_decrypt(SM2_D, SM2_ANNEX_C_CIPHER) == SM2_ANNEX_C_PLAIN


# -- SM4-GCM: round trips and refusals -----------------------------------------------------------

def test_sm4_gcm_round_trips_a_whole_buffer_and_the_class_is_the_function() -> None:
    key, nonce = gm.SM4GCM.generate_key(), os.urandom(12)
    data = os.urandom(1 << 20) + b"tail"
    sealed = gm.sm4_gcm_encrypt(key, nonce, data, b"aad")
    assert len(sealed) == len(data) + 16
    assert gm.SM4GCM(key).encrypt(nonce, data, b"aad") == sealed
    assert gm.SM4GCM(key).decrypt(nonce, sealed, b"aad") == data
    assert gm.sm4_gcm_decrypt(key, nonce, memoryview(sealed), b"aad") == data
    assert gm.sm4_gcm_encrypt(key, nonce, b"", None) == gm.sm4_gcm_encrypt(key, nonce, b"", b"")


def test_sm4_gcm_and_aes_gcm_share_a_shape() -> None:
    for aead in (gm.SM4GCM(os.urandom(16)), AESGCM(os.urandom(32))):
        nonce = os.urandom(12)
        assert aead.decrypt(nonce, aead.encrypt(nonce, b"row", b"ctx"), b"ctx") == b"row"
        with pytest.raises(InvalidTag):
            aead.decrypt(nonce, aead.encrypt(nonce, b"row", b"ctx"), b"other")


@pytest.mark.parametrize("change", ["ciphertext", "tag", "aad", "nonce", "key", "truncated"])
def test_sm4_gcm_refuses_what_does_not_authenticate(change: str) -> None:
    key, nonce, aad = os.urandom(16), os.urandom(12), b"dataset/1/field"
    sealed = bytearray(gm.sm4_gcm_encrypt(key, nonce, b"110101199003077777", aad))
    if change == "ciphertext":
        sealed[0] ^= 1
    elif change == "tag":
        sealed[-1] ^= 1
    elif change == "aad":
        aad = b"dataset/2/field"
    elif change == "nonce":
        nonce = os.urandom(12)
    elif change == "key":
        key = os.urandom(16)
    else:
        sealed = sealed[:15]
    with pytest.raises(gm.SM4TagMismatch) as caught:
        gm.sm4_gcm_decrypt(key, nonce, bytes(sealed), aad)
    assert isinstance(caught.value, IntegrityError) and isinstance(caught.value, InvalidTag)
    assert "110101199003077777" not in str(caught.value) and key.hex() not in str(caught.value)


def test_sm4_gcm_refuses_wrong_sizes() -> None:
    with pytest.raises(ConfigError, match="16 bytes"):
        gm.SM4GCM(os.urandom(32))
    with pytest.raises(ConfigError, match="nonce is 12 bytes"):
        gm.sm4_gcm_encrypt(os.urandom(16), os.urandom(16), b"x", None)
    with pytest.raises(ConfigError, match="128 bits"):
        gm.SM4GCM.generate_key(256)


# -- SM2: round trips, refusals, silence -----------------------------------------------------------

def test_sm2_key_pair_encodings(pair: tuple[bytes, bytes]) -> None:
    private, public = pair
    assert (len(private), len(public)) == (32, 64)
    assert gmssl_pyx.normalize_sm2_public_key(public) == public  # a point of the curve


def test_sm2_signs_and_verifies_with_z(pair: tuple[bytes, bytes]) -> None:
    private, public = pair
    signature = gm.sm2_sign(private, public, b"manifest", user_id=b"publisher@gov")
    assert signature[0] == 0x30  # DER
    assert gm.sm2_verify(public, b"manifest", signature, user_id=b"publisher@gov")
    assert not gm.sm2_verify(public, b"manifest", signature)  # another ID, another Z
    e = gm.sm3(gm.sm2_z(public, b"publisher@gov") + b"manifest")
    assert gmssl_pyx.sm2_verify_sm3_digest(public, e, signature)


def test_a_failed_sm2_verify_is_false_and_silent(pair: tuple[bytes, bytes], capfd: pytest.CaptureFixture[str]) -> None:
    private, public = pair
    signature = gm.sm2_sign(private, public, b"manifest")
    capfd.readouterr()
    assert not gm.sm2_verify(public, b"manifesT", signature)
    assert not gm.sm2_verify(public, b"manifest", signature[:-1] + bytes([signature[-1] ^ 1]))
    assert not gm.sm2_verify(public, b"manifest", b"\x30\x00")
    assert not gm.sm2_verify(public, b"manifest", signature + b"\x00")
    assert not gm.sm2_verify(public, b"manifest", b"")
    assert capfd.readouterr() == ("", "")
    os.write(2, b"fd 2 is back\n")  # and fd 2 is restored afterwards
    assert capfd.readouterr().err == "fd 2 is back\n"


def test_gmssl_itself_is_noisy_on_a_failed_verify(pair: tuple[bytes, bytes], capfd: pytest.CaptureFixture[str]) -> None:
    """The canary that makes the silence tests mean something: capfd does see the C-level noise."""
    private, public = pair
    signature = gmssl_pyx.sm2_sign(private, public, b"manifest")
    capfd.readouterr()
    assert not gmssl_pyx.sm2_verify(public, b"manifesT", signature)
    assert capfd.readouterr().err != ""


def test_sm2_refuses_malformed_keys_and_a_mismatched_pair(pair: tuple[bytes, bytes]) -> None:
    private, public = pair
    _, other_public = gm.sm2_generate()
    with pytest.raises(ConfigError, match="not the private key's"):
        gm.sm2_sign(private, other_public, b"m")
    with pytest.raises(ConfigError, match="public key"):
        gm.sm2_verify(b"\x01" * 64, b"m", b"\x30\x00")
    with pytest.raises(ConfigError, match="private key"):
        gm.sm2_sign(b"\x00" * 32, public, b"m")
    with pytest.raises(ConfigError, match="user ID"):
        gm.sm2_sign(private, public, b"m", user_id=b"")


def test_sm2_private_keys_run_from_1_to_n_minus_2() -> None:
    """GB/T 32918.1-2016 6.1: d in [1, n-2], n the order of sm2p256v1 (GB/T 32918.5-2017)."""
    n = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
    for d in (1, n - 2):
        with pytest.raises(IntegrityError):  # a valid key; the ciphertext is what fails
            gm.sm2_decrypt(d.to_bytes(32, "big"), SM2_ANNEX_C_CIPHER[:-1] + b"\x00")
    for d in (0, n - 1, n):
        with pytest.raises(ConfigError, match="private key"):
            gm.sm2_decrypt(d.to_bytes(32, "big"), SM2_ANNEX_C_CIPHER)


def test_sm2_encrypts_and_decrypts(pair: tuple[bytes, bytes]) -> None:
    private, public = pair
    ciphertext = gm.sm2_encrypt(public, b"k" * 16)
    assert ciphertext[0] == 0x30 and len(ciphertext) > 64 + 32 + 16  # DER SM2Cipher: C1, C3, C2
    assert gm.sm2_decrypt(private, ciphertext) == b"k" * 16
    with pytest.raises(ConfigError, match="1 to 255 bytes"):
        gm.sm2_encrypt(public, b"x" * 256)


def test_a_failed_sm2_decrypt_raises_integrity_error_silently(pair: tuple[bytes, bytes],
                                                              capfd: pytest.CaptureFixture[str]) -> None:
    private, public = pair
    other_private, _ = gm.sm2_generate()
    ciphertext = bytearray(gm.sm2_encrypt(public, b"k" * 16))
    capfd.readouterr()
    with pytest.raises(IntegrityError, match="does not decrypt"):
        gm.sm2_decrypt(other_private, bytes(ciphertext))
    ciphertext[-1] ^= 1
    with pytest.raises(IntegrityError, match="does not decrypt"):
        gm.sm2_decrypt(private, bytes(ciphertext))
    with pytest.raises(IntegrityError):
        gm.sm2_decrypt(private, b"junk")
    assert capfd.readouterr() == ("", "")


def test_quiet_calls_from_many_threads_restore_fd_2(pair: tuple[bytes, bytes],
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    private, public = pair
    signature = gm.sm2_sign(private, public, b"m")
    capfd.readouterr()
    results: list[bool] = []

    def work() -> None:
        results.extend(gm.sm2_verify(public, b"x", signature) for _ in range(50))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [False] * 200
    os.write(2, b"still here\n")
    assert capfd.readouterr() == ("", "still here\n")


def test_a_closed_fd_2_stays_closed() -> None:
    """With fd 2 closed, GmSSL's noise must not land in whatever file takes fd 2 next."""
    code = ("import os; from keys import gm; private, public = gm.sm2_generate(); os.close(2)\n"
            "assert not gm.sm2_verify(public, b'x', gm.sm2_sign(private, public, b'm'))\n"
            "try:\n    os.fstat(2)\nexcept OSError:\n    print('closed')\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=False)
    assert (run.returncode, run.stdout) == (0, "closed\n")


# -- sealed envelopes ----------------------------------------------------------------------------

INFO = b"govshare-envelope/1\npopulation\n7\nfooter\ndk-00112233445566778899aabbccddeeff\nagent-1"


def test_an_envelope_opens_for_its_key_and_info(pair: tuple[bytes, bytes]) -> None:
    private, public = pair
    data_key = os.urandom(32)
    sealed = gm.seal_sm2(public, data_key, INFO)
    assert gm.open_sm2(private, sealed, INFO) == data_key
    assert gm.seal_sm2(public, data_key, INFO) != sealed  # a fresh SM4 key and nonce each time


@pytest.mark.parametrize("change", ["info", "key", "wrapped", "body", "version", "truncated", "empty"])
def test_an_envelope_refuses_everything_else_silently(pair: tuple[bytes, bytes], change: str,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    private, public = pair
    data_key = os.urandom(32)
    sealed, info = bytearray(gm.seal_sm2(public, data_key, INFO)), INFO
    if change == "info":
        info = INFO.replace(b"\n7\n", b"\n8\n")
    elif change == "key":
        private, _ = gm.sm2_generate()
    elif change == "wrapped":
        sealed[10] ^= 1
    elif change == "body":
        sealed[-20] ^= 1
    elif change == "version":
        sealed[0] = 2
    elif change == "truncated":
        sealed = sealed[:-17]
    else:
        sealed = bytearray()
    capfd.readouterr()
    with pytest.raises(IntegrityError, match="does not open with this key") as caught:
        gm.open_sm2(private, bytes(sealed), info)
    assert data_key.hex() not in str(caught.value)
    assert capfd.readouterr() == ("", "")


def test_sealing_needs_a_key_and_a_public_key(pair: tuple[bytes, bytes]) -> None:
    _, public = pair
    with pytest.raises(ConfigError):
        gm.seal_sm2(public, b"", INFO)
    with pytest.raises(ConfigError, match="public key"):
        gm.seal_sm2(b"\x00" * 64, os.urandom(32), INFO)
