"""The one place where exceptions become HTTP responses.

Every error leaves the API as ``{"id", "code", "message", "links"}`` (openEO API 1.2 ``error`` schema)
with the status of its class; anything unexpected is logged with its traceback and answered as
``Internal`` (500) without internals. The error classes are the package's one table
(``terramind_openeo/errors.py``, where new errors go); the API's modules import them from here.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from terramind_openeo.errors import (
    AuthenticationRequired,
    AuthenticationSchemeInvalid,
    BadRequest,
    CollectionNotFound,
    ContentTypeInvalid,
    CredentialsInvalid,
    FileNotFound,
    Internal,
    JobCanceled,
    JobLocked,
    JobNotFinished,
    JobNotFound,
    JsonInvalid,
    MethodNotAllowed,
    NotFound,
    OpenEOError,
    PayloadTooLarge,
    PermissionsInsufficient,
    ProcessGraphInvalid,
    ProcessGraphMissing,
    ProcessGraphNotFound,
    ProcessParameterInvalid,
    ProcessUnsupported,
    QuotaExceeded,
    ResultLinkExpired,
    ResultsExpired,
    ServiceUnsupported,
    TokenInvalid,
    TooManyJobs,
    error_for,
    error_parts,
    to_openeo_error,
)

log = logging.getLogger(__name__)

__all__ = [
    "AuthenticationRequired", "AuthenticationSchemeInvalid", "BadRequest", "CollectionNotFound",
    "ContentTypeInvalid", "CredentialsInvalid", "FileNotFound", "Internal", "JobCanceled", "JobLocked",
    "JobNotFinished", "JobNotFound", "JsonInvalid", "MethodNotAllowed", "NotFound", "OpenEOApiError", "OpenEOError",
    "PayloadTooLarge", "PermissionsInsufficient", "ProcessGraphInvalid", "ProcessGraphMissing",
    "ProcessGraphNotFound", "ProcessParameterInvalid", "ProcessUnsupported", "QuotaExceeded", "ResultLinkExpired",
    "ResultsExpired", "ServiceUnsupported", "TokenInvalid",
    "TooManyJobs", "error_body", "error_for", "error_parts", "error_response", "install_error_handlers", "to_openeo_error",
]


OpenEOApiError = OpenEOError
"""The former name of the back-end's error base, kept while branches that use it land; use OpenEOError."""


def error_body(code: str, message: str, error_id: str | None = None) -> dict:
    return {"id": error_id or uuid.uuid4().hex, "code": code, "message": message, "links": []}


def error_response(code: str, message: str, status: int, headers: dict | None = None) -> JSONResponse:
    body = error_body(code, message)
    return JSONResponse(body, status_code=status, headers={"OpenEO-Identifier": body["id"], **(headers or {})})


# Framework-level HTTP statuses -> openEO codes (routing errors never reach our handlers as OpenEOError).
_HTTP_STATUS_CODES = {400: "BadRequest", 401: "AuthenticationRequired", 403: "PermissionsInsufficient",
                      404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge",
                      415: "ContentTypeInvalid", 501: "FeatureUnsupported"}


def install_error_handlers(app: FastAPI) -> None:
    """The exception -> status map of the whole API."""

    @app.exception_handler(OpenEOError)
    async def _openeo(_: Request, exc: OpenEOError):
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="openEO"'
        return error_response(exc.code, exc.message, exc.status, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg')}")
        return error_response("BadRequest", "Invalid request: " + "; ".join(parts), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = _HTTP_STATUS_CODES.get(exc.status_code, "Internal" if exc.status_code >= 500 else "BadRequest")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            message = f"No such endpoint: {request.method} {request.url.path}"
        return error_response(code, message, exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        error = to_openeo_error(exc, expose=False)  # no internals in the answer; the trace is in the log
        return error_response(error.code, error.message, error.status)
