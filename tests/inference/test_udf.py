"""The UDF files as openEO back-ends run them (run_udf_code, execute_local_udf), against the plain API."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import openeo
import pytest
import xarray as xr
from inference_helpers import TINY, bolzano_cube, example_cube
from openeo.metadata import Band, BandDimension, CollectionMetadata, SpatialDimension
from openeo.udf import UdfData, XarrayDataCube, execute_local_udf, run_udf_code
from openeo.udf.run_code import extract_udf_dependencies, load_module_from_string

from terramind_openeo.inference import CONTEXT_KEYS, embed_cube, generate_cube
from terramind_openeo.inference.cube import geometry
from terramind_openeo.inference.errors import InputRangeError, UnknownContextKeyError

UDF_DIR = Path(__file__).resolve().parents[2] / "udf"
UDFS = {"embed": "terramind_embed.py", "generate": "terramind_generate.py", "tim": "terramind_tim.py",
        "predict": "terramind_predict.py"}


def code(name: str) -> str:
    return (UDF_DIR / UDFS[name]).read_text()


def run_local(name: str, cube, context: dict) -> xr.DataArray:
    result = execute_local_udf(openeo.UDF(code(name), context=context), cube)
    return result.get_datacube_list()[0].get_array()


@pytest.mark.parametrize("name", list(UDFS))
def test_header_docstring_and_entry_point(name):
    text = code(name)
    assert extract_udf_dependencies(text) == ["terramind-openeo"]
    doc = ast.get_docstring(ast.parse(text))
    kinds = {"embed": "embed", "generate": "generate", "tim": "embed", "predict": "predict"}[name]
    for key in CONTEXT_KEYS.values():
        if kinds in key.kinds:
            assert key.name in doc, f"{UDFS[name]} does not document context key {key.name}"
            if name != "tim":
                assert f"- {key.name} (" in doc and "default" in doc
    module = load_module_from_string(text)
    assert callable(module["apply_datacube"]) and callable(module["apply_metadata"])


def test_embed_udf_equals_the_plain_api_on_a_real_tile(terramind_examples):
    cube = example_cube(terramind_examples, ["S2L2A"])
    context = {**TINY, "tile_anchor": "cube"}
    data = UdfData(datacube_list=[XarrayDataCube(cube)], user_context=context)
    via_run_code = run_udf_code(code("embed"), data).get_datacube_list()[0].get_array()
    plain = embed_cube(cube, context)
    xr.testing.assert_identical(via_run_code, plain)
    via_local = run_local("embed", cube, context)  # the back-end's float64 cast: same numbers
    np.testing.assert_array_equal(via_local.values, plain.values)
    assert via_local.dims == ("bands", "y", "x") and via_local.shape == (192, 14, 14)


def test_embed_udf_on_three_modalities(terramind_examples):
    cube = example_cube(terramind_examples, ["S2L2A", "S1RTC", "DEM"], site="38D_378R_2_3")
    context = {**TINY, "modalities": ["S2L2A", "S1RTC", "DEM"], "tile_anchor": "cube"}
    out = run_local("embed", cube, context)
    np.testing.assert_array_equal(out.values, embed_cube(cube, context).values)
    assert np.isfinite(out.values).all()


def test_udfs_on_the_openeo_exported_time_series(shared_data, tmp_path):
    """The exported netCDF (t, 4 of 12 bands, SCL, 0 = nodata) as a file, the way execute_local_udf reads it."""
    path = shared_data / "openeo-s2-timeseries" / "s2_l2a_bolzano_12dates.nc"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    crop = tmp_path / "crop.nc"
    xr.open_dataset(path).isel(t=slice(0, 2), y=slice(300, 396), x=slice(400, 512)).to_netcdf(crop)
    with pytest.raises(Exception, match="B01.*B05.*missing_bands='mean'"):
        execute_local_udf(openeo.UDF(code("embed"), context=TINY), crop)
    context = {**TINY, "missing_bands": "mean", "tile_size": 64, "overlap": 16}
    result = execute_local_udf(openeo.UDF(code("embed"), context=context), crop)
    out = result.get_datacube_list()[0].get_array()
    assert out.dims == ("t", "bands", "y", "x") and out.sizes["t"] == 2 and out.sizes["bands"] == 192
    cube = bolzano_cube(shared_data, dates=2, bands=("B02", "B03", "B04", "B08", "SCL"))
    cube = cube.isel(y=slice(300, 396), x=slice(400, 512))
    plain = embed_cube(cube, context)
    np.testing.assert_allclose(out.values, plain.values, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.x.values, plain.x.values)
    assert (np.diff(out.y.values) == -160).all() and (np.diff(out.x.values) == 160).all()


def test_generate_udf_lulc(terramind_examples):
    cube = example_cube(terramind_examples, ["S2L2A"]).isel(y=slice(0, 96), x=slice(0, 96))
    context = {**TINY, "target": "LULC", "tile_size": 64, "overlap": 32, "tile_anchor": "cube"}
    out = run_local("generate", cube, context)
    plain = generate_cube(cube, context)
    assert plain.dtype == np.uint8 and plain.shape == (1, 96, 96) and list(plain.bands.values) == ["LULC"]
    np.testing.assert_array_equal(out.values, plain.values)
    assert int(plain.max()) <= 9 and plain.rio.crs == cube.rio.crs
    np.testing.assert_array_equal(plain.x.values, cube.x.values)


def test_tim_udf(terramind_examples):
    cube = example_cube(terramind_examples, ["S2L2A"]).isel(y=slice(0, 32), x=slice(0, 32))
    context = {**TINY, "tile_size": 32, "overlap": 0, "tile_anchor": "cube"}
    out = run_local("tim", cube, context)
    assert out.shape == (192, 2, 2) and np.isfinite(out.values).all()
    np.testing.assert_array_equal(out.values, embed_cube(cube, {**context, "tim": ["LULC"]}).values)


def test_unknown_key_through_the_udf(terramind_examples):
    cube = example_cube(terramind_examples, ["S2L2A"])
    with pytest.raises(UnknownContextKeyError, match="tile_size"):
        run_local("embed", cube, {"tilesize": 256})


def test_apply_metadata():
    metadata = CollectionMetadata({}, dimensions=[
        SpatialDimension(name="x", extent=[0, 1]), SpatialDimension(name="y", extent=[0, 1]),
        BandDimension(name="bands", bands=[Band(b) for b in ["B02", "B03", "B04", "DEM"]]),
    ])
    embed = load_module_from_string(code("embed"))["apply_metadata"]
    out = embed(metadata, {"model": "terramind_v1_tiny", "merge": "concat", "missing_bands": "mean"})
    assert out.band_names[-1] == "emb_383"
    gen = load_module_from_string(code("generate"))["apply_metadata"]
    assert gen(metadata, {"target": "DEM"}).band_names == ["DEM"]


def _exported(shared_data: Path, relative: str) -> Path:
    path = shared_data / relative
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def test_embed_udf_on_a_cdse_cube_with_prefixed_labels(shared_data, tmp_path):
    """GFMap's CDSE export: uint16, labels 'S2-L2A-B01'.., 64 x 66 px, SCL/AOT beside the bands."""
    crop = tmp_path / "s2.nc"
    xr.open_dataset(_exported(shared_data, "gfmap/cdse_sentinel2_l2a.nc")).isel(t=slice(0, 2)).to_netcdf(crop)
    context = {**TINY, "missing_bands": "mean", "tile_size": 64, "overlap": 16}
    out = execute_local_udf(openeo.UDF(code("embed"), context=context), crop).get_datacube_list()[0].get_array()
    assert out.dims == ("t", "bands", "y", "x") and out.sizes["t"] == 2 and np.isfinite(out.values).all()
    assert out.sizes["y"] in (5, 6) and out.sizes["x"] in (4, 5)  # 66 x 64 px on the CRS's 16 px grid


def test_uint16_fill_values_of_a_worldcereal_cube(shared_data):
    """WorldCereal's export marks nodata as 65535 in uint16: refused until declared, then masked."""
    ds = xr.open_dataset(_exported(shared_data, "worldcereal/worldcereal_preprocessed_inputs.nc"))
    names = [v for v in ds.data_vars if v.startswith("S2-L2A-")] + ["elevation"]
    cube = ds[names].isel(t=slice(0, 2)).to_array(dim="bands").transpose("t", "bands", "y", "x").load()
    context = {**TINY, "missing_bands": "mean", "modalities": ["S2L2A", "DEM"], "tile_size": 64, "overlap": 16}
    with pytest.raises(InputRangeError, match="65535.*nodata"):
        embed_cube(cube, context)
    out = embed_cube(cube, {**context, "nodata": 65535})
    assert out.sizes["bands"] == 192 and out.sizes["t"] == 2
    fill = (cube.sel(bands=names[:-1]) == 65535).any("bands").values  # [t, y, x]
    assert fill.any() and np.isnan(out.values).any() == bool(fill.any())


def test_full_openeo_exported_extent_one_date(shared_data):
    """The whole 935 x 705 px export (one date) in one call: any cube size, tiles skipped nowhere."""
    cube = bolzano_cube(shared_data, dates=1, bands=("B02", "B03", "B04", "B08", "SCL"))
    assert cube.sizes["x"] == 935 and cube.sizes["y"] == 705
    out = run_local("embed", cube, {**TINY, "missing_bands": "mean"})
    geo = geometry(cube, "crs")
    rows = (geo.row0 + 704) // 16 - geo.row0 // 16 + 1  # patches of the CRS's 16 px grid touching the cube
    cols = (geo.col0 + 934) // 16 - geo.col0 // 16 + 1
    assert out.shape == (1, 192, rows, cols)
    assert np.isfinite(out.values).mean() > 0.99
