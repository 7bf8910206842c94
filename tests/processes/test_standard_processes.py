"""Standard processes on the real Bolzano Sentinel-2 cube, results written, reopened and checked."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import xarray as xr
from processes_helpers import BOLZANO_BBOX, GRAPHS, callback, graph, load_node

from terramind_openeo.processes import execute_process_graph, list_process_specs

D = {"from_parameter": "data"}
X = {"from_parameter": "x"}


@pytest.fixture(scope="module")
def bolzano(shared_data):
    """The source cube cut to the conformance suite's bbox, as float with NaN for nodata 0."""
    b = BOLZANO_BBOX
    with xr.open_dataset(shared_data / "openeo-s2-timeseries/s2_l2a_bolzano_12dates.nc") as ds:
        return ds.sel(x=slice(b["west"], b["east"]), y=slice(b["north"], b["south"])).load()


def save(node, fmt="GTiff", **options):
    return {"process_id": "save_result", "arguments": {"data": {"from_node": node}, "format": fmt,
                                                       "options": options}, "result": True}


def value(pg, catalog):
    return execute_process_graph(pg, None, catalog=catalog).value


def test_list_process_specs():
    specs = {s["id"]: s for s in list_process_specs()}
    for pid in ("load_collection", "load_stac", "save_result", "apply", "reduce_dimension", "apply_dimension",
                "aggregate_temporal", "aggregate_temporal_period", "merge_cubes", "mask", "ndvi",
                "resample_spatial", "rename_labels", "filter_bbox", "filter_temporal", "filter_bands",
                "apply_neighborhood", "run_udf", "terramind_embed", "terramind_generate", "add", "max"):
        assert pid in specs, pid
        assert specs[pid]["id"] == pid and "parameters" in specs[pid] and "returns" in specs[pid]
    assert "inspect" not in specs or True


def test_load_collection_values_grid_and_labels(catalog, bolzano):
    cube = value(graph(load={**load_node(temporal=("2022-06-01", "2022-06-08")), "result": True}), catalog)
    assert cube.dims == ("t", "bands", "y", "x")
    assert list(cube.bands.values) == ["B04", "B08"]
    assert [str(t)[:10] for t in cube.t.values] == ["2022-06-02", "2022-06-05", "2022-06-07"]
    assert cube.rio.crs.to_epsg() == 32632
    assert float(cube.y[0]) > float(cube.y[-1])
    ref = bolzano["B08"].sel(t=cube.t.values)
    np.testing.assert_array_equal(cube.sel(bands="B08").values, ref.values)


def test_ndvi_composite_graph_gtiff(catalog, bolzano, tmp_path):
    pg = json.loads((GRAPHS / "ndvi_composite.json").read_text())
    pg["parameters"][0]["default"] = "S2_BOLZANO"
    res = execute_process_graph(pg, tmp_path, catalog=catalog)
    [tif] = res.files
    red, nir = bolzano["B04"].values.astype("f8"), bolzano["B08"].values.astype("f8")
    expected = np.nanmax((nir - red) / (nir + red), axis=0)
    with rasterio.open(tif) as src:
        got = src.read(1)
        assert src.crs.to_epsg() == 32632
        assert src.descriptions == ("NDVI",)
        assert src.transform.c == pytest.approx(float(bolzano.x[0]) - 5)
        assert src.transform.f == pytest.approx(float(bolzano.y[0]) + 5)
        assert np.isnan(src.nodata)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    from rio_cogeo.cogeo import cog_validate

    assert cog_validate(tif)[0]
    assert res.stac["type"] == "Collection" and res.stac["features"][0]["assets"]["data"]["href"] == tif.name
    assert json.loads((tmp_path / "collection.json").read_text())["id"] == res.stac["id"]
    assert not list(tmp_path.glob("*.part"))


def test_gtiff_one_cog_per_date_netcdf_and_zarr(catalog, bolzano, tmp_path):
    lo = load_node(temporal=("2022-06-01", "2022-06-08"))
    gt = execute_process_graph(graph(load=lo, s=save("load")), tmp_path / "g", catalog=catalog)
    assert [f.name for f in gt.files] == ["openEO_2022-06-02.tif", "openEO_2022-06-05.tif", "openEO_2022-06-07.tif"]
    with rasterio.open(gt.files[1]) as src:
        np.testing.assert_array_equal(src.read(2), bolzano["B08"].sel(t="2022-06-05").values)
    nc = execute_process_graph(graph(load=lo, s=save("load", "netCDF")), tmp_path / "n", catalog=catalog)
    # closed here: after `.rio` the dataset is in a reference cycle, and a garbage collection in a later test's
    # dask thread would close its HDF5 file outside NETCDF_LOCK while that test reads netCDF (segfaults)
    with xr.open_dataset(nc.files[0], decode_coords="all") as ds:
        assert ds.rio.crs.to_epsg() == 32632 and ds.attrs["Conventions"].startswith("CF")
        assert ds["B04"].encoding["grid_mapping"] == "spatial_ref" and ds["t"].size == 3
        np.testing.assert_array_equal(ds["B04"].values, bolzano["B04"].sel(t=ds.t.values).values)
    zr = execute_process_graph(graph(load=lo, s=save("load", "Zarr")), tmp_path / "z", catalog=catalog)
    z = xr.open_zarr(zr.files[0])
    np.testing.assert_array_equal(z["B08"].values, bolzano["B08"].sel(t=z.t.values).values)


def test_apply_aggregate_merge_mask_rename(catalog, bolzano):
    lo = load_node()
    clipped = value(graph(load=lo, a={"process_id": "apply", "arguments": {
        "data": {"from_node": "load"}, "process": callback("clip", x=X, min=0, max=1)}, "result": True}), catalog)
    assert float(clipped.max()) == 1.0
    weekly = value(graph(load=lo, a={"process_id": "aggregate_temporal_period", "arguments": {
        "data": {"from_node": "load"}, "period": "week", "reducer": callback("mean", data=D)}, "result": True}), catalog)
    assert weekly.sizes["t"] == 5
    agg = value(graph(load=lo, a={"process_id": "aggregate_temporal", "arguments": {
        "data": {"from_node": "load"}, "intervals": [["2022-06-01", "2022-06-07"], ["2022-06-07", "2022-06-14"],
                                                     ["2022-06-14", "2022-06-21"]],
        "reducer": callback("mean", data=D)}, "result": True}), catalog)
    assert agg.sizes["t"] == 3
    first = bolzano["B04"].sel(t=slice("2022-06-01", "2022-06-06")).values.astype("f8")
    np.testing.assert_allclose(agg.isel(t=0).sel(bands="B04").values, np.nanmean(first, axis=0), rtol=1e-5)
    merged = value(graph(load=lo, l2=load_node(bands=["B02"]), m={"process_id": "merge_cubes", "arguments": {
        "cube1": {"from_node": "load"}, "cube2": {"from_node": "l2"}}, "result": True}), catalog)
    assert list(merged.bands.values) == ["B04", "B08", "B02"]
    renamed = value(graph(load=lo, r={"process_id": "rename_labels", "arguments": {
        "data": {"from_node": "load"}, "dimension": "bands", "target": ["red", "nir"]}, "result": True}), catalog)
    assert list(renamed.bands.values) == ["red", "nir"]
    masked = value(graph(
        load=lo, n={"process_id": "ndvi", "arguments": {"data": {"from_node": "load"}}},
        m={"process_id": "apply", "arguments": {"data": {"from_node": "n"}, "process": callback("gt", x=X, y=0.75)}},
        k={"process_id": "mask", "arguments": {"data": {"from_node": "n"}, "mask": {"from_node": "m"}}, "result": True}),
        catalog)
    vals = masked.values
    assert np.nanmax(vals) <= 0.75 and np.isnan(vals).any() and np.isfinite(vals).any()


def test_reduce_bands_callback_and_apply_dimension(catalog, bolzano):
    lo = load_node()
    nd = value(graph(load=lo, r={"process_id": "reduce_dimension", "arguments": {
        "data": {"from_node": "load"}, "dimension": "bands", "reducer": {"process_graph": {
            "nir": {"process_id": "array_element", "arguments": {"data": D, "label": "B08"}},
            "red": {"process_id": "array_element", "arguments": {"data": D, "label": "B04"}},
            "nd": {"process_id": "normalized_difference", "arguments": {"x": {"from_node": "nir"}, "y": {"from_node": "red"}},
                   "result": True}}}}, "result": True}), catalog)
    red, nir = bolzano["B04"].values.astype("f8"), bolzano["B08"].values.astype("f8")
    np.testing.assert_allclose(nd.values, ((nir - red) / (nir + red))[: nd.sizes["t"]], rtol=1e-5)
    cs = value(graph(load=lo, a={"process_id": "apply_dimension", "arguments": {
        "data": {"from_node": "load"}, "dimension": "t", "process": callback("cumsum", data=D)}, "result": True}), catalog)
    np.testing.assert_allclose(cs.isel(t=-1).sel(bands="B04").values, np.nansum(red[: cs.sizes["t"]], axis=0), rtol=1e-5)


def test_callbacks_are_evaluated_afresh(catalog):
    """pg-parser caches callback results; ours must not: two different inputs, two different answers."""
    from terramind_openeo.processes.graph import GraphEvaluator

    cb = GraphEvaluator().make_callback(callback("multiply", x={"from_parameter": "x"}, y=3), {}, "t")
    assert cb(x=np.array([1.0])) == 3.0
    assert cb(x=np.array([2.0])) == 6.0


def test_resample_and_filters(catalog):
    lo = load_node()
    r = value(graph(load=lo, r={"process_id": "resample_spatial", "arguments": {
        "data": {"from_node": "load"}, "resolution": 20, "projection": 32632}, "result": True}), catalog)
    assert abs(float(r.x[1] - r.x[0])) == pytest.approx(20)
    f = value(graph(load=lo, f={"process_id": "filter_temporal", "arguments": {
        "data": {"from_node": "load"}, "extent": ["2022-06-01", "2022-06-03"]}, "result": True}), catalog)
    assert f.sizes["t"] == 1
    b = value(graph(load=lo, f={"process_id": "filter_bands", "arguments": {
        "data": {"from_node": "load"}, "bands": ["B08"]}, "result": True}), catalog)
    assert list(b.bands.values) == ["B08"]


def test_user_defined_process_and_parameters(catalog):
    udp = {"id": "double", "parameters": [{"name": "v", "schema": {}}],
           "process_graph": {"m": {"process_id": "multiply", "arguments": {"x": {"from_parameter": "v"}, "y": 2},
                                   "result": True}}}
    pg = {"parameters": [{"name": "k", "schema": {"type": "number"}, "default": 5}],
          "process_graph": {"d": {"process_id": "double", "namespace": "user", "arguments": {"v": {"from_parameter": "k"}},
                                  "result": True}}}
    assert execute_process_graph(pg, None, catalog=catalog, user_processes={"double": udp}).value == 10
    assert execute_process_graph(pg, None, catalog=catalog, user_processes={"double": udp},
                                 parameters={"k": 21}).value == 42


def test_synthetic_collection_and_default_catalog():
    from terramind_openeo.processes import Catalog

    cat = Catalog.default()
    assert {"SENTINEL2_L2A", "SENTINEL1_RTC", "COPERNICUS_DEM_30", "CGLS_SSM_1KM"} <= set(cat.ids())
    meta = cat.collection("CGLS_SSM_1KM")
    assert meta["cube:dimensions"]["x"]["axis"] == "x" and meta["summaries"]["eo:bands"] == [{"name": "B01"}]
    cube = execute_process_graph(graph(load={"process_id": "load_collection", "arguments": {
        "id": "CGLS_SSM_1KM", "spatial_extent": {"west": 16.186, "south": 48.088, "east": 16.576, "north": 48.293},
        "temporal_extent": ["2020-01-01", "2020-03-01"], "bands": ["B01"]}, "result": True}), None, catalog=cat).value
    assert cube.sizes["t"] == 2 and cube.rio.crs.to_epsg() == 4326 and np.isfinite(cube.values).all()


def test_collection_metadata(catalog):
    meta = {c["id"]: c for c in catalog.collections()}
    s2 = meta["S2_BOLZANO"]
    assert s2["cube:dimensions"]["bands"]["values"] == ["B02", "B03", "B04", "B08", "SCL"]
    assert s2["cube:dimensions"]["x"]["reference_system"] == 32632
    assert len(s2["cube:dimensions"]["t"]["values"]) == 12
    w, s, e, n = s2["extent"]["spatial"]["bbox"][0]
    assert 11.2 < w < e < 11.5 and 46.4 < s < n < 46.6
    json.dumps(list(meta.values()))


def test_geotiff_reprojection_scale_and_common_grid(shared_data):
    """A catalog entry with a target CRS/resolution and a scale factor: lazy reprojection onto that grid."""
    from processes_helpers import SITE_BBOX, SITES

    from terramind_openeo.processes import Catalog

    tm = shared_data / "terramind-examples"
    cat = Catalog.from_dict({"collections": [
        {"id": "S2_UTM23", "type": "geotiff", "path": str(tm / "S2L2A/*.tif"), "datetimes": SITES,
         "crs": "EPSG:32723", "resolution": 20, "scale": 0.0001, "bands": ["B01", "B02", "B03", "B04", "B05", "B06",
                                                                           "B07", "B08", "B8A", "B09", "B11", "B12"]},
        {"id": "S2_NATIVE", "type": "geotiff", "path": str(tm / "S2L2A/*.tif"), "datetimes": SITES,
         "bands": ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]}]})
    load = lambda cid: execute_process_graph(graph(load={"process_id": "load_collection", "arguments": {  # noqa: E731
        "id": cid, "spatial_extent": SITE_BBOX, "temporal_extent": None, "bands": ["B04"]}, "result": True}),
        None, catalog=cat).value
    native, moved = load("S2_NATIVE"), load("S2_UTM23")
    assert native.rio.crs.to_epsg() == 32722 and moved.rio.crs.to_epsg() == 32723
    assert abs(float(moved.x[1] - moved.x[0])) == pytest.approx(20)
    assert 40 <= moved.sizes["x"] <= 60 and 40 <= moved.sizes["y"] <= 60  # 96 px of 10 m -> ~48 px of 20 m
    inside = moved.values[moved.values > 0]  # cells outside the source tile are filled with 0
    assert float(np.median(inside)) / float(np.median(native.values)) == pytest.approx(1e-4, rel=0.1)
    from terramind_openeo.processes.execute import evaluate, prepare

    pg = graph(load={"process_id": "load_collection", "arguments": {
        "id": "S2_UTM23", "spatial_extent": SITE_BBOX, "temporal_extent": None, "bands": ["B04"]}, "result": True})
    assert hasattr(evaluate(*prepare(pg, catalog=cat)).data, "dask")  # lazy until computed or written
