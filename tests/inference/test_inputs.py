"""Input conventions (s2_offset, linear Sentinel-1, declared nodata, dask-backed cubes) with stand-in models."""

from __future__ import annotations

import numpy as np
import xarray as xr
from inference_helpers import PatchModel

from terramind_openeo.inference import embed_cube, generate_cube
from terramind_openeo.inference.bands import map_bands
from terramind_openeo.inference.cube import prepare_inputs

TILES = {"tile_size": 64, "overlap": 16}


def test_s2_offset_is_subtracted(synthetic_cube):
    plain = generate_cube(synthetic_cube, {"target": "NDVI", **TILES}, model=PatchModel())
    shifted = generate_cube(synthetic_cube + 1000, {"target": "NDVI", "s2_offset": 1000, **TILES}, model=PatchModel())
    np.testing.assert_allclose(plain.values, shifted.values, rtol=1e-5, atol=1e-5)


def test_linear_sentinel1_becomes_db():
    power = np.array([[0.1, 0.01], [1.0, 0.0]], dtype=np.float32)
    cube = xr.DataArray(np.stack([power, power]), dims=("bands", "y", "x"), coords={"bands": ["VV", "VH"]})
    layouts = map_bands(["VV", "VH"], ["S1GRD"])
    prepared = prepare_inputs(cube, layouts, nodata=None, s1_linear=True)
    db = prepared.clean(layouts[0], prepared.source[0])[0]
    np.testing.assert_allclose(db[:, 0], [-10.0, 0.0], rtol=1e-6)
    assert np.isnan(db[1, 1]) and not prepared.valid[0, 1, 1]  # 0 W/W has no dB value: nodata


def test_nodata_from_the_cube_attributes(synthetic_cube):
    cube = synthetic_cube.isel(t=0).copy()
    cube[:, 10, 10] = -1
    cube.attrs["_FillValue"] = -1
    out = generate_cube(cube, {"target": "NDVI", **TILES}, model=PatchModel())
    assert np.isnan(out.values[0, 10, 10]) and np.isfinite(out.values).sum() == out.size - 1


def test_dask_backed_cube_gives_the_same_numbers(synthetic_cube):
    context = {"tile_size": 64, "overlap": 16}
    eager = embed_cube(synthetic_cube, context, model=PatchModel())
    lazy = embed_cube(synthetic_cube.chunk({"x": 50, "y": 70, "t": 1}), context, model=PatchModel())
    xr.testing.assert_identical(eager, lazy)


def test_chained_targets_give_one_float_cube(synthetic_cube):
    out = generate_cube(synthetic_cube, {"target": ["LULC", "NDVI"], **TILES}, model=PatchModel())
    assert out.dtype == np.float32 and list(out.bands.values) == ["LULC", "NDVI"]
    lulc = generate_cube(synthetic_cube, {"target": "LULC", **TILES}, model=PatchModel())
    np.testing.assert_array_equal(out.sel(bands="LULC").values, lulc.sel(bands="LULC").values.astype(np.float32))


def test_band_order_and_extra_bands_do_not_matter(synthetic_cube):
    shuffled = synthetic_cube.isel(bands=np.random.default_rng(0).permutation(12))
    extra = xr.concat([shuffled, synthetic_cube.isel(bands=[0]).assign_coords(bands=["SCL"])], dim="bands")
    a = embed_cube(synthetic_cube, TILES, model=PatchModel())
    b = embed_cube(extra, TILES, model=PatchModel())
    xr.testing.assert_identical(a, b)


def test_ascending_y_gives_the_same_patches_flipped(synthetic_cube):
    """Patch boundaries sit on the CRS's 16 px grid whichever way y runs."""
    cube = synthetic_cube.isel(t=0, y=slice(3, 163))
    down = embed_cube(cube, TILES, model=PatchModel())
    up = embed_cube(cube.isel(y=slice(None, None, -1)), TILES, model=PatchModel())
    np.testing.assert_allclose(up.isel(y=slice(None, None, -1)).values, down.values, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(up.y.values[::-1], down.y.values)
