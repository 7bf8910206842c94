"""``load_collection`` and ``load_stac``: lazy, chunked ``(t, bands, y, x)`` cubes from the catalog.

Every loader returns a dask-backed ``xarray.DataArray`` with dims ``(t, bands, y, x)`` (y descending),
the CRS written (rioxarray ``spatial_ref``), attrs ``nodata`` and ``collection``; nodata pixels of
masked sources are NaN. Nothing is read beyond metadata until the cube is computed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401 - registers the .rio accessor (also in dask workers)
import xarray as xr
from pyproj import CRS

from terramind_openeo.errors import describe
from terramind_openeo.processes import context as _ctx
from terramind_openeo.processes.catalog import CollectionConfig
from terramind_openeo.processes.errors import (
    NoDataAvailable,
    ProcessParameterInvalid,
)
from terramind_openeo.processes.extents import BBox, parse_spatial_extent, parse_temporal_extent, select_times
from terramind_openeo.processes.netcdf_lock import open_netcdf

logger = logging.getLogger(__name__)

_TIME_NAMES = ("t", "time", "times", "date", "DATE")


def load_collection(id: str, spatial_extent: Any = None, temporal_extent: Any = None, bands: Any = None,
                    properties: Any = None) -> xr.DataArray:
    ctx = _ctx.current()
    cfg = ctx.catalog.get(id)
    bbox = parse_spatial_extent(spatial_extent)
    interval = parse_temporal_extent(temporal_extent)
    if bands is not None:
        if not isinstance(bands, list) or not all(isinstance(b, str) for b in bands):
            raise ProcessParameterInvalid("must be a list of band names", argument="bands")
        if cfg.bands:
            names = cfg.band_names
            common = {b.common_name: b.name for b in cfg.bands if b.common_name}
            unknown = [b for b in bands if b not in names and b not in common]
            if unknown:
                raise ProcessParameterInvalid(f"collection '{id}' has no band(s) {unknown} (bands: {names})",
                                              argument="bands")
            bands = [common.get(b, b) if b not in names else b for b in bands]
    loader = {"netcdf": _load_dataset_file, "zarr": _load_dataset_file, "geotiff": _load_geotiffs,
              "synthetic": _load_synthetic}.get(cfg.type)
    if loader is None:
        from terramind_openeo.processes.stac_source import load_stac_collection

        cube = load_stac_collection(cfg, bbox, interval, bands, properties, ctx.chunk_size)
        cube = _clip(cube, bbox, CRS.from_user_input(cube.rio.crs))  # odc-stac cut a lon/lat box
        cube = _mask_and_scale(cube, cfg)  # the catalog's nodata and scale/offset, as for local files
    else:
        cube = loader(cfg, bbox, interval, bands, ctx.chunk_size)
    return _finish(cube, cfg, bbox)


def load_stac(url: str, spatial_extent: Any = None, temporal_extent: Any = None, bands: Any = None,
              properties: Any = None) -> xr.DataArray:
    """A STAC API collection URL, a static collection/catalog JSON, or an item URL."""
    from terramind_openeo.processes.stac_source import load_stac_url

    ctx = _ctx.current()
    bbox = parse_spatial_extent(spatial_extent)
    cube = load_stac_url(url, bbox, parse_temporal_extent(temporal_extent), bands, properties, ctx.chunk_size,
                         policy=ctx.policy.urls)
    cube = _clip(cube, bbox, CRS.from_user_input(cube.rio.crs))
    return _finish(cube, None, bbox)


def _finish(cube: xr.DataArray, cfg: CollectionConfig | None, bbox: BBox | None) -> xr.DataArray:
    if cube.sizes.get("t", 1) == 0:
        raise NoDataAvailable("no acquisitions in the temporal extent", argument="temporal_extent")
    if cube.sizes.get("x", 0) == 0 or cube.sizes.get("y", 0) == 0:
        raise NoDataAvailable("the spatial extent does not intersect the collection", argument="spatial_extent")
    cube = cube.transpose("t", "bands", "y", "x")
    if cfg is not None:
        common = {b.name: b.common_name for b in cfg.bands if b.common_name}
        if common:  # lets ndvi() find red/nir by common name (an attr: a coordinate would break merge_cubes)
            cube.attrs["common_names"] = {str(b): common[str(b)] for b in cube.bands.values if str(b) in common}
        cube.attrs["collection"] = cfg.id
        if cfg.nodata is not None and "nodata" not in cube.attrs:
            cube.attrs["nodata"] = cfg.nodata
    cube.name = None
    return cube


def _check_bbox(cfg: CollectionConfig, bbox: BBox | None, bounds: BBox) -> None:
    if bbox is not None and not bounds.intersects(bbox):
        b4326 = bounds.to_crs(4326)
        raise NoDataAvailable(
            f"the spatial extent lies outside collection '{cfg.id}' (which covers lon {b4326.west:.4f}.."
            f"{b4326.east:.4f}, lat {b4326.south:.4f}..{b4326.north:.4f})", argument="spatial_extent")


def _clip(cube: xr.DataArray, bbox: BBox | None, crs: CRS) -> xr.DataArray:
    if bbox is None:
        return cube
    b = bbox.to_crs(crs)
    y_desc = cube.y.size < 2 or float(cube.y[0]) > float(cube.y[-1])
    ysl = slice(b.north, b.south) if y_desc else slice(b.south, b.north)
    return cube.sel(x=slice(b.west, b.east), y=ysl)


def _bounds_of(cube: xr.DataArray, crs: CRS) -> BBox:
    rx = abs(float(cube.x[1] - cube.x[0])) if cube.x.size > 1 else 0.0
    ry = abs(float(cube.y[1] - cube.y[0])) if cube.y.size > 1 else 0.0
    return BBox(float(cube.x.min()) - rx / 2, float(cube.y.min()) - ry / 2,
                float(cube.x.max()) + rx / 2, float(cube.y.max()) + ry / 2, crs)


def _select_bands(cube: xr.DataArray, bands: list[str] | None, cfg: CollectionConfig) -> xr.DataArray:
    if bands is None:
        return cube
    missing = [b for b in bands if b not in cube.bands.values]
    if missing:
        raise ProcessParameterInvalid(f"collection '{cfg.id}' has no band(s) {missing}", argument="bands")
    return cube.sel(bands=bands)


def _apply_scale(cube: xr.DataArray, cfg: CollectionConfig) -> xr.DataArray:
    if cfg.scale is None and cfg.offset is None:
        return cube
    return cube.astype("float32") * (cfg.scale if cfg.scale is not None else 1) + (cfg.offset or 0)


def _mask_and_scale(cube: xr.DataArray, cfg: CollectionConfig) -> xr.DataArray:
    """The catalog's ``nodata`` value masked to NaN (whatever the file declares), then scale/offset applied.

    attrs ``nodata``: NaN once masked (the cube is float then), else None.
    """
    nodata = cfg.nodata
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        if not np.issubdtype(cube.dtype, np.floating):
            cube = cube.astype("float32")
        cube = cube.where(cube != nodata)
    cube = _apply_scale(cube, cfg)
    cube.attrs = {"nodata": float("nan") if nodata is not None else None}
    return cube


def _load_dataset_file(cfg: CollectionConfig, bbox, interval, bands, chunk: int) -> xr.DataArray:
    path = cfg.files()[0]
    if cfg.type == "zarr":
        ds = xr.open_zarr(path, chunks={}, decode_coords="all")  # the CF grid mapping is the CRS
    else:
        engine = cfg.extra.get("engine")
        ds = open_netcdf(path, engine, chunks={}, decode_coords="all")
    tname = next((n for n in _TIME_NAMES if n in ds.dims), None)
    if tname and tname != "t":
        ds = ds.rename({tname: "t"})
    for a, b in (("lon", "x"), ("lat", "y"), ("longitude", "x"), ("latitude", "y")):
        if a in ds.dims and b not in ds.dims:
            ds = ds.rename({a: b})
    crs = ds.rio.crs or (CRS.from_user_input(cfg.crs) if cfg.crs else None)
    if crs is None:
        raise NoDataAvailable(f"collection '{cfg.id}': no CRS in {path} and none in the catalog")
    crs = CRS.from_user_input(crs)
    names = [v for v in ds.data_vars if set(ds[v].dims) >= {"x", "y"}]
    cube = ds[names].to_array("bands")
    if "t" not in cube.dims:
        cube = cube.expand_dims(t=[pd.Timestamp(cfg.datetime or "1970-01-01")])
    _check_bbox(cfg, bbox, _bounds_of(cube, crs))
    cube = _clip(cube, bbox, crs)
    cube = cube.isel(t=select_times(cube.t.values, interval))
    cube = _select_bands(cube, bands, cfg)
    cube = cube.drop_vars([c for c in cube.coords if c not in ("t", "bands", "y", "x")])
    cube = cube.chunk({"t": 1, "bands": -1, "y": chunk, "x": chunk})
    cube = _mask_and_scale(cube, cfg)
    return cube.rio.write_crs(crs)


def _file_datetime(cfg: CollectionConfig, path: str) -> pd.Timestamp:
    stem = Path(path).stem
    value = cfg.datetimes.get(stem, cfg.datetime)
    return pd.Timestamp(str(value) if value is not None else "1970-01-01")


def _load_geotiffs(cfg: CollectionConfig, bbox, interval, bands, chunk: int) -> xr.DataArray:
    import rasterio

    picked = []
    for path in cfg.files():
        with rasterio.open(path) as src:
            bounds = BBox.from_bounds(src.bounds, CRS.from_user_input(src.crs))
            count = src.count
        if bbox is not None and not bounds.intersects(bbox):
            continue
        when = _file_datetime(cfg, path)
        if interval is not None and not select_times(np.array([when.to_datetime64()]), interval)[0]:
            continue
        picked.append((path, bounds, when, count))
    if not picked:
        if bbox is not None and not any(_tif_bounds(p).intersects(bbox) for p in cfg.files()):
            _check_bbox(cfg, bbox, _union_bounds(cfg.files()))
            raise NoDataAvailable(f"the spatial extent intersects no file of collection '{cfg.id}'",
                                  argument="spatial_extent")
        raise NoDataAvailable(f"no file of collection '{cfg.id}' in the temporal extent", argument="temporal_extent")
    target_crs = _target_crs(cfg, bbox, [(path, bounds) for path, bounds, _, _ in picked])
    names = cfg.band_names or [f"band_{i + 1}" for i in range(picked[0][3])]
    arrays = []
    for path, _, when, count in picked:
        if count != len(names):
            raise NoDataAvailable(f"collection '{cfg.id}': {path} has {count} bands, the catalog names {len(names)}")
        arr = rioxarray.open_rasterio(path, chunks={"band": -1, "y": chunk, "x": chunk},
                                      masked=cfg.nodata is not None, cache=False)
        arr = arr.rename({"band": "bands"}).assign_coords(bands=names)
        if CRS.from_user_input(arr.rio.crs) != target_crs or cfg.resolution:
            try:
                arr = _reproject(arr, target_crs, cfg.resolution)
            except Exception as exc:  # noqa: BLE001 - odc-geo asserts without a message on grids it cannot build
                raise ProcessParameterInvalid(
                    f"collection '{cfg.id}': cannot reproject {Path(path).name} onto {_crs_name(target_crs)} "
                    f"({describe(exc)}); {_MULTI_CRS_HINT}", argument="spatial_extent") from exc
        arrays.append(arr.expand_dims(t=[when]))
    grids = {(a.x.size, a.y.size, float(a.x[0]), float(a.y[0])) for a in arrays}
    if len(grids) == 1:
        cube = xr.concat(arrays, dim="t", join="override")
    else:
        cube = xr.combine_by_coords([a.to_dataset(name="v") for a in arrays])["v"]
    cube = cube.sortby("t")
    if len(np.unique(cube.t.values)) != cube.t.size:  # several tiles per date: mosaic them
        cube = cube.groupby("t").first()
    cube = _clip(cube, bbox, target_crs)
    cube = _select_bands(cube, bands, cfg)
    cube = cube.drop_vars([c for c in cube.coords if c not in ("t", "bands", "y", "x")])
    cube = cube.chunk({"t": 1, "bands": -1, "y": chunk, "x": chunk})
    cube = _mask_and_scale(cube, cfg)
    return cube.rio.write_crs(target_crs)


_MULTI_CRS_HINT = ("give a spatial_extent around one area (its crs, if projected, becomes the grid's), "
                   "or declare a target 'crs' for the collection in the catalog")
# a file may lie this far (degrees) outside the area of use of the grid's CRS: a UTM zone's neighbours fit,
# another continent does not (odc-geo cannot build that grid and answers with a bare AssertionError)
_AREA_MARGIN_DEG = 3.0


def _crs_name(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.name


def _fits(bounds: BBox, crs: CRS) -> bool:
    """True when ``bounds`` lie within the area of use of ``crs`` (widened by ``_AREA_MARGIN_DEG``)."""
    area, epsg = crs.area_of_use, crs.to_epsg()
    if area is None and epsg:  # a CRS read from a file's WKT carries none; its EPSG entry does
        area = CRS.from_epsg(epsg).area_of_use
    if area is None:
        return True
    b = bounds.to_crs(4326)
    m = _AREA_MARGIN_DEG
    return (b.west >= area.west - m and b.east <= area.east + m and b.south >= area.south - m
            and b.north <= area.north + m)


def _target_crs(cfg: CollectionConfig, bbox: BBox | None, files: list[tuple[str, BBox]]) -> CRS:
    """The CRS of the common grid: the catalog's ``crs``, else the files' one CRS; files in several CRSs go
    onto the spatial extent's CRS (when projected) or the first file's, if they all lie near its area of use.
    Anything else is a 400 saying how to choose (a Brazilian and a Danish tile share no sensible grid)."""
    crss = list(dict.fromkeys(bounds.crs for _, bounds in files))
    if cfg.crs:
        target = CRS.from_user_input(cfg.crs)
    elif len(crss) == 1:
        return crss[0]
    elif bbox is not None and bbox.crs.is_projected:
        target = bbox.crs
    else:
        target = crss[0]
    far = [(path, bounds) for path, bounds in files if not _fits(bounds, target)]
    if not far:
        return target
    lines = []
    for path, bounds in files:
        b = bounds.to_crs(4326)
        lines.append(f"{Path(path).stem} ({_crs_name(bounds.crs)}, lon {b.west:.3f}..{b.east:.3f}, "
                     f"lat {b.south:.3f}..{b.north:.3f})")
    example = far[0][1].to_crs(4326)
    extent = (f'{{"west": {example.west:.3f}, "south": {example.south:.3f}, "east": {example.east:.3f}, '
              f'"north": {example.north:.3f}}}')
    where = "the catalog's crs" if cfg.crs else "one grid"
    raise ProcessParameterInvalid(
        f"collection '{cfg.id}': the selected files lie in {len(crss)} CRS(s) too far apart for {where} "
        f"({_crs_name(target)}): {'; '.join(lines)}. To load them, {_MULTI_CRS_HINT}; e.g. spatial_extent "
        f"{extent}", argument="spatial_extent")


def _reproject(arr: xr.DataArray, crs: CRS, resolution: float | None) -> xr.DataArray:
    """Lazy (dask) reprojection onto ``crs`` at ``resolution`` (default: the source's pixel size)."""
    from odc.geo.xr import xr_reproject

    arr = arr.odc.assign_crs(str(arr.rio.crs))
    out = xr_reproject(arr, str(crs.to_string()), resolution=resolution or "same", resampling="bilinear")
    out = out.rename({k: v for k, v in (("longitude", "x"), ("latitude", "y")) if k in out.dims})
    return out.drop_vars([c for c in out.coords if c not in ("bands", "y", "x")])


def _tif_bounds(path: str) -> BBox:
    import rasterio

    with rasterio.open(path) as src:
        return BBox.from_bounds(src.bounds, CRS.from_user_input(src.crs))


def _union_bounds(paths: list[str]) -> BBox:
    boxes = [_tif_bounds(p).to_crs(4326) for p in paths]
    return BBox(min(b.west for b in boxes), min(b.south for b in boxes), max(b.east for b in boxes),
                max(b.north for b in boxes), CRS.from_epsg(4326))


def _load_synthetic(cfg: CollectionConfig, bbox, interval, bands, chunk: int) -> xr.DataArray:
    """Deterministic smooth fields over ``extent`` (tests and API conformance; no real data)."""
    import dask.array as da

    ext = cfg.extent or {}
    crs = CRS.from_user_input(ext.get("crs", 4326))
    w, s, e, n = ext.get("bbox", [-180, -90, 180, 90])
    res = float(cfg.resolution or ext.get("resolution", 0.01))
    full = BBox(w, s, e, n, crs)
    _check_bbox(cfg, bbox, full)
    b = bbox.to_crs(crs) if bbox is not None else full
    w, s, e, n = max(w, b.west), max(s, b.south), min(e, b.east), min(n, b.north)
    xs = np.arange(np.floor(w / res) * res + res / 2, e, res)
    ys = np.arange(np.ceil(n / res) * res - res / 2, s, -res)
    dates = pd.DatetimeIndex(pd.to_datetime(ext.get("dates", ["2020-01-01"])))
    dates = dates[select_times(dates.values, interval)]
    names = bands or cfg.band_names or ["B01"]
    tt = da.arange(len(dates), chunks=1, dtype="float32")[:, None, None, None]
    bb = da.arange(len(names), chunks=-1, dtype="float32")[None, :, None, None]
    yy = da.from_array(ys.astype("float32"), chunks=chunk)[None, None, :, None]
    xx = da.from_array(xs.astype("float32"), chunks=chunk)[None, None, None, :]
    data = (50 + 20 * da.sin(xx * 7.0 + bb) * da.cos(yy * 5.0 + tt)).astype("float32")
    cube = xr.DataArray(data, dims=("t", "bands", "y", "x"),
                        coords={"t": dates, "bands": names, "y": ys, "x": xs})
    cube.attrs = {"nodata": cfg.nodata}
    return cube.rio.write_crs(crs)
