"""What every protocol handler of the service shares: one error type with its status, and the
guard that turns every failure into ``{"errorCode", "message"}`` with that status (never a
traceback, never a value), noting the reason for the access log."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from common.errors import AccessDenied, GovshareError, IntegrityError, TemporaryFailure
from service.access import note

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Response])


class ServiceError(Exception):
    """A refusal with its HTTP status; the message is safe to answer and to log."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(request: Request, codes: Mapping[int, str], status: int, message: str) -> JSONResponse:
    note(request, reason=message)
    return JSONResponse({"errorCode": codes.get(status, "INTERNAL_ERROR"), "message": message}, status_code=status)


def guarded(channel: str, codes: Mapping[int, str]) -> Callable[[F], F]:
    """Decorate a (sync) handler: its channel noted, every failure answered with its status:
    ServiceError its own, AccessDenied 403, TemporaryFailure 503, IntegrityError 500 (logged),
    another GovshareError 400 (a version range, a schema change, a catalog mismatch), a bug 500."""

    def wrap(handler: F) -> F:
        @functools.wraps(handler)
        def run(request: Request, *args: Any, **kwargs: Any) -> Response:  # noqa: ANN401
            note(request, channel=channel)
            try:
                return handler(request, *args, **kwargs)
            except ServiceError as exc:
                return error_response(request, codes, exc.status, exc.message)
            except AccessDenied as exc:
                return error_response(request, codes, 403, exc.message)
            except TemporaryFailure as exc:
                return error_response(request, codes, 503, exc.message)
            except IntegrityError as exc:
                log.error("%s: %s", channel, exc.message)
                return error_response(request, codes, 500, f"{exc.message}; nothing is served from it")
            except GovshareError as exc:
                return error_response(request, codes, 400, exc.message)
            except Exception as exc:  # a bug: say what, never the values
                if os.environ.get("GOVSHARE_DEBUG"):
                    raise
                log.error("%s: unexpected %s in %s", channel, exc.__class__.__name__, handler.__name__)
                return error_response(request, codes, 500, f"unexpected failure ({exc.__class__.__name__})")

        return run  # type: ignore[return-value]

    return wrap
