"""The local keystore under GOVSHARE_HOME/keystore: master keys, signing keys, the audit HMAC key.

GB/T 39786-2021 level 3 asks for confidentiality of important data at rest and integrity /
non-repudiation of what is published. This module holds the keys for that; keys/kms.py and
keys/protection.py use them for Parquet modular encryption.

Layout (folder 0700, every file 0600, written atomically: temp file + rename)::

    keys.json                      index: key id, name, version, algorithm, purpose, status, ...
    population.footer.v1.key       32 bytes (AES-256-GCM master key / KEK), wrapped by the root key
    govshare.audit.v1.key          32 bytes (HMAC-SHA256), wrapped by the root key
    publisher.v1.key / .pub        Ed25519 private key (PKCS#8 PEM), wrapped / public key (PEM), plain

Every secret key file is wrapped by the root key (keys.rootkey, GOVSHARE_ROOT_KEY), which lives
outside the home: a copy of the home alone holds no usable key. ``init`` wraps the raw key files
of a home made before root keys, in place.

Key ids are ``<name>.v<version>`` so rotation can add ``.v2`` beside ``.v1``; the algorithm is
stored with each key. The index records the home's crypto profile (keys.profile), fixed at
``init``: ``standard`` (Ed25519, AES-256-GCM, HMAC-SHA256) or ``gm`` (SM2, SM4-GCM with 16-byte
keys, HMAC-SM3; key files wrapped with SM4-GCM by the root key). Signing keys of either
algorithm are handled through keys.sigalg.
Statuses other than 'active' (e.g. 'retired', 'revoked') are a seam for rotation/revocation.

No key material ever appears in messages, exceptions, logs or repr(): only key ids and paths.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from common.errors import ConfigError, GovshareError, IntegrityError
from common.files import fsync_dir
from keys import gm, rootkey, sigalg
from keys.profile import PROFILE_ENV, STANDARD, SYMMETRIC_BYTES, Profile
from keys.profile import profile as named_profile
from keys.rootkey import KeyProvider

Algorithm = Literal["AES-256-GCM", "HMAC-SHA256", "Ed25519", "SM4-GCM", "HMAC-SM3", "SM2"]
Purpose = Literal["master", "hmac", "signing"]
KeyStatus = Literal["active", "retired", "revoked"]

INDEX_FILE = "keys.json"
INDEX_FORMAT = "govshare-keystore/1"

PUBLISHER = "publisher"
STAGING = "govshare.staging"  # encrypts run staging files at rest
QUARANTINE = "govshare.quarantine"  # encrypts quarantined rows at rest
AUDIT = "govshare.audit"  # HMAC key pseudonymising record keys in the access log
SERVICE = "govshare.service"  # HMAC key of the sharing service's short-lived file URLs
SUBSCRIBER_PREFIX = "subscriber."
TRANSITIONS = "transitions"  # publisher key transitions, each signed by the key it replaces
TRANSITION_FORMAT = "govshare-key-transition/1"
INTERNAL_MASTER_KEYS = (STAGING, QUARANTINE)
_RESERVED_PREFIXES = ("govshare.", SUBSCRIBER_PREFIX)

_KEY_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
_SUBSCRIBER_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_CHECK_LABEL = b"govshare/key-check-value/v1"


@dataclass(frozen=True)
class KeyEntry:
    """One key in the index. ``check`` is a key check value (a one-way PRF tag), not material."""

    key_id: str
    name: str
    version: int
    algorithm: Algorithm
    purpose: Purpose
    created: str
    status: KeyStatus
    file: str
    check: str
    public_file: str | None = None

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> KeyEntry:
        return KeyEntry(**{k: doc[k] for k in KeyEntry.__dataclass_fields__ if k in doc})


class Keystore:
    """Keys in a folder (Home.keystore). Reads keys from disk on each use; never caches material."""

    def __init__(self, path: Path | str, root: KeyProvider | None = None) -> None:
        self.path = Path(path)
        self._root_key = root
        self.migrated: list[str] = []  # key ids whose raw files the last init wrapped under the root key

    def root(self) -> KeyProvider:
        """The root key that wraps this keystore's keys: the one given, else GOVSHARE_ROOT_KEY's
        (checked to lie outside the home, the keystore's parent folder)."""
        if self._root_key is None:
            self._root_key = rootkey.configured(self.path.parent)
        return self._root_key

    def __repr__(self) -> str:
        return f"Keystore({str(self.path)!r})"

    __str__ = __repr__

    # -- creation --------------------------------------------------------------------------

    def init(self, master_key_names: Iterable[str], local_subscribers: Iterable[str],
             profile: Profile | None = None) -> list[str]:
        """Create every key that is missing; never replace one. Returns the key ids created.
        ``profile`` (None: the home's, or standard for a new one) must be the home's profile: a
        home never changes profile in place (ConfigError naming GOVSHARE_CRYPTO_PROFILE)."""
        masters, subscribers = list(dict.fromkeys(master_key_names)), list(dict.fromkeys(local_subscribers))
        _check_names(masters, subscribers)
        wanted: list[tuple[str, Purpose]] = [(PUBLISHER, "signing")]
        wanted += [(n, "master") for n in [*masters, *INTERNAL_MASTER_KEYS]]
        wanted += [(AUDIT, "hmac"), (SERVICE, "hmac")]
        wanted += [(SUBSCRIBER_PREFIX + s, "signing") for s in subscribers]
        root = self.root()
        root.create()
        self._make_folder()
        created: list[str] = []
        with self._lock():
            exists = (self.path / INDEX_FILE).exists()
            entries = self._read_index() if exists else {}
            home_profile = self.profile if exists else (profile or STANDARD)
            if profile is not None and profile != home_profile:
                raise ConfigError(f"{PROFILE_ENV}={profile.name}: keystore {self.path} was made in the "
                                  f"{home_profile.name!r} crypto profile, and a home never changes profile in place "
                                  f"(its keys, signatures and published versions are {home_profile.name}): unset "
                                  f"{PROFILE_ENV}, or make a new home for the {profile.name!r} profile")
            self._new_profile = home_profile
            self._check_root(entries.values())
            self.migrated = self._wrap_raw_files(entries.values())
            have = {e.name for e in entries.values()}
            before = set(self.path.iterdir())
            try:
                for name, purpose in wanted:
                    if name not in have:
                        entry = self._create_key(name, purpose)
                        entries[entry.key_id] = entry
                        created.append(entry.key_id)
                if created or not exists:
                    self._write_index(entries)
            except BaseException:
                # keys not (yet) listed were never used: drop them, so that the retry (after a full
                # disk is freed) creates them afresh instead of refusing to overwrite them
                self._drop_unlisted(before)
                raise
        return created

    def rotate_root(self) -> tuple[str, str, int]:
        """Wrap every key file under a new root key and destroy the old one. A file root key: the
        new key is made beside it (``<file>.next``) and replaces the old file at the end. A PKCS#11
        root key: a new key version is generated inside the token (``govshare-root.vN``, never
        extractable) and the older ones are destroyed at the end. Each key file is re-wrapped in
        place (atomically, one by one); interrupted, the files already re-wrapped open with the new
        key, the others with the old, and running it again finishes the same rotation.
        Returns (old root id, new root id, files re-wrapped)."""
        root = self.root()
        begin, finish = getattr(root, "rotation", None), getattr(root, "finish_rotation", None)
        if begin is None or finish is None:
            raise ConfigError(f"the root key {root.root_id} comes from a KeyProvider that cannot rotate: rotate it "
                              "with its own tools")
        with self._lock():
            entries = self._read_index()
            old_id = getattr(root, "wrapping_id", root.root_id)
            following = begin()
            new_id = getattr(following, "wrapping_id", following.root_id)
            done = 0
            for entry in entries.values():
                path = self.path / entry.file
                try:
                    content = path.read_bytes()
                except FileNotFoundError:
                    continue
                if not rootkey.is_wrapped(content):
                    raise ConfigError(f"key file {path} is not wrapped: run 'govshare init' first")
                if rootkey.wrapped_by(content)[0] == new_id:
                    continue
                aad = _aad(entry.key_id, entry.file)
                plain = rootkey.open_file(root, content, aad, f"key file {path}", self._wrapping())
                tmp = self._write_temp(rootkey.seal_file(following, plain, aad, self._wrapping()))
                try:
                    os.replace(tmp, path)
                finally:
                    tmp.unlink(missing_ok=True)
                done += 1
            fsync_dir(self.path)
            finish(following)  # the old root key is gone: nothing it wrapped is left
        return old_id, new_id, done

    def _check_root(self, entries: Iterable[KeyEntry]) -> None:
        """Refuse (exit 3) a keystore whose key files another root key wrapped: init must not add
        keys under a root the existing ones do not open with."""
        root_id = self.root().root_id
        for entry in entries:
            try:
                head = (self.path / entry.file).read_bytes().partition(b"\n")[0]
            except FileNotFoundError:
                continue
            named = rootkey.wrapped_by(head)[0]
            finder = getattr(self.root(), "provider_for", None)
            if rootkey.is_wrapped(head) and named != root_id and (finder is None or finder(named) is None):
                raise IntegrityError(f"keystore {self.path}: key {entry.key_id} is wrapped by root key "
                                     f"{named}, not by {root_id} that "
                                     f"{rootkey.ROOT_KEY_ENV} names: set {rootkey.ROOT_KEY_ENV} to the home's root key")

    def _wrap_raw_files(self, entries: Iterable[KeyEntry]) -> list[str]:
        """Wrap the key files of a home made before root keys (raw bytes, raw PEM) under the root
        key, in place (each file replaced atomically by its wrapped form); the key ids wrapped."""
        wrapped = []
        for entry in entries:
            path = self.path / entry.file
            try:
                content = path.read_bytes()
            except FileNotFoundError:
                continue  # reported when the key is used
            if rootkey.is_wrapped(content):
                continue
            tmp = self._write_temp(rootkey.seal_file(self.root(), content, _aad(entry.key_id, entry.file),
                                                     self._wrapping()))
            try:
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            wrapped.append(entry.key_id)
        if wrapped:
            fsync_dir(self.path)
        return wrapped

    def rotate(self, name: str) -> tuple[str, str]:
        """A new version of master key (or service HMAC key) ``name``; the old one is retired: it
        stays in the keystore and still opens what it protected, new data uses the new one.
        Returns (old key id, new key id)."""
        if name == AUDIT:
            raise ConfigError(f"{AUDIT} keys the pseudonyms (_key_ref) every version, the state index, disputes and "
                              "quarantine are indexed by; a new one would make every record a different one, so it "
                              "is not rotated")
        if name == PUBLISHER:
            raise ConfigError(f"{name} is the publisher's signing key, which agents pin: rotate it with "
                              "'govshare keys rotate --publisher', which announces the new key to them")
        if name.startswith(SUBSCRIBER_PREFIX):
            raise ConfigError(f"{name} is a subscriber's signing key; it is not rotated by the bureau")
        with self._lock():
            entries = self._read_index()
            mine = [e for e in entries.values() if e.name == name]
            active = [e for e in mine if e.status == "active"]
            if not active:
                known = sorted({e.name for e in entries.values() if e.purpose in ("master", "hmac") and e.name != AUDIT})
                raise ConfigError(f"no active key named {name!r} in keystore {self.path}; keys that rotate: "
                                  f"{', '.join(known)}")
            old = max(active, key=lambda e: e.version)
            if old.purpose not in ("master", "hmac"):
                raise ConfigError(f"key {old.key_id} is a {old.purpose} key; only master and HMAC keys rotate here")
            version = max(e.version for e in mine) + 1
            before = set(self.path.iterdir())
            try:
                entry = self._create_key(name, old.purpose, version)
                entries[entry.key_id] = entry
                for e in active:
                    entries[e.key_id] = KeyEntry(**{**asdict(e), "status": "retired"})
                self._write_index(entries)
            except BaseException:
                self._drop_unlisted(before)
                raise
        return old.key_id, entry.key_id

    def rotate_publisher(self) -> tuple[str, str]:
        """A new publisher signing key, announced by a transition record signed with the old one
        (``transitions/<new key id>.json``); the old key is retired (it still verifies what it
        signed). Manifests published from now on carry the transition (sharing.publish), so pinned
        agents move to the new key by themselves. Returns (old key id, new key id)."""
        with self._lock():
            entries = self._read_index()
            active = [e for e in entries.values() if e.name == PUBLISHER and e.status == "active"]
            if len(active) != 1:
                raise ConfigError(f"keystore {self.path} has {len(active)} active publisher keys; expected one")
            old = active[0]
            version = max(e.version for e in entries.values() if e.name == PUBLISHER) + 1
            before = set(self.path.iterdir())
            folder = self.path / TRANSITIONS
            announcement = folder / f"{PUBLISHER}.v{version}.json"
            try:
                entry = self._create_key(PUBLISHER, "signing", version)
                doc = {"format": TRANSITION_FORMAT, "from": old.key_id, "to": entry.key_id,
                       "algorithm": entry.algorithm, "public_pem": self._public_key(entry).pem().decode("ascii"),
                       "created": datetime.now(UTC).isoformat(timespec="seconds")}
                record = {"transition": doc, "signature": self._sign(old.key_id, _canonical(doc), PUBLISHER)}
                folder.mkdir(mode=0o700, exist_ok=True)
                tmp = self._write_temp((json.dumps(record, indent=2) + "\n").encode())
                os.replace(tmp, announcement)
                entries[entry.key_id] = entry
                entries[old.key_id] = KeyEntry(**{**asdict(old), "status": "retired"})
                self._write_index(entries)
            except BaseException:
                announcement.unlink(missing_ok=True)
                self._drop_unlisted(before)
                raise
        return old.key_id, entry.key_id

    def transitions(self, from_key_id: str, to_key_id: str) -> list[dict[str, Any]]:
        """The transition records from publisher key ``from_key_id`` to ``to_key_id``, oldest first
        ([] when they are the same); IntegrityError when no chain of transitions links them."""
        chain: list[dict[str, Any]] = []
        current = to_key_id
        while current != from_key_id:
            path = self.path / TRANSITIONS / f"{current}.json"
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                doc = record["transition"]
            except (FileNotFoundError, ValueError, KeyError, TypeError):
                raise IntegrityError(f"keystore {self.path}: no transition record leads from publisher key "
                                     f"{from_key_id} to {to_key_id} (missing or unreadable {path}); agents would "
                                     "refuse the new key, so nothing is signed with it") from None
            if doc.get("to") != current or len(chain) > 1000:
                raise IntegrityError(f"keystore {self.path}: transition record {path} is not the announcement of {current}")
            chain.append(record)
            current = doc.get("from")
        return list(reversed(chain))

    def publisher_keys(self) -> list[dict[str, str]]:
        """Every publisher public key (retired ones too), oldest first: what agents pin at enrolment."""
        mine = sorted((e for e in self._read_index().values() if e.name == PUBLISHER), key=lambda e: e.version)
        return [{"key_id": e.key_id, "algorithm": e.algorithm, "status": e.status,
                 "public_pem": self._public_key(e).pem().decode("ascii")} for e in mine]

    def _drop_unlisted(self, before: set[Path]) -> None:
        """Remove the files made since ``before`` that the index (if it is readable) does not list."""
        try:
            entries = self._read_index().values() if (self.path / INDEX_FILE).exists() else ()
        except (OSError, GovshareError):
            return  # cannot tell which keys are listed: keep every file
        listed = {self.path / f for e in entries for f in (e.file, e.public_file) if f}
        for path in set(self.path.iterdir()) - before - listed:
            if path.is_file():
                path.unlink(missing_ok=True)

    def _make_folder(self) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        fd = os.open(self.path / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _create_key(self, name: str, purpose: Purpose, version: int = 1) -> KeyEntry:
        key_id = f"{name}.v{version}"
        created = datetime.now(UTC).isoformat(timespec="seconds")
        common = dict(key_id=key_id, name=name, version=version, purpose=purpose, created=created, status="active")
        suite = self._suite()
        if purpose == "signing":
            private = sigalg.generate(suite.signing)
            self._write_new(f"{key_id}.key", self._sealed(key_id, f"{key_id}.key", private.pem()))
            self._write_new(f"{key_id}.pub", private.public.pem())
            check = _public_check(private.public)
            return KeyEntry(**common, algorithm=suite.signing, file=f"{key_id}.key", public_file=f"{key_id}.pub",
                            check=check)
        algorithm: Algorithm = suite.master if purpose == "master" else suite.hmac
        secret = secrets.token_bytes(SYMMETRIC_BYTES[algorithm])
        self._write_new(f"{key_id}.key", self._sealed(key_id, f"{key_id}.key", secret))
        return KeyEntry(**common, algorithm=algorithm, file=f"{key_id}.key", check=_symmetric_check(secret, algorithm))

    @property
    def profile(self) -> Profile:
        """The home's crypto profile, as the index records it (standard for indexes from before)."""
        index = self.path / INDEX_FILE
        try:
            doc = json.loads(index.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"keystore {self.path} is not initialised (no {INDEX_FILE}): run 'govshare init' first") from None
        except (OSError, ValueError) as exc:
            raise IntegrityError(f"keystore index {index} cannot be read ({exc.__class__.__name__}): restore the "
                                 "keystore from backup") from None
        name = doc.get("profile", STANDARD.name) if isinstance(doc, dict) else None
        try:
            return named_profile(name)
        except ConfigError:
            raise IntegrityError(f"keystore index {index} names an unknown crypto profile: restore the keystore "
                                 "from backup") from None

    def _suite(self) -> Profile:
        made = getattr(self, "_new_profile", None)
        return made if made is not None else self.profile

    def _wrapping(self) -> str:
        return rootkey.SM4 if self._suite().master == "SM4-GCM" else rootkey.AES

    def _sealed(self, key_id: str, file_name: str, material: bytes) -> bytes:
        return rootkey.seal_file(self.root(), material, _aad(key_id, file_name), self._wrapping())

    def _write_new(self, file_name: str, content: bytes) -> None:
        """Write atomically and refuse to replace: a key file that exists is never overwritten."""
        target = self.path / file_name
        tmp = self._write_temp(content)
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise ConfigError(
                f"key file {target} exists but is not listed in {self.path / INDEX_FILE}; "
                "govshare never overwrites a key: move the file aside (keep it until you know no data needs it) "
                "and run 'govshare init' again"
            ) from None
        finally:
            os.unlink(tmp)
        fsync_dir(self.path)

    def _write_temp(self, content: bytes) -> Path:
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".tmp-")  # mkstemp creates it 0600
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(content)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            os.unlink(tmp)  # a full disk leaves no half-written key material behind
            raise
        return Path(tmp)

    def _write_index(self, entries: Mapping[str, KeyEntry]) -> None:
        doc = {"format": INDEX_FORMAT, "profile": self._suite().name,
               "keys": [asdict(entries[k]) for k in sorted(entries)]}
        tmp = self._write_temp((json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode())
        try:
            os.replace(tmp, self.path / INDEX_FILE)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(self.path)

    # -- the index -------------------------------------------------------------------------

    def entries(self) -> dict[str, KeyEntry]:
        """Every key in the index by key id (metadata only)."""
        return self._read_index()

    def _read_index(self) -> dict[str, KeyEntry]:
        index = self.path / INDEX_FILE
        if not index.is_file():
            raise ConfigError(f"keystore {self.path} is not initialised (no {INDEX_FILE}): run 'govshare init' first")
        try:
            doc = json.loads(index.read_text(encoding="utf-8"))
            if doc.get("format") != INDEX_FORMAT:
                raise ValueError(f"format {doc.get('format')!r}")
            return {e.key_id: e for e in map(KeyEntry.from_doc, doc["keys"])}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IntegrityError(
                f"keystore index {index} cannot be read ({exc.__class__.__name__}): restore the keystore from backup"
            ) from None

    def _entry(self, key_id: str) -> KeyEntry:
        entry = self._read_index().get(key_id)
        if entry is None:
            raise ConfigError(f"key {key_id!r} is not in keystore {self.path}: run 'govshare init' to create missing keys")
        return entry

    def active_key_id(self, name: str) -> str:
        """The key id new data is protected with: the highest active version of ``name``."""
        active = [e for e in self._read_index().values() if e.name == name and e.status == "active"]
        if not active:
            raise ConfigError(f"no active key named {name!r} in keystore {self.path}: run 'govshare init'")
        return max(active, key=lambda e: e.version).key_id

    def algorithm(self, key_id: str) -> Algorithm:
        return self._entry(key_id).algorithm

    # -- symmetric keys --------------------------------------------------------------------

    def master_key(self, key_id: str) -> bytes:
        """A master key (KEK: AES-256, or SM4 in the gm profile; see algorithm()) by key id, checked against its check value (a retired key
        still opens what it protected; only new data needs the active one)."""
        return self._symmetric(self._require(key_id, "master"))

    def hmac_key(self, name: str = AUDIT) -> bytes:
        """The active HMAC key of ``name`` (default 'govshare.audit'); see active_key_id for its id."""
        return self._symmetric(self._require(self.active_key_id(name), "hmac"))

    def hmac_algorithm(self, name: str = AUDIT) -> Algorithm:
        """The algorithm of hmac_key(name): HMAC-SHA256, or HMAC-SM3 in a gm home (keys.pseudonyms' ``algorithm``)."""
        return self._require(self.active_key_id(name), "hmac").algorithm

    def _require(self, key_id: str, purpose: Purpose) -> KeyEntry:
        entry = self._entry(key_id)
        if entry.purpose != purpose:
            raise ConfigError(f"key {key_id!r} is a {entry.algorithm} {entry.purpose} key, not a {purpose} key")
        return entry

    def _symmetric(self, entry: KeyEntry) -> bytes:
        secret = self._read_key_file(entry.file, entry.key_id)
        if (len(secret) != SYMMETRIC_BYTES.get(entry.algorithm)
                or not hmac.compare_digest(_symmetric_check(secret, entry.algorithm), entry.check)):
            raise IntegrityError(_altered(entry.key_id, self.path / entry.file))
        return secret

    def _read_key_file(self, file_name: str, key_id: str) -> bytes:
        path = self.path / file_name
        try:
            mode = path.stat().st_mode
            if mode & 0o077:
                raise ConfigError(f"key file {path} of key {key_id!r} is readable by others: chmod 600 it")
            content = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"key file of {key_id!r} is missing from keystore {self.path}: restore it from backup "
                              "(or, for a new install, run 'govshare init')") from None
        if file_name.endswith(".pub"):
            return content  # public keys are not secret
        if not rootkey.is_wrapped(content):
            if len(content) in (16, 32) or content.startswith(b"-----BEGIN "):
                raise ConfigError(f"key file {path} of key {key_id!r} is not wrapped by a root key (a home made "
                                  f"before root keys): run 'govshare init' with {rootkey.ROOT_KEY_ENV} set to wrap it")
            raise IntegrityError(_altered(key_id, path))
        return rootkey.open_file(self.root(), content, _aad(key_id, file_name), f"key file {path}", self._wrapping())

    # -- signatures ------------------------------------------------------------------------

    def signing_key_id(self) -> str:
        return self.active_key_id(PUBLISHER)

    def sign(self, data: bytes, key_id: str | None = None) -> dict[str, str]:
        """A detached publisher signature, JSON-ready: algorithm, key_id, signature (base64)."""
        return self._sign(key_id or self.signing_key_id(), data, PUBLISHER)

    def verify(self, data: bytes, signature_doc: Mapping[str, Any]) -> None:
        """Check a publisher signature; IntegrityError on any mismatch or unknown key id."""
        self._verify(data, signature_doc, lambda name: name == PUBLISHER, "publisher")

    def subscriber_key_id(self, subscriber_id: str) -> str:
        return self.active_key_id(SUBSCRIBER_PREFIX + subscriber_id)

    def sign_as_subscriber(self, subscriber_id: str, data: bytes) -> dict[str, str]:
        """Sign on behalf of a 'keys: local' subscriber (govshare holds its key pair)."""
        return self._sign(self.subscriber_key_id(subscriber_id), data, SUBSCRIBER_PREFIX + subscriber_id)

    def verify_subscriber(self, data: bytes, signature_doc: Mapping[str, Any]) -> str:
        """Check a subscriber signature; returns the subscriber id it belongs to."""
        entry = self._verify(data, signature_doc, lambda name: name.startswith(SUBSCRIBER_PREFIX), "subscriber")
        return entry.name.removeprefix(SUBSCRIBER_PREFIX)

    def public_key_pem(self, key_id: str) -> bytes:
        entry = self._require(key_id, "signing")
        return self._public_key(entry).pem()

    def public_key(self, key_id: str) -> sigalg.PublicKey:
        return self._public_key(self._require(key_id, "signing"))

    def _sign(self, key_id: str, data: bytes, owner: str) -> dict[str, str]:
        entry = self._require(key_id, "signing")
        if entry.name != owner or entry.status != "active":
            raise ConfigError(f"key {key_id!r} is not an active signing key of {owner!r}")
        private = self._private_key(entry)
        signature = private.sign(data)
        return {"algorithm": entry.algorithm, "key_id": key_id, "signature": base64.b64encode(signature).decode()}

    def _verify(self, data: bytes, doc: Mapping[str, Any], owner_ok: Callable[[str], bool], role: str) -> KeyEntry:
        key_id = doc.get("key_id") if isinstance(doc, Mapping) else None
        entry = self._read_index().get(key_id) if isinstance(key_id, str) else None
        if entry is None or entry.purpose != "signing" or not owner_ok(entry.name):
            raise IntegrityError(f"signature names key {key_id!r}, which is not a {role} signing key in keystore {self.path}")
        if doc.get("algorithm") != entry.algorithm:
            raise IntegrityError(f"signature algorithm {doc.get('algorithm')!r} does not match key {key_id!r} ({entry.algorithm})")
        signature = sigalg.signature_bytes(doc.get("signature", ""))
        if signature is None or not self._public_key(entry).verify(signature, data):
            raise IntegrityError(f"signature by key {key_id!r} does not match the data: it was altered or signed by another key") from None
        return entry

    def _private_key(self, entry: KeyEntry) -> sigalg.PrivateKey:
        raw = self._read_key_file(entry.file, entry.key_id)
        try:
            private = sigalg.load_private_pem(raw, f"key {entry.key_id}")
        except IntegrityError:
            raise IntegrityError(_altered(entry.key_id, self.path / entry.file)) from None
        if private.algorithm != entry.algorithm or _public_check(private.public) != entry.check:
            raise IntegrityError(_altered(entry.key_id, self.path / entry.file))
        return private

    def _public_key(self, entry: KeyEntry) -> sigalg.PublicKey:
        file_name = entry.public_file or f"{entry.key_id}.pub"
        try:
            public = sigalg.load_public_pem(self._read_key_file(file_name, entry.key_id), f"key {entry.key_id}")
        except IntegrityError:
            raise IntegrityError(_altered(entry.key_id, self.path / file_name)) from None
        if public.algorithm != entry.algorithm or _public_check(public) != entry.check:
            raise IntegrityError(_altered(entry.key_id, self.path / file_name))
        return public


def _check_names(masters: list[str], subscribers: list[str]) -> None:
    problems = [f"key name {n!r} must look like 'population.footer'" for n in masters if not _KEY_NAME.match(n)]
    problems += [f"key name {n!r} is reserved for govshare" for n in masters
                 if n == PUBLISHER or n.startswith(_RESERVED_PREFIXES)]
    problems += [f"subscriber id {s!r} is not a valid subscriber id" for s in subscribers if not _SUBSCRIBER_ID.match(s)]
    if problems:
        raise ConfigError("cannot create the keystore", problems=problems)


def _symmetric_check(secret: bytes, algorithm: str = "AES-256-GCM") -> str:
    """A key check value: HMAC-SHA256 (HMAC-SM3 for 国密 keys) of a fixed label, 8 bytes."""
    if algorithm in ("SM4-GCM", "HMAC-SM3"):
        return gm.hmac_sm3(secret, _CHECK_LABEL).hex()[:16]
    return hmac.new(secret, _CHECK_LABEL, hashlib.sha256).hexdigest()[:16]


def _public_check(public: sigalg.PublicKey) -> str:
    digest = gm.sm3(public.raw) if public.algorithm == "SM2" else hashlib.sha256(public.raw).digest()
    return digest.hex()[:16]


def _canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _aad(key_id: str, file_name: str) -> bytes:
    """What a wrapped key file is bound to: its key id and file name (a file moved to another key
    does not unwrap)."""
    return f"govshare-key/1\n{key_id}\n{file_name}".encode()


def _altered(key_id: str, path: Path) -> str:
    return (f"key {key_id!r} in {path} does not match its check value in {INDEX_FILE}: "
            "the keystore was altered or corrupted; restore it from backup")

