"""The one error table (terramind_openeo/errors.py) and the one translation of exceptions into it."""

from __future__ import annotations

import pickle

import pytest

from terramind_openeo import errors
from terramind_openeo.errors import (
    ERRORS,
    Internal,
    JobCanceled,
    OpenEOError,
    ProcessFailed,
    ProcessParameterInvalid,
    error_for,
    error_parts,
    to_openeo_error,
)

# HTTP statuses of the openEO API 1.2 (errors.json) for the codes of the table that it defines
API_STATUSES = {
    "Internal": 500, "NotFound": 404, "CollectionNotFound": 404, "FileNotFound": 404, "ProcessGraphNotFound": 404,
    "ProcessGraphMissing": 400, "ProcessGraphInvalid": 400, "ProcessUnsupported": 400,
    "ProcessParameterUnsupported": 400, "ProcessParameterInvalid": 400, "ProcessParameterRequired": 400,
    "JobNotFound": 404, "JobLocked": 400, "JobNotFinished": 400, "ResultLinkExpired": 410,
    "AuthenticationRequired": 401, "AuthenticationSchemeInvalid": 403, "TokenInvalid": 403,
    "CredentialsInvalid": 403, "PermissionsInsufficient": 403, "ServiceUnsupported": 400, "FeatureUnsupported": 501,
}


def test_one_class_per_code_with_the_apis_status():
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, OpenEOError)]
    codes = [c.code for c in classes if c is not OpenEOError]
    assert len(codes) == len(set(codes)), "two classes share a code"
    assert ERRORS == {c.code: c for c in classes if c is not OpenEOError}
    for code, status in API_STATUSES.items():
        assert ERRORS[code].status == status, code
    for cls in ERRORS.values():
        assert 400 <= cls.status < 600 and cls.default_message


def test_the_layers_share_the_classes():
    """processes/errors.py and backend/errors.py name the table's classes, not copies of them."""
    from terramind_openeo.backend import errors as api_errors
    from terramind_openeo.processes import errors as process_errors

    for module in (api_errors, process_errors):
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type) and issubclass(value, OpenEOError):
                assert value is getattr(errors, value.__name__), f"{module.__name__}.{name} is a second definition"


def test_a_canceled_execution_is_400_everywhere():
    """It was 409 in the process layer and 400 in the execution workers; the openEO API uses 400 for
    failures that originate with the client and has no 409."""
    from terramind_openeo.backend.errors import JobCanceled as api_canceled
    from terramind_openeo.processes.errors import JobCanceled as process_canceled

    assert JobCanceled.status == 400 and api_canceled is JobCanceled and process_canceled is JobCanceled


def test_translation_rules():
    own = ProcessParameterInvalid("bad", argument="x")
    assert to_openeo_error(own) is own
    assert to_openeo_error(own, node="n1").message == "Node 'n1', argument 'x': bad"

    failed = to_openeo_error(ZeroDivisionError("division by zero"), node="div", process="divide")
    assert isinstance(failed, ProcessFailed) and failed.status == 500
    assert failed.message == "Node 'div': process 'divide' failed: ZeroDivisionError: division by zero"

    internal = to_openeo_error(KeyError("k" * 5000))
    assert isinstance(internal, Internal) and internal.message.startswith("Execution failed: KeyError")
    assert len(internal.message) <= errors.MESSAGE_LIMIT

    hidden = to_openeo_error(RuntimeError("/secret/path"), expose=False)
    assert hidden.message == "Server error (RuntimeError)." and hidden.status == 500


def test_openeo_processes_dask_errors_keep_their_code():
    from openeo_processes_dask.process_implementations.exceptions import DimensionNotAvailable

    err = to_openeo_error(DimensionNotAvailable("no dimension 'q'"), node="r")
    assert isinstance(err, ProcessParameterInvalid) and err.code == "DimensionNotAvailable" and err.status == 400


def test_errors_cross_process_boundaries_intact():
    err = ProcessParameterInvalid("band B99 is unknown", node="load", argument="bands")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is ProcessParameterInvalid and again.message == err.message and again.argument == "bands"
    rebuilt = error_for(*error_parts(err))
    assert type(rebuilt) is ProcessParameterInvalid and rebuilt.message == err.message and rebuilt.status == 400
    crashed = to_openeo_error(RuntimeError("boom"))
    assert error_for(*error_parts(crashed)).trace == crashed.trace and "RuntimeError: boom" in crashed.trace
    spec_own = error_for("DimensionNotAvailable", "no such dimension")
    assert spec_own.code == "DimensionNotAvailable" and spec_own.status == 400
    assert error_for("Odd", "x", 418).status == 418


def test_default_messages():
    assert JobCanceled().message == "The execution was canceled." and str(JobCanceled()).startswith("JobCanceled: ")


@pytest.mark.parametrize("status", [404, 413, 501])
def test_http_level_codes_are_openeo_codes(status):
    from terramind_openeo.backend.errors import _HTTP_STATUS_CODES

    assert ERRORS[_HTTP_STATUS_CODES[status]].status == status
