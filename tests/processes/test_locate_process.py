"""``terramind_locate``: the generated location of each tile as a vector cube, and ``save_result`` GeoJSON, on a
real tile in UTM 22S. TerraMind with random weights generates text that is no location (NaN everywhere, which
would make every comparison below vacuous), so the model the processes load is a stand-in whose "location" is
a function of the tile's pixels: every tile gets its own value, and a value on the wrong tile shows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from processes_helpers import SITE_BBOX, graph
from pyproj import Transformer

from terramind_openeo.processes.errors import OpenEOError
from terramind_openeo.processes.execute import execute_process_graph as run

TINY = {"model": "terramind_v1_tiny", "weights": "random", "tile_size": 64, "overlap": 16, "argmax": True,
        "seed": 2101}
BBOX = {**SITE_BBOX, "east": SITE_BBOX["west"] + 1600, "south": SITE_BBOX["north"] - 1600}  # 160 x 160 px
LOAD = {"process_id": "load_collection", "arguments": {"id": "TM_S2L2A", "spatial_extent": BBOX,
                                                       "temporal_extent": None, "bands": None}}


def _graph(save: str | None = None, **arguments) -> dict:
    nodes = {"load": LOAD, "p": {"process_id": "terramind_locate",
                                 "arguments": {"data": {"from_node": "load"}, **TINY, **arguments}}}
    if save is None:
        nodes["p"]["result"] = True
    else:
        nodes["s"] = {"process_id": "save_result", "arguments": {"data": {"from_node": "p"}, "format": save},
                      "result": True}
    return graph(**nodes)


class Locating:
    """Stand-in for TerraMind: the "location" of a tile is (10 x mean of its first band, mean of its second)."""

    def generate(self, inputs, targets, seed=None, **options):
        x = inputs["S2L2A"].float()
        return {"coords": torch.stack([x[:, 0].mean(dim=(1, 2)) * 10, x[:, 1].mean(dim=(1, 2))], dim=1)}


@pytest.fixture(scope="module", autouse=True)
def stand_in():
    from terramind_openeo.inference import runner

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner.MODEL_CACHE, "get", lambda *args, **kwargs: Locating())
        yield


@pytest.fixture(scope="module")
def located(catalog):
    """The vector cube, computed in small chunks; the whole-cube inference answer (``locate_tiles``); the input;
    the raster of ``terramind_generate`` with target coords."""
    from terramind_openeo.inference import locate_tiles

    cube = run(_graph(), None, catalog=catalog, chunk_size=24).value.compute()
    raster = run(graph(load={**LOAD, "result": True}), None, catalog=catalog).value.compute()
    reference = locate_tiles(raster, dict(TINY))
    coords = run(graph(load=LOAD, g={"process_id": "terramind_generate", "arguments": {
        "data": {"from_node": "load"}, **TINY, "target": "coords"}, "result": True}), None, catalog=catalog,
        chunk_size=24).value.compute()
    return cube, reference, raster, coords


def test_one_point_per_tile_with_the_whole_cubes_generated_location(located):
    cube, reference, _, _ = located
    assert cube.dims == ("geometry", "t", "bands") and list(cube.bands.values) == ["lon", "lat"]
    assert np.isfinite(cube.values).all()
    by_tile = {(f["properties"]["tile_row"], f["properties"]["tile_col"]): f["properties"]
               for f in reference["features"]}
    shown = list(zip(cube["tile_row"].values.tolist(), cube["tile_col"].values.tolist(), strict=True))
    assert len(set(shown)) == len(shown) and set(shown) <= set(by_tile)
    assert len({tuple(v) for v in cube.values[:, 0].tolist()}) == len(shown)  # the stand-in: tiles differ
    for i, tile in enumerate(shown):
        expected = by_tile[tile]
        np.testing.assert_allclose(cube.values[i, 0], [expected["lon"], expected["lat"]], rtol=1e-6)
        assert cube["centre_lon"].values[i] == pytest.approx(expected["centre_lon"], abs=1e-9)
        assert cube["centre_lat"].values[i] == pytest.approx(expected["centre_lat"], abs=1e-9)


def test_the_points_are_the_tiles_the_lon_lat_bands_show(located):
    """Independently of inference/: every 16 px cell of terramind_generate's coords raster belongs to the point
    nearest to it along each axis (ties: the later tile, as the bands are documented), and holds that point's
    values; no point lacks a cell."""
    cube, _, _, coords = located
    px = np.array([p.x for p in cube["geometry"].values])
    py = np.array([p.y for p in cube["geometry"].values])
    rows, cols = cube["tile_row"].values, cube["tile_col"].values
    owners = set()
    for i, y in enumerate(coords.y.values):
        row = min(set(rows.tolist()), key=lambda r: (abs(py[rows == r][0] - y), -r))
        for j, x in enumerate(coords.x.values):
            col = min(set(cols.tolist()), key=lambda c: (abs(px[cols == c][0] - x), -c))
            k = int(np.flatnonzero((rows == row) & (cols == col))[0])
            owners.add(k)
            np.testing.assert_array_equal(coords.values[0, :, i, j], cube.values[k, 0])
    assert owners == set(range(cube.sizes["geometry"]))


def test_points_are_the_tile_centres_in_the_cubes_crs(located):
    cube, _, raster, _ = located
    assert cube.attrs["crs"].endswith("32722") and raster.rio.crs.to_epsg() == 32722
    to_wgs84 = Transformer.from_crs("EPSG:32722", "EPSG:4326", always_xy=True)
    xs = np.array([p.x for p in cube["geometry"].values])
    ys = np.array([p.y for p in cube["geometry"].values])
    lon, lat = to_wgs84.transform(xs, ys)  # an independent transformation of the points
    np.testing.assert_allclose(lon, cube["centre_lon"].values, atol=1e-9)
    np.testing.assert_allclose(lat, cube["centre_lat"].values, atol=1e-9)
    # each point is 32 px (320 m) from its 64 px tile's outer corner, which lies on the cube's pixel edges, and
    # tiles start every 48 px counted from the CRS origin (tile_anchor 'crs': the first pixel's index is its edge
    # coordinate / 10 m, rounded, as the sample grid is 3.96 m off a multiple of 10 m)
    for centres, first_edge, sign in ((np.unique(xs), float(raster.x[0]) - 5, 1),
                                      (np.unique(ys), float(raster.y[0]) + 5, -1)):
        pixels = sign * (centres - sign * 320 - first_edge) / 10  # corner, in pixels from the cube's first edge
        np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-6)
        index = np.round(pixels) + round(sign * first_edge / 10)
        assert np.all(index % 48 == 0) and np.all(np.diff(centres) == 480) and len(centres) == 4


def test_the_vector_cube_does_not_depend_on_chunking(catalog, located):
    whole = run(_graph(), None, catalog=catalog, chunk_size=512).value.compute()
    np.testing.assert_array_equal(whole.values, located[0].values)
    assert whole["tile_row"].values.tolist() == located[0]["tile_row"].values.tolist()


def test_save_result_geojson(catalog, tmp_path, located):
    res = run(_graph("GeoJSON"), tmp_path, catalog=catalog)
    [path] = res.files
    assert path.suffix == ".geojson"
    data = json.loads(path.read_text())
    cube = located[0]
    assert data["type"] == "FeatureCollection" and len(data["features"]) == cube.sizes["geometry"] * cube.sizes["t"]
    first = data["features"][0]
    props = first["properties"]
    assert set(props) == {"tile_row", "tile_col", "centre_lon", "centre_lat", "t", "lon", "lat"}
    assert props["t"].startswith("2021-07-23")
    assert first["geometry"]["type"] == "Point"
    np.testing.assert_allclose(first["geometry"]["coordinates"], [props["centre_lon"], props["centre_lat"]],
                               atol=1e-9)  # WGS84 in the file
    assert [props["lon"], props["lat"]] == pytest.approx(cube.values[0, 0].tolist(), abs=1e-6)
    item = res.stac["features"][0]
    assert item["assets"]["data"]["type"] == "application/geo+json"
    lons = [f["geometry"]["coordinates"][0] for f in data["features"]]
    lats = [f["geometry"]["coordinates"][1] for f in data["features"]]
    assert item["bbox"] == pytest.approx([min(lons), min(lats), max(lons), max(lats)], abs=1e-6)


def test_run_writes_the_geojson(catalog_file, tmp_path):
    """``terramind-openeo run`` with a GeoJSON save: one file, no tiles."""
    from terramind_openeo.processes.cli import main

    path = tmp_path / "locate.json"
    path.write_text(json.dumps(_graph("GeoJSON")))
    assert main([str(path), "--output", str(tmp_path / "o"), "--scheduler", "threads", "--catalog",
                 str(catalog_file), "--no-progress"]) == 0
    [written] = sorted((tmp_path / "o").glob("*.geojson"))
    assert len(json.loads(written.read_text())["features"]) == 16


def test_vector_and_raster_formats_are_not_mixed_up(catalog, tmp_path):
    with pytest.raises(OpenEOError) as info:
        run(_graph("GTiff"), tmp_path, catalog=catalog)
    assert info.value.status == 400 and "vector data cube" in info.value.message and "GeoJSON" in info.value.message
    raster = graph(load=LOAD, s={"process_id": "save_result", "arguments": {"data": {"from_node": "load"},
                                                                           "format": "GeoJSON"}, "result": True})
    with pytest.raises(OpenEOError) as info:
        run(raster, tmp_path, catalog=catalog)
    assert info.value.status == 400 and "needs a vector data cube" in info.value.message
    assert not list(tmp_path.iterdir())


def test_target_is_not_a_parameter(catalog):
    with pytest.raises(OpenEOError) as info:
        run(_graph(target="LULC"), None, catalog=catalog)
    assert info.value.status == 400 and "target" in info.value.message


def test_a_cube_without_crs_has_no_location(catalog):
    """Asked for where its tiles are, a cube without a CRS is a 400 naming it, before any work."""
    from terramind_openeo.processes import context as _ctx
    from terramind_openeo.processes.locate import terramind_locate

    cube = run(graph(load={**LOAD, "result": True}), None, catalog=catalog).value
    bare = cube.drop_vars("spatial_ref")
    bare.attrs.pop("crs", None)
    for name in ("grid_mapping", "crs_wkt"):
        bare.attrs.pop(name, None)
    token = _ctx.activate(_ctx.ExecutionContext(catalog=catalog))
    try:
        with pytest.raises(OpenEOError) as info:
            terramind_locate(bare, **TINY)
    finally:
        _ctx.deactivate(token)
    assert info.value.status == 400 and "no CRS" in info.value.message and "coords" in info.value.message
