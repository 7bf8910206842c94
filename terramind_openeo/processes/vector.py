"""Vector data in process graphs: GeoJSON checked at the door, vector cubes, ``load_geojson`` and ``load_url``.

A vector cube here is an ``xarray.DataArray`` whose first dimension is ``geometry``: its coordinate holds
shapely geometries with an xvec ``GeometryIndex`` (so ``cube.xvec.to_geodataframe()`` works) in the CRS
of the source (EPSG:4326 for GeoJSON), and every scalar feature property rides along as a coordinate on
``geometry`` (``cube["label"]``), so the labels of training points survive ``aggregate_spatial``.

Everything a user sends is parsed here strictly: feature count, geometry types, finite coordinates, valid
polygons and the legacy ``crs`` member; each error names the feature (its index) and what is wrong.
"""

from __future__ import annotations

import io
import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from pyproj import CRS

from terramind_openeo.config import settings
from terramind_openeo.errors import FormatUnsuitable, ProcessParameterInvalid

logger = logging.getLogger(__name__)

MAX_VECTOR_BYTES = 64 * 2**20
"""Bytes ``load_url`` reads from a URL before giving up."""
GEOMETRY_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon")
# names a property may not take as a coordinate (they are the cube's dimensions)
_RESERVED = ("geometry", "properties", "t", "bands", "x", "y", "spatial_ref")


@dataclass(frozen=True)
class Features:
    """Parsed features: shapely geometries, their property dicts and the CRS of the coordinates."""

    geometries: list
    properties: list[dict]
    crs: CRS

    def __len__(self) -> int:
        return len(self.geometries)


def _crs_member(data: dict, argument: str) -> CRS:
    """The legacy GeoJSON ``crs`` member (``{"type": "name", "properties": {"name": "EPSG:32633"}}``);
    RFC 7946 GeoJSON without it is WGS 84 longitude/latitude."""
    member = data.get("crs")
    if member is None:
        return CRS.from_epsg(4326)
    name = member.get("properties", {}).get("name") if isinstance(member, dict) else member
    try:
        return CRS.from_user_input(name)
    except Exception as exc:
        raise ProcessParameterInvalid(f"GeoJSON 'crs' {member!r:.80} is not a coordinate reference system",
                                      argument=argument) from exc


def _geometry(geom: Any, where: str, argument: str):
    import shapely
    import shapely.geometry

    if not isinstance(geom, dict) or "type" not in geom:
        raise ProcessParameterInvalid(f"{where} has no geometry", argument=argument)
    kind = geom.get("type")
    if kind not in GEOMETRY_TYPES:
        raise ProcessParameterInvalid(f"{where}: geometry type {kind!r} is not supported "
                                      f"(supported: {', '.join(GEOMETRY_TYPES)})", argument=argument)
    try:
        shape = shapely.geometry.shape(geom)
    except Exception as exc:
        raise ProcessParameterInvalid(f"{where}: malformed {kind} coordinates ({exc})", argument=argument) from exc
    coords = shapely.get_coordinates(shape)
    if coords.size == 0 or not np.isfinite(coords).all():
        raise ProcessParameterInvalid(f"{where}: {kind} has no coordinates or non-finite ones", argument=argument)
    if not shape.is_valid:
        raise ProcessParameterInvalid(f"{where}: invalid {kind} ({shapely.is_valid_reason(shape)})",
                                      argument=argument)
    return shape


def _plain(value: Any) -> Any:
    """A property value kept as a coordinate: numbers, strings, booleans and null; anything else dropped."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return _DROP


_DROP = object()


def parse_geojson(data: Any, argument: str = "data") -> Features:
    """A GeoJSON FeatureCollection, Feature or geometry, checked; raises ``ProcessParameterInvalid``."""
    if not isinstance(data, dict) or "type" not in data:
        raise ProcessParameterInvalid(f"must be a GeoJSON object, got {type(data).__name__}", argument=argument)
    crs = _crs_member(data, argument)
    kind = data["type"]
    if kind == "FeatureCollection":
        features = data.get("features")
        if not isinstance(features, list):
            raise ProcessParameterInvalid("FeatureCollection without a 'features' list", argument=argument)
    elif kind == "Feature":
        features = [data]
    elif kind in GEOMETRY_TYPES:
        features = [{"type": "Feature", "geometry": data, "properties": {}}]
    else:
        raise ProcessParameterInvalid(f"GeoJSON type {kind!r} is not supported (FeatureCollection, Feature or "
                                      f"one of {', '.join(GEOMETRY_TYPES)})", argument=argument)
    if not features:
        raise ProcessParameterInvalid("the GeoJSON has no features", argument=argument)
    limit = settings().vector_max_features
    if len(features) > limit:
        raise ProcessParameterInvalid(f"{len(features)} features exceed the limit of {limit}", argument=argument)
    geometries, props = [], []
    for i, feature in enumerate(features):
        where = f"feature {i}"
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise ProcessParameterInvalid(f"{where} is not a GeoJSON Feature", argument=argument)
        geometries.append(_geometry(feature.get("geometry"), where, argument))
        p = feature.get("properties") or {}
        if not isinstance(p, dict):
            raise ProcessParameterInvalid(f"{where}: 'properties' must be an object", argument=argument)
        props.append(p)
    return Features(geometries, props, crs)


def _property_coords(props: list[dict]) -> dict[str, np.ndarray]:
    """Scalar properties as arrays along ``geometry`` (missing values None); other values left out."""
    keys: dict[str, None] = {}
    for p in props:
        keys.update(dict.fromkeys(p))
    coords = {}
    for key in keys:
        if not isinstance(key, str) or key in _RESERVED:
            continue
        values = [_plain(p.get(key)) for p in props]
        if any(v is _DROP for v in values):
            continue
        present = [v for v in values if v is not None]
        numeric = present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)
        if numeric and all(isinstance(v, int) for v in present) and len(present) == len(values):
            coords[key] = np.asarray(values, dtype=np.int64)
        elif numeric:
            coords[key] = np.asarray([math.nan if v is None else v for v in values], dtype=np.float64)
        else:
            coords[key] = np.asarray(values, dtype=object)
    return coords


def vector_cube(features: Features, values: np.ndarray | None = None, dims: tuple[str, ...] = ("geometry",),
                coords: dict | None = None) -> xr.DataArray:
    """A vector cube over ``features`` (values NaN when not given), properties as coordinates."""
    import xvec  # noqa: F401 - registers the .xvec accessor

    n = len(features)
    if values is None:
        values = np.full((n,), np.nan)
    all_coords: dict[str, Any] = {"geometry": np.asarray(features.geometries, dtype=object)}
    for key, arr in _property_coords(features.properties).items():
        all_coords[key] = ("geometry", arr)
    all_coords.update(coords or {})
    cube = xr.DataArray(values, dims=dims, coords=all_coords)
    cube = cube.xvec.set_geom_indexes("geometry", crs=features.crs)
    cube.attrs["crs"] = features.crs.to_string()
    return cube


def features_of(value: Any, argument: str) -> Features:
    """Features from a vector cube (ours, or any xvec-indexed one) or from GeoJSON."""
    if isinstance(value, (xr.DataArray, xr.Dataset)) and "geometry" in value.dims:
        geoms = list(value["geometry"].values)
        crs_value = value.attrs.get("crs")
        index = value.xindexes.get("geometry")
        if crs_value is None and index is not None and getattr(index, "crs", None) is not None:
            crs_value = index.crs
        crs = CRS.from_user_input(crs_value) if crs_value is not None else CRS.from_epsg(4326)
        keys = [k for k, c in value.coords.items() if c.dims == ("geometry",) and k != "geometry"]
        props = [{k: _scalar(value[k].values[i]) for k in keys} for i in range(len(geoms))]
        return Features(geoms, props, crs)
    if isinstance(value, dict):
        return parse_geojson(value, argument)
    raise ProcessParameterInvalid(f"must be a vector data cube or GeoJSON, got {type(value).__name__}",
                                  argument=argument)


def _scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def load_geojson(data: Any, properties: list | None = None) -> xr.DataArray:
    """openEO ``load_geojson``: the listed properties form a ``properties`` dimension (none: no dimension);
    all scalar properties are also kept as coordinates along ``geometry``."""
    features = parse_geojson(data, "data")
    properties = [] if properties is None else properties
    if not isinstance(properties, list) or not all(isinstance(p, str) for p in properties):
        raise ProcessParameterInvalid("must be a list of property names", argument="properties")
    if not properties:
        return vector_cube(features)
    missing = [p for p in properties if not any(p in f for f in features.properties)]
    if missing:
        raise ProcessParameterInvalid(f"no feature has the property(ies) {missing}", argument="properties")
    rows = [[f.get(p) for p in properties] for f in features.properties]
    flat = [v for row in rows for v in row if v is not None]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat)
    values = (np.asarray([[math.nan if v is None else v for v in row] for row in rows], dtype=np.float64)
              if numeric else np.asarray(rows, dtype=object))
    return vector_cube(features, values, ("geometry", "properties"), {"properties": list(properties)})


def _geoparquet(payload: bytes) -> Features:
    import geopandas as gpd

    try:
        gdf = gpd.read_parquet(io.BytesIO(payload))
    except Exception as exc:
        raise FormatUnsuitable(f"not a GeoParquet file: {exc}", argument="url") from exc
    if len(gdf) > settings().vector_max_features:
        raise ProcessParameterInvalid(f"{len(gdf)} features exceed the limit of {settings().vector_max_features}",
                                      argument="url")
    crs = CRS.from_user_input(gdf.crs) if gdf.crs is not None else CRS.from_epsg(4326)
    # through GeoJSON, so that a GeoParquet file gets the same checks as inline GeoJSON
    data = json.loads(gdf.to_json(na="null", drop_id=True))
    parsed = parse_geojson(data, "url")
    return Features(parsed.geometries, parsed.properties, crs)


URL_FORMATS = {"geojson": "GeoJSON", "json": "GeoJSON", "parquet": "Parquet", "geoparquet": "Parquet"}


def load_url(url: str, format: str, options: dict | None = None) -> xr.DataArray:
    """openEO ``load_url`` for vector data: GeoJSON or GeoParquet, fetched under the back-end's URL rules."""
    from terramind_openeo.processes.remote import fetch_bytes

    if not isinstance(format, str) or format.lower() not in URL_FORMATS:
        raise FormatUnsuitable(f"format {format!r} cannot be loaded from a URL (supported: GeoJSON, Parquet)",
                               argument="format")
    if options not in (None, {}):
        raise ProcessParameterInvalid("no options are supported", argument="options")
    kind = URL_FORMATS[format.lower()]
    payload = fetch_bytes(url, MAX_VECTOR_BYTES, argument="url")
    if kind == "Parquet":
        return vector_cube(_geoparquet(payload))
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatUnsuitable(f"the data at the URL is not JSON: {exc}", argument="url") from exc
    return vector_cube(parse_geojson(data, "url"))
