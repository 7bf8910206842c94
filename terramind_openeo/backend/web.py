"""HTTP helpers shared by the routers: JSON bodies (type, size, syntax checked), JSON answers that may
carry NaN, media types of result files and signed, expiring download links."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import secrets
import time
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from terramind_openeo.jsonable import to_jsonable

from .errors import ContentTypeInvalid, JsonInvalid, PayloadTooLarge

MEDIA_TYPES = {
    ".tif": "image/tiff; application=geotiff", ".tiff": "image/tiff; application=geotiff",
    ".nc": "application/x-netcdf", ".json": "application/json", ".geojson": "application/geo+json",
    ".png": "image/png", ".jpg": "image/jpeg", ".zip": "application/zip", ".zarr": "application/vnd+zarr",
    ".csv": "text/csv", ".txt": "text/plain", ".vrt": "application/xml",
}


def media_type(path: Path | str) -> str:
    return MEDIA_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")


_JSON_STRUCTURE = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')
MAX_JSON_DEPTH = 100
MAX_GRAPH_NODES = 2000


def check_json_shape(body: bytes, max_depth: int = MAX_JSON_DEPTH, max_nodes: int = MAX_GRAPH_NODES) -> None:
    """Refuse a body nested deeper than ``max_depth`` or with more than ``max_nodes`` process nodes, judged
    on the raw bytes before any Python object is built (a deep body would exhaust the parser's stack)."""
    depth = nodes = 0
    for match in _JSON_STRUCTURE.finditer(body):
        token = match.group()
        if token[:1] == b'"':
            if token == b'"process_id"':
                nodes += 1
                if nodes > max_nodes:
                    raise JsonInvalid(f"The request has more than {max_nodes} process nodes.")
        elif token in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                raise JsonInvalid(f"The request body is nested more than {max_depth} levels deep.")
        else:
            depth -= 1


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not standard JSON (use null)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} does not fit a 64-bit float")
    return value


def loads_standard(body: bytes | str) -> Any:
    """``json.loads`` of standard JSON only: ``NaN``, ``Infinity`` and numbers beyond float range refused."""
    return json.loads(body, parse_constant=_no_constant, parse_float=_finite_float)


async def read_json(request: Request, max_bytes: int, *, allow_empty: bool = False) -> Any:
    """The request body as JSON: 415 for another content type, 413 when too large, 400 when malformed,
    too deep, too many nodes, or not standard JSON (NaN, Infinity, 1e400)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"The request body has {declared} bytes; at most {max_bytes} are accepted.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"The request body exceeds {max_bytes} bytes.")
    if not body.strip():
        if allow_empty:
            return None
        raise JsonInvalid("The request body is empty; a JSON object is expected.")
    if ctype and ctype != "application/json" and not ctype.endswith("+json"):
        raise ContentTypeInvalid(f"Content type {ctype!r} is not supported; send 'application/json'.")
    check_json_shape(bytes(body))
    try:
        return loads_standard(bytes(body))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise JsonInvalid(f"The request body is not valid JSON: {str(exc)[:200]}.") from None


def json_object(value: Any, what: str = "request body") -> dict:
    if not isinstance(value, dict):
        raise JsonInvalid(f"The {what} must be a JSON object, not {type(value).__name__}.")
    return value


class NanJSONResponse(Response):
    """A computed result as JSON, NaN and infinities kept as the ``NaN``/``Infinity`` tokens openEO clients
    read (the Python client, the openEO processes' own tests: ``sqrt(-1)`` is NaN, ``log(0)`` -Infinity;
    null would lose the difference). Requests, by contrast, must be standard JSON (``loads_standard``)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=True, default=to_jsonable).encode()


def has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value) or math.isinf(value)
    if isinstance(value, (list, tuple)):
        return any(has_nan(v) for v in value)
    if isinstance(value, dict):
        return any(has_nan(v) for v in value.values())
    return False


class UrlSigner:
    """HMAC-SHA256 signatures for result download links; the key lives in the data directory."""

    def __init__(self, key_file: Path):
        key_file.parent.mkdir(parents=True, exist_ok=True)
        if not key_file.exists():
            key_file.write_bytes(secrets.token_bytes(32))
            key_file.chmod(0o600)
        self._key = key_file.read_bytes()

    def sign(self, job_id: str, filename: str, expires: int) -> str:
        message = f"{job_id}\n{filename}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:40]

    def verify(self, job_id: str, filename: str, expires: int, signature: str) -> bool:
        return (expires >= time.time()
                and hmac.compare_digest(self.sign(job_id, filename, expires), signature))
