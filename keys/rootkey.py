"""The root key: what wraps every key the keystore stores, kept outside GOVSHARE_HOME.

``GOVSHARE_ROOT_KEY`` names it:

- ``file:PATH``: 32 random bytes in a file (0600) outside GOVSHARE_HOME; ``govshare init``
  creates it when it does not exist yet. A path inside the home is refused (a copy of the home
  would carry its own root key).
- ``pkcs11:token=LABEL``: an AES-256 key labelled ``govshare-root`` inside a PKCS#11 token
  (an HSM; SoftHSM2 in the tests) through python-pkcs11, never extractable; the PIN comes from
  ``GOVSHARE_PKCS11_PIN``, the module from ``GOVSHARE_PKCS11_MODULE`` (default: Debian's
  SoftHSM2, /usr/lib/softhsm/libsofthsm2.so). ``govshare init`` generates the key in the token
  when it is missing. ``govshare keys rotate --root`` generates ``govshare-root.vN`` in the token,
  re-wraps every key file under it and destroys the older versions.

Both wrap with AES-256-GCM (12-byte random nonce, 128-bit tag, AAD naming the wrapped key), in
the HSM's case inside the token. A home in the 国密 profile (keys.profile, ``gm``) wraps with
SM4-GCM instead: a file root key then wraps under a 16-byte SM4 key derived from it (HKDF over
SM3, info ``govshare-root-key/SM4-GCM/1``); a PKCS#11 root key refuses, because neither SoftHSM2
nor python-pkcs11 has an SM4 mechanism (a 密码机 with SM4 comes in through ``KeyProvider``). A
wrapped key file is::

    govshare-wrapped-key/1 <root id>[ alg=SM4-GCM]\\n<base64(nonce || ciphertext || tag)>\\n

``KeyProvider`` is the seam for a bureau's KMS: anything with ``root_id``, ``wrap`` and
``unwrap`` can stand in.

Without the variable, anything that needs a key stops (exit 2) saying so. The root key is never
logged, printed or put in a message: only its id (the file's path or the token label).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import threading
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from common.errors import ConfigError, IntegrityError, TemporaryFailure
from keys.gm import SM4_KEY_BYTES, SM4GCM

ROOT_KEY_ENV = "GOVSHARE_ROOT_KEY"
PIN_ENV = "GOVSHARE_PKCS11_PIN"
MODULE_ENV = "GOVSHARE_PKCS11_MODULE"
DEFAULT_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
HSM_KEY_LABEL = "govshare-root"
MAGIC = b"govshare-wrapped-key/1 "
NONCE = 12
KEY_BYTES = 32
AES = "AES-256-GCM"
SM4 = "SM4-GCM"
_ALGORITHM_TAG = b" alg="
_SM4_INFO = b"govshare-root-key/SM4-GCM/1"


class KeyProvider(Protocol):
    """What wraps and unwraps stored keys (a file root key, an HSM, a bureau's KMS)."""

    root_id: str

    def wrap(self, plaintext: bytes, aad: bytes, algorithm: str = AES) -> bytes:
        """nonce || ciphertext || tag of ``plaintext`` under the root key, bound to ``aad``."""

    def unwrap(self, blob: bytes, aad: bytes, algorithm: str = AES) -> bytes:
        """The plaintext; IntegrityError when ``blob`` was altered or wrapped by another root."""


def _wrong_root(root_id: str) -> IntegrityError:
    return IntegrityError(f"a stored key does not unwrap under the root key {root_id}: the key file was altered, or "
                          f"{ROOT_KEY_ENV} names another root key than the one the home was made with")


class FileRootKey:
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def root_id(self) -> str:
        """``file:`` and a check value of the key (not the path: the file may move)."""
        return "file:" + hmac.new(self._key(), b"govshare-root-key-id/1", hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"FileRootKey({self.path})"

    def _key(self) -> bytes:
        try:
            mode = self.path.stat().st_mode
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"{ROOT_KEY_ENV}: the root key file {self.path} does not exist: restore it, or run "
                              "'govshare init' for a new home") from None
        except OSError as exc:
            raise ConfigError(f"{ROOT_KEY_ENV}: cannot read the root key file {self.path} ({exc.strerror})") from None
        if mode & 0o077:
            raise ConfigError(f"{ROOT_KEY_ENV}: the root key file {self.path} is readable by others: chmod 600 it")
        if len(raw) != KEY_BYTES:
            raise ConfigError(f"{ROOT_KEY_ENV}: {self.path} is not a root key file (32 bytes)")
        return raw

    def create(self) -> bool:
        """Make the file (0600) when it does not exist; True when made."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            self._key()
            return False
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(KEY_BYTES))
            out.flush()
            os.fsync(out.fileno())
        return True

    def _aead(self, algorithm: str) -> AESGCM | SM4GCM:
        if algorithm == AES:
            return AESGCM(self._key())
        if algorithm == SM4:
            return SM4GCM(HKDF(algorithm=hashes.SM3(), length=SM4_KEY_BYTES, salt=None, info=_SM4_INFO).derive(self._key()))
        raise ConfigError(f"root keys wrap with {AES} or {SM4}, not {algorithm}")

    def wrap(self, plaintext: bytes, aad: bytes, algorithm: str = AES) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._aead(algorithm).encrypt(nonce, bytes(plaintext), aad)

    def unwrap(self, blob: bytes, aad: bytes, algorithm: str = AES) -> bytes:
        try:
            return self._aead(algorithm).decrypt(blob[:NONCE], blob[NONCE:], aad)
        except (InvalidTag, ValueError):
            raise _wrong_root(self.root_id) from None

    @property
    def next_path(self) -> Path:
        """Where a rotation keeps the new root key until every key file is wrapped by it."""
        return self.path.with_name(self.path.name + ".next")

    def rotation(self) -> FileRootKey:
        """The key a rotation wraps under: ``next_path``, made now or left by an interrupted one."""
        following = FileRootKey(self.next_path)
        following.create()
        return following

    def finish_rotation(self, following: KeyProvider) -> None:
        """The new key replaces the old file: nothing the old one wrapped is left."""
        assert isinstance(following, FileRootKey)
        os.replace(following.path, self.path)

    def provider_for(self, root_id: str) -> KeyProvider | None:
        """This root key, or the one a rotation in progress made (``next_path``), by root id."""
        if root_id == self.root_id:
            return self
        if self.next_path.is_file():
            following = FileRootKey(self.next_path)
            if following.root_id == root_id:
                return following
        return None


class Pkcs11RootKey:
    """An AES key in a PKCS#11 token; wrapping and unwrapping happen inside the token.

    The token holds one key per version: ``govshare-root`` (version 1) and ``govshare-root.vN``
    after rotations. ``root_id`` names the token (what GOVSHARE_ROOT_KEY names); a wrapped file
    names the key version that wrapped it (``pkcs11:token=LABEL`` for version 1,
    ``pkcs11:token=LABEL;key=govshare-root.vN`` after), and new files are wrapped by the newest.
    """

    def __init__(self, token_label: str, pin: str, module: str, key_label: str | None = None,
                 parent: Pkcs11RootKey | None = None) -> None:
        self.token_label = token_label
        self.root_id = f"pkcs11:token={token_label}"
        self.key_label = key_label  # None: the newest govshare-root key in the token
        self._pin = pin
        self._module = module
        self._parent = parent  # another key version of the same token: its session (one login per token)
        self._lock = parent._lock if parent is not None else threading.RLock()
        self._session = None
        self._aes = None

    def __repr__(self) -> str:
        return f"Pkcs11RootKey({self.root_id})"

    def _session_open(self):  # noqa: ANN202 - a pkcs11 Session
        import pkcs11

        if self._parent is not None:
            return self._parent._session_open()
        if self._session is not None:
            return self._session
        if not Path(self._module).is_file():
            raise ConfigError(f"{MODULE_ENV}: the PKCS#11 module {self._module} does not exist (install the HSM's "
                              "library, or Debian's softhsm2)")
        try:
            lib = pkcs11.lib(self._module)
            token = lib.get_token(token_label=self.token_label)
        except pkcs11.exceptions.NoSuchToken:
            raise ConfigError(f"{ROOT_KEY_ENV}: no PKCS#11 token labelled {self.token_label!r} in {self._module}") from None
        except pkcs11.exceptions.PKCS11Error as exc:
            raise TemporaryFailure(f"{ROOT_KEY_ENV}: the PKCS#11 module {self._module} fails ({type(exc).__name__})") from None
        try:
            self._session = token.open(user_pin=self._pin, rw=True)
        except pkcs11.exceptions.PinIncorrect:
            raise ConfigError(f"{PIN_ENV}: the PIN of token {self.token_label!r} is incorrect") from None
        except pkcs11.exceptions.PKCS11Error as exc:
            raise TemporaryFailure(f"{ROOT_KEY_ENV}: cannot open a session on token {self.token_label!r} "
                                   f"({type(exc).__name__})") from None
        return self._session

    def key_versions(self) -> dict[int, str]:
        """The govshare root keys in the token: version -> key label."""
        import pkcs11
        from pkcs11 import Attribute, KeyType, ObjectClass

        session = self._session_open()
        found: dict[int, str] = {}
        for obj in session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES}):
            try:
                label = obj[Attribute.LABEL]
            except pkcs11.exceptions.PKCS11Error:
                continue
            version = _hsm_key_version(label)
            if version is not None:
                found[version] = label
        return found

    def _open(self, create: bool = False):  # noqa: ANN202 - a pkcs11 SecretKey
        import pkcs11
        from pkcs11 import KeyType

        if self._aes is not None:
            return self._aes
        session = self._session_open()
        label = self.key_label
        if label is None:
            versions = self.key_versions()
            label = versions[max(versions)] if versions else HSM_KEY_LABEL
        try:
            aes = session.get_key(label=label, key_type=KeyType.AES)
        except pkcs11.exceptions.NoSuchKey:
            if not create or label != HSM_KEY_LABEL:
                raise ConfigError(f"{ROOT_KEY_ENV}: token {self.token_label!r} holds no key {label!r}: run "
                                  "'govshare init' to generate it (or restore the token from backup)") from None
            aes = self._generate(label)
        self.key_label, self._aes = label, aes
        return aes

    def _generate(self, label: str):  # noqa: ANN202 - a pkcs11 SecretKey
        import pkcs11
        from pkcs11 import KeyType

        return self._session_open().generate_key(KeyType.AES, 256, label=label, store=True,
                                                 template={pkcs11.Attribute.EXTRACTABLE: False,
                                                           pkcs11.Attribute.SENSITIVE: True})

    def create(self) -> bool:
        """Generate the first root key in the token when it holds none; True when made."""
        with self._lock:
            had = self._aes is not None or bool(self.key_versions())
            self._open(create=True)
            return not had

    @property
    def wrapping_id(self) -> str:
        """The id written into the files this key wraps: the token, and the key version after 1."""
        with self._lock:
            self._open()
            return _pkcs11_id(self.token_label, self.key_label or HSM_KEY_LABEL)

    def provider_for(self, root_id: str) -> KeyProvider | None:
        """The key of this token that ``root_id`` (a wrapped file's id) names, or None."""
        token, _, key = root_id.partition(";key=")
        if token != self.root_id:
            return None
        label = key or HSM_KEY_LABEL
        if _hsm_key_version(label) is None:
            return None
        if label == self.key_label:
            return self
        return Pkcs11RootKey(self.token_label, self._pin, self._module, label, parent=self._parent or self)

    def rotation(self) -> Pkcs11RootKey:
        """The key a rotation wraps under: a new version, or the newest one when an interrupted
        rotation left several (it is finished, not started again)."""
        with self._lock:
            versions = self.key_versions()
            if not versions:
                raise ConfigError(f"{ROOT_KEY_ENV}: token {self.token_label!r} holds no govshare root key: run "
                                  "'govshare init'")
            if len(versions) > 1:
                label = versions[max(versions)]
            else:
                label = f"{HSM_KEY_LABEL}.v{max(versions) + 1}"
                self._generate(label)
        return Pkcs11RootKey(self.token_label, self._pin, self._module, label, parent=self._parent or self)

    def finish_rotation(self, following: KeyProvider) -> None:
        """Destroy every older root key in the token: what they wrapped is wrapped by ``following`` now."""
        from pkcs11 import KeyType

        keep = getattr(following, "key_label", None)
        with self._lock:
            session = self._session_open()
            for label in self.key_versions().values():
                if label != keep:
                    session.get_key(label=label, key_type=KeyType.AES).destroy()
            self._aes, self.key_label = None, None  # the newest key from now on

    def wrap(self, plaintext: bytes, aad: bytes, algorithm: str = AES) -> bytes:
        from pkcs11 import Mechanism
        from pkcs11.mechanisms import GCMParams

        _aes_only(self.root_id, algorithm)
        nonce = os.urandom(NONCE)
        with self._lock:
            aes = self._open()
            return nonce + bytes(aes.encrypt(bytes(plaintext), mechanism=Mechanism.AES_GCM,
                                             mechanism_param=GCMParams(nonce, aad, 128)))

    def unwrap(self, blob: bytes, aad: bytes, algorithm: str = AES) -> bytes:
        import pkcs11
        from pkcs11 import Mechanism
        from pkcs11.mechanisms import GCMParams

        _aes_only(self.root_id, algorithm)
        with self._lock:
            aes = self._open()
            try:
                return bytes(aes.decrypt(blob[NONCE:], mechanism=Mechanism.AES_GCM,
                                         mechanism_param=GCMParams(blob[:NONCE], aad, 128)))
            except pkcs11.exceptions.PKCS11Error:
                raise _wrong_root(self.root_id) from None


def _pkcs11_id(token_label: str, key_label: str) -> str:
    base = f"pkcs11:token={token_label}"
    return base if key_label == HSM_KEY_LABEL else f"{base};key={key_label}"


def _hsm_key_version(label: object) -> int | None:
    """1 for ``govshare-root``, N for ``govshare-root.vN``, None for any other label."""
    if label == HSM_KEY_LABEL:
        return 1
    if isinstance(label, str) and label.startswith(HSM_KEY_LABEL + ".v") and label[len(HSM_KEY_LABEL) + 2:].isdigit():
        version = int(label[len(HSM_KEY_LABEL) + 2:])
        return version if version >= 2 else None
    return None


def _aes_only(root_id: str, algorithm: str) -> None:
    if algorithm != AES:
        raise ConfigError(f"{ROOT_KEY_ENV}: the root key {root_id} lives in a PKCS#11 token that wraps with AES-GCM "
                          f"only (SoftHSM2 and python-pkcs11 have no SM4 mechanism), and this home's 国密 profile "
                          f"wraps with {algorithm}: use a file: root key, or a KeyProvider for a 密码机 with SM4")


_providers: dict[tuple[str, str, str], KeyProvider] = {}
_providers_lock = threading.Lock()


def root_key(spec: str | None, home_root: Path) -> KeyProvider:
    """The root key a GOVSHARE_ROOT_KEY value names, checked against the home (ConfigError, exit 2)."""
    if not spec or not spec.strip():
        raise ConfigError(f"{ROOT_KEY_ENV} is not set: every stored key is wrapped by a root key kept outside "
                          f"GOVSHARE_HOME; set {ROOT_KEY_ENV}=file:/path/outside/the/home (created by 'govshare "
                          f"init') or {ROOT_KEY_ENV}=pkcs11:token=LABEL")
    spec = spec.strip()
    scheme, _, rest = spec.partition(":")
    if scheme == "file":
        if not rest:
            raise ConfigError(f"{ROOT_KEY_ENV}=file: names no file")
        path = Path(rest).expanduser()
        if not path.is_absolute():
            raise ConfigError(f"{ROOT_KEY_ENV}={spec}: name the root key file by an absolute path")
        resolved, home = path.resolve(), home_root.resolve()
        if resolved == home or home in resolved.parents:
            raise ConfigError(f"{ROOT_KEY_ENV}={spec}: the root key file lies inside GOVSHARE_HOME {home}; keep it "
                              "elsewhere, so that a copy of the home alone decrypts nothing")
        key = ("file", str(resolved), "")
        with _providers_lock:
            return _providers.setdefault(key, FileRootKey(resolved))
    if scheme == "pkcs11":
        attrs = dict(part.partition("=")[::2] for part in rest.split(";") if part)
        label = attrs.get("token", "").strip()
        unknown = sorted(set(attrs) - {"token"})
        if not label or unknown:
            raise ConfigError(f"{ROOT_KEY_ENV}={spec}: write pkcs11:token=LABEL" +
                              (f" (unknown attribute(s) {', '.join(unknown)})" if unknown else ""))
        pin = os.environ.get(PIN_ENV)
        if not pin:
            raise ConfigError(f"{PIN_ENV} is not set: the PIN of PKCS#11 token {label!r}")
        module = os.environ.get(MODULE_ENV) or DEFAULT_MODULE
        key = ("pkcs11", label, module)
        with _providers_lock:
            return _providers.setdefault(key, Pkcs11RootKey(label, pin, module))
    raise ConfigError(f"{ROOT_KEY_ENV}={spec}: not file:PATH or pkcs11:token=LABEL")


def configured(home_root: Path) -> KeyProvider:
    """The root key GOVSHARE_ROOT_KEY names for the home at ``home_root``."""
    return root_key(os.environ.get(ROOT_KEY_ENV), home_root)


def seal_file(provider: KeyProvider, plaintext: bytes, aad: bytes, algorithm: str = AES) -> bytes:
    """The content of a wrapped key file (``algorithm``: AES-256-GCM, or SM4-GCM in the gm profile)."""
    blob = _wrap(provider, plaintext, aad, algorithm)
    tag = b"" if algorithm == AES else _ALGORITHM_TAG + algorithm.encode("ascii")
    named = getattr(provider, "wrapping_id", provider.root_id)  # an HSM names the key version that wrapped
    return MAGIC + named.encode("utf-8") + tag + b"\n" + base64.b64encode(blob) + b"\n"


def is_wrapped(content: bytes) -> bool:
    return content.startswith(MAGIC)


def wrapped_by(content: bytes) -> tuple[str, str]:
    """(root id, wrapping algorithm) a wrapped key file names in its first line."""
    head = content.partition(b"\n")[0][len(MAGIC):]
    named, tag, algorithm = head.rpartition(_ALGORITHM_TAG)
    if not tag:
        return head.decode("utf-8", "replace"), AES
    return named.decode("utf-8", "replace"), algorithm.decode("ascii", "replace")


def open_file(provider: KeyProvider, content: bytes, aad: bytes, where: str, algorithm: str | None = None) -> bytes:
    """The plaintext of a wrapped key file (IntegrityError when altered or under another root).
    ``algorithm``, when given, is the wrapping the file must have (the home's profile): a file
    wrapped otherwise is refused, so that no key file slips in under the other profile."""
    body = content.partition(b"\n")[2]
    try:
        blob = base64.b64decode(body.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise IntegrityError(f"{where} is not a wrapped key file: it was altered") from None
    if len(blob) <= NONCE + 16:
        raise IntegrityError(f"{where} is not a wrapped key file: it was altered")
    named, wrapping = wrapped_by(content)
    if algorithm is not None and wrapping != algorithm:
        raise IntegrityError(f"{where} is wrapped with {wrapping}, but this home's profile wraps with {algorithm}: "
                             "the key file was replaced")
    finder = getattr(provider, "provider_for", None)
    found = finder(named) if finder is not None else (provider if named == provider.root_id else None)
    if found is not None:
        return _unwrap(found, blob, aad, wrapping)
    if named != provider.root_id:
        raise IntegrityError(f"{where} is wrapped by root key {named}, not by {provider.root_id} that "
                             f"{ROOT_KEY_ENV} names: set {ROOT_KEY_ENV} to the home's root key")
    return _unwrap(provider, blob, aad, wrapping)


def _wrap(provider: KeyProvider, plaintext: bytes, aad: bytes, algorithm: str) -> bytes:
    if algorithm == AES:
        return provider.wrap(plaintext, aad)  # a bureau's provider written for AES alone keeps working
    try:
        return provider.wrap(plaintext, aad, algorithm=algorithm)  # type: ignore[call-arg]
    except TypeError:
        raise ConfigError(f"{ROOT_KEY_ENV}: the root key provider {provider.root_id} does not wrap with "
                          f"{algorithm}, which this home's profile needs") from None


def _unwrap(provider: KeyProvider, blob: bytes, aad: bytes, algorithm: str) -> bytes:
    if algorithm == AES:
        return provider.unwrap(blob, aad)
    try:
        return provider.unwrap(blob, aad, algorithm=algorithm)  # type: ignore[call-arg]
    except TypeError:
        raise ConfigError(f"{ROOT_KEY_ENV}: the root key provider {provider.root_id} does not unwrap "
                          f"{algorithm}") from None
