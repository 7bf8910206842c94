"""GDAL statistics on every GeoTIFF result (issue 17, problem 8): viewers take the value range from
``STATISTICS_MINIMUM``/``STATISTICS_MAXIMUM``; without them the Web Editor draws a sync result blank.

Through ``save_result`` (the back-end's sync and batch results) and ``run`` (COG and VRT mosaics).
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from processes_helpers import GRAPHS, graph, load_node

from terramind_openeo.processes import execute_process_graph
from terramind_openeo.processes.cli import main

STATS = ("STATISTICS_MINIMUM", "STATISTICS_MAXIMUM", "STATISTICS_MEAN", "STATISTICS_STDDEV")


def _check(path) -> None:
    with rasterio.open(path) as src:
        for band in range(1, src.count + 1):
            tags = src.tags(band)
            assert all(k in tags for k in STATS), (path.name, band, tags)
            values = src.read(band, masked=True).astype("float64")
            values = values.compressed()
            values = values[np.isfinite(values)]
            assert float(tags["STATISTICS_MINIMUM"]) == pytest.approx(values.min(), rel=1e-6, abs=1e-6)
            assert float(tags["STATISTICS_MAXIMUM"]) == pytest.approx(values.max(), rel=1e-6, abs=1e-6)
            assert float(tags["STATISTICS_MEAN"]) == pytest.approx(values.mean(), rel=1e-5, abs=1e-5)
    assert not list(path.parent.glob("*.aux.xml"))  # in the file itself, no sidecar


def test_save_result_geotiffs_carry_band_statistics(catalog, tmp_path):
    from rio_cogeo.cogeo import cog_validate

    ndvi = {"process_id": "ndvi", "arguments": {"data": {"from_node": "load"}, "nir": "B08", "red": "B04"}}
    pg = graph(load=load_node(temporal=("2022-06-01", "2022-06-08")), ndvi=ndvi,
               save={"process_id": "save_result", "arguments": {"data": {"from_node": "ndvi"}, "format": "GTiff"},
                     "result": True})
    result = execute_process_graph(pg, tmp_path / "out", catalog=catalog)
    tifs = [f for f in result.files if f.suffix == ".tif"]
    assert len(tifs) == 3
    for tif in tifs:
        _check(tif)
        assert cog_validate(tif)[0]


@pytest.mark.parametrize("mosaic", ["cog", "vrt"])
def test_run_mosaics_carry_band_statistics(catalog_file, tmp_path, mosaic):
    out = tmp_path / "o"
    args = [str(GRAPHS / "ndvi_composite.json"), "--output", str(out), "--scheduler", "threads", "--tile-size",
            "64", "--chunk-size", "32", "--catalog", str(catalog_file), "--no-progress", "--mosaic", mosaic,
            "--param", "collection=S2_BOLZANO"]
    assert main(args) == 0
    _check(out / f"openEO.{'tif' if mosaic == 'cog' else 'vrt'}")
