"""Helpers of the process-layer tests (graphs, the local test catalog)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GRAPHS = REPO / "process_graphs"
BOLZANO_BBOX = {"west": 679720, "east": 680680, "south": 5151080, "north": 5151920, "crs": 32632}
S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
SITES = {"282D_485L_3_3": "2021-07-23", "38D_378R_2_3": "2023-06-10", "637U_59R_1_3": "2017-10-30"}
# 96 x 96 px of the Parana site (EPSG:32722), small enough for TerraMind on 2 slow cores
SITE_BBOX = {"west": 790236.04, "east": 791196.04, "south": 7197079.25, "north": 7198039.25, "crs": 32722}


def catalog_dict(shared: Path) -> dict:
    tm = shared / "terramind-examples"
    return {"collections": [
        {"id": "S2_BOLZANO", "type": "netcdf", "path": str(shared / "openeo-s2-timeseries/s2_l2a_bolzano_12dates.nc"),
         "nodata": 0, "bands": [{"name": "B02", "common_name": "blue"}, {"name": "B03", "common_name": "green"},
                                {"name": "B04", "common_name": "red"}, {"name": "B08", "common_name": "nir"},
                                {"name": "SCL"}]},
        {"id": "TM_S2L2A", "type": "geotiff", "path": str(tm / "S2L2A/*.tif"), "datetimes": SITES, "bands": S2_BANDS},
        {"id": "TM_S2L1C", "type": "geotiff", "path": str(tm / "S2L1C/*.tif"), "datetimes": SITES,
         "bands": S2_BANDS[:10] + ["B10"] + S2_BANDS[10:]},
        {"id": "TM_S1RTC", "type": "geotiff", "path": str(tm / "S1RTC/*.tif"), "datetimes": SITES, "bands": ["VV", "VH"]},
        {"id": "TM_LULC", "type": "geotiff", "path": str(tm / "LULC/*.tif"), "datetimes": SITES, "bands": ["LULC"]},
        {"id": "TM_NDVI", "type": "geotiff", "path": str(tm / "NDVI/*.tif"), "datetimes": SITES, "bands": ["NDVI"]},
        {"id": "SYNTH", "type": "synthetic", "bands": ["B01"],
         "extent": {"bbox": [16.0, 48.0, 16.6, 48.3], "crs": 4326, "resolution": 0.01,
                    "dates": ["2020-01-01", "2020-02-01"]}},
    ]}


def load_node(collection: str = "S2_BOLZANO", bands=("B04", "B08"), bbox=BOLZANO_BBOX,
              temporal=("2022-06-01", "2022-07-01")) -> dict:
    return {"process_id": "load_collection", "arguments": {
        "id": collection, "spatial_extent": bbox, "temporal_extent": list(temporal) if temporal else None,
        "bands": list(bands) if bands else None}}


def callback(process_id: str, **arguments) -> dict:
    return {"process_graph": {"n": {"process_id": process_id, "arguments": arguments, "result": True}}}


def graph(**nodes) -> dict:
    return {"process_graph": nodes}
