"""``save_result``: records what to write; the writers run once the whole graph has been evaluated.

Deferring the write lets ``execute_process_graph`` check the whole graph first (errors before heavy
work), lets the ``run`` command write the same cube tile by tile, and keeps cancellation and progress
in one place.
"""

from __future__ import annotations

from typing import Any

import xarray as xr

from terramind_openeo.processes import context as _ctx
from terramind_openeo.processes.errors import FormatUnsupported, ProcessParameterInvalid
from terramind_openeo.processes.names import check_name

# openEO format name (case-insensitive) -> canonical name
FORMATS = {"gtiff": "GTiff", "geotiff": "GTiff", "tif": "GTiff", "tiff": "GTiff", "cog": "GTiff",
           "netcdf": "netCDF", "nc": "netCDF", "zarr": "Zarr", "json": "JSON", "geojson": "GeoJSON"}


def canonical_format(fmt: Any) -> str:
    if not isinstance(fmt, str) or fmt.lower() not in FORMATS:
        raise FormatUnsupported(f"output format '{fmt}' is not supported (supported: GTiff, netCDF, Zarr, JSON, "
                                f"GeoJSON)",
                                argument="format")
    return FORMATS[fmt.lower()]


def save_result(data: Any, format: str, options: dict | None = None) -> bool:
    fmt = canonical_format(format)
    if options is not None and not isinstance(options, dict):
        raise ProcessParameterInvalid("must be an object", argument="options")
    if options and "filename_prefix" in options:  # one file name, never a path (see names.py)
        check_name(options["filename_prefix"], "filename_prefix")
    from terramind_openeo.processes.vector_out import is_vector_cube

    if fmt == "GeoJSON" and not is_vector_cube(data):
        raise ProcessParameterInvalid(f"format GeoJSON needs a vector data cube (first dimension 'geometry'), got "
                                      f"{_kind_of(data)}", argument="data")
    if fmt not in ("JSON", "GeoJSON") and (not isinstance(data, xr.DataArray) or is_vector_cube(data)):
        raise ProcessParameterInvalid(f"format {fmt} needs a raster data cube, got {_kind_of(data)}"
                                      + (" (save it as GeoJSON or JSON)" if is_vector_cube(data) else ""),
                                      argument="data")
    _ctx.current().saves.append(_ctx.SaveRequest(data=data, format=fmt, options=dict(options or {})))
    return True


def _kind_of(data: Any) -> str:
    from terramind_openeo.processes.vector_out import is_vector_cube

    if is_vector_cube(data):
        return "a vector data cube"
    if isinstance(data, xr.DataArray):
        return f"a data cube with dimensions {list(data.dims)}"
    return type(data).__name__


def list_file_formats() -> dict:
    """openEO ``/file_formats``: what ``save_result`` writes and what local collections read."""
    raster = ["raster"]
    out = {
        "GTiff": {"title": "Cloud-Optimized GeoTIFF (one file per date)", "gis_data_types": raster,
                  "parameters": {"filename_prefix": {"type": "string", "description": "file name prefix",
                                                     "default": "openEO"}}},
        "netCDF": {"title": "netCDF-4 (CF conventions, with CRS)", "gis_data_types": raster,
                   "parameters": {"filename_prefix": {"type": "string", "description": "file name prefix",
                                                      "default": "openEO"}}},
        "Zarr": {"title": "Zarr store (one directory)", "gis_data_types": raster,
                 "parameters": {"filename_prefix": {"type": "string", "description": "file name prefix",
                                                    "default": "openEO"}}},
        "JSON": {"title": "JSON (non-raster results)", "gis_data_types": ["other"], "parameters": {}},
        "GeoJSON": {"title": "GeoJSON (vector data cubes: one feature per geometry and date, WGS84)",
                    "gis_data_types": ["vector"], "parameters": {}},
    }
    inp = {k: {**v, "parameters": {}} for k, v in out.items() if k not in ("JSON", "GeoJSON")}
    return {"input": inp, "output": out}
