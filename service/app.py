"""The sharing service as an ASGI app (FastAPI): the Delta Sharing protocol (service.delta) and
govshare's agent protocol (service.agent_api), behind the access recorder (service.access).
OpenAPI at /openapi.json, documentation at /docs.

Errors are JSON ``{"errorCode", "message"}`` (the shape Delta Sharing clients read): govshare's
errors map to their statuses (AccessDenied 403, ConfigError 400, IntegrityError 500 with the
integrity message logged, TemporaryFailure 503); anything unexpected is a 500 with one log line,
never a traceback in a response.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.errors import AccessDenied, ConfigError, GovshareError, IntegrityError, TemporaryFailure
from service import agent_api, delta
from service.access import AccessRecorder, note
from service.context import ServiceContext

log = logging.getLogger(__name__)

_CODES = {400: "BAD_REQUEST", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "RESOURCE_DOES_NOT_EXIST",
          405: "METHOD_NOT_ALLOWED", 409: "CONFLICT", 413: "PAYLOAD_TOO_LARGE", 500: "INTERNAL_ERROR",
          503: "SERVICE_UNAVAILABLE"}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"errorCode": _CODES.get(status, "ERROR"), "message": message}, status_code=status,
                        headers=headers)


def status_of(exc: GovshareError) -> int:
    if isinstance(exc, AccessDenied):
        return 403
    if isinstance(exc, TemporaryFailure):
        return 503
    if isinstance(exc, IntegrityError):
        return 500
    if isinstance(exc, ConfigError):
        return 400
    return 500


def create_app(ctx: ServiceContext) -> FastAPI:
    app = FastAPI(title="govshare sharing service", version="1",
                  description="Delta Sharing (share `govshare`, schema `base`) for stock clients' plain view; "
                              "the agent protocol (/agent/v1) for enrolled subscriber agents. Every request, "
                              "granted or denied, is in the publisher's access log.")
    app.state.ctx = ctx
    app.include_router(delta.router)
    app.include_router(agent_api.router)

    @app.exception_handler(GovshareError)
    async def _govshare_error(request: Request, exc: GovshareError) -> JSONResponse:
        status = status_of(exc)
        note(request, reason=exc.message)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc.message)
        return error_response(status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        note(request, reason=message)
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        note(request, reason=f"malformed request: {problems}"[:500])
        return error_response(400, f"malformed request: {problems}"[:500])

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s: unexpected %s (a bug; GOVSHARE_DEBUG=1 on the service shows more)", request.method,
                  request.url.path, type(exc).__name__)
        if __debug__ and logging.getLogger().isEnabledFor(logging.DEBUG):
            log.debug("unexpected error", exc_info=exc)
        note(request, reason=f"internal error ({type(exc).__name__})")
        return error_response(500, "internal error; the service's log says more")

    app.add_middleware(AccessRecorder)
    return app
