"""``crs_of`` / ``with_crs``: what ``rio.crs`` / ``rio.write_crs`` give, without a reference cycle on the cube."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import rioxarray  # noqa: F401
import xarray as xr

from terramind_openeo.crs import crs_of, with_crs


def _cube() -> xr.DataArray:
    return xr.DataArray(np.ones((3, 4, 5), dtype="float32"), dims=("bands", "y", "x"),
                        coords={"bands": ["a", "b", "c"], "y": 5000.0 - 10 * np.arange(4), "x": 10.0 * np.arange(5)},
                        attrs={"nodata": 0})


@pytest.mark.parametrize("crs", ["EPSG:32632", "EPSG:4326"])
def test_with_crs_writes_what_rioxarray_writes_in_place(crs):
    ours, theirs = _cube(), _cube()
    theirs.rio.write_crs(crs, inplace=True)
    assert with_crs(ours, crs) is ours
    xr.testing.assert_identical(ours, theirs)
    assert ours.encoding == theirs.encoding
    theirs.rio.write_crs("EPSG:3857", inplace=True)  # a second CRS replaces the first
    with_crs(ours, "EPSG:3857")
    xr.testing.assert_identical(ours, theirs)
    assert ours.rio.crs == theirs.rio.crs
    assert crs_of(ours) == theirs.rio.crs
    assert crs_of(_cube()) is None


def test_no_reference_cycle_keeps_the_values(no_cyclic_gc):
    cube = _cube()
    values = weakref.ref(cube.values)
    with_crs(cube, "EPSG:32632")
    assert crs_of(cube).to_epsg() == 32632
    del cube
    assert values() is None  # freed by reference counting alone

    cube = _cube()  # the premise: the accessor does make a cycle that keeps them
    values = weakref.ref(cube.values)
    assert cube.rio.crs is None
    del cube
    assert values() is not None
    gc.collect()
    assert values() is None
