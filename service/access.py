"""Every HTTP request into the access log, granted or denied, before its response leaves.

``AccessRecorder`` is a pure ASGI middleware: when a handler (or the error handlers) starts the
response, it first appends one ``request`` record to the access log: method, path, status,
outcome, and what the handler noted with ``note(request, ...)``: the subscriber *as
authenticated* (never as claimed), purpose, case reference, dataset, versions, fields, rows,
the reason of a denial. Only then is the response started. If the record cannot be written the
client gets 503 and nothing of the response: no delivery without its record.

Handlers that release key material (the agent protocol's envelopes) also write a ``delivery``
record themselves before building the response (``lineage.audit``'s pending/complete pair), so
the release and its record are one decision.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.errors import GovshareError

log = logging.getLogger(__name__)

REQUEST = "request"
FILE_URL_PREFIX = "/delta-sharing/files/"
_NOTE = "govshare_access"
NOTED = ("subscriber", "channel", "purpose", "case", "dataset", "version", "versions", "fields", "rows", "reason",
         "delivery", "checkpoint", "presigned")


def note(request: Request, **fields: Any) -> None:  # noqa: ANN401 - JSON values
    """Add to what the access-log record of this request will say (last value wins)."""
    unknown = set(fields) - set(NOTED)
    if unknown:
        raise ValueError(f"access-log note: unknown field(s) {sorted(unknown)}")
    request.scope.setdefault("state", {}).setdefault(_NOTE, {}).update(fields)


def noted(scope: Scope) -> dict[str, Any]:
    return dict(scope.get("state", {}).get(_NOTE, {}))


def shown_path(path: str) -> str:
    """The path as the log keeps it: a file URL's token (a credential while it lasts) replaced by
    the first 16 hex digits of its SHA-256, enough to match the log to the delivery that issued it."""
    head, sep, token = path.partition(FILE_URL_PREFIX)
    if not sep or head:
        return path
    return f"{FILE_URL_PREFIX}sha256:{hashlib.sha256(token.encode('utf-8', 'replace')).hexdigest()[:16]}"


def outcome_of(status: int) -> str:
    if status < 400:
        return "granted"
    return {400: "bad request", 401: "unauthenticated", 403: "denied", 404: "not found", 409: "conflict",
            413: "too large"}.get(status, "error")


class AccessRecorder:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held = {"refused": False, "started": False}

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not held["started"]:
                held["started"] = True
                if not _record(scope, message["status"]):
                    held["refused"] = True
                    body = json.dumps({"errorCode": "SERVICE_UNAVAILABLE",
                                       "message": "the access log cannot be written; nothing is served"}).encode()
                    await send({"type": "http.response.start", "status": 503,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body, "more_body": False})
                    return
            if held["refused"]:
                return
            await send(message)

        await self.app(scope, receive, recording_send)


def _record(scope: Scope, status: int) -> bool:
    ctx = scope["app"].state.ctx
    record = {"event": REQUEST, "method": scope.get("method"), "path": shown_path(scope.get("path") or ""), "status": status,
              "outcome": outcome_of(status), **{k: v for k, v in noted(scope).items() if v is not None}}
    record.setdefault("subscriber", None)
    try:
        ctx.access_log.append(record)
    except GovshareError as exc:
        log.error("access log: %s", exc.message)
        return False
    return True
