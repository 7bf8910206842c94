"""openEO-style errors of the process layer: one class per openEO error code.

Every error carries the openEO ``code``, a ``message`` naming the culprit (node, argument, band,
collection) and the HTTP ``status`` the back-end answers with. The back-end maps them one to one to
openEO error objects; the ``run`` command prints ``code: message``.
"""

from __future__ import annotations


class OpenEOError(Exception):
    """Base of all errors raised to users of the process layer."""

    code: str = "Internal"
    status: int = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 node: str | None = None, argument: str | None = None):
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
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def locate(self, node: str) -> "OpenEOError":
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

    def __reduce__(self):
        # Dask workers send exceptions back pickled; the default (class + args) would drop the code, status,
        # node and argument set on the instance, so a worker's error reached users as a generic one.
        return _restore, (type(self), dict(self.__dict__))


def _restore(cls: type[OpenEOError], state: dict) -> OpenEOError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message", ""))
    err.__dict__.update(state)
    return err


class ProcessGraphInvalid(OpenEOError):
    code, status = "ProcessGraphInvalid", 400


class ProcessGraphMissing(OpenEOError):
    code, status = "ProcessGraphMissing", 400


class ProcessUnsupported(OpenEOError):
    code, status = "ProcessUnsupported", 400


class ProcessParameterRequired(OpenEOError):
    code, status = "ProcessParameterRequired", 400


class ProcessParameterInvalid(OpenEOError):
    code, status = "ProcessParameterInvalid", 400


class ProcessParameterUnsupported(OpenEOError):
    code, status = "ProcessParameterUnsupported", 400


class ProcessGraphParameterMissing(OpenEOError):
    """A ``from_parameter`` reference that no graph parameter or caller defines."""

    code, status = "ProcessGraphParameterMissing", 400


class CollectionNotFound(OpenEOError):
    code, status = "CollectionNotFound", 404


class NoDataAvailable(OpenEOError):
    """Spatial or temporal extent outside what a collection holds, or an empty range."""

    code, status = "NoDataAvailable", 400


class FormatUnsupported(OpenEOError):
    code, status = "FormatUnsupported", 400


class OutputNotWritable(OpenEOError):
    code, status = "OutputNotWritable", 500


class CatalogInvalid(OpenEOError):
    code, status = "CatalogInvalid", 500


class UdfError(OpenEOError):
    """A user-defined function raised; the message carries the trimmed traceback."""

    code, status = "UdfError", 400


class ProcessFailed(OpenEOError):
    """A process implementation raised something that is not an OpenEOError."""

    code, status = "ProcessFailed", 500


class TileFailed(OpenEOError):
    code, status = "TileFailed", 500


class JobCanceled(OpenEOError):
    code, status = "JobCanceled", 409
