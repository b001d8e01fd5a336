"""Errors in OpenAI's JSON shape: ``{"error": {"message", "type", "param", "code"}}``.

Every client mistake is a 4xx with a message that says what to change; a 500 means a bug or a
failure of llama.cpp itself.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from edgespec.errors import (
    ConstraintError,
    ContextOverflowError,
    EdgespecError,
    LlamaError,
    MessageError,
    ModelFileError,
)

logger = logging.getLogger(__name__)


class APIError(Exception):
    """An error answer: HTTP status, OpenAI error type and code, and the offending parameter."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        """The HTTP response."""
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def from_edgespec(exc: EdgespecError) -> APIError:
    """The API error for an edgespec failure: the request's fault (400) unless llama.cpp failed."""
    if isinstance(exc, (LlamaError, ModelFileError)):
        return APIError(500, str(exc), type="server_error", code="llama_error")
    if isinstance(exc, MessageError):
        return APIError(400, str(exc), param=exc.param, code=exc.code)
    if isinstance(exc, ConstraintError):
        return APIError(400, str(exc), param=exc.param, code="invalid_value")
    code = "context_length_exceeded" if isinstance(exc, ContextOverflowError) else "invalid_value"
    return APIError(400, str(exc), code=code)


def from_validation(exc: RequestValidationError) -> APIError:
    """The API error for a body pydantic refused: its first complaint, and where."""
    errors = exc.errors()
    if not errors:
        return APIError(400, "invalid request body")
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    if first.get("type") == "json_invalid":
        return APIError(400, f"the body is not valid JSON: {first.get('msg', '')}", code="invalid_json")
    param = ".".join(loc) or None
    where = f"{param}: " if param else ""
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return APIError(
        400, f"{where}{first.get('msg', 'invalid value')}{more}", param=param, code="invalid_value"
    )


_HTTP_TYPES = {401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error"}


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return exc.response()


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return from_validation(exc).response()


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    kind = _HTTP_TYPES.get(
        exc.status_code, "invalid_request_error" if exc.status_code < 500 else "server_error"
    )
    headers = dict(exc.headers) if exc.headers else None
    return APIError(exc.status_code, str(exc.detail), type=kind, headers=headers).response()


async def _edgespec_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EdgespecError)
    return from_edgespec(exc).response()


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error serving %s", request.url.path)
    return APIError(500, f"internal error: {type(exc).__name__}", type="server_error").response()


def install(app: FastAPI) -> None:
    """Make every error the app answers OpenAI-shaped."""
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(EdgespecError, _edgespec_error)
    app.add_exception_handler(Exception, _unexpected)
