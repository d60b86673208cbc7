"""Where the sharing store lives: GOVSHARE_STORE names a local folder (the default,
GOVSHARE_HOME/store) or ``s3://bucket/prefix`` on S3-compatible object storage.

For an object store, the endpoint and credentials come from an Airflow connection when
``GOVSHARE_STORE_CONNECTION`` names one (common.connections: ``AIRFLOW_CONN_<ID>``, Airflow's
secrets backends or metadata database, the Task SDK inside a task), in the Amazon provider's
form: conn_type ``aws``, login the access key id, password the secret key, extra
``endpoint_url`` (or ``service_config.s3.endpoint_url``) and ``region_name``. Without it they
come from the environment as boto3 reads them (``AWS_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL_S3``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``). boto3 is the optional extra ``govshare[s3]``:
one client for every call, because pyarrow.fs and fsspec's S3 file systems cannot make the
conditional write (``If-None-Match: *``) that makes a version visible without a rename. Files
go up through boto3's managed transfer (multipart for large files) and come down streamed.

``ObjectStore`` is the handful of operations the sharing store needs, each mapped to one S3 call;
a missing object is ``None``, a lost conditional write is ``False``, and an unreachable or
refusing store is a TemporaryFailure (exit 75) or ConfigError (exit 2) naming the bucket and key,
never a traceback.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError, TemporaryFailure

STORE_ENV = "GOVSHARE_STORE"
CONNECTION_ENV = "GOVSHARE_STORE_CONNECTION"  # an Airflow connection id (conn_type aws) for the object store
_CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
REMOTE_FILE = ".remote.json"  # in a local cache folder: the object store it mirrors
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_PART = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class StoreUrl:
    bucket: str
    prefix: str  # no leading or trailing slash; may be empty

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)


def parse_store(raw: str) -> StoreUrl | Path:
    """GOVSHARE_STORE's value: a local folder (Path) or an object store (StoreUrl); anything
    that looks like a URL of another kind, or a malformed s3 URL, is a ConfigError."""
    value = raw.strip()
    if "://" not in value and not value.lower().startswith("s3:"):
        return Path(value).expanduser().resolve()
    scheme, _, rest = value.partition("://")
    if scheme != "s3" or not rest:
        raise ConfigError(f"{STORE_ENV}={raw!r}: expected a local folder or s3://bucket/prefix")
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ConfigError(f"{STORE_ENV}={raw!r}: {bucket!r} is not a valid bucket name (3-63 lower-case letters, "
                          "digits, dots and hyphens)")
    if prefix and not all(_PREFIX_PART.match(p) and p not in (".", "..") for p in prefix.split("/")):
        raise ConfigError(f"{STORE_ENV}={raw!r}: the prefix may hold only letters, digits, '.', '_', '-' and '/'")
    return StoreUrl(bucket, prefix)


def attached(cache: Path) -> StoreUrl | None:
    """The object store a local cache folder mirrors (its .remote.json), None for a plain store."""
    try:
        doc = json.loads((cache / REMOTE_FILE).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{cache / REMOTE_FILE} is unreadable ({exc.__class__.__name__}): remove the cache folder "
                          f"{cache}; it is refilled from the object store") from None
    return StoreUrl(doc["bucket"], doc["prefix"])


def attach(cache: Path, url: StoreUrl) -> Path:
    """Make ``cache`` the local mirror of ``url`` (idempotent); a cache of another store is refused."""
    current = attached(cache)
    if current is None:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / (REMOTE_FILE + ".tmp")
        tmp.write_text(json.dumps({"bucket": url.bucket, "prefix": url.prefix}))
        os.replace(tmp, cache / REMOTE_FILE)
    elif current != url:
        raise ConfigError(f"the store cache {cache} mirrors {current.url}, not {url.url}: use another GOVSHARE_HOME "
                          "or remove the cache folder")
    return cache


class ObjectStore:
    """One bucket and prefix of an S3-compatible store (see the module's docstring)."""

    def __init__(self, url: StoreUrl) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise ConfigError(f"{STORE_ENV}={url.url}: object storage needs boto3: pip install 'govshare[s3]'") from None
        self.url = url
        self._client = boto3.client("s3", config=Config(retries={"max_attempts": 5, "mode": "standard"},
                                                        connect_timeout=10, read_timeout=60),
                                    **client_settings(url))

    def _call(self, what: str, key: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.url.bucket, Key=key, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("NoSuchKey", "404", "NotFound"):
                return None
            if code == "PreconditionFailed" or status == 412:
                return False
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket"):
                raise ConfigError(f"object store {self.url.url}: {what} {key} refused ({code}): check the bucket, "
                                  "the endpoint and the credentials") from None
            raise TemporaryFailure(f"object store {self.url.url}: {what} {key} failed ({code or status}); "
                                   "retry later") from None
        except BotoCoreError as exc:
            raise TemporaryFailure(f"object store {self.url.url}: {what} {key} failed "
                                   f"({exc.__class__.__name__}); retry later") from None

    def get(self, key: str) -> bytes | None:
        answer = self._call("reading", key, self._client.get_object)
        return None if answer is None else self._read(key, lambda: answer["Body"].read())

    def _read(self, key: str, fn: Any) -> Any:
        """A response body's transfer, with its failures mapped as _call's are."""
        from botocore.exceptions import BotoCoreError

        try:
            return fn()
        except (BotoCoreError, OSError) as exc:
            raise TemporaryFailure(f"object store {self.url.url}: reading {key} broke off "
                                   f"({exc.__class__.__name__}); retry later") from None

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> bool:
        """Write an object; with ``if_absent`` only if no object has that key (False if one had)."""
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        return self._call("writing", key, self._client.put_object, Body=data, **extra) is not False

    def upload(self, key: str, path: Path) -> None:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.upload_file(str(path), self.url.bucket, key)
        except (S3UploadFailedError, BotoCoreError, ClientError) as exc:
            raise TemporaryFailure(f"object store {self.url.url}: writing {key} failed "
                                   f"({exc.__class__.__name__}); retry later") from None

    def download(self, key: str, path: Path) -> bool:
        answer = self._call("reading", key, self._client.get_object)
        if answer is None:
            return False

        def copy() -> None:
            with open(path, "wb") as fh:
                for chunk in answer["Body"].iter_chunks(8 << 20):
                    fh.write(chunk)

        self._read(key, copy)
        return True

    def names(self, prefix: str) -> list[str]:
        """The names directly under ``prefix/`` (objects and common prefixes), sorted."""
        from botocore.exceptions import BotoCoreError, ClientError

        start = prefix.rstrip("/") + "/"
        found: set[str] = set()
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.url.bucket, Prefix=start,
                                                                              Delimiter="/"):
                found.update(o["Key"][len(start):] for o in page.get("Contents", []))
                found.update(p["Prefix"][len(start):].rstrip("/") for p in page.get("CommonPrefixes", []))
        except (BotoCoreError, ClientError) as exc:
            raise TemporaryFailure(f"object store {self.url.url}: listing {start} failed "
                                   f"({exc.__class__.__name__}); retry later") from None
        return sorted(n for n in found if n)

    def presign(self, key: str, seconds: int) -> str:
        """A URL that GETs ``key`` without credentials for ``seconds`` (SigV4 query signing, made
        locally: no request to the store)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self._client.generate_presigned_url("get_object", Params={"Bucket": self.url.bucket, "Key": key},
                                                       ExpiresIn=seconds)
        except (BotoCoreError, ClientError) as exc:
            raise ConfigError(f"object store {self.url.url}: cannot sign a URL for {key} "
                              f"({exc.__class__.__name__}): check the credentials") from None

    def listing(self, prefix: str) -> dict[str, tuple[int, str]]:
        """Every object under ``prefix/``, at any depth: its name below the prefix -> (size, ETag)."""
        from botocore.exceptions import BotoCoreError, ClientError

        start = prefix.rstrip("/") + "/"
        try:
            return {o["Key"][len(start):]: (int(o["Size"]), o["ETag"])
                    for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.url.bucket,
                                                                                       Prefix=start)
                    for o in page.get("Contents", []) if len(o["Key"]) > len(start)}
        except (BotoCoreError, ClientError) as exc:
            raise TemporaryFailure(f"object store {self.url.url}: listing {start} failed "
                                   f"({exc.__class__.__name__}); retry later") from None

    def delete(self, keys: list[str]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            for i in range(0, len(keys), 1000):
                self._client.delete_objects(Bucket=self.url.bucket, Delete={
                    "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
        except (BotoCoreError, ClientError) as exc:
            raise TemporaryFailure(f"object store {self.url.url}: deleting {len(keys)} object(s) failed "
                                   f"({exc.__class__.__name__}); retry later") from None

    def delete_under(self, prefix: str, older_than: float = 0.0) -> int:
        """Delete every object under ``prefix/`` if none of them was written in the last
        ``older_than`` seconds (a writer may still be at work there); the number deleted."""
        from datetime import datetime, timezone

        from botocore.exceptions import BotoCoreError, ClientError

        start = prefix.rstrip("/") + "/"
        try:
            objects = [o for page in self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.url.bucket, Prefix=start) for o in page.get("Contents", [])]
            now = datetime.now(timezone.utc)
            if not objects or any((now - o["LastModified"]).total_seconds() < older_than for o in objects):
                return 0
            for i in range(0, len(objects), 1000):
                self._client.delete_objects(Bucket=self.url.bucket, Delete={
                    "Objects": [{"Key": o["Key"]} for o in objects[i:i + 1000]], "Quiet": True})
        except (BotoCoreError, ClientError) as exc:
            raise TemporaryFailure(f"object store {self.url.url}: deleting under {start} failed "
                                   f"({exc.__class__.__name__}); retry later") from None
        return len(objects)


def client_settings(url: StoreUrl) -> dict[str, str]:
    """boto3 client arguments from the Airflow connection GOVSHARE_STORE_CONNECTION names; none
    (the environment's) when it is unset. ConfigError naming the connection (never its secret)
    when it cannot be used."""
    conn_id = os.environ.get(CONNECTION_ENV, "").strip()
    if not conn_id:
        return {}
    if not _CONN_ID.match(conn_id):
        raise ConfigError(f"{CONNECTION_ENV}={conn_id!r}: expected an Airflow connection id (letters, digits, _ . -)")
    from common.connections import connection_fields

    conn = connection_fields(conn_id)
    where = f"{STORE_ENV}={url.url}: connection {conn_id} ({CONNECTION_ENV})"
    if conn.conn_type.strip().lower() not in ("aws", "s3"):
        raise ConfigError(f"{where} has conn_type {conn.conn_type!r}; expected aws (the Amazon provider's)")
    extra = dict(conn.extra)
    service = extra.get("service_config")
    s3 = service.get("s3") if isinstance(service, dict) else None
    endpoint = extra.get("endpoint_url") or (s3.get("endpoint_url") if isinstance(s3, dict) else None) or conn.host
    settings: dict[str, str] = {}
    if endpoint:
        if not isinstance(endpoint, str) or not re.match(r"^https?://[^\s/]+", endpoint):
            raise ConfigError(f"{where}: endpoint_url must be an http(s) URL")
        settings["endpoint_url"] = endpoint
    if bool(conn.login) != bool(conn.password):
        raise ConfigError(f"{where}: give both the access key id (login) and the secret key (password), or neither")
    if conn.login and conn.password:
        settings.update(aws_access_key_id=conn.login, aws_secret_access_key=conn.password)
    region = extra.get("region_name")
    if region:
        if not isinstance(region, str):
            raise ConfigError(f"{where}: region_name must be text")
        settings["region_name"] = region
    return settings


_stores: dict[StoreUrl, ObjectStore] = {}


def object_store(url: StoreUrl) -> ObjectStore:
    """One client per store and process (boto3 clients are thread-safe)."""
    if url not in _stores:
        _stores[url] = ObjectStore(url)
    return _stores[url]
