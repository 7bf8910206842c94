"""Tile grid, reflect padding, blending weights, and seamless / chunk-invariant stitching (stand-in model)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from inference_helpers import PatchModel, patch_truth

from terramind_openeo.inference import RunStats, embed_cube, generate_cube
from terramind_openeo.inference.bands import S2L2A_BANDS
from terramind_openeo.inference.tiling import (
    OutputGrid,
    Stitcher,
    Tile,
    TileGrid,
    axis_origins,
    ramp_weights,
    reflect_index,
)


@pytest.mark.parametrize("start,length,tile,overlap", [(0, 224, 224, 32), (-7, 1000, 224, 32), (13, 20, 64, 16),
                                                        (-514796, 705, 224, 32), (5, 100, 32, 16), (0, 96, 32, 0)])
def test_axis_origins_cover_every_pixel_once_or_twice(start, length, tile, overlap):
    stride = tile - overlap
    origins = axis_origins(start, length, tile, overlap)
    assert all(o % stride == 0 for o in origins)
    cover = np.zeros(length, int)
    for o in origins:
        lo, hi = max(o - start, 0), min(o - start + tile, length)
        assert hi > lo, "every listed tile touches the range"
        cover[lo:hi] += 1
    assert cover.min() >= 1 and cover.max() <= 2


@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_reflect_index_matches_numpy_pad(n):
    values = np.arange(n)
    index = np.arange(-3 * n - 2, 4 * n + 3)
    pad_width = 3 * n + 2
    padded = np.pad(values, (pad_width, 4 * n + 3 - n), mode="reflect") if n > 1 else np.zeros(index.size, int)
    np.testing.assert_array_equal(values[reflect_index(index, n)], padded)


@pytest.mark.parametrize("size,overlap", [(224, 32), (14, 2), (64, 16), (96, 48), (32, 0)])
def test_ramp_weights_are_a_partition_of_unity(size, overlap):
    w = ramp_weights(size, overlap)
    stride = size - overlap
    total = np.zeros(stride * 6 + size)
    for k in range(7):
        total[k * stride : k * stride + size] += w
    np.testing.assert_allclose(total[size : stride * 6], 1.0, atol=1e-12)
    assert w.min() > 0


def test_stitching_a_constant_field_gives_the_constant():
    grid = TileGrid(height=100, width=77, row0=-5, col0=11, tile_size=32, overlap=8)
    out = OutputGrid.for_cube(grid, 1)
    stitcher = Stitcher(1, 2, out, grid)
    for tile in grid.tiles(1):
        stitcher.add(tile, np.full((2, 32, 32), 3.5, np.float32))
    np.testing.assert_allclose(stitcher.result(), 3.5, rtol=1e-6)


def test_extract_reflects_at_the_borders():
    grid = TileGrid(height=20, width=20, row0=5, col0=5, tile_size=16, overlap=0)
    array = np.arange(400, dtype=float).reshape(1, 20, 20)
    tile = grid.extract(array, 0, 0)  # starts 5 px before the cube
    padded = np.pad(array[0], 5, mode="reflect")
    np.testing.assert_array_equal(tile[0], padded[:16, :16])


@pytest.mark.parametrize("tile_size,overlap", [(224, 32), (64, 16), (96, 48), (48, 0)])
def test_patch_embeddings_do_not_depend_on_tiling(synthetic_cube, tile_size, overlap):
    cube = synthetic_cube.isel(t=0, y=slice(0, 192), x=slice(0, 176))
    context = {"tile_size": tile_size, "overlap": overlap, "tile_anchor": "cube", "batch_size": 3}
    out = embed_cube(cube, context, model=PatchModel())
    np.testing.assert_allclose(out.values, patch_truth(cube), rtol=1e-5, atol=1e-5)


def test_crs_anchored_crops_agree_with_the_full_cube(synthetic_cube):
    full = embed_cube(synthetic_cube, {"tile_size": 64, "overlap": 16}, model=PatchModel())
    crop = synthetic_cube.isel(y=slice(37, 170), x=slice(21, 150))
    part = embed_cube(crop, {"tile_size": 64, "overlap": 16}, model=PatchModel())
    # interior patches (entirely inside the crop) carry the same numbers
    inner = part.isel(y=slice(1, -1), x=slice(1, -1))
    np.testing.assert_allclose(inner.values, full.sel(y=inner.y, x=inner.x).values, rtol=1e-5, atol=1e-5)


def test_a_1000_by_700_cube_works_and_generation_is_seamless():
    rng = np.random.default_rng(1)
    data = rng.uniform(0, 5000, size=(12, 700, 1000)).astype(np.float32)
    cube = xr.DataArray(data, dims=("bands", "y", "x"), coords={
        "bands": list(S2L2A_BANDS), "y": 5200005.0 - 10 * np.arange(700), "x": 300005.0 + 10 * np.arange(1000)})
    model = PatchModel()
    out = generate_cube(cube, {"target": "NDVI", "batch_size": 16}, model=model)
    x = PatchModel.standardize("S2L2A", data)
    np.testing.assert_allclose(out.values[0], np.tanh(x[7] - x[3]), rtol=1e-5, atol=1e-5)
    assert out.dtype == np.float32 and list(out.bands.values) == ["NDVI"] and out.shape == (1, 700, 1000)


def test_lulc_classes_are_uint8_and_seamless(synthetic_cube):
    cube = synthetic_cube.isel(t=0)
    out = generate_cube(cube, {"target": "LULC", "tile_size": 64, "overlap": 32}, model=PatchModel())
    x = PatchModel.standardize("S2L2A", cube.values)
    truth = np.clip(np.floor((x[3] - x[7]) * 3), -5, 4) + 5
    assert out.dtype == np.uint8 and out.dims == ("bands", "y", "x")
    np.testing.assert_array_equal(out.values[0], truth.astype(np.uint8))


def test_all_nodata_tiles_are_skipped(synthetic_cube):
    cube = synthetic_cube.isel(t=0).copy()
    cube[:, :100, :] = np.nan  # the top half: every tile that lies there holds no data
    stats = RunStats()
    model = PatchModel()
    out = embed_cube(cube, {"tile_size": 32, "overlap": 0, "tile_anchor": "cube", "batch_size": 1}, model=model,
                     stats=stats)
    assert stats.skipped_tiles == 3 * 6  # rows 0..95 of 6 tile columns (184 px)
    assert model.encode_calls == stats.tiles == (7 - 3) * 6  # 7 tile rows (200 px), batch_size 1
    assert np.isnan(out.values[:, :6]).all() and not np.isnan(out.values[:, 7:]).any()


def test_nodata_masks_generated_pixels(synthetic_cube):
    cube = synthetic_cube.isel(t=0).copy()
    cube[3, 50, 60] = np.nan
    cube[5, 10, 11] = 0
    ndvi = generate_cube(cube, {"target": "NDVI", "tile_size": 64, "overlap": 16, "nodata": 0}, model=PatchModel())
    assert np.isnan(ndvi.values[0, 50, 60]) and np.isnan(ndvi.values[0, 10, 11])
    assert np.isfinite(ndvi.values).sum() == ndvi.size - 2
    lulc = generate_cube(cube, {"target": "LULC", "tile_size": 64, "overlap": 16, "nodata": 0}, model=PatchModel())
    assert lulc.values[0, 50, 60] == 255 and lulc.values[0, 10, 11] == 255 and lulc.attrs["_FillValue"] == 255


def test_patch_nodata_needs_half_the_patch(synthetic_cube):
    cube = synthetic_cube.isel(t=0, y=slice(0, 64), x=slice(0, 64)).copy()
    cube[0, 0:8, 0:16] = np.nan  # half of patch (0, 0): kept
    cube[0, 16:25, 0:16] = np.nan  # more than half of patch (1, 0): masked
    out = embed_cube(cube, {"tile_size": 32, "overlap": 0, "tile_anchor": "cube"}, model=PatchModel())
    assert np.isfinite(out.values[:, 0, 0]).all() and np.isnan(out.values[:, 1, 0]).all()


def test_tiles_are_counted_per_date(synthetic_cube):
    grid = TileGrid(height=200, width=184, row0=0, col0=0, tile_size=64, overlap=16)
    assert len(grid.tiles(2)) == 2 * len(grid.row_origins) * len(grid.col_origins)
    assert grid.tiles(1)[0] == Tile(0, 0, 0)
    assert axis_origins(0, 224, 224, 32) == [0]  # a 224 px cube on a 224 tile grid is one tile


@pytest.mark.parametrize("kind", ["generate", "embed"])
def test_shared_border_tiles_run_once_and_give_the_same_numbers(synthetic_cube, kind):
    """Two neighbouring chunks (halo: one stride before, the overlap after) with ``share_tiles``: the tile
    column on their common border runs through the model once, and the stitched chunks equal the whole."""
    from terramind_openeo.inference.tile_cache import TILE_CACHE

    cube = synthetic_cube.isel(t=0)
    assert int(round((float(cube.x[0]) - 5) / 10)) % 48 == 0  # the cube starts on the tile grid (stride 48)
    ctx = {"tile_size": 64, "overlap": 16, "batch_size": 1, "target": "LULC", "argmax": True}
    if kind == "embed":
        ctx = {"tile_size": 64, "overlap": 16, "batch_size": 1, "resolution": "pixel"}
    func = generate_cube if kind == "generate" else embed_cube
    whole = func(cube, ctx, model=PatchModel())
    model, stats = PatchModel(), RunStats()
    TILE_CACHE.clear()
    left = func(cube.isel(x=slice(0, 96 + 16)), ctx, model=model, stats=stats, share_tiles=True)
    right = func(cube.isel(x=slice(96 - 48, None)), ctx, model=model, stats=stats, share_tiles=True)
    stitched = xr.concat([left.isel(x=slice(0, 96)), right.isel(x=slice(48, None))], dim="x")
    np.testing.assert_allclose(stitched.values.astype(float), whole.values.astype(float), atol=1e-5)
    from terramind_openeo.inference.cube import geometry

    row0, height = geometry(cube, "crs").row0, cube.sizes["y"]  # tiles sticking out of the cube: reflected,
    rows = sum(row0 <= o and o + 64 <= row0 + height for o in axis_origins(row0, height, 64, 16))  # not shared
    assert rows >= 2
    calls = model.generate_calls if kind == "generate" else model.encode_calls
    assert stats.cached_tiles == rows and calls == stats.tiles - rows
    TILE_CACHE.clear()


def test_only_sides_with_a_neighbour_keep_tiles_in_the_cache(synthetic_cube):
    """Chunks told which sides have a neighbour keep only those border tiles: after the two neighbours ran,
    nothing is left behind (with ``True`` the tiles of the cube's outer edges stay until evicted), and the
    border tiles of the common side are still shared, corners included."""
    from terramind_openeo.inference.tile_cache import TILE_CACHE

    cube = synthetic_cube.isel(t=0)
    ctx = {"tile_size": 64, "overlap": 16, "batch_size": 1, "target": "LULC", "argmax": True}
    parts = {"left": cube.isel(x=slice(0, 96 + 16)), "right": cube.isel(x=slice(96 - 48, None))}
    for sides in ({"left": True, "right": True},
                  {"left": (False, False, False, True), "right": (False, False, True, False)}):
        TILE_CACHE.clear()
        model, stats = PatchModel(), RunStats()
        for name, part in parts.items():
            generate_cube(part, ctx, model=model, stats=stats, share_tiles=sides[name])
        assert stats.cached_tiles >= 2  # the common border column ran once
        left_over = len(TILE_CACHE)
        if sides["left"] is True:
            assert left_over > 0  # outer-edge tiles nobody will take
        else:
            assert left_over == 0
    TILE_CACHE.clear()


def test_share_tiles_needs_four_sides(synthetic_cube):
    with pytest.raises(ValueError, match="share_tiles"):
        generate_cube(synthetic_cube.isel(t=0), {"tile_size": 64, "overlap": 16, "target": "LULC", "argmax": True},
                      model=PatchModel(), share_tiles=(True, False))


def test_tile_cache_keeps_one_hot_votes_as_classes_and_gives_them_back_exactly():
    from terramind_openeo.inference.tile_cache import TileCache

    cache = TileCache(max_bytes=1 << 20)
    classes = np.random.default_rng(0).integers(0, 10, (64, 64))
    votes = np.eye(10, dtype=np.float32)[classes].transpose(2, 0, 1)
    scores = np.random.default_rng(1).random((10, 64, 64), dtype=np.float32)
    cache.put(("votes",), votes)
    cache.put(("scores",), scores[:, :32])
    assert cache.bytes == 64 * 64 + 10 * 64 * 32 * 4  # votes as uint8 classes, scores copied (not a view)
    np.testing.assert_array_equal(cache.take(("votes",)), votes)
    np.testing.assert_array_equal(cache.take(("scores",), keep=True), scores[:, :32])
    assert cache.take(("votes",)) is None and cache.take(("scores",)) is not None
    cache.put(("big",), np.zeros((1 << 20) // 4 + 1, dtype=np.float32).reshape(1, 1, -1))  # over the bound
    assert cache.take(("big",)) is None


def test_a_chunk_anchored_at_its_whole_cubes_first_pixel():
    from terramind_openeo.inference.cube import geometry

    y, x = 7_198_035.0 - 10.0 * np.arange(100), 790_245.0 + 10.0 * np.arange(120)  # 10 m, north up
    whole = xr.DataArray(np.zeros((1, 1, 100, 120), np.float32), dims=("t", "bands", "y", "x"),
                         coords={"y": y, "x": x, "bands": ["B04"]})
    chunk = whole.isel(y=slice(30, 100), x=slice(48, 120))
    origin = (float(y[0]), float(x[0]))
    assert (geometry(chunk, "cube").row0, geometry(chunk, "cube").col0) == (0, 0)  # its own first pixel
    geo = geometry(chunk, "cube", origin)
    assert (geo.row0, geo.col0) == (30, 48)  # pixels from the whole cube's first one
    assert (geometry(whole, "cube", origin).row0, geometry(whole, "cube", origin).col0) == (0, 0)
    crs = geometry(chunk, "crs", origin)  # the origin plays no part with CRS anchoring
    assert (crs.row0, crs.col0) == (geometry(chunk, "crs").row0, geometry(chunk, "crs").col0)
