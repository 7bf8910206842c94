"""``terramind_locate`` through the real ``openeo`` client against the back-end with the real engine, as the README
shows it: the vector cube downloaded as GeoJSON, synchronously and as a batch job (tiny random weights: the
generated text reads as no location, so lon/lat are null; the plumbing, the points and the format are real)."""

from __future__ import annotations

import json

import openeo
import pytest
from pyproj import Transformer

from terramind_openeo.backend.settings import Settings

from .conftest import _HASHES, PASSWORDS, live_server

# 128 x 128 px of the TerraMesh tile 38D_378R_2_3 (Tanzania, EPSG:32736)
TANZANIA = {"west": 617301.8198784497, "east": 618581.8198784497, "south": 9623818.22745184,
            "north": 9625098.22745184, "crs": "EPSG:32736"}


@pytest.fixture(scope="module")
def con(tmp_path_factory, shared_data):
    settings = Settings(dask="threads", data_dir=tmp_path_factory.mktemp("backend") / "data",
                        basic_users=dict(_HASHES), allowed_weights=("hub", "random"))
    with live_server(settings) as url:
        yield openeo.connect(url).authenticate_basic("alice", PASSWORDS["alice"])


def test_locate_downloads_as_geojson(con, tmp_path):
    assert "GeoJSON" in con.list_output_formats()
    cube = con.load_collection("TERRAMIND_S2L2A", spatial_extent=TANZANIA,
                               temporal_extent=["2023-06-01", "2023-06-30"])
    points = cube.process("terramind_locate", data=cube, model="terramind_v1_tiny", weights="random",
                          tile_size=64, overlap=0, argmax=True)
    points.download(tmp_path / "where.geojson", format="GeoJSON")
    sync = json.loads((tmp_path / "where.geojson").read_text())
    assert sync["type"] == "FeatureCollection" and len(sync["features"]) == 3 * 3  # 128 px from a CRS-anchored grid
    # in WGS84, within the tiles' reach of the requested box (64 px = 640 m beyond it at most)
    to_wgs84 = Transformer.from_crs("EPSG:32736", "EPSG:4326", always_xy=True)
    w, s = to_wgs84.transform(TANZANIA["west"] - 640, TANZANIA["south"] - 640)
    e, n = to_wgs84.transform(TANZANIA["east"] + 640, TANZANIA["north"] + 640)
    for feature in sync["features"]:
        lon, lat = feature["geometry"]["coordinates"]
        assert w < lon < e and s < lat < n
        assert set(feature["properties"]) >= {"tile_row", "tile_col", "t", "lon", "lat"}
    job = points.save_result("GeoJSON").execute_batch(max_poll_interval=1, title="where")
    assert job.status() == "finished"
    [path] = [p for p in job.get_results().download_files(tmp_path / "batch") if p.suffix == ".geojson"]
    assert json.loads(path.read_text()) == sync
