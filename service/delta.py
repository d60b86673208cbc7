"""The Delta Sharing protocol (delta-io/delta-sharing PROTOCOL.md) under ``/delta-sharing``: a
subscriber's plain view (service.plainview: its grants' 无条件共享 fields) for stock clients.

One share, ``govshare``, one schema, ``base``, a table per dataset the subscriber's grants cover
(names are case-insensitive). Responses are in the ``parquet`` response format (the delta format
is not offered; a capabilities header asking for it gets the parquet format, which clients accept).
Table versions are govshare's versions, 1..N; each version's timestamp is when it was published.

Authentication: the profile's bearer token (service.profiles), which also binds the purpose every
request is recorded under. Statuses, each with ``{"errorCode", "message"}``:

- 401 UNAUTHENTICATED: no, unknown or expired token; a subscriber no longer in the catalog or
  revoked; a file URL that is altered, expired, or presented with another subscriber's token;
- 403 PERMISSION_DENIED: a dataset of the catalog outside the subscriber's grants, a suspended
  subscriber, an approval not in force, a grant without 无条件共享 fields;
- 404 RESOURCE_DOES_NOT_EXIST: a share, schema or table that does not exist for anyone (a name
  that is no dataset of the catalog), a dataset with no version yet, a file no longer cached;
- 400 INVALID_PARAMETER_VALUE: a malformed parameter or body, a version outside 1..N, a
  timestamp no version matches, a streaming query (``startingVersion`` on /query: use /changes),
  a range across a schema change; 413 for a body over 64 KiB.

Every request is in the access log (service.access writes its ``request`` record: subscriber as
authenticated, purpose from the token, dataset, versions, fields, rows). A query or change feed
that returns file URLs also writes, before it answers, one ``delivery`` record (channel
``delta-sharing``, outcome ``released``): a stock client never confirms what it fetched, so the
release of the URLs is the delivery; the file fetches are each in the log as requests of that
subscriber. File URLs (service.filetokens) need no bearer token, as presigned URLs do not: the
token in the URL binds the subscriber, the file and a 15-minute expiry.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from common.catalog import Dataset, Grant, Subscriber
from common.errors import AccessDenied, GovshareError, IntegrityError
from common.schema import CHANGE_TYPE
from common.times import today
from lineage.audit import DELIVERY
from service import filetokens, plainview, profiles
from service.access import note
from service.context import ServiceContext, context
from service.guard import ServiceError, error_response, guarded
from sharing.pull import authorise
from sharing.store import SharingStore

log = logging.getLogger(__name__)

PREFIX = "/delta-sharing"
SHARE, SCHEMA = "govshare", "base"
CHANNEL = "delta-sharing"
SERVICE_KEY = "govshare.service"  # keys.keystore.SERVICE
NDJSON = "application/x-ndjson; charset=utf-8"
VERSION_HEADER = "Delta-Table-Version"
CAPABILITIES_HEADER = "delta-sharing-capabilities"
MAX_BODY = 64 * 1024
_NAMESPACE = uuid.UUID("6f1c1f5e-5b8a-4c1e-9a51-7a0f3c3d2b10")
_CODES = {400: "INVALID_PARAMETER_VALUE", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
          404: "RESOURCE_DOES_NOT_EXIST", 413: "REQUEST_TOO_LARGE", 500: "INTERNAL_ERROR",
          503: "TEMPORARILY_UNAVAILABLE"}

router = APIRouter(prefix=PREFIX, tags=["Delta Sharing"])


class DeltaError(ServiceError):
    """A refusal of this protocol, with its status."""


_guarded = guarded(CHANNEL, _CODES)


def _error_response(request: Request, status: int, message: str) -> JSONResponse:
    return error_response(request, _CODES, status, message)


# -- who is asking -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    subscriber: Subscriber
    purpose: str


def _caller(request: Request) -> Caller:
    ctx = context(request)
    try:
        binding = profiles.authenticate(ctx.home, request.headers.get("authorization"))
    except profiles.Unauthenticated as exc:
        raise DeltaError(401, exc.reason) from None
    subscriber = _usable(ctx, binding.subscriber)
    note(request, subscriber=subscriber.id, purpose=binding.purpose)
    if not subscriber.active:
        raise DeltaError(403, f"subscriber {subscriber.id} is {subscriber.status}; no data is shared with it")
    return Caller(subscriber, binding.purpose)


def _usable(ctx: ServiceContext, subscriber_id: str) -> Subscriber:
    subscriber = ctx.catalog.subscriber(subscriber_id)
    if subscriber is None or subscriber.status == "revoked":
        why = "is no longer registered in the catalog" if subscriber is None else "is revoked"
        raise DeltaError(401, f"subscriber {subscriber_id} {why}; its credentials are refused")
    return subscriber


def _readable(ctx: ServiceContext, caller: Caller) -> list[str]:
    """The datasets the caller may read now (granted, in force, published), in catalog order."""
    found = []
    for ds_id, grant in caller.subscriber.grants.items():
        if ds_id not in ctx.catalog.datasets or not plainview.plain_fields(ctx.catalog.dataset(ds_id), grant):
            continue
        if SharingStore(ctx.home.store, ds_id).latest() is None:  # nothing published yet: no table
            continue
        try:
            authorise(ctx.catalog, caller.subscriber.id, ds_id, today())
        except AccessDenied:
            continue
        found.append(ds_id)
    return [d for d in ctx.catalog.datasets if d in found]


def _check_share(share: str) -> None:
    if share.lower() != SHARE:
        raise DeltaError(404, f"share {share[:100]!r} does not exist (this service has share {SHARE!r})")


def _check_schema(share: str, schema: str) -> None:
    _check_share(share)
    if schema.lower() != SCHEMA:
        raise DeltaError(404, f"schema {schema[:100]!r} does not exist in share {SHARE!r} (it has {SCHEMA!r})")


def _table(request: Request, caller: Caller, share: str, schema: str, table: str) -> tuple[Dataset, Grant]:
    """The dataset and the caller's grant for it, or 404 / 403 saying why."""
    _check_schema(share, schema)
    ctx = context(request)
    ds = ctx.catalog.datasets.get(table.lower())
    if ds is None:
        raise DeltaError(404, f"table {table[:100]!r} does not exist in {SHARE}.{SCHEMA}")
    note(request, dataset=ds.id)
    _, grant = authorise(ctx.catalog, caller.subscriber.id, ds.id, today())  # AccessDenied -> 403
    plainview.plain_grant(ds, grant)  # no 无条件共享 field -> 403
    if SharingStore(ctx.home.store, ds.id).latest() is None:
        raise DeltaError(404, f"table {ds.id} has no published version yet")
    return ds, grant


# -- parameters --------------------------------------------------------------------------------


def _int(value: Any, name: str, minimum: int = 0) -> int:  # noqa: ANN401
    if isinstance(value, bool):
        raise DeltaError(400, f"{name} must be an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value.strip()) <= 19:
        number = int(value)
    else:
        raise DeltaError(400, f"{name} must be an integer")
    if number < minimum:
        raise DeltaError(400, f"{name} must be at least {minimum}")
    return number


def _timestamp(value: Any, name: str) -> datetime:  # noqa: ANN401
    if not isinstance(value, str) or len(value) > 64:
        raise DeltaError(400, f"{name} must be a timestamp such as 2026-11-01T08:00:00Z")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise DeltaError(400, f"{name} {value!r} is not a timestamp such as 2026-11-01T08:00:00Z") from None
    if moment.tzinfo is None:
        raise DeltaError(400, f"{name} {value!r} has no time zone: end it with Z (UTC) or an offset")
    return moment


def _published(ds: Dataset, request: Request) -> list[datetime]:
    """When each version 1..N was published (from the verified manifests)."""
    manifests = plainview.verified_manifests(context(request).home, ds)
    return [datetime.fromisoformat(m.doc["created_at"]) for m in manifests]


def _version_at_or_after(ds: Dataset, request: Request, moment: datetime, name: str) -> int:
    for v, at in enumerate(_published(ds, request), start=1):
        if at >= moment:
            return v
    raise DeltaError(400, f"{name}: no version of {ds.id} was published at or after {moment.isoformat()}")


def _version_at_or_before(ds: Dataset, request: Request, moment: datetime, name: str) -> int:
    found = [v for v, at in enumerate(_published(ds, request), start=1) if at <= moment]
    if not found:
        raise DeltaError(400, f"{name}: no version of {ds.id} was published at or before {moment.isoformat()}")
    return found[-1]


def _in_range(ds: Dataset, request: Request, version: int, name: str) -> int:
    latest = SharingStore(context(request).home.store, ds.id).latest() or 0
    if not 1 <= version <= latest:
        raise DeltaError(400, f"{name} {version}: table {ds.id} has versions 1..{latest}")
    return version


def _page(request: Request, items: list[dict[str, Any]]) -> JSONResponse:
    params = request.query_params
    start = _int(params["pageToken"], "pageToken") if params.get("pageToken") else 0
    size = _int(params["maxResults"], "maxResults") if "maxResults" in params else len(items)
    body: dict[str, Any] = {"items": items[start:start + size]}
    if start + size < len(items):
        body["nextPageToken"] = str(start + size)
    return JSONResponse(body)


# -- the schema as Spark writes it ----------------------------------------------------------------


def spark_type(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_int64(t):
        return "long"
    if pa.types.is_int32(t):
        return "integer"
    if pa.types.is_date32(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_decimal(t):
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_float64(t):
        return "double"
    raise IntegrityError(f"the plain view holds a column of Arrow type {t}, which has no Delta Sharing type")


def schema_string(schema: pa.Schema) -> str:
    fields = [{"name": f.name, "type": spark_type(f.type), "nullable": f.nullable, "metadata": {}} for f in schema]
    return json.dumps({"type": "struct", "fields": fields}, ensure_ascii=False, separators=(",", ":"))


def _metadata_lines(ds: Dataset, grant: Grant, request: Request, version: int) -> list[dict[str, Any]]:
    manifest = plainview.verified_manifests(context(request).home, ds, version)[-1]
    return [
        {"protocol": {"minReaderVersion": 1}},
        {"metaData": {
            "id": str(uuid.uuid5(_NAMESPACE, ds.id)),
            "name": ds.id,
            "description": ds.title,
            "format": {"provider": "parquet"},
            "schemaString": schema_string(plainview.view_schema(ds, grant, manifest)),
            "partitionColumns": [],
            "configuration": {"delta.enableChangeDataFeed": "true", "enableChangeDataFeed": "true"},
            "version": version,
        }},
    ]


def _ndjson(lines: list[dict[str, Any]], version: int) -> Response:
    body = "".join(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n" for line in lines)
    return Response(body.encode("utf-8"), media_type=NDJSON,
                    headers={VERSION_HEADER: str(version), CAPABILITIES_HEADER: "responseformat=parquet"})


# -- listing -----------------------------------------------------------------------------------


def _share_item() -> dict[str, Any]:
    return {"name": SHARE, "id": str(uuid.uuid5(_NAMESPACE, SHARE))}


def _table_item(ds_id: str) -> dict[str, Any]:
    return {"name": ds_id, "schema": SCHEMA, "share": SHARE, "shareId": _share_item()["id"],
            "id": str(uuid.uuid5(_NAMESPACE, ds_id))}


@router.get("/shares", summary="List shares")
@_guarded
def list_shares(request: Request) -> Response:
    _caller(request)
    return _page(request, [_share_item()])


@router.get("/shares/{share}", summary="Get share")
@_guarded
def get_share(request: Request, share: str) -> Response:
    _caller(request)
    _check_share(share)
    return JSONResponse({"share": _share_item()})


@router.get("/shares/{share}/schemas", summary="List schemas")
@_guarded
def list_schemas(request: Request, share: str) -> Response:
    _caller(request)
    _check_share(share)
    return _page(request, [{"name": SCHEMA, "share": SHARE}])


@router.get("/shares/{share}/schemas/{schema}/tables", summary="List tables")
@_guarded
def list_tables(request: Request, share: str, schema: str) -> Response:
    caller = _caller(request)
    _check_schema(share, schema)
    return _page(request, [_table_item(d) for d in _readable(context(request), caller)])


@router.get("/shares/{share}/all-tables", summary="List all tables")
@_guarded
def list_all_tables(request: Request, share: str) -> Response:
    caller = _caller(request)
    _check_share(share)
    return _page(request, [_table_item(d) for d in _readable(context(request), caller)])


# -- a table -----------------------------------------------------------------------------------


def _table_version(request: Request, share: str, schema: str, table: str) -> Response:
    caller = _caller(request)
    ds, _ = _table(request, caller, share, schema, table)
    starting = request.query_params.get("startingTimestamp")
    if starting is not None:
        version = _version_at_or_after(ds, request, _timestamp(starting, "startingTimestamp"), "startingTimestamp")
    else:
        version = plainview.verified_manifests(context(request).home, ds)[-1].version
    note(request, version=version)
    return Response(status_code=200, headers={VERSION_HEADER: str(version)})


@router.head("/shares/{share}/schemas/{schema}/tables/{table}", summary="Query table version (HEAD, deprecated)")
@_guarded
def head_table_version(request: Request, share: str, schema: str, table: str) -> Response:
    return _table_version(request, share, schema, table)


@router.get("/shares/{share}/schemas/{schema}/tables/{table}/version", summary="Query table version")
@_guarded
def get_table_version(request: Request, share: str, schema: str, table: str) -> Response:
    return _table_version(request, share, schema, table)


@router.get("/shares/{share}/schemas/{schema}/tables/{table}/metadata", summary="Query table metadata")
@_guarded
def table_metadata(request: Request, share: str, schema: str, table: str) -> Response:
    caller = _caller(request)
    ds, grant = _table(request, caller, share, schema, table)
    raw = request.query_params.get("version")
    home = context(request).home
    version = _in_range(ds, request, _int(raw, "version", 1), "version") if raw is not None else \
        plainview.verified_manifests(home, ds)[-1].version
    note(request, version=version, fields=list(plainview.plain_fields(ds, grant)))
    return _ndjson(_metadata_lines(ds, grant, request, version), version)


@router.post("/shares/{share}/schemas/{schema}/tables/{table}/query", summary="Read data from a table")
async def query_table(request: Request, share: str, schema: str, table: str) -> Response:
    raw = await request.body()
    return await run_in_threadpool(_query, request, share, schema, table, raw)


@_guarded
def _query(request: Request, share: str, schema: str, table: str, raw: bytes) -> Response:
    caller = _caller(request)
    ds, grant = _table(request, caller, share, schema, table)
    body = _json_body(raw)
    for streaming in ("startingVersion", "endingVersion", "startingTimestamp", "endingTimestamp"):
        if body.get(streaming) is not None:
            raise DeltaError(400, f"{streaming} in a query (a streaming read) is not supported; read the changes "
                                  "with the changes endpoint (load_table_changes_as_pandas)")
    if body.get("version") is not None and body.get("timestamp") is not None:
        raise DeltaError(400, "version and timestamp exclude each other")
    if body.get("version") is not None:
        version: int | None = _in_range(ds, request, _int(body["version"], "version", 1), "version")
    elif body.get("timestamp") is not None:
        version = _version_at_or_before(ds, request, _timestamp(body["timestamp"], "timestamp"), "timestamp")
    else:
        version = None
    view = plainview.snapshot(context(request).home, ds, grant, version)
    fields = list(plainview.plain_fields(ds, grant))
    lines = _metadata_lines(ds, grant, request, view.version)
    seq = _record_delivery(request, caller, ds, grant, fields, view.version, None, [view.first, view.version],
                           view.manifest_sha256, view.file.rows, 0)
    lines.append({"file": _file_action(request, caller, view.file, with_version=version is not None)})
    note(request, version=view.version, versions=[view.first, view.version], fields=fields, rows=view.file.rows,
         delivery=seq)
    return _ndjson(lines, view.version)


@router.get("/shares/{share}/schemas/{schema}/tables/{table}/changes", summary="Read change data feed from a table")
@_guarded
def table_changes(request: Request, share: str, schema: str, table: str) -> Response:
    caller = _caller(request)
    ds, grant = _table(request, caller, share, schema, table)
    params = request.query_params
    if params.get("startingVersion") is not None and params.get("startingTimestamp") is not None:
        raise DeltaError(400, "startingVersion and startingTimestamp exclude each other")
    if params.get("endingVersion") is not None and params.get("endingTimestamp") is not None:
        raise DeltaError(400, "endingVersion and endingTimestamp exclude each other")
    if params.get("startingVersion") is not None:
        first = _in_range(ds, request, _int(params["startingVersion"], "startingVersion", 1), "startingVersion")
    elif params.get("startingTimestamp") is not None:
        first = _version_at_or_after(ds, request, _timestamp(params["startingTimestamp"], "startingTimestamp"),
                                     "startingTimestamp")
    else:
        raise DeltaError(400, "the change data feed needs startingVersion or startingTimestamp")
    if params.get("endingVersion") is not None:
        last = _in_range(ds, request, _int(params["endingVersion"], "endingVersion", 1), "endingVersion")
    elif params.get("endingTimestamp") is not None:
        last = _version_at_or_before(ds, request, _timestamp(params["endingTimestamp"], "endingTimestamp"),
                                     "endingTimestamp")
    else:
        last = plainview.verified_manifests(context(request).home, ds)[-1].version
    if last < first:
        raise DeltaError(400, f"the feed ends (version {last}) before it starts (version {first})")
    feed = plainview.changes(context(request).home, ds, grant, first, last)
    fields = list(plainview.plain_fields(ds, grant))
    deletes = sum(int(pc.sum(pc.equal(pq.read_table(f.path, columns=[CHANGE_TYPE]).column(CHANGE_TYPE),
                                      plainview.CDF_DELETE)).as_py() or 0) for f in feed.files)
    lines = _metadata_lines(ds, grant, request, last)
    seq = _record_delivery(request, caller, ds, grant, fields, last, first - 1, [first, last], feed.manifest_sha256,
                           feed.rows, deletes)
    lines += [{"cdf": _file_action(request, caller, f, with_version=True, stats=False)} for f in feed.files]
    note(request, version=last, versions=[first, last], fields=fields, rows=feed.rows, delivery=seq)
    return _ndjson(lines, last)


def _json_body(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_BODY:
        raise DeltaError(413, f"the request body is over {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise DeltaError(400, "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise DeltaError(400, "the request body is not a JSON object")
    return body


def _file_action(request: Request, caller: Caller, f: plainview.PlainFile, with_version: bool,
                 stats: bool = True) -> dict[str, Any]:
    ctx = context(request)
    token, expires = filetokens.issue(filetokens.service_key(ctx.keystore, SERVICE_KEY), caller.subscriber.id, f.name)
    action: dict[str, Any] = {"url": f"{str(request.base_url).rstrip('/')}{PREFIX}/files/{token}", "id": f.id,
                              "partitionValues": {}, "size": f.size}
    if stats:
        action["stats"] = json.dumps({"numRecords": f.rows})
    if with_version:
        action.update(version=f.version, timestamp=f.timestamp_ms)
    action["expirationTimestamp"] = expires * 1000
    return action


def _record_delivery(request: Request, caller: Caller, ds: Dataset, grant: Grant, fields: list[str], version: int,
                     since: int | None, versions_read: list[int], manifest_sha256: str, rows: int, deletes: int) -> int:
    """The access log's record of the release, before any URL leaves (one record: see the module)."""
    try:
        record = context(request).access_log.append({
            "event": DELIVERY,
            "channel": CHANNEL,
            "outcome": "released",
            "subscriber": caller.subscriber.id,
            "dataset": ds.id,
            "version": version,
            "since": since,
            "versions_read": versions_read,
            "manifest_sha256": manifest_sha256,
            "purpose": caller.purpose,
            "approval_id": grant.approval.id if grant.approval else None,
            "fields": fields,
            "rows": rows,
            "deletes": deletes,
        })
    except GovshareError as exc:
        raise DeltaError(503, f"{exc.message}: the delivery could not be recorded, so nothing was released") from None
    return int(record["seq"])


# -- the files the URLs name ---------------------------------------------------------------------


@router.api_route("/files/{token}", methods=["GET", "HEAD"], summary="A file of a query's answer (URL from the query)")
@_guarded
def get_file(request: Request, token: str) -> Response:
    ctx = context(request)
    try:
        grant = filetokens.check(filetokens.service_key(ctx.keystore, SERVICE_KEY), token)
    except filetokens.InvalidFileToken as exc:
        raise DeltaError(401, exc.reason) from None
    if request.headers.get("authorization"):
        try:
            binding = profiles.authenticate(ctx.home, request.headers.get("authorization"))
        except profiles.Unauthenticated as exc:
            raise DeltaError(401, exc.reason) from None
        if binding.subscriber != grant.subscriber:
            note(request, subscriber=binding.subscriber)
            raise DeltaError(401, "the file URL was issued to another subscriber")
    subscriber = _usable(ctx, grant.subscriber)
    note(request, subscriber=subscriber.id, dataset=grant.dataset)
    authorise(ctx.catalog, subscriber.id, grant.dataset, today())  # still granted now: else 403
    path = plainview.cache_dir(ctx.home) / grant.file
    if not path.is_file():
        raise DeltaError(404, "the file is no longer available; query the table again")
    return FileResponse(path, media_type="application/octet-stream")
