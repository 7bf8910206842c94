"""The openEO Web Editor, the browser client most openEO users know, against our back-end in a real browser.

Issue 17, problem 8. ``../shared/openeo-web-editor/dist`` (the editor, built; see its README) is served on
loopback beside the back-end; Debian's Chromium, headless, driven by Playwright (the ``test`` extra), loads
it with every request that does not go to 127.0.0.1 blocked (the basemap and the geocoder try the internet).
As a user would: log in with basic auth, find ``terramind_generate`` without ticking "experimental", open
a small graph (64 px of a real tile, the tiny model with random weights), run it directly, and hover over
the result map: it is drawn, and shows a value, without Min/Max typed by hand (the class map in its colour
table's colours; a stretched raster takes its range from the GeoTIFF's band statistics). Screenshots of each step are kept in the test's tmp folder (the path
is printed). Skips with a reason where Chromium, Playwright or the built editor is absent.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from terramind_openeo.backend.settings import Settings
from terramind_openeo.config import settings as library_settings

from .conftest import _HASHES, PASSWORDS, live_server

TANZANIA_64PX = {"west": 617301.82, "east": 617941.82, "south": 9624458.23, "north": 9625098.23, "crs": 32736}
GRAPH = {"process_graph": {
    "load": {"process_id": "load_collection", "arguments": {"id": "TERRAMIND_S2L2A", "spatial_extent": TANZANIA_64PX,
                                                            "temporal_extent": None}},
    "gen": {"process_id": "terramind_generate", "arguments": {
        "data": {"from_node": "load"}, "model": "terramind_v1_tiny", "weights": "random", "tile_size": 64,
        "overlap": 0, "timesteps": 2, "argmax": True}},
    "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "gen"}, "format": "GTiff"},
             "result": True}}}
STEP_S = 120_000  # ms a step may take (a busy 2-core machine; about 5 s each on a quiet one)
# what the editor asks first, with a 5 s timeout: answered once here so that it is cached when it asks
WARM_UP = ("/.well-known/openeo", "/openeo/1.2/", "/openeo/1.2/collections", "/openeo/1.2/processes",
           "/openeo/1.2/file_formats", "/openeo/1.2/udf_runtimes", "/openeo/1.2/service_types",
           "/openeo/1.2/conformance", "/openeo/1.2/collections/TERRAMIND_S2L2A")


def _editor_dist() -> Path:
    return library_settings().shared_data.parent / "openeo-web-editor" / "dist"


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("Chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    return found


@pytest.fixture
def editor_url():
    """The built editor on a loopback port, and the test graph at ``/graph.json``."""
    dist = _editor_dist()
    if not (dist / "index.html").is_file():
        pytest.skip(f"the built Web Editor is not at {dist} (see ../shared/openeo-web-editor/README.md)")
    body = json.dumps(GRAPH).encode()

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(dist), **kwargs)

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.split("?")[0] != "/graph.json":
                return super().do_GET()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def backend(tmp_path, shared_data):
    settings = Settings(dask="threads", data_dir=tmp_path / "data", basic_users=dict(_HASHES))
    with live_server(settings) as url:
        for path in WARM_UP:
            httpx.get(url + path, timeout=600).raise_for_status()
        yield url


def _drawn(png: bytes) -> bool:
    """The canvas shows a raster: many pixels, not one flat colour (blank or transparent)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("L")
    values = image.getdata()
    return len(set(values)) > 2 and (max(values) - min(values)) > 30


def test_the_web_editor_runs_a_terramind_graph_and_shows_the_result(editor_url, backend, tmp_path):
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the test extra) is not installed")
    shots = tmp_path / "web-editor"
    shots.mkdir()
    print(f"Web Editor screenshots: {shots}")
    blocked: list[str] = []
    errors: list[str] = []

    def only_loopback(route) -> None:
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(STEP_S)
            page.route("**/*", only_loopback)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{editor_url}/?server={backend}&process={editor_url}/graph.json")

            page.fill("#username", "alice")  # the login form: the "Internal" (HTTP basic) tab
            page.fill("#password", PASSWORDS["alice"])
            page.screenshot(path=str(shots / "1-login.png"))
            page.click("form button.connectBtn >> nth=0")
            page.wait_for_selector("#UserMenu:has-text('alice')")
            page.screenshot(path=str(shots / "2-logged-in.png"))

            experimental = page.locator("label.show-experimental input")
            assert not experimental.is_checked()
            page.fill(".search-box input", "terramind_generate")
            page.wait_for_selector(".processes .discovery-entity strong[title='terramind_generate']", state="visible")
            assert page.locator("#block\\#gen").is_visible()  # the graph from the URL is in the model builder
            page.screenshot(path=str(shots / "3-process-found.png"))

            page.click("button:has-text('Run directly')")
            viewer = page.locator("#viewer .map-viewer").first
            viewer.locator("canvas.geotiff0").wait_for(timeout=2 * STEP_S)  # the model runs meanwhile
            # The LULC map is one uint8 band with a colour table: the editor draws it in the classes' colours (no
            # Min/Max fields at all). A raster it stretches instead shows Min/Max fields, filled from the GDAL
            # band statistics of the result, never typed here.
            inputs = viewer.locator(".geotiff-channels input[type=number]")
            if inputs.count():
                page.wait_for_function("el => el.value !== ''", arg=inputs.nth(0).element_handle())
                low, high = float(inputs.nth(0).input_value()), float(inputs.nth(1).input_value())
                assert 0 <= low < high <= 9, (low, high)  # LULC classes: the range from the band statistics
            box = viewer.locator(".ol-viewport").bounding_box()
            value = viewer.locator(".ol-control.value")
            for dx in (0, 7, -7, 13):  # a pixel of the 64 x 64 px result near the map's centre
                page.mouse.move(box["x"] + box["width"] / 2 + dx, box["y"] + box["height"] / 2 + dx)
                if re.fullmatch(r"Value: \d+", value.inner_text().strip()):
                    break
                time.sleep(1)
            text = value.inner_text().strip()
            page.screenshot(path=str(shots / "4-result.png"))
            assert re.fullmatch(r"Value: \d+", text), text
            assert 0 <= int(text.split()[-1]) <= 9
            assert _drawn(viewer.locator(".ol-viewport").screenshot()), "the result map is blank"
        except Exception:
            page.screenshot(path=str(shots / "failed.png"))  # what the user would have seen
            (shots / "failed.html").write_text(page.content())
            raise
        finally:
            browser.close()
    assert not errors, errors
    assert all(urlparse(url).hostname != "127.0.0.1" for url in blocked)
