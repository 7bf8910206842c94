"""STAC Collection metadata (with ``cube:dimensions`` and ``eo:bands``) and Items of a catalog collection.

Local collections are described from their files' metadata (no pixel is read); STAC API collections
from the catalog entry alone (no network access when listing collections).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np
import pandas as pd
from pyproj import CRS

from terramind_openeo.processes.catalog import CollectionConfig
from terramind_openeo.processes.extents import BBox
from terramind_openeo.processes.netcdf_lock import open_netcdf

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=64)
def _grid(cfg: CollectionConfig) -> tuple[BBox, CRS, float | None, list[str]]:
    """Native bounds, CRS, pixel size and dates (ISO) of a collection."""
    if cfg.type in ("netcdf", "zarr"):
        import xarray as xr

        path = cfg.files()[0]
        with xr.open_zarr(path) if cfg.type == "zarr" else open_netcdf(path, cfg.extra.get("engine")) as ds:
            crs = CRS.from_user_input(ds.rio.crs or cfg.crs)
            x, y = ds["x"].values, ds["y"].values
            res = float(abs(x[1] - x[0])) if x.size > 1 else None
            half = (res or 0) / 2
            bounds = BBox(x.min() - half, y.min() - half, x.max() + half, y.max() + half, crs)
            tname = next((n for n in ("t", "time") if n in ds.dims), None)
            dates = [pd.Timestamp(t).isoformat() + "Z" for t in ds[tname].values] if tname else []
        return bounds, crs, res, dates
    if cfg.type == "geotiff":
        import rasterio

        boxes, crss, res = [], set(), None
        for path in cfg.files():
            with rasterio.open(path) as src:
                crss.add(CRS.from_user_input(src.crs).to_wkt())
                res = res or float(src.res[0])
                boxes.append(BBox.from_bounds(src.bounds, CRS.from_user_input(src.crs)))
        crs = CRS.from_wkt(crss.pop()) if len(crss) == 1 else CRS.from_epsg(4326)  # mixed UTM zones: lon/lat
        if len(crss) != 0 or crs.to_epsg() == 4326:
            res = res if crs.is_projected else None
        boxes = [b.to_crs(crs) for b in boxes]
        bounds = BBox(min(b.west for b in boxes), min(b.south for b in boxes), max(b.east for b in boxes),
                      max(b.north for b in boxes), crs)
        stems = {p.rsplit("/", 1)[-1].rsplit(".", 1)[0] for p in cfg.files()}
        dates = sorted(str(pd.Timestamp(str(cfg.datetimes.get(s, cfg.datetime or "1970-01-01"))).isoformat()) + "Z"
                       for s in stems)
        return bounds, crs, res, dates
    if cfg.type == "synthetic":
        ext = cfg.extent or {}
        crs = CRS.from_user_input(ext.get("crs", 4326))
        bounds = BBox.from_bounds(ext.get("bbox", [-180, -90, 180, 90]), crs)
        dates = [pd.Timestamp(d).isoformat() + "Z" for d in ext.get("dates", ["2020-01-01"])]
        return bounds, crs, float(cfg.resolution or ext.get("resolution", 0.01)), dates
    ext = cfg.extra.get("extent", {})
    bounds = BBox.from_bounds(ext.get("bbox", [-180, -90, 180, 90]), CRS.from_epsg(4326))
    return bounds, CRS.from_user_input(cfg.crs) if cfg.crs else CRS.from_epsg(4326), cfg.resolution, \
        ext.get("interval", ["2015-06-23T00:00:00Z", None])


def describe(cfg: CollectionConfig) -> dict:
    """The openEO/STAC Collection dict of ``cfg``."""
    try:
        bounds, crs, res, dates = _grid(cfg)
    except Exception as exc:  # noqa: BLE001 - a broken file must not break the listing
        logger.warning("collection %s: cannot read metadata: %s", cfg.id, exc)
        bounds, crs, res, dates = BBox(-180, -90, 180, 90, CRS.from_epsg(4326)), CRS.from_epsg(4326), None, []
    wgs = bounds.to_crs(4326)
    epsg = crs.to_epsg()
    interval = [dates[0], dates[-1]] if dates else [None, None]
    bands = cfg.bands
    eo_bands = []
    for b in bands:
        entry: dict[str, Any] = {"name": b.name}
        if b.common_name:
            entry["common_name"] = b.common_name
        if b.center_wavelength:
            entry["center_wavelength"] = b.center_wavelength
        eo_bands.append(entry)
    ref = epsg if epsg is not None else crs.to_wkt()
    dims: dict[str, dict[str, Any]] = {
        "x": {"type": "spatial", "axis": "x", "extent": [float(bounds.west), float(bounds.east)], "reference_system": ref},
        "y": {"type": "spatial", "axis": "y", "extent": [float(bounds.south), float(bounds.north)], "reference_system": ref},
        "t": {"type": "temporal", "extent": interval},
        "bands": {"type": "bands", "values": [b.name for b in bands]},
    }
    if res:
        dims["x"]["step"] = res
        dims["y"]["step"] = res
    if cfg.type in ("netcdf", "zarr", "geotiff", "synthetic") and dates:
        dims["t"]["values"] = dates
    bboxes = [[float(np.round(v, 6)) for v in wgs.as_tuple()]]
    if cfg.type == "geotiff" and len(cfg.files()) > 1:  # STAC: the union first, then each file's (a site's) box
        try:
            bboxes += [item["bbox"] for item in items(cfg)]
        except Exception as exc:  # noqa: BLE001 - as above
            logger.warning("collection %s: cannot read the files' footprints: %s", cfg.id, exc)
    return {
        "stac_version": "1.0.0",
        "stac_extensions": ["https://stac-extensions.github.io/datacube/v2.2.0/schema.json",
                            "https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
        "type": "Collection",
        "id": cfg.id,
        "title": cfg.title or cfg.id,
        "description": cfg.description or cfg.title or cfg.id,
        "license": cfg.license,
        "keywords": list(cfg.keywords),
        "providers": [],
        "extent": {
            "spatial": {"bbox": bboxes},
            "temporal": {"interval": [interval]},
        },
        "cube:dimensions": dims,
        "summaries": {"eo:bands": eo_bands, "constellation": [], "platform": []},
        "links": [],
    }


def _footprint(bounds: BBox) -> dict:
    """The GeoJSON polygon (lon/lat) of ``bounds``: its corners and edge midpoints, reprojected."""
    from pyproj import Transformer

    w, s, e, n = bounds.as_tuple()
    ring = [(w, s), ((w + e) / 2, s), (e, s), (e, (s + n) / 2), (e, n), ((w + e) / 2, n), (w, n), (w, (s + n) / 2)]
    if bounds.crs.to_epsg() != 4326:
        to_wgs = Transformer.from_crs(bounds.crs, 4326, always_xy=True)
        ring = [to_wgs.transform(x, y) for x, y in ring]
    points = [[round(float(x), 6), round(float(y), 6)] for x, y in ring]
    return {"type": "Polygon", "coordinates": [points + [points[0]]]}


def _item(cfg: CollectionConfig, item_id: str, bounds: BBox, date: str, extra: dict | None = None) -> dict:
    wgs = bounds.to_crs(4326)
    props: dict[str, Any] = {"datetime": date, "title": item_id}
    epsg = bounds.crs.to_epsg()
    if epsg is not None:
        props["proj:epsg"] = epsg
        props["proj:bbox"] = [float(v) for v in bounds.as_tuple()]
    props.update(extra or {})
    return {"type": "Feature", "stac_version": "1.0.0",
            "stac_extensions": ["https://stac-extensions.github.io/projection/v1.1.0/schema.json"],
            "id": item_id, "collection": cfg.id, "bbox": [round(float(v), 6) for v in wgs.as_tuple()],
            "geometry": _footprint(bounds), "properties": props, "assets": {}, "links": []}


def items(cfg: CollectionConfig) -> list[dict]:
    """STAC Items of a local collection (see :func:`_items`); a fresh copy of the cached list."""
    import copy

    return copy.deepcopy(_items(cfg))


@functools.lru_cache(maxsize=64)
def _items(cfg: CollectionConfig) -> list[dict]:
    """STAC Items of a local collection, so that a user can find each site's footprint and date: one per file
    (GeoTIFF collections) or per date (one file with a time axis, synthetic). Files are not offered for
    download (``assets`` is empty): the data is loaded through ``load_collection``. A STAC API collection's
    items are the source's own (none here)."""
    if cfg.type == "geotiff":
        import rasterio

        out = []
        for path in cfg.files():
            stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            with rasterio.open(path) as src:
                bounds = BBox.from_bounds(src.bounds, CRS.from_user_input(src.crs))
                shape = [src.height, src.width]
            date = str(pd.Timestamp(str(cfg.datetimes.get(stem, cfg.datetime or "1970-01-01"))).isoformat()) + "Z"
            out.append(_item(cfg, stem, bounds, date, {"proj:shape": shape}))
        return sorted(out, key=lambda item: (item["properties"]["datetime"], item["id"]))
    if cfg.type in ("netcdf", "zarr", "synthetic"):
        bounds, _, _, dates = _grid(cfg)
        return [_item(cfg, f"{cfg.id}_{date[:10]}", bounds, date) for date in dates]
    return []
