"""writers: per-date COGs from one computation of each block."""

from __future__ import annotations

import threading

import dask.array as da
import numpy as np
import pandas as pd
import rasterio
import xarray as xr

from terramind_openeo.processes.writers import write_gtiff


def _cube(counter: list) -> xr.DataArray:
    """3 dates x 2 bands x 64 x 64 px, one chunk across all dates (as a UDF or model output has it)."""
    lock = threading.Lock()

    def block(x, block_info=None):
        with lock:
            counter.append(block_info[None]["chunk-location"])
        loc = block_info[None]["array-location"]
        t = np.arange(loc[0][0], loc[0][1])[:, None, None, None]
        b = np.arange(loc[1][0], loc[1][1])[None, :, None, None]
        y = np.arange(loc[2][0], loc[2][1])[None, None, :, None]
        xx = np.arange(loc[3][0], loc[3][1])[None, None, None, :]
        return (1000 * t + 100 * b + y + xx / 100).astype("float32")

    data = da.map_blocks(block, da.zeros((3, 2, 64, 64), chunks=(3, 2, 32, 32), dtype="float32"), dtype="float32")
    cube = xr.DataArray(data, dims=("t", "bands", "y", "x"),
                        coords={"t": pd.to_datetime(["2022-06-02", "2022-06-05", "2022-06-07"]),
                                "bands": ["B04", "B08"], "y": 5151915.0 - 10 * np.arange(64),
                                "x": 679725.0 + 10 * np.arange(64)})
    return cube.rio.write_crs("EPSG:32632")


def test_each_block_is_computed_once_for_all_date_files(tmp_path):
    counter: list = []
    cube = _cube(counter)
    expected = _cube([]).values
    blocks = []
    files = write_gtiff(cube, tmp_path, "openEO", on_block=lambda: blocks.append(1))
    assert [f.name for f in files] == ["openEO_2022-06-02.tif", "openEO_2022-06-05.tif", "openEO_2022-06-07.tif"]
    assert sorted(counter) == [(0, 0, i, j) for i in range(2) for j in range(2)]  # 4 blocks, each once
    assert len(blocks) == 4  # progress: one tick per block of the cube
    for ti, f in enumerate(files):
        with rasterio.open(f) as src:
            assert src.count == 2 and src.crs.to_epsg() == 32632 and src.descriptions == ("B04", "B08")
            np.testing.assert_array_equal(src.read(), expected[ti])
        assert not list(tmp_path.glob("*.part"))
