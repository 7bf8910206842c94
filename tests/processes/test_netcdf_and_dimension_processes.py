"""netCDF layout, apply_dimension, rename_labels and order as the openEO specs (and its conformance suite)
want them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401
import xarray as xr
from processes_helpers import graph, load_node

from terramind_openeo.processes import execute_process_graph
from terramind_openeo.processes.errors import ProcessParameterInvalid
from terramind_openeo.processes.graph import GraphEvaluator
from terramind_openeo.processes.registry import get_process
from terramind_openeo.processes.standard_fixes import (
    apply_dimension,
    order,
    rename_labels,
)
from terramind_openeo.processes.writers import write_netcdf

D = {"from_parameter": "data"}


def cube(bands=("B04", "B08"), nt=2) -> xr.DataArray:
    rng = np.random.default_rng(0)
    data = rng.uniform(1, 100, (nt, len(bands), 4, 5)).astype("float32")
    return xr.DataArray(data, dims=("t", "bands", "y", "x"), coords={
        "t": pd.date_range("2022-06-01", periods=nt), "bands": list(bands),
        "y": 5151915.0 - 10 * np.arange(4), "x": 679725.0 + 10 * np.arange(5)}).rio.write_crs(32632)


def suite_open(path) -> xr.DataArray:
    """What the openEO test suite does (openeo_test_suite.lib.workflows.io.load_netcdf_dataarray)."""
    try:
        return xr.open_dataarray(path)
    except ValueError:
        return xr.open_dataset(path, decode_coords="all").to_dataarray(dim="bands")


def callback(**nodes):
    return GraphEvaluator().make_callback({"process_graph": nodes}, {}, "test")


# ------------------------------------------------------------------ netCDF layout
@pytest.mark.parametrize("bands", [("B04",), ("B04", "B08")])
def test_netcdf_keeps_the_bands_dimension(tmp_path, bands):
    c = cube(bands)
    path = write_netcdf(c, tmp_path, "out")[0]
    with pytest.raises(ValueError):  # grid mapping + bands: never a single data variable
        xr.open_dataarray(path)
    back = suite_open(path)
    assert back.dims == ("bands", "t", "y", "x") and list(back.bands.values) == list(bands)
    assert back.rio.crs.to_epsg() == 32632
    np.testing.assert_array_equal(back.transpose(*c.dims).values, c.values)
    ds = xr.open_dataset(path)  # CF: one variable per band, grid mapping variable referenced by each
    assert list(ds.data_vars)[-len(bands):] == list(bands) and "spatial_ref" in ds.variables
    assert all(ds[b].attrs.get("grid_mapping", ds[b].encoding.get("grid_mapping")) == "spatial_ref" for b in bands)
    assert "crs_wkt" in ds["spatial_ref"].attrs


def test_netcdf_without_time_or_bands(tmp_path):
    no_t = write_netcdf(cube(("B04",), nt=1).isel(t=0, drop=True), tmp_path, "no_t")[0]
    assert suite_open(no_t).dims == ("bands", "y", "x")
    no_bands = write_netcdf(cube(("B04",)).isel(bands=0, drop=True), tmp_path, "no_bands")[0]
    back = xr.open_dataarray(no_bands, decode_coords="all")  # reduced bands: the cube's own dims
    assert back.dims == ("t", "y", "x") and back.rio.crs.to_epsg() == 32632


# ------------------------------------------------------------------ apply_dimension
def test_apply_dimension_keeps_labels_and_labels_the_callback_array():
    c = cube()
    q = apply_dimension(c, callback(q={"process_id": "quantiles", "arguments": {
        "data": D, "probabilities": [0.5, 0.75]}, "result": True}), "bands")
    assert q.dims == c.dims and list(q.bands.values) == ["B04", "B08"]
    np.testing.assert_allclose(q.isel(bands=0).values, np.quantile(c.values, 0.5, axis=1), rtol=1e-6)

    ndvi = apply_dimension(c, callback(
        r={"process_id": "array_element", "arguments": {"data": D, "label": "B04"}},
        n={"process_id": "array_element", "arguments": {"data": D, "label": "B08"}},
        s={"process_id": "subtract", "arguments": {"x": {"from_node": "n"}, "y": {"from_node": "r"}}},
        a={"process_id": "add", "arguments": {"x": {"from_node": "n"}, "y": {"from_node": "r"}}},
        d={"process_id": "divide", "arguments": {"x": {"from_node": "s"}, "y": {"from_node": "a"}}},
        c={"process_id": "array_concat", "arguments": {"array1": D, "array2": {"from_node": "d"}}, "result": True},
    ), "bands")
    assert list(ndvi.bands.values) == [0, 1, 2]  # more values than labels: enumerated
    red, nir = c.sel(bands="B04").values, c.sel(bands="B08").values
    np.testing.assert_allclose(ndvi.isel(bands=2).values, (nir - red) / (nir + red), rtol=1e-5)
    assert ndvi.rio.crs.to_epsg() == 32632


def test_apply_dimension_target_dimension():
    c = cube(("B04",), nt=5)
    q = apply_dimension(c, callback(q={"process_id": "quantiles", "arguments": {
        "data": D, "probabilities": [0.25, 0.5, 0.75]}, "result": True}), "t", target_dimension="bands")
    assert q.dims == ("bands", "y", "x") and list(q.bands.values) == [0, 1, 2]
    np.testing.assert_allclose(q.values, np.quantile(c.values[:, 0], [0.25, 0.5, 0.75], axis=0), rtol=1e-6)
    m = apply_dimension(c, callback(q={"process_id": "mean", "arguments": {"data": D}, "result": True}), "t",
                        target_dimension="stats")
    assert m.dims == ("stats", "bands", "y", "x") and m.sizes["stats"] == 1
    one = apply_dimension(c, callback(k={"process_id": "constant", "arguments": {"x": 7}, "result": True}), "t")
    assert one.dims == c.dims and one.sizes["t"] == 1 and float(one.max()) == float(one.min()) == 7
    with pytest.raises(ProcessParameterInvalid, match="already exists with 2 labels"):
        apply_dimension(cube(), callback(q={"process_id": "mean", "arguments": {"data": D}, "result": True}), "t",
                        target_dimension="bands")


def test_apply_dimension_order_on_a_cube():
    c = cube()
    o = apply_dimension(c, callback(o={"process_id": "order", "arguments": {"data": D}, "result": True}), "bands")
    np.testing.assert_array_equal(o.values, np.argsort(c.values, axis=1, kind="stable"))


# ------------------------------------------------------------------ order
def test_order_any_dimensionality():
    x = np.array([[3.0, np.nan, 1.0, 3.0], [2.0, 1.0, np.nan, 0.0]])
    np.testing.assert_array_equal(order(x, axis=1), [[2, 0, 3, 1], [3, 1, 0, 2]])
    np.testing.assert_array_equal(order(x, asc=False, axis=1), [[0, 3, 2, 1], [0, 1, 3, 2]])
    np.testing.assert_array_equal(order(x, nodata=False, axis=1), [[1, 2, 0, 3], [2, 3, 1, 0]])
    np.testing.assert_array_equal(order([6, -1, 2, None, 7, 4, None, 8, 3, 9, 9]), [1, 2, 8, 5, 0, 4, 7, 9, 10])
    np.testing.assert_array_equal(order([6, -1, 2, None, 7, 4, None, 8, 3, 9, 9], nodata=True),
                                  [1, 2, 8, 5, 0, 4, 7, 9, 10, 3, 6])
    np.testing.assert_array_equal(order([6, -1, 2, None, 7, 4, None, 8, 3, 9, 9], asc=False, nodata=False),
                                  [3, 6, 9, 10, 7, 4, 0, 5, 8, 2, 1])
    import dask.array as da

    np.testing.assert_array_equal(order(da.from_array(x, chunks=(1, 2)), axis=1).compute(), order(x, axis=1))


# ------------------------------------------------------------------ rename_labels
def test_rename_labels_temporal_with_any_target():
    c = cube(nt=1)
    r = rename_labels(c, "t", target=["first_date"], source=["2022-06-01T00:00:00Z"])
    assert list(r.t.values) == ["first_date"]
    r2 = rename_labels(cube(), "t", target=["2023-01-01"], source=["2022-06-02"])
    assert list(r2.t.values) == [np.datetime64("2022-06-01"), np.datetime64("2023-01-01")]
    assert list(rename_labels(c, "bands", target=["red", "nir"]).bands.values) == ["red", "nir"]
    with pytest.raises(ProcessParameterInvalid) as err:
        rename_labels(c, "bands", target=["red"], source=["B03"])
    assert err.value.code == "LabelNotAvailable"
    with pytest.raises(ProcessParameterInvalid) as err:
        rename_labels(c, "bands", target=["B08"], source=["B04"])
    assert err.value.code == "LabelExists"


def test_fixed_processes_are_registered():
    for pid in ("apply_dimension", "rename_labels", "order"):
        assert get_process(pid).implementation.__module__ == "terramind_openeo.processes.standard_fixes"


def test_apply_dimension_graph_written_as_netcdf(catalog, tmp_path):
    """The conformance suite's test_apply_dimension_quantiles_0, end to end on the Bolzano cube."""
    pg = graph(load=load_node(temporal=("2022-06-01", "2022-06-03")), a={"process_id": "apply_dimension", "arguments": {
        "data": {"from_node": "load"}, "dimension": "bands", "process": {"process_graph": {"q": {
            "process_id": "quantiles", "arguments": {"data": D, "probabilities": [0.5, 0.75]}, "result": True}}}}},
        s={"process_id": "save_result", "arguments": {"data": {"from_node": "a"}, "format": "netCDF"}, "result": True})
    res = execute_process_graph(pg, tmp_path, catalog=catalog)
    back = suite_open(res.files[0])
    assert back.dims == ("bands", "t", "y", "x") and list(back.bands.values) == ["B04", "B08"]


# ------------------------------------------------------------------ our own files as collections
@pytest.mark.parametrize("kind", ["netcdf", "zarr"])
def test_a_written_result_loads_back_as_a_collection_with_its_crs(tmp_path, kind):
    """A result of ours, listed as a collection without a ``crs`` in the catalog, loads with the CRS of its
    CF grid mapping (``spatial_ref``), not an error or a lost CRS."""
    from terramind_openeo.processes.catalog import Catalog
    from terramind_openeo.processes.writers import write_zarr

    c = cube()
    writer = write_netcdf if kind == "netcdf" else write_zarr
    path = writer(c, tmp_path, "ours")[0]
    catalog = Catalog.from_dict({"collections": [{"id": "OURS", "type": kind, "path": str(path)}]})
    pg = graph(load={**load_node("OURS", bands=None, bbox=None, temporal=None), "result": True})
    out = execute_process_graph(pg, None, catalog=catalog).value
    assert out.rio.crs.to_epsg() == 32632
    assert sorted(out.bands.values) == sorted(c.bands.values)  # Zarr lists its variables by name
    np.testing.assert_array_equal(out.sel(bands=c.bands.values).transpose(*c.dims).values, c.values)
