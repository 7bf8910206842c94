"""Finding data and processes through the API (issue 17, problems 6 and 8).

- ``/collections/{id}/items``: each site's footprint and date of the TerraMesh collection (its extent alone is
  the union of three continents), as STAC Items; the collection's extent lists each site's box too.
- the ``terramind_*`` processes are not ``experimental`` (their equivalence with terratorch is proven by
  tests/model), so clients that hide experimental processes (the Web Editor) show them.
"""

from __future__ import annotations

import httpx
import pytest

from terramind_openeo.backend.settings import Settings

from .conftest import _HASHES, live_server

API = "/openeo/1.2"


def _get(url: str, **kwargs) -> httpx.Response:
    return httpx.get(url, timeout=300, **kwargs)  # the first listing reads every file's metadata: slow when busy
SITES = {"282D_485L_3_3": ("2021-07-23", 32722, (-48.11, -25.32)), "38D_378R_2_3": ("2023-06-10", 32736, (34.06, -3.40)),
         "637U_59R_1_3": ("2017-10-30", 32632, (9.84, 57.23))}


@pytest.fixture(scope="module")
def server(tmp_path_factory, shared_data):
    settings = Settings(dask="threads", data_dir=tmp_path_factory.mktemp("discovery") / "data",
                        basic_users=dict(_HASHES))
    with live_server(settings) as url:
        yield url + API


def test_each_site_of_a_collection_is_an_item_with_its_footprint_and_date(server):
    resp = _get(f"{server}/collections/TERRAMIND_S2L2A/items")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["type"] == "FeatureCollection" and body["numberMatched"] == 3
    found = {f["id"]: f for f in body["features"]}
    assert set(found) == set(SITES)
    for site, (date, epsg, (lon, lat)) in SITES.items():
        item = found[site]
        assert item["properties"]["datetime"].startswith(date) and item["properties"]["proj:epsg"] == epsg
        w, s, e, n = item["bbox"]
        assert w < lon < e and s < lat < n, (site, item["bbox"])
        assert item["geometry"]["type"] == "Polygon" and item["collection"] == "TERRAMIND_S2L2A"
        assert any(link["rel"] == "self" and link["href"].endswith(f"/items/{site}") for link in item["links"])
    one = _get(f"{server}/collections/TERRAMIND_S2L2A/items/38D_378R_2_3").json()
    assert one["id"] == "38D_378R_2_3" and one["bbox"] == found["38D_378R_2_3"]["bbox"]


def test_items_page_and_answer_404_for_unknown_ids(server):
    page = _get(f"{server}/collections/TERRAMIND_S2L2A/items", params={"limit": 2}).json()
    assert page["numberReturned"] == 2 and any(link["rel"] == "next" for link in page["links"])
    rest = _get(next(link["href"] for link in page["links"] if link["rel"] == "next")).json()
    assert rest["numberReturned"] == 1
    assert _get(f"{server}/collections/NOPE/items").status_code == 404
    assert _get(f"{server}/collections/TERRAMIND_S2L2A/items/nope").status_code == 404
    dates = _get(f"{server}/collections/SENTINEL2_L2A_BOLZANO/items").json()
    assert dates["numberMatched"] == 12  # one item per date of a file with a time axis


def test_the_collection_links_its_items_and_lists_each_sites_box(server):
    coll = _get(f"{server}/collections/TERRAMIND_S2L2A").json()
    assert any(link["rel"] == "items" for link in coll["links"])
    boxes = coll["extent"]["spatial"]["bbox"]
    assert len(boxes) == 4  # the union, then one per site


def test_terramind_processes_are_not_experimental(server):
    specs = {p["id"]: p for p in _get(f"{server}/processes").json()["processes"]}
    for pid in ("terramind_generate", "terramind_embed"):
        assert specs[pid].get("experimental") is False, pid
