"""Short-lived file URLs of the Delta Sharing plain view: ``/delta-sharing/files/<token>``.

Stock clients fetch the files a query lists like presigned object-store URLs: without any
Authorization header. So the URL itself carries the grant, bound to one subscriber, one cached
file and an expiry (15 minutes by default):

    token = base64url(payload) "." base64url(HMAC(key, "govshare-file-url/1\\n" + base64url(payload)))
    payload = canonical JSON {"e": expiry (unix seconds), "f": cache file name, "s": subscriber}

The key is the keystore's ``govshare.service`` HMAC key; it never leaves the publisher. The HMAC is
the key's own algorithm (``service_key``; keys.profile.mac_for): HMAC-SHA256 in the standard
profile, HMAC-SM3 in the 国密 one, so a token is checked only under the algorithm of the key, never
one the token names. A token whose MAC does not verify (altered, or made with another key or
algorithm), that has expired, or that does not parse is refused as a whole: ``InvalidFileToken`` says why, for the access log. The payload
is readable by whoever holds the URL (it names the subscriber and the file, never data).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import time
from dataclasses import dataclass, field

from keys.keystore import Keystore
from keys.profile import mac_for

TTL_SECONDS = 15 * 60
MAX_TOKEN_CHARS = 1024
_LABEL = b"govshare-file-url/1\n"
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
# what a cache file name may look like: <dataset>/<stem>.parquet (service.plainview makes them)
FILE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}/[a-z0-9-]{1,80}\.parquet$")


class InvalidFileToken(Exception):
    """A file URL that grants nothing; ``reason`` is safe to log (it holds no token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class MacKey:
    """An HMAC key and its algorithm (HMAC-SHA256 or HMAC-SM3), as the keystore holds it."""

    secret: bytes = field(repr=False)
    algorithm: str = "HMAC-SHA256"


def service_key(keystore: Keystore, name: str) -> MacKey:
    """The active HMAC key ``name`` (the service's file-URL key) with its algorithm."""
    key_id = keystore.active_key_id(name)
    return MacKey(keystore.hmac_key(name), keystore.algorithm(key_id))


@dataclass(frozen=True)
class FileGrant:
    subscriber: str
    file: str  # the cache file name, <dataset>/<stem>.parquet
    expires: int  # unix seconds

    @property
    def dataset(self) -> str:
        return self.file.split("/", 1)[0]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict: only the one canonical encoding of the bytes (no stray padding bits) is accepted."""
    if not _B64URL.fullmatch(text):
        raise InvalidFileToken("the file URL is malformed")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidFileToken("the file URL is malformed") from None
    if _b64(data) != text:
        raise InvalidFileToken("the file URL is malformed")
    return data


def _mac(key: bytes | MacKey, payload_b64: str) -> bytes:
    """The MAC of a token's payload under ``key`` by its algorithm (raw bytes: HMAC-SHA256)."""
    key = key if isinstance(key, MacKey) else MacKey(bytes(key))
    return mac_for(key.algorithm, key.secret, _LABEL + payload_b64.encode("ascii"))


def issue(key: bytes | MacKey, subscriber: str, file: str, now: float | None = None, ttl: int = TTL_SECONDS) -> tuple[str, int]:
    """A token for ``subscriber`` to fetch the cache file ``file``; and its expiry (unix seconds)."""
    if not FILE_NAME.fullmatch(file):
        raise ValueError(f"not a cache file name: {file!r}")
    expires = int(now if now is not None else time.time()) + ttl
    payload = json.dumps({"e": expires, "f": file, "s": subscriber}, sort_keys=True, separators=(",", ":"))
    body = _b64(payload.encode("utf-8"))
    return f"{body}.{_b64(_mac(key, body))}", expires


def check(key: bytes | MacKey, token: str, now: float | None = None) -> FileGrant:
    """What a token grants, or InvalidFileToken: malformed, altered (MAC), or expired."""
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        raise InvalidFileToken("the file URL is malformed")
    body, mac = token.split(".")
    if not hmac.compare_digest(_unb64(mac), _mac(key, body)):
        raise InvalidFileToken("the file URL does not verify (altered, or not made by this service)")
    try:
        doc = json.loads(_unb64(body))
        grant = FileGrant(subscriber=doc["s"], file=doc["f"], expires=doc["e"])
    except (ValueError, KeyError, TypeError):
        raise InvalidFileToken("the file URL is malformed") from None
    if not (isinstance(grant.subscriber, str) and isinstance(grant.file, str) and isinstance(grant.expires, int)
            and FILE_NAME.fullmatch(grant.file)):
        raise InvalidFileToken("the file URL is malformed")
    if (now if now is not None else time.time()) >= grant.expires:
        raise InvalidFileToken("the file URL has expired; query the table again for fresh URLs")
    return grant
