"""STAC metadata of written results (processes/stac_out.py)."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from terramind_openeo.processes.stac_out import build_stac


def _cube(t_labels) -> xr.DataArray:
    cube = xr.DataArray(np.zeros((len(t_labels), 1, 2, 2), "float32"), dims=("t", "bands", "y", "x"),
                        coords={"t": t_labels, "bands": ["B04"], "y": [5151915.0, 5151905.0],
                                "x": [680005.0, 680015.0]})
    return cube.rio.write_crs("EPSG:32632")


def test_items_span_the_dates_of_the_cube(tmp_path):
    path = tmp_path / "result.nc"
    path.write_bytes(b"x")
    cube = _cube(np.array(["2022-06-01", "2022-06-11"], dtype="datetime64[ns]"))
    stac = build_stac([path], tmp_path, {path: cube}, write=False)
    props = stac["features"][0]["properties"]
    assert props["start_datetime"] == "2022-06-01T00:00:00Z" and props["end_datetime"] == "2022-06-11T00:00:00Z"


def test_time_labels_that_are_not_dates_give_an_open_interval(tmp_path):
    """rename_labels may give t labels such as 'first_date': the metadata must still be written."""
    path = tmp_path / "result.nc"
    path.write_bytes(b"x")
    stac = build_stac([path], tmp_path, {path: _cube(["first_date", "second_date"])}, write=True)
    item = json.loads((tmp_path / "result.nc.stac.json").read_text())
    assert item == stac["features"][0]
    assert item["properties"]["datetime"] is None
    assert item["properties"]["start_datetime"] == "1970-01-01T00:00:00Z"
