"""One error shape for every endpoint: ``{"error": {"code": ..., "message": ...}}`` with the right status."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.orchestrator import StageUnavailable

__all__ = ["TTSError", "UnavailableError", "error_response", "install_error_handlers"]

log = logging.getLogger("tts.errors")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "timeout",
    413: "text_too_long",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "overloaded",
    500: "internal",
    503: "unavailable",
    504: "timeout",
}


class TTSError(Exception):
    """A client-visible failure with an HTTP status, a stable code and a human-readable message."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


class UnavailableError(TTSError, StageUnavailable):
    """A stage stayed unavailable after the retries (503 + Retry-After); the orchestrator may re-run a
    chunked unit whole when it happens mid-unit."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(503, "unavailable", message, retry_after_s)


def error_response(
    status: int,
    code: str,
    message: str,
    retry_after_s: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The JSON error body (plus ``Retry-After`` for 429/503 when known, and any protocol headers such as
    the ``Allow`` a 405 must carry)."""
    out = dict(headers or {})
    if retry_after_s is not None:
        out["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=out or None
    )


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception type a request can raise to the JSON error shape (never a bare 500 page)."""

    @app.exception_handler(TTSError)
    async def _tts_error(_: Request, exc: TTSError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.retry_after_s)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(asyncio.TimeoutError)
    async def _timeout(_: Request, exc: asyncio.TimeoutError) -> JSONResponse:
        return error_response(504, "timeout", "synthesis did not finish within the request deadline")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error: %s", type(exc).__name__)
        return error_response(500, "internal", f"internal error ({type(exc).__name__})")
