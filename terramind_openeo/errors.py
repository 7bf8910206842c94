"""The one table of openEO errors, and the one translation of any exception into one of them.

Every error that reaches a user, through the API, a batch job's logs or ``run``, is an :class:`OpenEOError`:
an openEO error ``code``, a ``message`` naming the culprit (node, argument, band, collection) and the HTTP
``status``. One class per code, below; codes and statuses follow the openEO API's ``errors.json`` where it
defines them, and its rule elsewhere: a client's fault is a 4xx (400 unless the API names another), a
failure of the server a 5xx. The engine (``processes``), the execution workers (``backend/isolation.py``)
and the API (``backend/errors.py``) all go through :func:`to_openeo_error`.

This module imports nothing heavy: the back-end's API and the UDF-only install use it without the engine.
New errors go here (``processes/errors.py`` and ``backend/errors.py`` re-export them).
"""

from __future__ import annotations

import traceback

MESSAGE_LIMIT = 2000
"""Longest message made from a foreign exception (a huge repr must not flood the logs or the response)."""


class OpenEOError(Exception):
    """Base of every error raised to users: ``code`` (openEO), ``status`` (HTTP) and a message."""

    code: str = "Internal"
    status: int = 500
    default_message: str = "Server error."
    trace: str | None = None
    """The traceback of the unexpected exception behind this error, for the server's and the run's logs (never
    the message): set by :func:`to_openeo_error`."""

    def __init__(self, message: str | None = None, *, code: str | None = None, status: int | None = None,
                 node: str | None = None, argument: str | None = None):
        message = message or self.default_message
        prefix = ""
        if node is not None:
            prefix = f"Node '{node}'"
            if argument is not None:
                prefix += f", argument '{argument}'"
            prefix += ": "
        super().__init__(prefix + message)
        self.detail = message
        self.message = prefix + message
        self.node = node
        self.argument = argument
        self.headers: dict[str, str] = {}  # extra HTTP response headers (e.g. the log link of a failed request)
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def locate(self, node: str) -> OpenEOError:
        """Name the node (and keep the argument) in the message, once."""
        if self.node is None:
            self.node = node
            where = f"Node '{node}'" + (f", argument '{self.argument}'" if self.argument else "")
            self.message = f"{where}: {self.detail}"
            self.args = (self.message,)
        return self

    def to_dict(self) -> dict:
        """The openEO error object (without ``id``, which the back-end assigns)."""
        return {"code": self.code, "message": self.message}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __reduce__(self) -> tuple:
        # Dask workers and the execution processes send exceptions back pickled; the default (class + args)
        # would drop the code, status, node and argument set on the instance.
        return _restore, (type(self), dict(self.__dict__))


def _restore(cls: type[OpenEOError], state: dict) -> OpenEOError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message", ""))
    err.__dict__.update(state)
    return err


# ---- the table: one class per openEO error code ------------------------------------------------------------
# General and HTTP-level

class BadRequest(OpenEOError):
    code, status, default_message = "BadRequest", 400, "The request is invalid."


class JsonInvalid(OpenEOError):
    code, status, default_message = "JsonInvalid", 400, "The request body is not valid JSON."


class ContentTypeInvalid(OpenEOError):
    code, status, default_message = "ContentTypeInvalid", 415, "The request body must be sent as 'application/json'."


class PayloadTooLarge(OpenEOError):
    code, status, default_message = "PayloadTooLarge", 413, "The request body is too large."


class NotFound(OpenEOError):
    code, status, default_message = "NotFound", 404, "Resource not found."


class MethodNotAllowed(OpenEOError):
    code, status, default_message = "MethodNotAllowed", 405, "Method not allowed for this endpoint."


class TooManyJobs(OpenEOError):
    code, status, default_message = "TooManyRequests", 429, "Too many requests."


class FeatureUnsupported(OpenEOError):
    code, status, default_message = "FeatureUnsupported", 501, "Feature not supported."


class Internal(OpenEOError):
    code, status, default_message = "Internal", 500, "Server error."


# Account management

class AuthenticationRequired(OpenEOError):
    code, status, default_message = "AuthenticationRequired", 401, "Unauthorized: authenticate with a bearer token."


class AuthenticationSchemeInvalid(OpenEOError):
    code, status, default_message = "AuthenticationSchemeInvalid", 403, "Invalid authentication scheme."


class CredentialsInvalid(OpenEOError):
    code, status, default_message = "CredentialsInvalid", 403, "Credentials are not correct."


class TokenInvalid(OpenEOError):
    code, status, default_message = "TokenInvalid", 403, "Authorization token has expired or is invalid."


class PermissionsInsufficient(OpenEOError):
    code, status, default_message = "PermissionsInsufficient", 403, "You are not allowed to do this."


# Collections, files, batch jobs, user-defined processes, services

class CollectionNotFound(OpenEOError):
    code, status, default_message = "CollectionNotFound", 404, "Collection does not exist."


class CatalogInvalid(OpenEOError):
    """The operator's collection catalog cannot be used (a server-side configuration error)."""

    code, status, default_message = "CatalogInvalid", 500, "The collection catalog is invalid."


class FileNotFound(OpenEOError):
    code, status, default_message = "FileNotFound", 404, "File does not exist."


class JobNotFound(OpenEOError):
    code, status, default_message = "JobNotFound", 404, "The batch job does not exist."


class JobNotFinished(OpenEOError):
    code, status, default_message = "JobNotFinished", 400, "Batch job has not finished computing the results yet."


class JobLocked(OpenEOError):
    code, status, default_message = "JobLocked", 400, "Job is locked due to a queued or running batch computation."


class JobCanceled(OpenEOError):
    """The execution was canceled by its user (the API defines no code for it: a client-side end, so 400)."""

    code, status, default_message = "JobCanceled", 400, "The execution was canceled."


class ResultLinkExpired(OpenEOError):
    code, status, default_message = "ResultLinkExpired", 410, "The download link has expired or is invalid."


class ProcessGraphNotFound(OpenEOError):
    code, status, default_message = ("ProcessGraphNotFound", 404,
                                     "The requested user-defined process does not exist.")


class ServiceUnsupported(OpenEOError):
    code, status, default_message = "ServiceUnsupported", 400, "Secondary services are not supported."


# Process graphs and their execution

class ProcessGraphMissing(OpenEOError):
    code, status, default_message = "ProcessGraphMissing", 400, "No valid process graph specified."


class ProcessGraphInvalid(OpenEOError):
    code, status, default_message = "ProcessGraphInvalid", 400, "Invalid process graph specified."


class ProcessUnsupported(OpenEOError):
    code, status, default_message = "ProcessUnsupported", 400, "Process is not supported."


class ProcessParameterRequired(OpenEOError):
    code, status, default_message = "ProcessParameterRequired", 400, "A required parameter is missing."


class ProcessParameterInvalid(OpenEOError):
    code, status, default_message = "ProcessParameterInvalid", 400, "A parameter value is invalid."


class ProcessParameterUnsupported(OpenEOError):
    code, status, default_message = "ProcessParameterUnsupported", 400, "A parameter is not supported."


class ProcessGraphParameterMissing(OpenEOError):
    """A ``from_parameter`` reference that no graph parameter or caller defines."""

    code, status, default_message = "ProcessGraphParameterMissing", 400, "A process graph parameter is missing."


class NoDataAvailable(OpenEOError):
    """Spatial or temporal extent outside what a collection holds, or an empty range."""

    code, status, default_message = "NoDataAvailable", 400, "No data available for the requested extent."


class FormatUnsupported(OpenEOError):
    code, status, default_message = "FormatUnsupported", 400, "The output format is not supported."


class OutputNotWritable(OpenEOError):
    code, status, default_message = "OutputNotWritable", 500, "The result could not be written."


class UdfError(OpenEOError):
    """A user-defined function raised; the message carries the trimmed traceback."""

    code, status, default_message = "UdfError", 400, "The user-defined function failed."


class TooLargeForSynchronousProcessing(OpenEOError):
    """A synchronous request whose cubes exceed the back-end's budget: it should be a batch job."""

    code, status = "TooLargeForSynchronousProcessing", 400


class QuotaExceeded(OpenEOError):
    """The stored results of a user take all the space the back-end grants them."""

    code, status = "QuotaExceeded", 400
    default_message = "The storage quota of this user is used up."


class ResultsExpired(OpenEOError):
    """The results of a finished job were deleted after their time to live."""

    code, status = "ResultsExpired", 410
    default_message = "The results of this job have expired."


class ProcessFailed(OpenEOError):
    """A process implementation raised something that is not an OpenEOError."""

    code, status, default_message = "ProcessFailed", 500, "A process failed."


class WeightsUnavailable(OpenEOError):
    """The official checkpoints are not on this machine and the hub cannot provide them now."""
    code, status, default_message = "WeightsUnavailable", 503, "The model weights are not available."


class TileFailed(OpenEOError):
    code, status, default_message = "TileFailed", 500, "A work tile failed."


class FormatUnsuitable(OpenEOError):
    """``load_url``: the data cannot be read in the format asked for (the code of that process's spec)."""

    code, status, default_message = "FormatUnsuitable", 400, "Data can't be loaded with the requested input format."


class MLModelNotFound(OpenEOError):
    """``load_ml_model``: no finished batch job of the caller with exactly one saved model."""

    code, status, default_message = "MLModelNotFound", 400, "No such machine-learning model."


class MLModelItemInvalid(OpenEOError):
    """The STAC item of a model does not describe a model this back-end loads (MLM fields, artifact type)."""

    code, status, default_message = "MLModelItemInvalid", 400, "The model's STAC item is invalid."


class MLModelInvalid(OpenEOError):
    """A stored model that is not in the safe format, or whose content does not hold together."""

    code, status, default_message = "MLModelInvalid", 400, "The model file is not in the safe model format."


ERRORS: dict[str, type[OpenEOError]] = {
    value.code: value for value in list(globals().values())
    if isinstance(value, type) and issubclass(value, OpenEOError) and value is not OpenEOError}
"""openEO error code -> its class, for every class above."""


def error_for(code: str, message: str | None = None, status: int | None = None,
              trace: str | None = None) -> OpenEOError:
    """An error of ``code`` with ``message``: an instance of its class where the table has one (status: the
    class's unless given), else of :class:`OpenEOError` (a process spec's own code; status 400 unless given);
    ``trace``: the traceback it had in another process (:func:`error_parts` gives all four)."""
    cls = ERRORS.get(code, OpenEOError)
    if status is None:
        status = cls.status if code in ERRORS else 400
    err = cls(message, code=code, status=status)
    err.trace = trace
    return err


def to_openeo_error(exc: BaseException, *, node: str | None = None, process: str | None = None,
                    expose: bool = True) -> OpenEOError:
    """The one translation of an exception into the error a user sees.

    - an :class:`OpenEOError` stays itself (located at ``node`` if given);
    - an error of openeo-processes-dask's standard processes keeps its code, as ``ProcessParameterInvalid``;
    - anything else inside a process (``node`` given) is ``ProcessFailed`` naming the process, elsewhere it is
      ``Internal``; both keep the exception's type and text (a bug must be findable: :func:`describe`), cut
      to ``MESSAGE_LIMIT``, unless ``expose`` is False (the API's last resort): then only its type.
    """
    if isinstance(exc, OpenEOError):
        return exc.locate(node) if node is not None else exc
    if _from_processes_dask(exc):  # its exceptions are named after their codes
        return ProcessParameterInvalid(str(exc)[:MESSAGE_LIMIT], code=type(exc).__name__, node=node)
    if not expose:
        return Internal(f"Server error ({type(exc).__name__}).")
    if node is not None:
        what = f"process '{process}'" if process else "the process"
        err: OpenEOError = ProcessFailed(f"{what} failed: {describe(exc)}"[:MESSAGE_LIMIT], node=node)
    else:
        err = Internal(f"Execution failed: {describe(exc)}"[:MESSAGE_LIMIT])
    err.trace = format_traceback(exc)
    return err


def _from_processes_dask(exc: BaseException) -> bool:
    """An ``OpenEOException`` of openeo-processes-dask (recognised without importing it)."""
    return any(c.__name__ == "OpenEOException" and c.__module__.startswith("openeo_processes_dask")
               for c in type(exc).__mro__)


def describe(exc: BaseException) -> str:
    """``Type: text`` of an unexpected exception, for messages; never without a text: a bare ``assert`` deep
    in a dependency (odc-geo, xarray) has none, so the place it was raised stands in for it."""
    text = str(exc).strip()
    if text:
        return f"{type(exc).__name__}: {text}"
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return f"{type(exc).__name__} (raised without a message)"
    last = frames[-1]
    where = "/".join(last.filename.replace("\\", "/").split("/")[-2:])
    code = f": {last.line.strip()}" if last.line else ""
    return f"{type(exc).__name__} raised without a message in {last.name}() at {where}:{last.lineno}{code}"


def format_traceback(exc: BaseException, limit: int = 8000) -> str:
    """The traceback of ``exc`` (causes included) for logs, cut to its last ``limit`` characters."""
    text = "".join(traceback.format_exception(exc))
    return text if len(text) <= limit else "...\n" + text[-limit:]


def error_parts(exc: OpenEOError) -> tuple[str, str, int, str | None]:
    """(code, message, status, trace): what crosses a process boundary as plain data (``error_for`` rebuilds
    it, the trace set back on it)."""
    return exc.code, exc.message, int(exc.status), exc.trace
