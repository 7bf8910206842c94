"""``load_collection`` over GeoTIFFs in several CRSs: a declared or a sensible common grid, else a clear 400.

Issue 17, problem 1: the TerraMesh collection's three sites lie in three UTM zones on three continents, and
loading it without an extent ended in odc-geo's bare ``AssertionError`` (an empty 500). Tiny GeoTIFFs are
written at run time: two in neighbouring UTM zones (32N, 33N) near 12 deg E, one in Brazil (22S).
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from terramind_openeo.processes import Catalog, execute_process_graph
from terramind_openeo.processes.errors import OpenEOError, ProcessFailed

# top-left corners (x, y) in each CRS; 32 x 32 px at 10 m
TILES = {
    "west_32n": ("EPSG:32632", 780000.0, 5160000.0, "2022-06-01"),  # ~ 11.9 deg E, 46.5 deg N
    "east_33n": ("EPSG:32633", 280000.0, 5160000.0, "2022-06-02"),  # ~ 12.1 deg E, 46.5 deg N
    "brazil_22s": ("EPSG:32722", 790240.0, 7198040.0, "2021-07-23"),  # ~ -48.1 deg E, -25.3 deg N
}


def _write(path, crs: str, x0: float, y0: float) -> None:
    data = (np.arange(2 * 32 * 32, dtype="uint16").reshape(2, 32, 32) % 1000) + 1
    with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=2, dtype="uint16", crs=crs,
                       transform=from_origin(x0, y0, 10.0, 10.0)) as dst:
        dst.write(data)


def _catalog(tmp_path, names: list[str], crs: str | None = None) -> Catalog:
    folder = tmp_path / "tifs"
    folder.mkdir(exist_ok=True)
    for name in names:
        crs_, x0, y0, _ = TILES[name]
        _write(folder / f"{name}.tif", crs_, x0, y0)
    entry = {"id": "MIXED", "type": "geotiff", "path": str(folder / "*.tif"), "bands": ["B04", "B08"],
             "datetimes": {n: TILES[n][3] for n in names}}
    if crs:
        entry["crs"] = crs
    return Catalog.from_dict({"collections": [entry]})


def _graph(extent=None) -> dict:
    return {"process_graph": {
        "load": {"process_id": "load_collection", "arguments": {"id": "MIXED", "spatial_extent": extent,
                                                                "temporal_extent": None}},
        "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "load"}, "format": "GTiff"},
                 "result": True}}}


def _crs_of(result) -> str:
    crss = set()
    for path in result.files:
        with rasterio.open(path) as src:
            crss.add(src.crs.to_string())
    assert len(crss) == 1, crss
    return crss.pop()


def test_files_in_far_apart_crss_are_a_clear_400_naming_each_file(tmp_path):
    catalog = _catalog(tmp_path, ["west_32n", "brazil_22s"])
    with pytest.raises(OpenEOError) as err:
        execute_process_graph(_graph(), tmp_path / "out", catalog=catalog)
    exc = err.value
    assert exc.status == 400 and exc.code == "ProcessParameterInvalid", exc
    for text in ("west_32n", "EPSG:32632", "brazil_22s", "EPSG:32722", "spatial_extent", "'crs'", "catalog"):
        assert text in exc.message, (text, exc.message)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_an_extent_around_one_area_loads_it_in_its_own_crs(tmp_path):
    catalog = _catalog(tmp_path, ["west_32n", "brazil_22s"])
    extent = {"west": 790240, "south": 7197720, "east": 790560, "north": 7198040, "crs": 32722}
    result = execute_process_graph(_graph(extent), tmp_path / "out", catalog=catalog)
    assert _crs_of(result) == "EPSG:32722"


def test_neighbouring_utm_zones_share_the_first_files_grid(tmp_path):
    catalog = _catalog(tmp_path, ["west_32n", "east_33n"])
    result = execute_process_graph(_graph(), tmp_path / "out", catalog=catalog)
    assert _crs_of(result) == "EPSG:32633"  # east_33n.tif comes first in file order


def test_a_declared_target_crs_is_the_grid(tmp_path):
    catalog = _catalog(tmp_path, ["west_32n", "east_33n"], crs="EPSG:32632")
    result = execute_process_graph(_graph(), tmp_path / "out", catalog=catalog)
    assert _crs_of(result) == "EPSG:32632"


def test_a_declared_crs_that_cannot_hold_a_file_is_a_400(tmp_path):
    catalog = _catalog(tmp_path, ["west_32n", "brazil_22s"], crs="EPSG:32632")
    with pytest.raises(OpenEOError) as err:
        execute_process_graph(_graph(), tmp_path / "out", catalog=catalog)
    assert err.value.status == 400 and "catalog's crs" in err.value.message and "brazil_22s" in err.value.message


def test_the_terramesh_collection_without_an_extent_is_a_400(shared_data, tmp_path):
    """The README's collection as the default catalog describes it (three sites, three continents)."""
    catalog = Catalog.default()
    if "TERRAMIND_S2L2A" not in catalog.ids():
        pytest.skip("TERRAMIND_S2L2A is not in the default catalog here")
    graph = {"process_graph": {
        "load": {"process_id": "load_collection", "arguments": {"id": "TERRAMIND_S2L2A", "spatial_extent": None,
                                                                "temporal_extent": None}},
        "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "load"}, "format": "GTiff"},
                 "result": True}}}
    with pytest.raises(OpenEOError) as err:
        execute_process_graph(graph, tmp_path / "out", catalog=catalog)
    assert err.value.status == 400, err.value
    assert all(site in err.value.message for site in ("282D_485L_3_3", "38D_378R_2_3", "637U_59R_1_3"))


def test_an_exception_without_a_message_is_described_by_where_it_was_raised():
    from terramind_openeo.errors import describe, format_traceback

    def deep():
        raise AssertionError  # what a bare ``assert x1 >= x0`` in odc-geo raises (pytest rewrites asserts here)

    try:
        deep()
    except AssertionError as exc:
        text = describe(exc)
        trace = format_traceback(exc)
    assert text.startswith("AssertionError raised without a message in deep() at ")
    assert "test_load_multi_crs.py" in text and "raise AssertionError" in text
    assert "Traceback" in trace and "deep" in trace


def test_a_process_failing_without_a_message_names_the_place_and_keeps_the_trace(tmp_path, monkeypatch):
    from terramind_openeo.processes import load

    def broken(*args, **kwargs):
        raise AssertionError()

    monkeypatch.setattr(load, "_load_geotiffs", broken)
    catalog = _catalog(tmp_path, ["west_32n"])
    with pytest.raises(ProcessFailed) as err:
        execute_process_graph(_graph(), tmp_path / "out", catalog=catalog)
    message = err.value.message
    assert "AssertionError raised without a message in broken()" in message, message
    assert err.value.trace and "Traceback" in err.value.trace and "broken" in err.value.trace
