"""The messages between the server and a UDF sandbox: a JSON header and numpy arrays, nothing executable.

Whatever comes out of a sandbox was written by user code, so it is parsed as data only: a length-prefixed
JSON header, then length-prefixed ``.npy`` arrays read with ``allow_pickle=False`` (no object arrays, no
pickles), every size bounded before it is read. A labelled cube travels as its values, its dimension
coordinates (numbers, dates or strings only), its name, its scalar attributes and its CRS as text.
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any, BinaryIO

import numpy as np

MAX_HEADER = 4 * 1024 * 1024
DATA_KINDS = "biuf"  # cube values: booleans, integers, floats
COORD_KINDS = "biufMmU"  # coordinates: also dates, durations and fixed-width strings


class WireError(Exception):
    """A malformed, oversized or unexpected message."""


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            raise EOFError("the other side closed the channel")
        data += chunk
    return bytes(data)


def send(stream: BinaryIO, header: dict, arrays: tuple[np.ndarray, ...] = ()) -> None:
    payload = json.dumps({**header, "arrays": len(arrays)}, allow_nan=False, default=str).encode()
    stream.write(struct.pack(">I", len(payload)) + payload)
    for array in arrays:
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
        stream.write(struct.pack(">Q", buf.tell()) + buf.getvalue())
    stream.flush()


def receive(stream: BinaryIO, max_bytes: int) -> tuple[dict, list[np.ndarray]]:
    """One message; raises :class:`WireError` when it breaks the format or ``max_bytes``."""
    (size,) = struct.unpack(">I", _read_exact(stream, 4))
    if size > MAX_HEADER:
        raise WireError(f"a message header of {size} bytes")
    try:
        header = json.loads(_read_exact(stream, size))
    except ValueError:
        raise WireError("a message header that is not JSON") from None
    count = header.get("arrays", 0) if isinstance(header, dict) else -1
    if not isinstance(count, int) or not 0 <= count <= 64:
        raise WireError("a message with a bad array count")
    arrays, total = [], 0
    for _ in range(count):
        (length,) = struct.unpack(">Q", _read_exact(stream, 8))
        total += length
        if total > max_bytes:
            raise WireError(f"a message of more than {max_bytes} bytes")
        try:
            arrays.append(np.lib.format.read_array(io.BytesIO(_read_exact(stream, length)), allow_pickle=False))
        except (ValueError, OSError) as exc:
            raise WireError(f"an array that cannot be read: {exc}") from None
    return header, arrays


def _scalar_attrs(attrs: dict) -> dict:
    out = {}
    for key, value in attrs.items():
        if isinstance(value, np.generic):
            value = value.item()
        finite = not (isinstance(value, float) and not np.isfinite(value))
        if (isinstance(value, (str, int, float, bool)) or value is None) and finite:
            out[str(key)] = value
    return out


def encode_cube(cube: Any, crs: Any = None) -> tuple[dict, tuple[np.ndarray, ...]]:
    """Header and arrays of a labelled cube (values first, then one array per dimension coordinate)."""
    arrays = [np.asarray(cube.values)]
    coords = {}
    for dim in cube.dims:
        if dim in cube.coords:
            coords[str(dim)] = len(arrays)
            values = np.asarray(cube[dim].values)
            if values.dtype.kind == "O":
                values = values.astype(str)
            arrays.append(values)
    header = {"dims": [str(d) for d in cube.dims], "coords": coords, "name": None if cube.name is None else str(cube.name),
              "attrs": _scalar_attrs(dict(cube.attrs)), "crs": None if crs is None else str(crs)}
    return header, tuple(arrays)


def decode_cube(header: dict, arrays: list[np.ndarray]):
    """The labelled cube of a message, its types and shapes checked."""
    import xarray as xr

    dims, coords = header.get("dims"), header.get("coords") or {}
    if not isinstance(dims, list) or not all(isinstance(d, str) for d in dims) or not arrays:
        raise WireError("a cube without dimensions or values")
    data = arrays[0]
    if data.dtype.kind not in DATA_KINDS or data.ndim != len(dims):
        raise WireError(f"cube values of type {data.dtype} and {data.ndim} dimensions for {dims}")
    labelled = {}
    for dim, index in coords.items():
        if dim not in dims or not isinstance(index, int) or not 0 < index < len(arrays):
            raise WireError(f"a bad coordinate {dim!r}")
        values = arrays[index]
        if values.dtype.kind not in COORD_KINDS or values.shape != (data.shape[dims.index(dim)],):
            raise WireError(f"coordinate {dim!r} of type {values.dtype} and shape {values.shape}")
        labelled[dim] = values
    name = header.get("name")
    attrs = header.get("attrs")
    attrs = attrs if isinstance(attrs, dict) else {}
    return xr.DataArray(data, dims=dims, coords=labelled, name=name if isinstance(name, str) else None,
                        attrs=_scalar_attrs(attrs))
