"""The TerraMind process path at its edges: nodata dates/chunks, 400s for bad bands, catalog nodata,
small cubes, patch-centre coordinates on grids offset by a fraction of a pixel."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import rasterio
import xarray as xr
from processes_helpers import graph, load_node
from rasterio.transform import from_origin

from terramind_openeo.inference import embed_cube, generate_cube
from terramind_openeo.inference.bands import S2L2A_BANDS
from terramind_openeo.processes import context as _ctx
from terramind_openeo.processes import execute_process_graph
from terramind_openeo.processes.errors import ProcessParameterInvalid
from terramind_openeo.processes.terramind import (
    _edge_coords,
    _InferenceFn,
    terramind_embed,
    terramind_generate,
)

TINY = {"model": "terramind_v1_tiny", "weights": "random"}
FAST = {**TINY, "tile_size": 64, "overlap": 0}
# top-left pixel edge on a multiple of 64 px of 10 m from the CRS origin: chunks of 64 px align with it
X_EDGE, Y_EDGE = 640000.0, 5120000.0


def s2_cube(size: int = 128, dates: int = 2, dx: float = 0.0, dy: float = 0.0, seed: int = 0) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    data = rng.uniform(200, 4000, size=(dates, 12, size, size)).astype(np.float32)
    x = X_EDGE + dx + 5.0 + 10.0 * np.arange(size)
    y = Y_EDGE + dy - 5.0 - 10.0 * np.arange(size)
    t = np.array(["2022-06-01", "2022-06-11", "2022-06-21"][:dates], dtype="datetime64[ns]")
    cube = xr.DataArray(data, dims=("t", "bands", "y", "x"),
                        coords={"t": t, "bands": list(S2L2A_BANDS), "y": y, "x": x})
    return cube.rio.write_crs("EPSG:32632")


@pytest.fixture
def small_chunks(catalog):
    """An execution context whose chunks are 64 px cores (chunk_size 16 x 4)."""
    token = _ctx.activate(_ctx.ExecutionContext(catalog=catalog, chunk_size=16))
    yield
    _ctx.deactivate(token)


def compute(cube: xr.DataArray) -> xr.DataArray:
    with dask.config.set(scheduler="synchronous"):
        return cube.compute()


# 1. an all-nodata date or chunk is nodata output, not an error -------------------------------------------


def test_inference_all_nodata_date_gives_nodata_output():
    cube = s2_cube(64)
    cube[0] = np.nan  # a fully cloud-masked date
    emb = embed_cube(cube, FAST)
    assert emb.shape == (2, 192, 4, 4)
    assert np.isnan(emb.values[0]).all() and np.isfinite(emb.values[1]).all()
    lulc = generate_cube(cube, {**FAST, "timesteps": 1})
    assert lulc.dtype == np.uint8 and lulc.shape == (2, 1, 64, 64)
    assert (lulc.values[0] == 255).all() and (lulc.values[1] != 255).all()
    np.testing.assert_array_equal(lulc.y.values, cube.y.values)


def test_inference_allow_empty_gives_nodata_without_the_model():
    cube = s2_cube(32, dates=1)
    cube[:] = np.nan
    from terramind_openeo.inference.errors import NoValidDataError

    with pytest.raises(NoValidDataError):  # a whole cube without data stays an error
        embed_cube(cube, FAST)
    emb = embed_cube(cube, FAST, model=object(), allow_empty=True)  # a model that cannot run: not touched
    assert emb.shape == (1, 192, 2, 2) and np.isnan(emb.values).all()
    lulc = generate_cube(cube, FAST, model=object(), allow_empty=True)
    assert lulc.dtype == np.uint8 and (lulc.values == 255).all() and lulc.attrs["nodata"] == 255


def test_process_nodata_date_and_chunk_are_nodata(small_chunks):
    cube = s2_cube(128)
    cube[0] = np.nan  # date 0 cloud-masked: every chunk of it is empty
    cube[1, :, :64, :] = np.nan  # date 1: the top row of 64 px chunks lies outside the swath
    lazy = cube.chunk({"t": 1, "bands": -1, "y": 64, "x": 64})
    emb = compute(terramind_embed(lazy, **FAST))
    assert emb.shape == (2, 192, 8, 8) and list(emb.bands.values[:2]) == ["emb_000", "emb_001"]
    assert np.isnan(emb.values[0]).all()
    assert np.isnan(emb.values[1, :, :4]).all() and np.isfinite(emb.values[1, :, 4:]).all()
    lulc = compute(terramind_generate(lazy, **FAST, timesteps=1))
    assert lulc.dtype == np.uint8 and lulc.shape == (2, 1, 128, 128) and lulc.attrs["nodata"] == 255
    assert (lulc.values[0] == 255).all() and (lulc.values[1, :, :64] == 255).all()
    assert (lulc.values[1, :, 64:] != 255).all()
    np.testing.assert_array_equal(lulc.x.values, cube.x.values)


# 2. inference errors are openEO 400s, found at graph-build time ------------------------------------------


def test_missing_bands_fail_at_build_time_as_400(catalog, tmp_path):
    pg = graph(load=load_node(bands=("B04", "B08")),
               emb={"process_id": "terramind_embed", "arguments": {"data": {"from_node": "load"}, **TINY}},
               save={"process_id": "save_result", "arguments": {"data": {"from_node": "emb"}, "format": "netCDF"},
                     "result": True})
    with pytest.raises(ProcessParameterInvalid) as e:
        execute_process_graph(pg, tmp_path / "out", catalog=catalog)
    assert e.value.status == 400 and e.value.code == "MissingBandError"
    for word in ("'emb'", "'data'", "B01", "S2L2A"):
        assert word in e.value.message, e.value.message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.nc"))


def test_inference_error_inside_a_chunk_is_a_400():
    cube = s2_cube(32, dates=1).isel(t=0, drop=True).sel(bands=["B04", "B08"])
    with pytest.raises(ProcessParameterInvalid) as e:
        _InferenceFn("embed", dict(TINY), _edge_coords(cube))(cube)
    assert e.value.status == 400 and "terramind_embed" in e.value.message and "B01" in e.value.message


# 3. the catalog's nodata value is applied to the pixels --------------------------------------------------


def test_catalog_nodata_masks_pixels_before_scaling(tmp_path):
    from terramind_openeo.processes import Catalog
    from terramind_openeo.processes.load import load_collection

    values = np.arange(1, 17 * 17 + 1, dtype=np.uint16).reshape(1, 17, 17) * 100
    values[0, :3, :5] = 0
    path = tmp_path / "b04.tif"
    with rasterio.open(path, "w", driver="GTiff", width=17, height=17, count=1, dtype="uint16", crs="EPSG:32632",
                       transform=from_origin(X_EDGE, Y_EDGE, 10, 10)) as dst:  # no nodata tag
        dst.write(values)
    catalog = Catalog.from_dict({"collections": [{"id": "T", "type": "geotiff", "path": str(path), "nodata": 0,
                                                  "scale": 1e-4, "offset": -0.1, "bands": ["B04"]}]})
    token = _ctx.activate(_ctx.ExecutionContext(catalog=catalog))
    try:
        cube = load_collection("T")
    finally:
        _ctx.deactivate(token)
    got = cube.values[0, 0]
    assert np.isnan(got[:3, :5]).all() and np.isnan(got).sum() == 15
    np.testing.assert_allclose(got[3:], values[0, 3:] * 1e-4 - 0.1, rtol=1e-5)
    assert np.isnan(cube.attrs["nodata"])


# 4./5. small cubes and patch-centre coordinates on offset grids -----------------------------------------


def test_small_cube_patch_embeddings_on_the_process_path(small_chunks):
    cube = s2_cube(16, dates=1)
    plain = embed_cube(cube, TINY)
    assert plain.shape == (1, 192, 1, 1)
    proc = compute(terramind_embed(cube.chunk({"y": 16, "x": 16}), **TINY))
    assert proc.shape == (1, 192, 1, 1)
    np.testing.assert_allclose(proc.y.values, plain.y.values)
    np.testing.assert_allclose(proc.x.values, plain.x.values)
    np.testing.assert_allclose(proc.values, plain.values, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dx, dy", [(3.7, -2.2), (6.0, 4.9)])
def test_patch_centres_on_sub_pixel_offset_grid_match_plain_inference(small_chunks, dx, dy):
    cube = s2_cube(128, dates=1, dx=dx, dy=dy)
    plain = embed_cube(cube, FAST)
    proc = compute(terramind_embed(cube.chunk({"y": 64, "x": 64}), **FAST))
    assert proc.shape == plain.shape
    np.testing.assert_allclose(proc.y.values, plain.y.values, rtol=0, atol=1e-6)
    np.testing.assert_allclose(proc.x.values, plain.x.values, rtol=0, atol=1e-6)
    # the centres sit in the middle of 16 px patches of the input grid, counted from the CRS origin
    from terramind_openeo.processes.chunked import anchor_index

    pixels = (plain.x.values - cube.x.values[0]) / 10.0 + anchor_index(cube.x.values) - 7.5
    np.testing.assert_allclose(pixels % 16, 0, atol=1e-6)
    np.testing.assert_allclose(proc.values, plain.values, rtol=1e-4, atol=1e-4)


def test_one_anchor_function_for_both_paths():
    from terramind_openeo.inference.cube import geometry
    from terramind_openeo.processes.chunked import anchor_index

    for dx in (0.0, 3.7, 6.0, -4.9):
        cube = s2_cube(32, dates=1, dx=dx, dy=-dx)
        geo = geometry(cube, "crs")
        assert (anchor_index(cube.y.values), anchor_index(cube.x.values)) == (geo.row0, geo.col0)
