"""The agent protocol under ``/agent/v1``: enrolled subscriber agents fetch signed manifests,
the files they list, and key envelopes sealed to their own keys.

Every request but ``POST /enrol`` is signed by the agent's Ed25519 key (keys.requestsig) and
carries a purpose (申请事由) and optionally a case reference (办件编号); both go into the access
log with the subscriber *as authenticated* (the agent's enrolment), never as claimed.

    POST /enrol                                     one-time token + the agent's public keys + proof
    GET  /datasets                                  the subscriber's grants: fields, in force or why not
    GET  /datasets/{ds}/versions                    published versions (number, digest, kind, time)
    GET  /datasets/{ds}/versions/{v}/manifest       the manifest's exact bytes (base64) and signature
    GET  /datasets/{ds}/versions/{v}/files/{name}   a file the manifest lists (encrypted as published);
                                                    with GOVSHARE_PRESIGN_SECONDS on an object store,
                                                    307 to a pre-signed URL of it instead
    POST /datasets/{ds}/envelopes                   {"version": N, "since": S} (each optional; version
                                                    defaults to the latest): the data keys the grant
                                                    covers of a full view of N, or of the changes
                                                    S+1..N, sealed to the agent (HPKE)
    POST /deliveries/{seq}/complete                 the agent's confirmation of what it wrote
    GET  /log/checkpoint?from=N                     a fresh signed checkpoint of the access log and the
                                                    consistency proof from the agent's last one (size N)

Envelopes are the release: before any is sealed, a ``delivery`` record (channel ``agent``,
outcome ``pending``: subscriber, agent, purpose, case, dataset, versions, fields) is in the
access log; the agent's ``complete`` adds the ``delivery-complete`` record. Files and manifests
alone disclose nothing (without envelopes they do not open) and are logged as requests.

Statuses: 401 unknown or revoked agent, bad signature, stale timestamp, replayed nonce, used or
expired enrolment token; 403 a dataset outside the grant, a suspended subscriber, an approval
not in force; 400 a missing or bad purpose or a malformed request; 404 no such version or file;
409 versions published before per-version data keys (a full snapshot is needed); 413 a body over
64 KiB.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response

from common.catalog import Dataset, Grant, Subscriber
from common.errors import AccessDenied, GovshareError, IntegrityError
from common.times import today, utc_now
from keys.datakeys import HPKE_SUITE, envelope_info, seal
from keys.requestsig import MAX_CASE, BadRequestSignature, verify_request
from lineage.audit import COMPLETE, DELIVERY
from service import enrolment
from service.access import note
from service.context import context
from service.guard import ServiceError, error_response, guarded
from sharing.datakeys import groups_for, version_keys
from sharing.disputes import DisputeLog, shown_subscriber
from sharing.pull import MAX_PURPOSE, authorise, view_columns
from sharing.read import base_version
from sharing.schema_change import check_catalog, check_span
from sharing.store import SharingStore
from sharing.verify import verify_chain

log = logging.getLogger(__name__)

PREFIX = "/agent/v1"
CHANNEL = "agent"
MAX_BODY = 64 * 1024
AGENT_ENROLLED = "agent-enrolled"
router = APIRouter(prefix=PREFIX, tags=["Agent protocol"])
_CODES = {400: "BAD_REQUEST", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "RESOURCE_DOES_NOT_EXIST",
          409: "CONFLICT", 413: "PAYLOAD_TOO_LARGE", 500: "INTERNAL_ERROR", 503: "SERVICE_UNAVAILABLE"}


class AgentError(ServiceError):
    """A refusal of this protocol, with its status."""


_guarded = guarded(CHANNEL, _CODES)


def _error_response(request: Request, status: int, message: str) -> JSONResponse:
    return error_response(request, _CODES, status, message)


async def _body(request: Request) -> bytes:
    """The request body, refused (413) past MAX_BODY without reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise AgentError(413, f"the request body is over {MAX_BODY} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise AgentError(413, f"the request body is over {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise AgentError(400, "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise AgentError(400, "the request body is not a JSON object")
    return body


def _target(request: Request) -> str:
    raw = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string") or b""
    return raw.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")


# -- who is asking -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentCaller:
    agent: enrolment.Agent
    subscriber: Subscriber
    purpose: str
    case: str


def _caller(request: Request, body: bytes = b"") -> AgentCaller:
    ctx = context(request)
    found: dict[str, enrolment.Agent] = {}

    def key_of(agent_id: str):  # noqa: ANN202 - Ed25519PublicKey | None
        agent = enrolment.agent(ctx.home, agent_id)
        if agent is None or agent.status != "active":
            return None
        found["agent"] = agent
        return agent.signing_key

    now = time.time()
    try:
        signed = verify_request(request.headers, request.method, _target(request), body, key_of, now)
    except BadRequestSignature as exc:
        raise AgentError(401, exc.reason) from None
    agent = found["agent"]
    note(request, subscriber=agent.subscriber)
    if not enrolment.first_use(ctx.home, agent.agent_id, signed.nonce, now):
        raise AgentError(401, "the request's nonce was used before: a replayed request")
    subscriber = ctx.catalog.subscriber(agent.subscriber)
    if subscriber is None or subscriber.status == "revoked":
        why = "is no longer registered in the catalog" if subscriber is None else "is revoked"
        raise AgentError(401, f"subscriber {agent.subscriber} {why}; its agents are refused")
    purpose, case = signed.purpose.strip(), signed.case.strip()
    if case:
        if len(case) > MAX_CASE:
            raise AgentError(400, f"the case reference is {len(case)} characters long; at most {MAX_CASE} are allowed")
        note(request, case=case)
    if not purpose:
        raise AgentError(400, "every request needs a purpose (申请事由, 1 to 200 characters): X-Govshare-Purpose")
    if len(purpose) > MAX_PURPOSE:
        raise AgentError(400, f"the purpose is {len(purpose)} characters long; at most {MAX_PURPOSE} are allowed")
    note(request, purpose=purpose)
    if not subscriber.active:
        raise AgentError(403, f"subscriber {subscriber.id} is {subscriber.status}; no data is shared with it")
    return AgentCaller(agent, subscriber, purpose, case)


def _granted(request: Request, caller: AgentCaller, dataset_id: str) -> tuple[Dataset, Grant, SharingStore]:
    ctx = context(request)
    if dataset_id not in ctx.catalog.datasets:
        raise AgentError(404, f"no dataset {shown_subscriber(dataset_id)!r}")
    note(request, dataset=dataset_id)
    _, grant = authorise(ctx.catalog, caller.subscriber.id, dataset_id, today())  # AccessDenied: 403
    return ctx.catalog.dataset(dataset_id), grant, SharingStore(ctx.home.store, dataset_id)


def _version(store: SharingStore, version: int) -> int:
    latest = store.latest() or 0
    if not 1 <= version <= latest:
        raise AgentError(404, f"dataset {store.dataset_id} has versions 1..{latest}; there is no version {version}"
                         if latest else f"dataset {store.dataset_id} has no published version yet")
    return version


# -- enrolment ---------------------------------------------------------------------------------


@router.post("/enrol", summary="Register an agent's public keys with a one-time enrolment token")
async def enrol(request: Request) -> Response:
    try:
        raw = await _body(request)
    except AgentError as exc:
        return _error_response(request, exc.status, exc.message)
    return await run_in_threadpool(_enrol, request, raw)


@_guarded
def _enrol(request: Request, raw: bytes) -> Response:
    body = _json(raw)
    fields = ("token", "subscriber", "signing_pub", "encryption_pub", "proof")
    missing = [f for f in fields if not isinstance(body.get(f), str) or not body.get(f)]
    if missing:
        raise AgentError(400, f"an enrolment needs {', '.join(missing)}")
    ctx = context(request)
    try:
        agent = enrolment.enrol(ctx.home, body["token"], body["subscriber"], body["signing_pub"],
                                body["encryption_pub"], body["proof"])
    except enrolment.EnrolmentRefused as exc:  # nobody is authenticated: the claimed subscriber is not logged as one
        raise AgentError(401, exc.reason) from None
    note(request, subscriber=agent.subscriber)
    ctx.access_log.append({"event": AGENT_ENROLLED, "channel": CHANNEL, "subscriber": agent.subscriber,
                           "agent": agent.agent_id, "signing_pub": agent.signing_pub,
                           "encryption_pub": agent.encryption_pub})
    return JSONResponse({"agent_id": agent.agent_id, "subscriber": agent.subscriber, "enrolled_at": agent.enrolled_at})


# -- reading -----------------------------------------------------------------------------------


@router.get("/datasets", summary="The subscriber's grants: datasets, fields, whether each is in force")
@_guarded
def datasets(request: Request) -> Response:
    caller = _caller(request)
    ctx = context(request)
    items = []
    for ds_id, grant in caller.subscriber.grants.items():
        if ds_id not in ctx.catalog.datasets:
            continue
        ds = ctx.catalog.dataset(ds_id)
        try:
            authorise(ctx.catalog, caller.subscriber.id, ds_id, today())
            why_not = None
        except AccessDenied as exc:
            why_not = exc.message
        items.append({"dataset": ds_id, "title": ds.title, "key": ds.key, "fields": list(grant.fields),
                      "conditional": [f for f in grant.fields if ds.field(f).sharing == "conditional"],
                      "approval": grant.approval.id if grant.approval else None,
                      "in_force": why_not is None, "reason": why_not,
                      "latest_version": SharingStore(ctx.home.store, ds_id).latest()})
    return JSONResponse({"subscriber": caller.subscriber.id, "datasets": items})


@router.get("/datasets/{dataset}/versions", summary="Published versions of a granted dataset")
@_guarded
def versions(request: Request, dataset: str) -> Response:
    caller = _caller(request)
    _, _, store = _granted(request, caller, dataset)
    items = []
    for v in store.versions():
        m = store.read_manifest(v)
        items.append({"version": v, "manifest_sha256": m.digest, "kind": m.doc.get("kind"),
                      "created_at": m.doc.get("created_at")})
    return JSONResponse({"dataset": dataset, "versions": items})


@router.get("/datasets/{dataset}/versions/{version}/manifest", summary="A version's manifest bytes and signature")
@_guarded
def manifest(request: Request, dataset: str, version: int) -> Response:
    caller = _caller(request)
    _, _, store = _granted(request, caller, dataset)
    v = _version(store, version)
    note(request, version=v)
    m = store.read_manifest(v)
    return JSONResponse({"dataset": dataset, "version": v, "manifest": base64.b64encode(m.raw).decode("ascii"),
                         "signature": store.read_signature(v)})


@router.get("/datasets/{dataset}/versions/{version}/files/{name}", summary="A file the version's manifest lists")
@_guarded
def file(request: Request, dataset: str, version: int, name: str) -> Response:
    caller = _caller(request)
    _, _, store = _granted(request, caller, dataset)
    v = _version(store, version)
    note(request, version=v)
    listed = {f["path"] for f in store.read_manifest(v).files()}
    if name not in listed:
        raise AgentError(404, f"{dataset} version {v} lists no file {shown_subscriber(name)!r}")
    seconds = context(request).presign_seconds
    if seconds and (url := store.presigned(v, name, seconds)) is not None:
        # the file as published (encrypted: without envelopes it opens nothing), fetched from the
        # object store; the agent checks it against the signed manifest's digest as ever
        note(request, presigned=seconds)
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    path = store.version_dir(v) / name
    if not path.is_file():
        raise IntegrityError(f"{dataset} version {v}: file {name} is missing from the store")
    return FileResponse(path, media_type="application/octet-stream")


# -- the access log's checkpoints: agents as witnesses ------------------------------------------


@router.get("/log/checkpoint", summary="A fresh signed checkpoint of the access log (C2SP tlog-checkpoint) and "
                                       "the consistency proof (RFC 9162) from the tree size ?from=N the agent holds")
@_guarded
def log_checkpoint(request: Request) -> Response:
    _caller(request)
    raw = request.query_params.get("from", "0")
    if not raw.isdigit() or len(raw) > 18:
        raise AgentError(400, "from must be the tree size of the agent's last checkpoint (a whole number)")
    old = int(raw)
    ctx = context(request)
    held = ctx.access_log.head().count
    if old > held:
        raise AgentError(409, f"the agent holds a checkpoint of {old} record(s) but the access log has "
                              f"{held}: the log is shorter than a tree it signed")
    answer = ctx.access_log.consistency(old, reason="agent")
    note(request, checkpoint=answer["size"])
    return JSONResponse(answer)


# -- envelopes: the release --------------------------------------------------------------------


@router.post("/datasets/{dataset}/envelopes", summary="The grant's data keys of a version or of changes, sealed "
                                                       "to the agent's X25519 key (HPKE, RFC 9180)")
async def envelopes(request: Request, dataset: str) -> Response:
    try:
        raw = await _body(request)
    except AgentError as exc:
        return _error_response(request, exc.status, exc.message)
    return await run_in_threadpool(_envelopes, request, dataset, raw)


def _int_or_none(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise AgentError(400, f"{name} must be a whole number >= 0")
    return value


@_guarded
def _envelopes(request: Request, dataset: str, raw: bytes) -> Response:
    caller = _caller(request, raw)
    body = _json(raw)
    unknown = sorted(set(body) - {"version", "since"})
    if unknown:
        raise AgentError(400, f"unknown field(s) {', '.join(unknown)}; a request names version or since")
    version, since = _int_or_none(body, "version"), _int_or_none(body, "since")
    ds, grant, store = _granted(request, caller, dataset)
    ctx = context(request)
    latest = store.latest()
    if latest is None:
        raise AgentError(404, f"dataset {ds.id} has no published version yet")
    upto = _version(store, version) if version is not None else latest
    if since is not None and since > upto:
        raise AgentError(400, f"since {since}: dataset {ds.id} has versions 1..{upto}")
    manifests = verify_chain(store, ctx.keystore, upto)
    first = since + 1 if since is not None else base_version(manifests, upto)
    columns = view_columns(ds, grant)
    check_catalog(ds, check_span(ds.id, manifests, since or first, upto), columns, upto)
    span = list(range(first, upto + 1))
    try:  # a masked field's group is its masked column's: never the plain field's key
        wanted = {v: groups_for(manifests[v - 1], grant.columns) for v in span}
    except IntegrityError:
        if all("data_keys" in manifests[v - 1].doc for v in span):
            raise
        raise AgentError(409, f"{ds.id}: versions {first}..{upto} were published before versions had data keys of "
                              f"their own, so no agent can open them; have the bureau publish a full snapshot "
                              f"('govshare sync {ds.id} --full')") from None
    fields = list(grant.fields)
    note(request, version=upto, versions=[first, upto] if span else [], fields=fields)
    try:
        pending = ctx.access_log.append({
            "event": DELIVERY, "channel": CHANNEL, "outcome": "pending", "subscriber": caller.subscriber.id,
            "agent": caller.agent.agent_id, "dataset": ds.id, "version": upto, "since": since,
            "versions_read": [first, upto] if span else [], "manifest_sha256": manifests[upto - 1].digest,
            "purpose": caller.purpose, "case": caller.case or None,
            "approval_id": grant.approval.id if grant.approval else None, "fields": fields,
            **({"masked": list(grant.masked)} if grant.masked else {}),
        })
    except GovshareError as exc:
        raise AgentError(503, f"{exc.message}: the delivery could not be recorded, so no key was released") from None
    seq = int(pending["seq"])
    enrolment.record_delivery(ctx.home, seq, caller.agent.agent_id, caller.subscriber.id, ds.id)
    note(request, delivery=seq)
    recipient = caller.agent.encryption_key
    sealed = []
    for v in span:
        for group, (key_id, key) in version_keys(ctx.keystore, manifests[v - 1], wanted[v]).items():
            info = envelope_info(ds.id, v, group, key_id, caller.subscriber.id)
            sealed.append({"version": v, "group": group, "key_id": key_id,
                           "sealed": base64.b64encode(seal(key, recipient, info)).decode("ascii")})
    disputes = [{"key_ref": d.key_ref, "fingerprint": d.fingerprint} for d in DisputeLog(ctx.home, ds.id).open()]
    return JSONResponse({"delivery": seq, "dataset": _descriptor(ds, grant), "version": upto, "first": first,
                         "since": since, "suite": HPKE_SUITE, "envelopes": sealed, "disputes": disputes})


def _descriptor(ds: Dataset, grant: Grant) -> dict[str, Any]:
    """What the agent needs of the catalog to read and deliver the view: the key and the granted
    fields' types (nothing about the fields it is not granted)."""
    names = set(grant.fields) | {ds.key}
    return {"id": ds.id, "key": ds.key, "fields": [
        {"name": f.name, "type": f.type, "sharing": f.sharing, "sensitivity": f.sensitivity,
         "decimal": list(f.decimal) if f.decimal else None, "required": f.required}
        for f in ds.fields if f.name in names], "granted": list(grant.fields), "masked": list(grant.masked)}


@router.post("/deliveries/{seq}/complete", summary="The agent confirms (or reports failing) a delivery it wrote")
async def complete(request: Request, seq: int) -> Response:
    try:
        raw = await _body(request)
    except AgentError as exc:
        return _error_response(request, exc.status, exc.message)
    return await run_in_threadpool(_complete, request, seq, raw)


@_guarded
def _complete(request: Request, seq: int, raw: bytes) -> Response:
    caller = _caller(request, raw)
    body = _json(raw)
    ctx = context(request)
    owner = enrolment.delivery(ctx.home, seq)
    if owner is None or owner[0] != caller.agent.agent_id:
        raise AgentError(404, f"no delivery {seq} of this agent")
    outcome = body.get("outcome")
    if outcome not in ("confirmed", "failed"):
        raise AgentError(400, "outcome must be 'confirmed' or 'failed'")
    detail: dict[str, Any] = {}
    for name, kind in (("rows", int), ("deletes", int), ("output_sha256", str), ("target", str), ("reason", str)):
        value = body.get(name)
        if value is not None:
            if not isinstance(value, kind) or isinstance(value, bool) or (kind is str and len(value) > 500):
                raise AgentError(400, f"{name} is not a {kind.__name__}")
            detail[name] = value
    note(request, dataset=owner[1], delivery=seq, rows=detail.get("rows"))
    if not enrolment.complete_delivery(ctx.home, seq, utc_now()):  # one completion per delivery, even when racing
        raise AgentError(409, f"delivery {seq} was completed already")
    try:
        ctx.access_log.append({"event": COMPLETE, "delivery": seq, "outcome": outcome, "channel": CHANNEL,
                               "subscriber": caller.subscriber.id, "agent": caller.agent.agent_id, "dataset": owner[1],
                               "reported_by": "agent", **detail})
    except GovshareError as exc:
        enrolment.reopen_delivery(ctx.home, seq)
        raise AgentError(503, f"{exc.message}: the completion could not be recorded") from None
    return JSONResponse({"delivery": seq, "outcome": outcome})
