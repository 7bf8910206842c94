"""openEO errors of the process layer: the classes of the package's one error table.

They are defined, with their codes and HTTP statuses, in ``terramind_openeo/errors.py`` (new errors go there);
this module names the ones the process layer raises, so that its modules import them from their own layer.
"""

from __future__ import annotations

from terramind_openeo.errors import (
    CatalogInvalid,
    CollectionNotFound,
    FormatUnsupported,
    JobCanceled,
    NoDataAvailable,
    OpenEOError,
    OutputNotWritable,
    ProcessFailed,
    ProcessGraphInvalid,
    ProcessGraphMissing,
    ProcessGraphParameterMissing,
    ProcessParameterInvalid,
    ProcessParameterRequired,
    ProcessParameterUnsupported,
    ProcessUnsupported,
    TileFailed,
    TooLargeForSynchronousProcessing,
    UdfError,
    WeightsUnavailable,
    to_openeo_error,
)

__all__ = [
    "CatalogInvalid", "CollectionNotFound", "FormatUnsupported", "JobCanceled", "NoDataAvailable", "OpenEOError",
    "OutputNotWritable", "ProcessFailed", "ProcessGraphInvalid", "ProcessGraphMissing",
    "ProcessGraphParameterMissing", "ProcessParameterInvalid", "ProcessParameterRequired",
    "ProcessParameterUnsupported", "ProcessUnsupported", "TileFailed", "TooLargeForSynchronousProcessing",
    "UdfError", "WeightsUnavailable", "to_openeo_error",
]
