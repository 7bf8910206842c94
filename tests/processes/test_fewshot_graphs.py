"""The ready graphs process_graphs/few_shot_lulc.json and similarity.json on a real tile (tiny random
weights: the maps are a pipeline check, not a quality claim), in process and through ``run``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from lulc_points import lulc_points
from processes_helpers import GRAPHS
from pyproj import Transformer

from terramind_openeo.classes import GTIFF_TAG, ClassScheme
from terramind_openeo.processes import execute_process_graph

TINY = {"model": "terramind_v1_tiny", "weights": "random", "tile_size": 64, "resolution": "pixel"}
NAMES = {1: "Water", 2: "Trees", 6: "Bare ground", 9: "Rangeland"}
# rows 80..144, columns 64..128 of the Parana tile: all four of its land-cover classes
WINDOW = ((80, 144), (64, 128))
BBOX = {"west": 790876.04, "east": 791516.04, "south": 7196599.25, "north": 7197239.25, "crs": 32722}


@pytest.fixture(scope="module")
def labels(terramind_examples):
    """3 points per class inside BBOX, from the tile's land-cover raster."""
    return lulc_points(terramind_examples / "LULC/282D_485L_3_3.tif", WINDOW, NAMES, per_class=3, seed=3)


def params(labels: dict) -> dict:
    return {"collection": "TM_S2L2A", "spatial_extent": BBOX, "labels": labels, "num_trees": 20, **TINY}


def test_few_shot_lulc_graph(catalog, catalog_file, labels, tmp_path):
    pg = json.loads((GRAPHS / "few_shot_lulc.json").read_text())
    res = execute_process_graph(pg, tmp_path / "api", catalog=catalog, parameters=params(labels))
    (tif,) = [f for f in res.files if f.suffix == ".tif"]
    classes = sorted({f["properties"]["target"] for f in labels["features"]})
    with rasterio.open(tif) as src:
        values = src.read(1)
        assert src.dtypes[0] == "uint8" and src.nodata == 255 and src.crs.to_epsg() == 32722
        assert values.shape == (64, 64) and src.descriptions == ("prediction",)
        scheme = ClassScheme.from_json(src.tags(1)[GTIFF_TAG])  # class names in the COG, and its colour table
        assert [(c.value, c.title) for c in scheme.classes] == list(enumerate(classes))
        assert len(src.colormap(1)) >= len(classes)
    assert set(np.unique(values)) <= set(range(len(classes))) and len(np.unique(values)) > 1
    item = json.loads((tif.parent / f"{tif.name}.stac.json").read_text())
    assert [c["title"] for c in item["assets"]["data"]["classification:classes"][:len(classes)]] == classes
    # the same graph through the command line gives the same map
    from terramind_openeo.processes.cli import main

    args = [str(GRAPHS / "few_shot_lulc.json"), "--output", str(tmp_path / "run"), "--scheduler", "threads",
            "--no-progress", "--catalog", str(catalog_file)]
    for key, value in params(labels).items():
        args += ["--param", f"{key}={json.dumps(value)}"]
    assert main(args) == 0
    (run_tif,) = (tmp_path / "run").glob("*.tif")
    with rasterio.open(run_tif) as src:
        np.testing.assert_array_equal(src.read(1), values)


def test_similarity_graph(catalog, labels, tmp_path):
    pg = json.loads((GRAPHS / "similarity.json").read_text())
    one = {"type": "FeatureCollection", "features": labels["features"][:1]}
    res = execute_process_graph(pg, tmp_path, catalog=catalog, parameters={
        "collection": "TM_S2L2A", "spatial_extent": BBOX, "examples": one, **TINY})
    (tif,) = [f for f in res.files if f.suffix == ".tif"]
    with rasterio.open(tif) as src:
        sim = src.read(1)
        assert src.dtypes[0] == "float32" and src.descriptions == ("similarity",)
        x, y = Transformer.from_crs(4326, src.crs, always_xy=True).transform(*one["features"][0]["geometry"]["coordinates"])
        row, col = src.index(x, y)
    assert np.nanmax(sim) <= 1.0 + 1e-6 and np.nanmin(sim) >= -1.0 - 1e-6
    assert sim[row, col] == pytest.approx(1.0, abs=1e-5)  # the example's own cell is the example
