"""openEO error objects and the one place where exceptions become HTTP responses.

Every error leaves the API as ``{"id", "code", "message", "links"}`` (openEO API 1.2 ``error`` schema)
with the status of its class; anything unexpected is logged with its traceback and answered as
``Internal`` (500) without internals.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class OpenEOApiError(Exception):
    """Base class: ``code`` is the openEO error code, ``status`` the HTTP status."""

    code = "Internal"
    status = 500
    default_message = "Server error."

    def __init__(self, message: str | None = None, *, code: str | None = None, status: int | None = None):
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.headers: dict[str, str] = {}  # extra response headers (e.g. the log link of a failed request)
        if code:
            self.code = code
        if status:
            self.status = status


def _error(name: str, code: str, status: int, default: str) -> type[OpenEOApiError]:
    return type(name, (OpenEOApiError,), {"code": code, "status": status, "default_message": default})


BadRequest = _error("BadRequest", "BadRequest", 400, "The request is invalid.")
JsonInvalid = _error("JsonInvalid", "JsonInvalid", 400, "The request body is not valid JSON.")
ContentTypeInvalid = _error("ContentTypeInvalid", "ContentTypeInvalid", 415,
                            "The request body must be sent as 'application/json'.")
PayloadTooLarge = _error("PayloadTooLarge", "PayloadTooLarge", 413, "The request body is too large.")
AuthenticationRequired = _error("AuthenticationRequired", "AuthenticationRequired", 401,
                                "Unauthorized: authenticate with a bearer token.")
AuthenticationSchemeInvalid = _error("AuthenticationSchemeInvalid", "AuthenticationSchemeInvalid", 403,
                                     "Invalid authentication scheme.")
CredentialsInvalid = _error("CredentialsInvalid", "CredentialsInvalid", 403, "Credentials are not correct.")
TokenInvalid = _error("TokenInvalid", "TokenInvalid", 403, "Authorization token has expired or is invalid.")
PermissionsInsufficient = _error("PermissionsInsufficient", "PermissionsInsufficient", 403,
                                 "You are not allowed to do this.")
NotFound = _error("NotFound", "NotFound", 404, "Resource not found.")
CollectionNotFound = _error("CollectionNotFound", "CollectionNotFound", 404, "Collection does not exist.")
JobNotFound = _error("JobNotFound", "JobNotFound", 404, "The batch job does not exist.")
ProcessGraphNotFound = _error("ProcessGraphNotFound", "ProcessGraphNotFound", 404,
                              "The requested user-defined process does not exist.")
ResultLinkExpired = _error("ResultLinkExpired", "ResultLinkExpired", 410,
                           "The download link has expired or is invalid.")
FileNotFound = _error("FileNotFound", "FileNotFound", 404, "File does not exist.")
JobNotFinished = _error("JobNotFinished", "JobNotFinished", 400, "Batch job has not finished computing the results yet.")
JobLocked = _error("JobLocked", "JobLocked", 400, "Job is locked due to a queued or running batch computation.")
ProcessGraphMissing = _error("ProcessGraphMissing", "ProcessGraphMissing", 400, "No valid process graph specified.")
ProcessUnsupported = _error("ProcessUnsupported", "ProcessUnsupported", 400, "Process is not supported.")
ProcessGraphInvalid = _error("ProcessGraphInvalid", "ProcessGraphInvalid", 400, "Invalid process graph specified.")
ServiceUnsupported = _error("ServiceUnsupported", "ServiceUnsupported", 400, "Secondary services are not supported.")
MethodNotAllowed = _error("MethodNotAllowed", "MethodNotAllowed", 405, "Method not allowed for this endpoint.")
TooManyJobs = _error("TooManyJobs", "TooManyRequests", 429, "Too many requests.")
Internal = _error("Internal", "Internal", 500, "Server error.")


def error_body(code: str, message: str, error_id: str | None = None) -> dict:
    return {"id": error_id or uuid.uuid4().hex, "code": code, "message": message, "links": []}


def error_response(code: str, message: str, status: int, headers: dict | None = None) -> JSONResponse:
    body = error_body(code, message)
    return JSONResponse(body, status_code=status, headers={"OpenEO-Identifier": body["id"], **(headers or {})})


# Framework-level HTTP statuses -> openEO codes (routing errors never reach our handlers as OpenEOApiError).
_HTTP_STATUS_CODES = {400: "BadRequest", 401: "AuthenticationRequired", 403: "PermissionsInsufficient",
                      404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge",
                      415: "ContentTypeInvalid", 501: "NotImplemented"}


def install_error_handlers(app: FastAPI) -> None:
    """The exception -> status map of the whole API."""

    @app.exception_handler(OpenEOApiError)
    async def _openeo(_: Request, exc: OpenEOApiError):
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
        return error_response("Internal", f"Server error ({type(exc).__name__}).", 500)
