"""Memory of a large-area run is bounded by the work tile and the tiles in flight, not by the area."""

from __future__ import annotations

import os
import time

import dask.array as da
import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import from_origin

from terramind_openeo.processes import heap
from terramind_openeo.processes.runner import compute_tiles
from terramind_openeo.processes.tiles import plan_tiles, vrt_to_cog


def _cube(size: int, chunk: int) -> xr.DataArray:
    data = da.arange(size * size, dtype="float32").reshape(1, 1, size, size).rechunk((1, 1, chunk, chunk))
    return xr.DataArray(data, dims=("t", "bands", "y", "x"))


def test_compute_tiles_bounded_window_and_released():
    distributed = pytest.importorskip("distributed")
    cube = _cube(128, 32)
    tiles = plan_tiles(cube, 32)
    expected = cube.values
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as client:
        seen = []
        for tile, values in compute_tiles(cube, tiles, client, window=2):
            assert len(client.futures) <= 2  # at most the window on the cluster, finished ones released
            np.testing.assert_array_equal(values, expected[:, :, tile.y0:tile.y1, tile.x0:tile.x1])
            seen.append(tile.id)
        assert sorted(seen) == sorted(t.id for t in tiles)
        deadline = time.monotonic() + 10  # the last release reaches the client asynchronously
        while client.futures and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not client.futures


def test_local_cluster_workers_get_the_heap_policy(monkeypatch):
    pytest.importorskip("distributed")
    for name in heap.worker_environ():  # a nanny started earlier in this process exported dask's values
        monkeypatch.delenv(name, raising=False)
    from terramind_openeo.processes.cli import dask_scheduler

    with dask_scheduler("local", 1) as client:
        env = client.run(lambda: {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_",
                                                                 "OMP_NUM_THREADS", "GDAL_CACHEMAX")})
    (worker_env,) = env.values()
    assert worker_env["MALLOC_TRIM_THRESHOLD_"] == str(heap.TRIM_THRESHOLD)  # not dask's 65536
    assert worker_env["MALLOC_MMAP_THRESHOLD_"] == str(heap.MMAP_THRESHOLD)
    assert worker_env["OMP_NUM_THREADS"] is not None and worker_env["GDAL_CACHEMAX"] is not None


@pytest.mark.parametrize("shape", [(600, 700), (513, 512)])  # 513 x 512: image as wide as a 512 px block
def test_cog_of_many_bands_band_interleaved_same_values(tmp_path, shape):
    from rio_cogeo.cogeo import cog_validate

    values = np.random.default_rng(0).random((8, *shape), dtype="float32")
    src = tmp_path / "in.tif"
    with rasterio.open(src, "w", driver="GTiff", count=8, height=shape[0], width=shape[1], dtype="float32",
                       crs="EPSG:32632", transform=from_origin(500000, 5000000, 10, 10)) as dst:
        dst.write(values)
    cog = vrt_to_cog(src, tmp_path / "out.tif")
    assert cog_validate(cog)[0]
    with rasterio.open(cog) as f:
        assert f.interleaving.name.lower() == "band"
        np.testing.assert_array_equal(f.read(), values)


def test_tiles_dealt_to_workers_in_bands_of_rows():
    from terramind_openeo.processes.runner import _by_worker

    tiles = plan_tiles(_cube(128, 32), 32)  # 4 x 4 tiles, raster order
    order, home = _by_worker(tiles, ["tcp://a", "tcp://b"])
    assert sorted(t.id for t in order) == sorted(t.id for t in tiles)
    assert {t.row for t in tiles if home[t] == "tcp://a"} == {0, 1}  # rows 0-1 on one worker, 2-3 on the other
    assert {t.row for t in tiles if home[t] == "tcp://b"} == {2, 3}
    assert [home[t] for t in order[:4]] == ["tcp://a", "tcp://b"] * 2  # both busy from the start
    assert _by_worker(tiles, ["tcp://a"]) == (tiles, {})


def test_bands_of_tiles_are_cut_by_pixels_not_by_count():
    """CRS-anchored tiles are uneven: rows 400, 400, 100, 100 px high. Half the tiles each would give one
    worker 80 % of the pixels; cut by pixels, it is 40 / 60."""
    from terramind_openeo.processes.runner import _by_worker
    from terramind_openeo.processes.tiles import WorkTile

    edges = [0, 400, 800, 900, 1000]
    tiles = [WorkTile(r, c, edges[r], edges[r + 1], 200 * c, 200 * (c + 1)) for r in range(4) for c in range(2)]
    order, home = _by_worker(tiles, ["tcp://a", "tcp://b"])
    assert sorted(t.id for t in order) == sorted(t.id for t in tiles)
    total = sum(t.pixels for t in tiles)
    share = {w: sum(t.pixels for t in tiles if home[t] == w) / total for w in ("tcp://a", "tcp://b")}
    assert share == {"tcp://a": 0.4, "tcp://b": 0.6}
    assert {t.row for t in tiles if home[t] == "tcp://a"} == {0}


def test_a_chunk_function_gets_the_chunk_itself_not_a_copy():
    """``_run_block`` labels the block (coordinates, CRS) without copying its pixels: at 2144^2 px x 12 bands
    a copy is 220 MB more per chunk in flight."""
    from terramind_openeo.processes.chunked import AxisGrid, _run_block

    block = np.arange(2 * 3 * 4 * 5, dtype="float32").reshape(2, 3, 4, 5)
    seen = {}

    def fn(chunk: xr.DataArray) -> xr.DataArray:
        seen["shares"] = np.shares_memory(chunk.values, block)
        seen["crs"] = chunk.rio.crs.to_epsg()
        return chunk

    ys, xs = 5000.0 - 10.0 * np.arange(4), 100.0 + 10.0 * np.arange(5)
    grids = (AxisGrid(ys[0], -10.0, 0), AxisGrid(xs[0], 10.0, 0))
    out = _run_block(block, fn, np.array(["2021-01-01", "2021-01-02"], dtype="datetime64[ns]"), ["a", "b", "c"],
                     ys, xs, {}, "EPSG:32632", True, (0, 4, 0, 5), 1, "float32", ["a", "b", "c"], grids)
    assert seen == {"shares": True, "crs": 32632}
    np.testing.assert_array_equal(out, block)


def _grids(ys: np.ndarray, xs: np.ndarray):
    from terramind_openeo.processes.chunked import AxisGrid

    return AxisGrid(ys[0], -10.0, 0), AxisGrid(xs[0], 10.0, 0)


@pytest.mark.parametrize("cycle", [False, True])
def test_a_chunk_outlives_its_task_in_no_reference_cycle(no_cyclic_gc, cycle):
    """A chunk function that takes ``.rio`` of its chunk makes a reference cycle (xarray caches the accessor
    on the object); the chunk's pixels would then stay in the worker until Python's cyclic collector runs.
    ``_run_block`` frees them when the chunk is done, and its own labelling makes no cycle."""
    import weakref

    import dask

    from terramind_openeo.processes.chunked import ChunkInput, _run_block

    ys, xs = 5000.0 - 10.0 * np.arange(4), 100.0 + 10.0 * np.arange(5)
    lazy = da.arange(3 * 4 * 5, dtype="float32").reshape(1, 3, 4, 5).rechunk((1, 3, 2, 2))
    refs = []

    def fn(chunk: xr.DataArray) -> xr.DataArray:
        refs.append(weakref.ref(chunk.data))
        if cycle:
            assert chunk.rio.crs.to_epsg() == 32632  # the accessor is now cached on the chunk
        out = chunk * 2
        refs.append(weakref.ref(out.data))
        if cycle:
            out.rio.write_crs("EPSG:32632", inplace=True)
        return out

    out = _run_block(ChunkInput(lazy), fn, np.array(["2021-01-01"], dtype="datetime64[ns]"), ["a", "b", "c"], ys,
                     xs, {}, "EPSG:32632", True, (0, 4, 0, 5), 1, "float32", ["a", "b", "c"], _grids(ys, xs))
    np.testing.assert_array_equal(out, 2 * dask.compute(lazy, scheduler="synchronous")[0])
    assert [ref() for ref in refs] == [None, None]


def test_chunk_inputs_are_read_in_the_chunk_task():
    """The input blocks of a lazy cube are read inside each chunk's task, not as tasks of their own: dask
    would hold every block of a chunk until its function returns and may read later chunks' blocks first."""
    import dask

    from terramind_openeo.processes.chunked import map_chunks, plan_for

    ys, xs = 5000.0 - 10.0 * np.arange(256), 10.0 * np.arange(256)
    data = da.ones((1, 2, 256, 256), dtype="float32", chunks=(1, 2, 32, 32))  # 64 blocks
    cube = xr.DataArray(data, dims=("t", "bands", "y", "x"),
                        coords={"t": [0], "bands": ["a", "b"], "y": ys, "x": xs})
    plan = plan_for(cube, 128, 16, 16, 16)
    out = map_chunks(cube, lambda c: c + 1, plan, ["a", "b"], "float32")
    chunks = (len(plan.row_bounds) - 1) * (len(plan.col_bounds) - 1)
    (optimized,) = dask.optimize(out.data)
    graph = dict(optimized.__dask_graph__())
    assert not [k for k in graph if "ones" in str(k)]  # no task of the input's blocks
    assert len(graph) <= 2 * chunks  # a task per chunk (and its alias in the output array)
    np.testing.assert_array_equal(out.values, 2.0)
