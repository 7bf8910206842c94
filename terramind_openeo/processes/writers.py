"""Writers for ``save_result``: COG per date, CF netCDF, Zarr, JSON; chunk by chunk, published by rename.

The cube is never computed whole: its dask blocks are computed a few at a time (on the current Dask
scheduler, a distributed client included) and written into the open file as they arrive. Every file
is written under a ``.part`` name and renamed when complete, so a reader never sees a half-written one.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from itertools import product
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401 - registers the .rio accessor (also in dask workers)
import xarray as xr
from affine import Affine

from terramind_openeo.classes import GTIFF_TAG, ClassScheme, scheme_of
from terramind_openeo.files import atomic_path, part_path, publish, write_text
from terramind_openeo.jsonable import to_jsonable
from terramind_openeo.processes.errors import OutputNotWritable, ProcessParameterInvalid
from terramind_openeo.processes.netcdf_lock import NETCDF_LOCK
from terramind_openeo.processes.statistics import add_statistics

logger = logging.getLogger(__name__)

MEDIA_TYPES = {"GTiff": "image/tiff; application=geotiff; profile=cloud-optimized", "netCDF": "application/x-netcdf",
               "Zarr": "application/vnd+zarr", "JSON": "application/json", "GeoJSON": "application/geo+json"}


def normalise_cube(cube: xr.DataArray) -> xr.DataArray:
    """``(t, bands, y, x)`` with y descending; t and bands added when absent."""
    extra = [d for d in cube.dims if d not in ("t", "bands", "y", "x")]
    if extra:
        raise ProcessParameterInvalid(f"cannot save a cube with dimension(s) {extra}: reduce or rename them first",
                                      argument="data")
    if "x" not in cube.dims or "y" not in cube.dims:
        raise ProcessParameterInvalid(f"cannot save a cube without x and y dimensions (dims: {cube.dims})",
                                      argument="data")
    if "bands" not in cube.dims:
        cube = cube.expand_dims(bands=["band_1" if cube.name is None else str(cube.name)])
    if "t" not in cube.dims:
        cube = cube.expand_dims("t")  # no coordinate: a cube without time
    cube = cube.transpose("t", "bands", "y", "x")
    cube.attrs = {k: v for k, v in cube.attrs.items() if isinstance(v, (str, int, float, np.number))}
    cube = cube.drop_vars([c for c in cube.coords if c not in ("t", "bands", "y", "x", "spatial_ref")])
    if cube.y.size > 1 and float(cube.y[0]) < float(cube.y[-1]):
        cube = cube.isel(y=slice(None, None, -1))
    if not isinstance(cube.data, da.Array):
        cube = cube.chunk({"t": 1, "bands": -1, "y": 512, "x": 512})
    return cube


def cube_transform(cube: xr.DataArray) -> Affine:
    x, y = cube.x.values, cube.y.values
    rx = float(x[1] - x[0]) if x.size > 1 else float(cube.attrs.get("res_x", 1.0))
    ry = float(y[1] - y[0]) if y.size > 1 else -abs(rx)
    return Affine(rx, 0.0, float(x[0]) - rx / 2, 0.0, ry, float(y[0]) - ry / 2)


def cube_nodata(cube: xr.DataArray) -> float | None:
    nodata = cube.attrs.get("nodata", cube.attrs.get("_FillValue"))
    if np.issubdtype(cube.dtype, np.floating):
        return float("nan")
    if nodata is None or (isinstance(nodata, float) and np.isnan(nodata)):
        return None
    return nodata


def iter_blocks(arr: da.Array, scheduler: Any, batch: int = 0,
                cancel: Callable[[], None] | None = None) -> Iterator[tuple[tuple[slice, ...], np.ndarray]]:
    """Compute ``arr`` a row of blocks at a time (or ``batch`` blocks); yield (slices, numpy block).

    Blocks of one row usually share their source chunks (a netCDF chunk spans the whole width), so they
    are computed together; memory stays bounded by one row of blocks.
    """
    bounds = [np.cumsum((0,) + c) for c in arr.chunks]
    keys = list(product(*[range(len(c)) for c in arr.chunks]))
    batch = batch or max(4, len(arr.chunks[-1]))
    for start in range(0, len(keys), batch):
        if cancel is not None:
            cancel()
        group = keys[start:start + batch]
        blocks = dask.compute(*[arr.blocks[k] for k in group], scheduler=scheduler)
        for k, block in zip(group, blocks):
            yield tuple(slice(int(b[i]), int(b[i + 1])) for b, i in zip(bounds, k)), np.asarray(block)


def _gtiff_dtype(dtype: np.dtype) -> np.dtype:
    if dtype == np.dtype(bool):
        return np.dtype("uint8")
    if dtype == np.int64:
        return np.dtype("int32")
    if dtype == np.uint64:
        return np.dtype("uint32")
    return dtype


def _raw_profile(arr: xr.DataArray) -> tuple[dict, np.dtype, float | None]:
    """GTiff profile of a ``(bands, y, x)`` slice written block by block before its COG conversion."""
    dtype = _gtiff_dtype(arr.dtype)
    nodata = cube_nodata(arr)
    profile = {"driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
               "count": arr.sizes["bands"], "height": arr.sizes["y"], "width": arr.sizes["x"], "dtype": dtype.name,
               "crs": arr.rio.crs, "transform": cube_transform(arr), "BIGTIFF": "IF_SAFER"}
    if nodata is not None:
        profile["nodata"] = nodata
    return profile, dtype, nodata


def class_band_metadata(dst, cube: xr.DataArray, dtype: np.dtype) -> ClassScheme | None:
    """Write the cube's class scheme (``terramind_openeo.classes``) into an open GeoTIFF ``dst``: the scheme as
    metadata of the class band and, where GeoTIFF allows one (a single uint8 band), a colour table."""
    scheme = scheme_of(cube)
    if scheme is None:
        return None
    bands = [str(b) for b in np.atleast_1d(cube.bands.values)]
    dst.update_tags(bands.index(scheme.band) + 1, **{GTIFF_TAG: scheme.to_json()})
    if len(bands) == 1 and np.dtype(dtype) == np.uint8:
        dst.write_colormap(1, scheme.colormap())
    return scheme


def _to_cog(raw: Path, path: Path, nodata: float | None) -> Path:
    """``raw`` (complete) -> validated COG at ``path`` (through ``path.part``, renamed when valid); band
    descriptions, band metadata and a colour table go along."""
    from rio_cogeo.cogeo import cog_translate, cog_validate
    from rio_cogeo.profiles import cog_profiles

    add_statistics(raw)  # a value range for viewers, copied into the COG with the band tags
    with atomic_path(path, durable=True) as part:
        cog_translate(raw, part, cog_profiles.get("deflate"), in_memory=False, quiet=True,
                      nodata=nodata, use_cog_driver=False, forward_band_tags=True)
        raw.unlink()
        valid, errors, _ = cog_validate(part)
        if not valid:
            raise OutputNotWritable(f"{path.name} is not a valid COG: {errors}")
    return path


def write_cogs(cube: xr.DataArray, paths: list[Path], scheduler: Any = None, cancel=None,
               on_block: Callable[[], None] | None = None) -> list[Path]:
    """A ``(t, bands, y, x)`` cube as one Cloud-Optimized GeoTIFF per date (``paths[i]`` for ``t[i]``).

    Every block is computed once for all dates (a graph is not re-run per date file) and its date slices
    go to the dates' files; each file is validated and renamed when complete."""
    import rasterio

    profile, dtype, nodata = _raw_profile(cube.isel(t=0))
    data = cube.data if isinstance(cube.data, da.Array) else da.from_array(cube.data, chunks=(-1, -1, 512, 512))
    t_chunks = len(data.chunks[0])
    data = data.rechunk({0: -1})
    n_t = cube.sizes["t"]
    batch = max(2, -(-len(data.chunks[-1]) // n_t))  # a row of blocks, divided among the dates held at once
    raws = [path.with_name(path.name + ".raw.part") for path in paths]
    with contextlib.ExitStack() as stack:
        dsts = [stack.enter_context(rasterio.open(raw, "w", **profile)) for raw in raws]
        for dst in dsts:
            for i, name in enumerate(cube.bands.values, start=1):
                dst.set_band_description(i, str(name))
            class_band_metadata(dst, cube, dtype)
        for (_, sb, sy, sx), block in iter_blocks(data, scheduler, batch=batch, cancel=cancel):
            window = rasterio.windows.Window(sx.start, sy.start, sx.stop - sx.start, sy.stop - sy.start)
            for ti, dst in enumerate(dsts):
                dst.write(block[ti].astype(dtype, copy=False), indexes=list(range(sb.start + 1, sb.stop + 1)),
                          window=window)
            if on_block is not None:
                for _ in range(t_chunks):  # progress counts the cube's own blocks
                    on_block()
    return [_to_cog(raw, path, nodata) for raw, path in zip(raws, paths)]


def write_cog(arr: xr.DataArray, path: Path, scheduler: Any = None, cancel=None,
              on_block: Callable[[], None] | None = None) -> Path:
    """One ``(bands, y, x)`` cube slice as a Cloud-Optimized GeoTIFF (validated, renamed when complete)."""
    one = arr.expand_dims("t") if "t" in arr.coords and "t" not in arr.dims else arr.expand_dims(t=1)
    return write_cogs(one, [path], scheduler, cancel, on_block)[0]


def _date_label(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    try:
        return pd.Timestamp(value).strftime("%Y-%m-%d")
    except Exception:  # noqa: BLE001
        return str(value)


def write_gtiff(cube: xr.DataArray, out_dir: Path, basename: str, scheduler=None, cancel=None,
                on_block=None) -> list[Path]:
    cube = normalise_cube(cube)
    paths = []
    has_t = "t" in cube.coords
    for i in range(cube.sizes["t"]):
        label = _date_label(cube.t.values[i]) if has_t else None
        name = f"{basename}_{label}.tif" if label else f"{basename}.tif"
        if cube.sizes["t"] > 1 and not label:
            name = f"{basename}_{i:03d}.tif"
        paths.append(out_dir / name)
    return write_cogs(cube, paths, scheduler, cancel, on_block)


def _as_dataset(cube: xr.DataArray) -> xr.Dataset:
    scheme = scheme_of(cube)
    ds = cube.to_dataset(dim="bands")
    ds = ds.rename({v: str(v) for v in ds.data_vars})
    for v in ds.variables:
        ds[v].encoding = {}
    if scheme is not None:  # CF flags: what each class value of the class band means
        ds[scheme.band].attrs.update(scheme.flag_attrs())
    crs = cube.rio.crs
    if crs is not None:
        ds = ds.rio.write_crs(crs)
        for v in ds.data_vars:
            ds[v].encoding.pop("grid_mapping", None)
            ds[v].attrs["grid_mapping"] = "spatial_ref"
    ds.x.attrs.update({"standard_name": "projection_x_coordinate", "units": "m", "axis": "X"})
    ds.y.attrs.update({"standard_name": "projection_y_coordinate", "units": "m", "axis": "Y"})
    if crs is not None and crs.is_geographic:
        ds.x.attrs.update({"standard_name": "longitude", "units": "degrees_east"})
        ds.y.attrs.update({"standard_name": "latitude", "units": "degrees_north"})
    if "t" in ds.coords:
        ds.t.attrs.update({"standard_name": "time", "axis": "T"})
    ds.attrs.update({"Conventions": "CF-1.9", "source": "terramind-openeo"})
    return ds


def netcdf_layout(ds: xr.Dataset) -> xr.Dataset:
    """The layout openEO back-ends write (openeo-geopyspark-driver, openeo-processes-dask): one variable
    per band and the CF grid mapping as a variable of its own, referenced by each band's ``grid_mapping``
    but listed in no ``coordinates`` attribute.

    A reader therefore always sees more than one data variable (``xarray.open_dataarray`` refuses the
    file) and recovers the cube with its ``bands`` dimension, a single band included, as the openEO
    test suite does: ``xarray.open_dataset(path, decode_coords="all").to_dataarray(dim="bands")``.
    The grid mapping comes first, so the bands stay the last data variables.
    """
    if "spatial_ref" not in ds.coords:
        return ds
    ds = ds.reset_coords("spatial_ref")
    order = ["spatial_ref"] + [v for v in ds.data_vars if v != "spatial_ref"]
    return ds[order]


def write_netcdf(cube: xr.DataArray, out_dir: Path, basename: str, scheduler=None, cancel=None,
                 on_block=None) -> list[Path]:
    """CF netCDF: file layout and coordinates by xarray, data written block by block with netCDF4.

    A cube with a bands dimension gets ``netcdf_layout``; one without (bands reduced) keeps the grid
    mapping as a coordinate: a single data variable, which ``xarray.open_dataarray`` opens as the cube.
    """
    import netCDF4

    has_bands = "bands" in cube.dims
    cube = normalise_cube(cube)
    has_t = "t" in cube.coords
    path = out_dir / f"{basename}.nc"
    part = part_path(path)  # published (files.publish) once every block is in
    ds = _as_dataset(cube if has_t else cube.isel(t=0, drop=True))
    nodata = cube_nodata(cube)
    names = [str(b) for b in cube.bands.values]
    encoding: dict[str, dict[str, Any]] = {v: {"zlib": True, "complevel": 4} for v in names}
    if nodata is not None:
        for v in encoding:
            encoding[v]["_FillValue"] = nodata
    template = xr.Dataset(
        {v: (ds[v].dims, da.zeros(ds[v].shape, dtype=ds[v].dtype, chunks=-1), ds[v].attrs) for v in names},
        coords=ds.coords, attrs=ds.attrs)
    if has_bands:
        template = netcdf_layout(template)
    # Layout, coordinates and attributes by xarray, the data variables created but not written (their dask
    # zeros are never computed), and the file closed before it is opened again below: ``to_netcdf(...,
    # compute=False)`` would leave it open in xarray's file cache, a second HDF5 handle on the same file.
    from xarray.backends import NetCDF4DataStore

    with NETCDF_LOCK:  # netcdf_lock.py: xarray does not lock the creation of variables
        store = NetCDF4DataStore.open(str(part), mode="w", format="NETCDF4", lock=NETCDF_LOCK)
        try:
            template.dump_to_store(store, encoding=encoding)
        finally:
            store.close()
    data = cube.data
    # Every netCDF4 call holds NETCDF_LOCK (another execution in this process may be reading or writing
    # netCDF right now); blocks are computed with it released (their netCDF reads take it themselves).
    with NETCDF_LOCK:
        nc = netCDF4.Dataset(part, "a")
    try:
        for (st, sb, sy, sx), block in iter_blocks(data, scheduler, cancel=cancel):
            with NETCDF_LOCK:
                for j, b in enumerate(range(sb.start, sb.stop)):
                    var = nc.variables[names[b]]
                    if has_t:
                        var[st, sy, sx] = block[:, j]
                    else:
                        var[sy, sx] = block[0, j]
            if on_block:
                on_block()
    finally:
        with NETCDF_LOCK:
            nc.close()
    publish(part, path, durable=True)
    return [path]


def write_zarr(cube: xr.DataArray, out_dir: Path, basename: str, scheduler=None, cancel=None,
               on_block=None) -> list[Path]:
    cube = normalise_cube(cube)
    if "t" not in cube.coords:
        cube = cube.isel(t=0, drop=True)
    path = out_dir / f"{basename}.zarr"
    ds = _as_dataset(cube)
    for v in ds.data_vars:
        ds[v].encoding.pop("chunks", None)
    with atomic_path(path, durable=True) as part:
        delayed = ds.to_zarr(part, mode="w", compute=False, consolidated=False)
        if cancel:
            cancel()
        dask.compute(delayed, scheduler=scheduler)
    return [path]


def write_json(data: Any, out_dir: Path, basename: str, **_: Any) -> list[Path]:
    path = out_dir / f"{basename}.json"
    write_text(path, json.dumps(to_jsonable(data, nan_as_null=True)), durable=True)
    return [path]


def write_ml_model(data: Any, out_dir: Path, basename: str, **_: Any) -> list[Path]:
    """``save_ml_model``: the model file and its STAC item (processes/ml/store.py)."""
    from terramind_openeo.processes.ml.store import write_ml_model as write

    return write(data, out_dir, basename)


def write_geojson(data: Any, out_dir: Path, basename: str, **_: Any) -> list[Path]:
    """A vector data cube as GeoJSON (``processes/vector_out.py``)."""
    from terramind_openeo.processes.vector_out import write_geojson as write

    return write(data, out_dir, basename)


WRITERS: dict[str, Callable[..., list[Path]]] = {"GTiff": write_gtiff, "netCDF": write_netcdf, "Zarr": write_zarr, "JSON": write_json,
           "GeoJSON": write_geojson, "MLModel": write_ml_model}


def check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise OutputNotWritable(f"output directory {out_dir} is not writable: {exc.strerror or exc}") from exc
