"""openEO data cubes in and out: dimension checks, pixel geometry, model inputs, nodata, output cubes.

A cube is an ``xarray.DataArray`` with dims ``(t?, bands, y, x)`` in any order, band labels on ``bands``
and (normally) regular ``y``/``x`` coordinates. Everything here is numpy/xarray; no torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import rioxarray  # noqa: F401 - registers the .rio accessor
import xarray as xr

from terramind_openeo.crs import crs_of, with_crs

from .bands import S1_MODALITIES, S2_MODALITIES, ModalityLayout
from .errors import DimensionError, InferenceError, InputRangeError, NoValidDataError
from .tiling import OutputGrid, TileGrid, anchor_index, cell_centres, regular_step

_log = logging.getLogger(__name__)

_DIM_HINTS = {"band": "rename it to 'bands'", "time": "rename it to 't'", "lat": "use projected 'y'",
              "lon": "use projected 'x'"}
#: Sentinel-2 digital numbers (reflectance x 10000, plus at most the +1000 offset) stay far below this;
#: larger values in an unsigned cube are wrap-around from arithmetic in uint16 (e.g. subtracting the offset).
S2_MAX_VALUE = 32767
PATCH = 16


@dataclass(frozen=True)
class CubeGeometry:
    """The cube's pixel grid: sizes, coordinates and where it sits in grid coordinates."""

    dates: int
    """Length of ``t`` (1 when the cube has no ``t``)."""
    has_time: bool
    height: int
    width: int
    row0: int
    """Grid row of the cube's first row (0 with tile_anchor='cube')."""
    col0: int
    y0: float
    """Coordinate of the first row's centre (its index when the cube has no ``y`` coordinate)."""
    x0: float
    res_y: float
    """Signed step of ``y`` between rows (negative for the usual descending y)."""
    res_x: float


def check_dims(cube: object) -> None:
    """The cube is a DataArray with dims ``bands``, ``y``, ``x`` and optionally ``t``, each large enough."""
    if not isinstance(cube, xr.DataArray):
        raise DimensionError("cube", f"expected an xarray.DataArray, got {type(cube).__name__}")
    for dim in cube.dims:
        if dim not in ("t", "bands", "y", "x"):
            hint = _DIM_HINTS.get(str(dim), "reduce or drop it first (allowed: t, bands, y, x)")
            raise DimensionError(str(dim), f"not supported; {hint}")
    for dim in ("bands", "y", "x"):
        if dim not in cube.dims:
            raise DimensionError(dim, f"missing; the cube has dims {tuple(cube.dims)}")
    for dim in ("y", "x"):
        if cube.sizes[dim] < PATCH:
            raise DimensionError(dim, f"has {cube.sizes[dim]} pixels; TerraMind needs at least {PATCH}")
    if "t" in cube.dims and cube.sizes["t"] == 0:
        raise DimensionError("t", "is empty")
    if "bands" not in cube.coords:
        raise DimensionError("bands", "has no labels; band names are needed to map bands to modalities")


def geometry(cube: xr.DataArray, tile_anchor: str, grid_origin: tuple[float, float] | None = None) -> CubeGeometry:
    """Pixel geometry; with ``tile_anchor='crs'`` the grid origin is the CRS origin where coords allow.

    ``grid_origin``: with ``tile_anchor='cube'``, the ``(y, x)`` centre of the first pixel of the whole cube
    that ``cube`` is a chunk of: the grid is anchored there, so every chunk gets the whole cube's tiles
    (``None``: at this cube's own first pixel)."""
    height, width = cube.sizes["y"], cube.sizes["x"]
    y = np.asarray(cube["y"].values) if "y" in cube.coords else None
    x = np.asarray(cube["x"].values) if "x" in cube.coords else None
    res_y = regular_step(y) if y is not None else None
    res_x = regular_step(x) if x is not None else None
    row0 = col0 = 0
    if tile_anchor == "crs":
        if y is None or x is None or res_y is None or res_x is None:
            _log.warning("y/x coordinates missing or irregular: tile grid anchored at the cube, not the CRS")
        else:
            # edge of the first pixel in units of the (signed) resolution: the pixel's index from the origin
            row0 = anchor_index(float(y[0]), res_y)
            col0 = anchor_index(float(x[0]), res_x)
    elif grid_origin is not None and res_y is not None and res_x is not None and y is not None and x is not None:
        row0 = anchor_index(float(y[0]), res_y) - anchor_index(grid_origin[0], res_y)
        col0 = anchor_index(float(x[0]), res_x) - anchor_index(grid_origin[1], res_x)
    return CubeGeometry(
        dates=cube.sizes.get("t", 1),
        has_time="t" in cube.dims,
        height=height,
        width=width,
        row0=row0,
        col0=col0,
        y0=float(y[0]) if y is not None and res_y is not None else 0.0,
        x0=float(x[0]) if x is not None and res_x is not None else 0.0,
        res_y=res_y if res_y is not None else 1.0,
        res_x=res_x if res_x is not None else 1.0,
    )


def tile_grid(geo: CubeGeometry, tile_size: int, overlap: int) -> TileGrid:
    return TileGrid(geo.height, geo.width, geo.row0, geo.col0, tile_size, overlap)


def declared_nodata(cube: xr.DataArray, nodata: float | None) -> float | None:
    """The nodata value from the context, else from the cube's attributes (``_FillValue``, ``nodata``)."""
    if nodata is not None:
        return nodata
    for key in ("_FillValue", "nodata", "missing_value"):
        value = cube.attrs.get(key)
        if value is not None and np.isscalar(value) and not np.isnan(value):
            return float(value)
    return None


@dataclass(frozen=True)
class ModelInputs:
    """The cube's values (not copied) and how to cut cleaned model tiles out of them.

    Cleaning happens per tile, so memory beyond the cube itself is one batch of float32 tiles plus the
    boolean validity mask.
    """

    source: np.ndarray
    """The cube's values ``[dates, bands, height, width]`` in its own dtype (a view where possible)."""
    layouts: tuple[ModalityLayout, ...]
    nodata: float | None
    s1_linear: bool
    valid: np.ndarray
    """Boolean ``[dates, height, width]``: every present band of every modality holds data."""

    @property
    def modalities(self) -> list[str]:
        return [layout.modality for layout in self.layouts]

    def clean(self, layout: ModalityLayout, raw: np.ndarray) -> np.ndarray:
        """float32 ``[..., C, h, w]`` of ``layout``'s bands from raw ``[..., bands, h, w]``: NaN where there is
        no data and for missing bands; linear Sentinel-1 in dB when asked."""
        out = np.full(raw.shape[:-3] + (len(layout.bands),) + raw.shape[-2:], np.nan, dtype=np.float32)
        for channel, index in enumerate(layout.indices):
            if index is None:
                continue  # missing band: NaN here, the pre-training mean (0 once standardised) for the model
            band = raw[..., index, :, :]
            values = band.astype(np.float32)
            bad = ~np.isfinite(values)
            if self.nodata is not None:
                bad |= band == self.nodata
            if layout.modality in S1_MODALITIES and self.s1_linear:
                bad |= ~(values > 0)
                with np.errstate(divide="ignore", invalid="ignore"):
                    values = (10.0 * np.log10(values)).astype(np.float32, copy=False)
            values[bad] = np.nan
            out[..., channel, :, :] = values
        return out

    def tile(self, grid: TileGrid, layout: ModalityLayout, date: int, row: int, col: int) -> np.ndarray:
        """Cleaned float32 tile ``[C, tile, tile]`` of one modality, reflected at the cube's borders."""
        return self.clean(layout, grid.extract(self.source[date], row, col))


def prepare_inputs(
    cube: xr.DataArray, layouts: list[ModalityLayout], *, nodata: float | None, s1_linear: bool,
    allow_empty: bool = False,
) -> ModelInputs:
    """Check the values band by band (wrap-around, all nodata) and build the validity mask.

    A cube without a single valid pixel is an error unless ``allow_empty`` (a chunk of a larger cube, e.g.
    outside the swath: its output is simply nodata). Single all-nodata dates are never an error."""
    order = [d for d in ("t", "bands", "y", "x") if d in cube.dims]
    data = cube.transpose(*order)
    if "t" not in data.dims:
        data = data.expand_dims("t")
    source = np.asarray(data.values)
    nodata = declared_nodata(cube, nodata)
    labels = [str(b) for b in cube["bands"].values]
    inputs = ModelInputs(source, tuple(layouts), nodata, s1_linear,
                         np.ones((source.shape[0],) + source.shape[2:], dtype=bool))
    for layout in layouts:
        for index in layout.indices:
            if index is None:
                continue
            for date in range(source.shape[0]):  # one band plane at a time: bounded temporaries
                single = ModalityLayout(layout.modality, (labels[index],), (0,))
                values = inputs.clean(single, source[date, index : index + 1])[0]
                ok = np.isfinite(values)
                if layout.modality in S2_MODALITIES and ok.any():
                    top = float(values[ok].max())
                    if top > S2_MAX_VALUE:
                        raise InputRangeError(
                            labels[index],
                            f"holds {top:.0f} ({source.dtype}); Sentinel-2 digital numbers stay below "
                            f"{S2_MAX_VALUE}: this looks like unsigned integer wrap-around (e.g. subtracting the "
                            "offset in uint16). Convert to a signed or float type first, pass the offset as "
                            "s2_offset, or declare the value as nodata",
                        )
                inputs.valid[date] &= ok
    if not allow_empty and not inputs.valid.any():
        used = [labels[i] for layout in layouts for i in layout.indices if i is not None]
        raise NoValidDataError(f"every pixel of the cube is nodata (NaN or {nodata}) in bands {used}")
    return inputs


def patch_valid(valid: np.ndarray, geo: CubeGeometry, out: OutputGrid) -> np.ndarray:
    """Patch-resolution validity ``[dates, out.height, out.width]``: at least half of a patch's pixels
    inside the cube hold data (nodata pixels are filled with the band mean before the model sees them)."""
    scale = out.scale
    top = geo.row0 - out.row0 * scale
    left = geo.col0 - out.col0 * scale
    shape = (valid.shape[0], out.height * scale, out.width * scale)
    good = np.zeros(shape, dtype=np.int32)
    inside = np.zeros(shape[1:], dtype=np.int32)
    good[:, top : top + geo.height, left : left + geo.width] = valid
    inside[top : top + geo.height, left : left + geo.width] = 1
    good_sum = good.reshape(shape[0], out.height, scale, out.width, scale).sum(axis=(2, 4))
    inside_sum = inside.reshape(out.height, scale, out.width, scale).sum(axis=(1, 3))
    return 2 * good_sum >= np.maximum(inside_sum, 1)


def _scalar_coords(cube: xr.DataArray) -> dict[str, xr.DataArray]:
    return {name: coord for name, coord in cube.coords.items() if coord.ndim == 0}


def build_output(
    cube: xr.DataArray,
    geo: CubeGeometry,
    data: np.ndarray,
    bands: list[str],
    out: OutputGrid,
    *,
    nodata: float | int | None = None,
) -> xr.DataArray:
    """Labelled cube ``(t?, bands, y, x)`` from ``data [dates, bands, out.height, out.width]``.

    Pixel outputs reuse the input's coordinates; patch outputs get coordinates at patch centres on the
    same grid. Scalar coordinates (``spatial_ref``, ``crs``) and the CRS are carried over.
    """
    if data.shape[1] != len(bands):
        raise InferenceError(f"{data.shape[1]} output channels but {len(bands)} band labels")
    coords: dict[str, object] = {"bands": bands}
    if out.scale == 1:
        coords["y"] = cube["y"].values if "y" in cube.coords else np.arange(geo.height)
        coords["x"] = cube["x"].values if "x" in cube.coords else np.arange(geo.width)
    else:
        coords["y"] = cell_centres(geo.y0, geo.res_y, geo.row0, out.row0 + np.arange(out.height), out.scale)
        coords["x"] = cell_centres(geo.x0, geo.res_x, geo.col0, out.col0 + np.arange(out.width), out.scale)
    dims = ["t", "bands", "y", "x"]
    if geo.has_time:
        coords["t"] = cube["t"].values
    else:
        data = data[0]
        dims = dims[1:]
    result = xr.DataArray(data, dims=dims, coords=coords, name=cube.name)
    result = result.assign_coords(_scalar_coords(cube))
    for key in ("grid_mapping",):
        if key in cube.attrs:
            result.attrs[key] = cube.attrs[key]
    try:
        crs = crs_of(cube)  # not cube.rio: that would keep the chunk's pixels alive (terramind_openeo/crs.py)
    except Exception:  # noqa: BLE001 - rioxarray raises various errors on cubes without CRS info
        crs = None
    if crs is not None:
        result = with_crs(result, crs)
    if nodata is not None:
        result.attrs["_FillValue"] = nodata
        result.attrs["nodata"] = nodata
    return result
