"""load_collection / load_stac against a real STAC API server (rustac) on loopback, COG assets over HTTP.

The catalog is made at test time from the real Bolzano Sentinel-2 cube: one COG per band and date written
into tmp_path, served by a range-capable HTTP server; pystac-client searches the API, odc-stac reads the
COGs with HTTP range requests, exactly as against a public STAC API.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from processes_helpers import BOLZANO_BBOX, graph, load_node

from terramind_openeo.processes import Catalog, execute_process_graph

DATES = ["2022-06-02", "2022-06-05", "2022-06-07", "2022-06-10"]
WINDOW = {"x": slice(400, 600), "y": slice(250, 400)}  # 200 x 150 px around the conformance bbox


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single byte-range support (GDAL's /vsicurl/ needs it)."""

    def log_message(self, *args):  # quiet
        pass

    def send_head(self):
        rng = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not rng or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        start_s, end_s = rng.replace("bytes=", "").split("-")
        start = int(start_s)
        end = min(int(end_s) if end_s else size - 1, size - 1)
        f = open(path, "rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self._remaining = end - start + 1
        return f

    def copyfile(self, source, outputfile):
        remaining = getattr(self, "_remaining", None)
        if remaining is None:
            return super().copyfile(source, outputfile)
        outputfile.write(source.read(remaining))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_catalog(shared: Path, root: Path, asset_base: str) -> Path:
    """COGs + a STAC Collection with one Item per date (pystac), written under ``root``."""
    import pystac
    from pyproj import Transformer
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    with xr.open_dataset(shared / "openeo-s2-timeseries/s2_l2a_bolzano_12dates.nc", mask_and_scale=False) as full:
        ds = full.isel(WINDOW).load()
    x, y = ds.x.values, ds.y.values
    transform = rasterio.Affine(10, 0, float(x[0]) - 5, 0, -10, float(y[0]) + 5)
    w, s, e, n = Transformer.from_crs(32632, 4326, always_xy=True).transform_bounds(
        transform.c, transform.f - 10 * len(y), transform.c + 10 * len(x), transform.f)
    coll = pystac.Collection("s2-bolzano", "Sentinel-2 L2A near Bolzano (test copy)",
                             pystac.Extent(pystac.SpatialExtent([[w, s, e, n]]),
                                           pystac.TemporalExtent([[None, None]])))
    (root / "assets").mkdir(parents=True)
    for i, date in enumerate(DATES):
        item = pystac.Item(f"S2_{date}", {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
                           [w, s, e, n], __import__("datetime").datetime.fromisoformat(date + "T10:00:00+00:00"),
                           {"proj:epsg": 32632, "proj:shape": [len(y), len(x)], "proj:transform": list(transform)[:6],
                            "eo:cloud_cover": [5, 80, 10, 60][i]})
        item.stac_extensions = ["https://stac-extensions.github.io/projection/v1.1.0/schema.json"]
        for band in ("B04", "B08"):
            raw = root / f"raw_{band}_{date}.tif"
            with rasterio.open(raw, "w", driver="GTiff", width=len(x), height=len(y), count=1, dtype="uint16",
                               crs="EPSG:32632", transform=transform, nodata=0) as dst:
                dst.write(ds[band].sel(t=date).values.astype("uint16"), 1)
            cog_translate(raw, root / "assets" / f"{band}_{date}.tif", cog_profiles.get("deflate"), quiet=True,
                          overview_level=0)
            raw.unlink()
            item.add_asset(band, pystac.Asset(f"{asset_base}/assets/{band}_{date}.tif",
                                              media_type=pystac.MediaType.COG, roles=["data"],
                                              extra_fields={"raster:bands": [{"nodata": 0, "data_type": "uint16"}]}))
        coll.add_item(item)
    coll.normalize_hrefs(str(root / "stac"))
    coll.save(pystac.CatalogType.SELF_CONTAINED)
    return root / "stac" / "collection.json"


@pytest.fixture(scope="module")
def stac_api(shared_data, tmp_path_factory):
    rustac = shutil.which("rustac") or os.path.join(os.path.dirname(os.sys.executable), "rustac")
    if not os.path.exists(rustac):
        pytest.skip("rustac (the STAC API server, PyPI package 'rustac') is not installed")
    root = tmp_path_factory.mktemp("stac")
    http_port, api_port = free_port(), free_port()
    handler = lambda *a, **k: RangeHandler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", http_port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    collection = make_catalog(shared_data, root, f"http://127.0.0.1:{http_port}")
    # rustac resolves the collection's relative item links against its working directory
    proc = subprocess.Popen([rustac, "serve", "--addr", f"127.0.0.1:{api_port}", "--load-collection-items",
                             collection.name], cwd=collection.parent, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{api_port}"
    try:
        end = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/collections/s2-bolzano/items", timeout=2) as r:
                    if len(json.load(r)["features"]) == len(DATES):
                        break
            except OSError:
                pass
            if time.monotonic() > end or proc.poll() is not None:
                raise RuntimeError("rustac serve did not come up")
            time.sleep(0.3)
        yield url, collection
    finally:
        proc.kill()
        proc.wait(timeout=30)
        server.shutdown()


@pytest.fixture(scope="module")
def stac_catalog(stac_api):
    url, collection = stac_api
    bands = [{"name": "B04", "asset": "B04", "common_name": "red"}, {"name": "B08", "asset": "B08", "common_name": "nir"}]
    return Catalog.from_dict({"collections": [
        {"id": "S2_API", "type": "stac_api", "url": url, "stac_collection": "s2-bolzano", "bands": bands, "nodata": 0},
        {"id": "S2_STATIC", "type": "stac_static", "url": str(collection), "bands": bands, "nodata": 0}]})


def reference(shared: Path, cube: xr.DataArray) -> xr.DataArray:
    with xr.open_dataset(shared / "openeo-s2-timeseries/s2_l2a_bolzano_12dates.nc", mask_and_scale=False) as ds:
        raw = ds[["B04", "B08"]].to_array("bands").sel(
            t=cube.t.values.astype("datetime64[D]").astype("datetime64[ns]"), x=cube.x.values,
            y=cube.y.values).transpose("t", "bands", "y", "x").load()
    return raw.where(raw != 0)  # the catalog declares nodata 0: masked to NaN on load


@pytest.mark.parametrize("collection", ["S2_API", "S2_STATIC"])
def test_load_collection_from_stac(stac_catalog, shared_data, collection, tmp_path):
    lo = load_node(collection, temporal=("2022-06-01", "2022-06-08"))
    cube = execute_process_graph(graph(load={**lo, "result": True}), None, catalog=stac_catalog).value
    assert cube.dims == ("t", "bands", "y", "x") and list(cube.bands.values) == ["B04", "B08"]
    assert cube.sizes["t"] == 3 and cube.rio.crs.to_epsg() == 32632
    assert abs(float(cube.x[1] - cube.x[0])) == 10
    b = BOLZANO_BBOX
    assert b["west"] <= float(cube.x.min()) and float(cube.x.max()) <= b["east"]
    expected = reference(shared_data, cube).values
    np.testing.assert_array_equal(cube.values, expected)
    assert np.isnan(cube.values).sum() == np.isnan(expected).sum()  # nodata pixels are NaN, not 0
    res = execute_process_graph(graph(load=lo, s={"process_id": "save_result", "arguments": {
        "data": {"from_node": "load"}, "format": "netCDF"}, "result": True}), tmp_path, catalog=stac_catalog)
    with xr.open_dataset(res.files[0], decode_coords="all") as back:
        assert back.rio.crs.to_epsg() == 32632
        np.testing.assert_array_equal(back["B08"].values, cube.sel(bands="B08").values)


def test_properties_filter_and_load_stac(stac_api, stac_catalog):
    lo = load_node("S2_API", temporal=("2022-06-01", "2022-06-30"))
    lo["arguments"]["properties"] = {"eo:cloud_cover": {"process_graph": {"c": {
        "process_id": "lte", "arguments": {"x": {"from_parameter": "value"}, "y": 20}, "result": True}}}}
    cube = execute_process_graph(graph(load={**lo, "result": True}), None, catalog=stac_catalog).value
    assert [str(t)[:10] for t in cube.t.values] == ["2022-06-02", "2022-06-07"]
    url, _ = stac_api
    ls = {"process_id": "load_stac", "arguments": {"url": f"{url}/collections/s2-bolzano",
                                                   "spatial_extent": BOLZANO_BBOX, "bands": ["B08"]}, "result": True}
    cube = execute_process_graph(graph(ls=ls), None, catalog=stac_catalog).value
    assert list(cube.bands.values) == ["B08"] and cube.sizes["t"] == len(DATES)


def test_stac_extent_outside(stac_catalog):
    from terramind_openeo.processes.errors import NoDataAvailable

    lo = load_node("S2_API", bbox={"west": 0, "east": 1, "south": 0, "north": 1})
    with pytest.raises(NoDataAvailable) as e:
        execute_process_graph(graph(load={**lo, "result": True}), None, catalog=stac_catalog)
    assert "'spatial_extent'" in e.value.message
