"""A UDF's class map keeps its class names through ``apply_neighborhood`` and ``run_udf``: the classes its
``apply_metadata`` states (``classes.declare_classes``) reach the COG (uint8, colour table, band metadata) and the
STAC ``classification:classes``, in this process and through the UDF sandbox; stated classes that are unusable,
or values the UDF's metadata does not declare, are the UDF's error."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from processes_helpers import graph, load_node
from test_neighborhood_udf import neighborhood

from terramind_openeo.classes import GTIFF_TAG, ClassScheme
from terramind_openeo.processes import execute_process_graph
from terramind_openeo.processes.errors import UdfError
from terramind_openeo.processes.policy import Policy

GREEN = ClassScheme.from_names("green", ["Bare", "Vegetation"], [(200, 180, 120), (30, 140, 40)])

# NDVI > 0.3 -> 1, else 0, NaN where the input has none; apply_metadata states the classes the context gives
# (raw STAC classes, so that the tests can also state unusable ones; none for null) with openEO's own metadata classes only.
CLASSIFY_UDF = '''
import numpy as np
import xarray
from openeo.metadata import Band, BandDimension, CollectionMetadata

def apply_metadata(metadata, context):
    band = {"name": "green"}
    if context.get("classes") is not None:
        band["classification:classes"] = context["classes"]
    described = {"summaries": {"eo:bands": [band]}}
    return CollectionMetadata(described, dimensions=[BandDimension(name="bands", bands=[Band("green")])])

def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
    red, nir = cube.sel(bands="B04"), cube.sel(bands="B08")
    ndvi = (nir - red) / (nir + red)
    ids = xarray.where(ndvi.isnull(), np.nan, (ndvi > 0.3) + context.get("offset", 0)).astype("float32")
    return ids.expand_dims(bands=["green"]).transpose(*cube.dims)
'''


def _sandboxed() -> Policy:
    from terramind_openeo.processes.sandbox import SandboxConfig, default_config

    config = default_config(memory_mb=2048, call_timeout_s=60.0)
    if not isinstance(config, SandboxConfig):
        pytest.skip(f"no UDF sandbox here: {config.message()}")
    return Policy(trusted=True, udf_sandbox=config)


def _neighborhood_graph(context: dict, fmt: str = "GTiff") -> dict:
    return graph(load=load_node(temporal=("2022-06-01", "2022-06-03")),
                 nb=neighborhood(CLASSIFY_UDF, 32, 8, context),
                 save={"process_id": "save_result", "arguments": {"data": {"from_node": "nb"}, "format": fmt},
                       "result": True})


@pytest.mark.parametrize("where", ["in-process", "sandbox"])
def test_stated_classes_reach_cog_and_stac(catalog, tmp_path, where):
    policy = _sandboxed() if where == "sandbox" else None
    res = execute_process_graph(_neighborhood_graph({"classes": GREEN.stac_classes()}), tmp_path, catalog=catalog,
                                policy=policy)
    [tif] = res.files
    with rasterio.open(tif) as src:
        values = src.read(1)
        assert src.dtypes[0] == "uint8" and src.nodata == 255 and src.descriptions == ("green",)
        assert ClassScheme.from_json(src.tags(1)[GTIFF_TAG]) == GREEN
        assert src.colormap(1)[1][:3] == (30, 140, 40) and src.colormap(1)[255][3] == 0
    assert set(np.unique(values)) == {0, 1}  # both classes on the Bolzano tile
    classes = res.stac["features"][0]["assets"]["data"]["classification:classes"]
    assert [c["title"] for c in classes] == ["Bare", "Vegetation", "No input data"]

    # the same class ids as the UDF's own floats, computed without the metadata's classes
    plain = execute_process_graph(graph(load=load_node(temporal=("2022-06-01", "2022-06-03")),
                                        nb={**neighborhood(CLASSIFY_UDF, 32, 8, {"classes": None}),
                                            "result": True}),
                                  None, catalog=catalog).value
    assert plain.dtype == np.float32
    np.testing.assert_array_equal(values, np.nan_to_num(plain.isel(t=0, bands=0).values, nan=255))


def test_top_level_run_udf_states_classes_too(catalog, tmp_path):
    pg = graph(load=load_node(temporal=("2022-06-01", "2022-06-03")),
               u={"process_id": "run_udf", "arguments": {"data": {"from_node": "load"}, "udf": CLASSIFY_UDF,
                                                         "runtime": "Python",
                                                         "context": {"classes": GREEN.stac_classes()}}},
               save={"process_id": "save_result", "arguments": {"data": {"from_node": "u"}, "format": "netCDF"},
                     "result": True})
    [nc] = execute_process_graph(pg, tmp_path, catalog=catalog).files
    import xarray as xr

    with xr.open_dataset(nc) as ds:
        assert ds["green"].attrs["flag_meanings"] == "bare vegetation"
        assert list(ds["green"].attrs["flag_values"]) == [0, 1]


@pytest.mark.parametrize("where", ["in-process", "sandbox"])
def test_unusable_stated_classes_are_the_udfs_error(catalog, tmp_path, where):
    policy = _sandboxed() if where == "sandbox" else None
    bad = [{"value": 0, "title": "Bare"}, {"value": 0, "title": "Vegetation"}]
    with pytest.raises(UdfError) as info:
        execute_process_graph(_neighborhood_graph({"classes": bad}), tmp_path, catalog=catalog, policy=policy)
    assert "band 'green'" in info.value.message and "value 0 is given twice" in info.value.message
    assert not list(tmp_path.iterdir())


def test_values_outside_the_stated_classes_are_the_udfs_error(catalog, tmp_path):
    with pytest.raises(UdfError) as info:
        execute_process_graph(_neighborhood_graph({"classes": GREEN.stac_classes(), "offset": 5}), tmp_path,
                              catalog=catalog)
    assert "band 'green'" in info.value.message and "[0, 1, 255]" in info.value.message
    assert not list(tmp_path.glob("*.tif"))

