"""Class names and colours of class maps (``terramind_openeo.classes``) in every output: the COG's colour table
and band metadata, netCDF/Zarr flags, the STAC ``classification:classes`` and the quicklook's legend."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr

from terramind_openeo.classes import CLASSES_ATTR, GTIFF_TAG, LULC_SCHEME, ClassScheme, attach, scheme_of
from terramind_openeo.processes.stac_out import build_stac
from terramind_openeo.processes.writers import write_gtiff, write_netcdf, write_zarr

FLOOD = ClassScheme.from_names("class", ["Others", "Flood"])


def _cube(values: np.ndarray, bands: list[str], dtype="uint8") -> xr.DataArray:
    """A ``(t=1, bands, y, x)`` cube on a UTM grid."""
    h, w = values.shape[-2:]
    cube = xr.DataArray(values.reshape(1, len(bands), h, w).astype(dtype), dims=("t", "bands", "y", "x"),
                        coords={"t": pd.to_datetime(["2021-07-23"]), "bands": bands,
                                "y": 7200000.0 - 10 * np.arange(h), "x": 700000.0 + 10 * np.arange(w)})
    return cube.rio.write_crs("EPSG:32722")


def _lulc(nodata_corner: bool = True) -> xr.DataArray:
    values = (np.arange(64 * 64).reshape(64, 64) // 410 % 10).astype("uint8")
    if nodata_corner:
        values[:8, :8] = 255
    cube = _cube(values, ["LULC"])
    cube.attrs["nodata"] = 255
    return cube


def test_lulc_scheme_is_the_esri_land_cover_in_terramind_colours():
    titles = [c.title for c in LULC_SCHEME.classes]
    assert titles == ["No data", "Water", "Trees", "Flooded vegetation", "Crops", "Built area", "Bare ground",
                      "Snow/ice", "Clouds", "Rangeland"]
    assert [c.value for c in LULC_SCHEME.classes] == list(range(10))
    assert LULC_SCHEME.colour_of(1) == (0x31, 0x71, 0xAD)  # TerraMind's examples draw water in this blue
    names = [c["name"] for c in LULC_SCHEME.stac_classes()]
    assert names[:4] == ["no_data", "water", "trees", "flooded_vegetation"] and names[-1] == "nodata"
    assert ClassScheme.from_json(LULC_SCHEME.to_json()) == LULC_SCHEME


def test_scheme_from_attribute_or_lulc_band_and_ignored_for_other_bands():
    assert scheme_of(_lulc()) == LULC_SCHEME  # no attribute: the LULC band label with an integer dtype
    floats = scheme_of(_lulc().astype("float32"))  # a UDF's LULC result: classes as floats, NaN = nodata
    assert floats.classes == LULC_SCHEME.classes and floats.nodata is None
    flood = attach(_cube(np.zeros((2, 32, 32)), ["class", "prob"], "float32"), FLOOD)
    assert scheme_of(flood) == FLOOD
    # the attribute travelled along from an input cube whose class band is gone: ignored
    other = _cube(np.zeros((32, 32)), ["emb_000"], "float32")
    other.attrs[CLASSES_ATTR] = FLOOD.to_json()
    assert scheme_of(other) is None


def test_cog_carries_colour_table_and_class_names(tmp_path):
    [path] = write_gtiff(_lulc(), tmp_path, "lulc")
    with rasterio.open(path) as src:
        assert src.descriptions == ("LULC",)
        table = src.colormap(1)
        assert table[1] == (0x31, 0x71, 0xAD, 255) and table[9] == (0xC6, 0x65, 0x26, 255)
        assert table[255][3] == 0  # nodata transparent
        assert ClassScheme.from_json(src.tags(1)[GTIFF_TAG]) == LULC_SCHEME
    from rio_cogeo.cogeo import cog_validate

    assert cog_validate(path)[0]


def test_multiband_class_cube_has_names_on_its_class_band_only(tmp_path):
    values = np.stack([np.zeros((32, 32)), np.full((32, 32), 0.25)])
    cube = attach(_cube(values, ["prob", "class"], "float32"), FLOOD)  # the class band second
    [path] = write_gtiff(cube, tmp_path, "flood")
    with rasterio.open(path) as src:
        assert GTIFF_TAG not in src.tags(1)
        assert ClassScheme.from_json(src.tags(2)[GTIFF_TAG]).classes == FLOOD.classes
    stac = build_stac([path], tmp_path, {path: cube})
    asset = stac["features"][0]["assets"]["data"]
    assert CLASSES_ATTR not in asset
    assert asset["raster:bands"][0] == {} and asset["raster:bands"][1][CLASSES_ATTR][1]["title"] == "Flood"


def test_netcdf_and_zarr_carry_cf_flags(tmp_path):
    cube = attach(_cube(np.array([[0, 1], [1, 0]], "uint8").repeat(16, 0).repeat(16, 1), ["class"]), FLOOD)
    [nc] = write_netcdf(cube, tmp_path, "flood")
    with xr.open_dataset(nc) as ds:
        assert list(ds["class"].attrs["flag_values"]) == [0, 1]
        assert ds["class"].attrs["flag_meanings"] == "others flood"
        assert ClassScheme.from_json(ds["class"].attrs["classification_classes"]).band == "class"
    [zarr] = write_zarr(cube, tmp_path, "flood")
    with xr.open_zarr(zarr) as ds:
        assert ds["class"].attrs["flag_meanings"] == "others flood"


def test_stac_item_lists_classification_classes(tmp_path):
    cube = _lulc()
    [path] = write_gtiff(cube, tmp_path, "lulc")
    stac = build_stac([path], tmp_path, {path: cube})
    item = json.loads((tmp_path / f"{path.name}.stac.json").read_text())
    assert "https://stac-extensions.github.io/classification/v2.0.0/schema.json" in item["stac_extensions"]
    classes = item["assets"]["data"][CLASSES_ATTR]
    assert classes[1] == {"value": 1, "name": "water", "title": "Water", "color_hint": "3171AD"}
    assert classes[-1] == {"value": 255, "name": "nodata", "title": "No input data", "nodata": True}
    assert stac["summaries"][CLASSES_ATTR] == classes
    for c in classes:  # the extension's name pattern
        assert all(ch.isalnum() or ch in "-_" for ch in c["name"])


def test_quicklook_legend_uses_the_class_colours_and_names(tmp_path):
    from PIL import Image

    from terramind_openeo.processes.quicklook import _class_scheme, write_quicklook

    values = np.full((64, 64), 1, "uint8")  # water left, trees right
    values[:, 32:] = 2
    cube = _cube(values, ["class"])
    attach(cube, ClassScheme("class", LULC_SCHEME.classes))
    [path] = write_gtiff(cube, tmp_path, "c")
    with rasterio.open(path) as src:
        assert _class_scheme(src, ["class"]).title_of(2) == "Trees"
    png = write_quicklook(path, tmp_path / "q.png", max_size=64)
    img = np.asarray(Image.open(png).convert("RGB"))
    assert tuple(img[10, 5]) == (0x31, 0x71, 0xAD) and tuple(img[10, 50]) == (0x46, 0x9C, 0x76)
    assert img.shape[1] > 64  # the legend column


@pytest.mark.usefixtures("shared_data")
def test_run_writes_lulc_names_into_cog_stac_and_quicklook(catalog_file, tmp_path):
    """The `run` path (tiles, VRT mosaic, COG) on the real LULC sample tile."""
    from terramind_openeo.processes.cli import main

    pg = {"process_graph": {
        "load": {"process_id": "load_collection", "arguments": {"id": "TM_LULC", "spatial_extent": None,
                                                               "temporal_extent": ["2021-07-01", "2021-08-01"]}},
        "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "load"}, "format": "GTiff"},
                 "result": True}}}
    graph = tmp_path / "lulc.json"
    graph.write_text(json.dumps(pg))
    out = tmp_path / "o"
    assert main([str(graph), "--output", str(out), "--scheduler", "threads", "--tile-size", "128",
                 "--catalog", str(catalog_file), "--no-progress"]) == 0
    [tif] = sorted(out.glob("*.tif"))
    with rasterio.open(tif) as src:
        assert src.colormap(1)[2] == (0x46, 0x9C, 0x76, 255)
        assert ClassScheme.from_json(src.tags(1)[GTIFF_TAG]) == LULC_SCHEME
        data = src.read(1)
    item = json.loads((out / f"{tif.name}.stac.json").read_text())
    assert item["assets"]["data"][CLASSES_ATTR][2]["title"] == "Trees"
    from PIL import Image

    img = np.asarray(Image.open(out / "openEO_quicklook.png").convert("RGB"))
    r, c = np.argwhere(data == 2)[0]  # a trees pixel of the real tile is drawn in TerraMind's trees colour
    assert tuple(img[r, c]) == (0x46, 0x9C, 0x76)
