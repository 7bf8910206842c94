"""Few-shot mapping through the real ``openeo`` client against the back-end with the real engine: embeddings,
labelled points, ``fit_class_random_forest`` + ``save_ml_model`` in one batch job, ``load_ml_model`` by the
job id + ``predict_random_forest`` in a second, the map downloaded. Tiny random weights: a pipeline check."""

from __future__ import annotations

import json

import numpy as np
import openeo
import pytest
import rasterio
from lulc_points import lulc_points

from terramind_openeo.backend.settings import Settings
from terramind_openeo.classes import GTIFF_TAG, ClassScheme

from .conftest import _HASHES, PASSWORDS, live_server

S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
# rows 80..144, columns 64..128 of the Parana tile 282D_485L_3_3: all four of its land-cover classes
WINDOW = ((80, 144), (64, 128))
BBOX = {"west": 790876.04, "east": 791516.04, "south": 7196599.25, "north": 7197239.25, "crs": "EPSG:32722"}
TM = {"model": "terramind_v1_tiny", "weights": "random", "tile_size": 64, "overlap": 0, "resolution": "pixel"}
NAMES = {1: "Water", 2: "Trees", 6: "Bare ground", 9: "Rangeland"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = Settings(dask="threads", data_dir=tmp_path_factory.mktemp("backend") / "data",
                        basic_users=dict(_HASHES), max_running_jobs=2, max_running_jobs_per_user=2)
    with live_server(settings) as url:
        yield url


@pytest.fixture(scope="module")
def labels(terramind_examples):
    return lulc_points(terramind_examples / "LULC/282D_485L_3_3.tif", WINDOW, NAMES, per_class=4, seed=5)


def embeddings(con):
    s2 = con.load_collection("TERRAMIND_S2L2A", spatial_extent=BBOX, bands=S2)
    return s2.process("terramind_embed", data=s2, **TM)


def test_fit_save_load_predict_in_two_batch_jobs(server, shared_data, labels, tmp_path):
    con = openeo.connect(server).authenticate_basic("alice", PASSWORDS["alice"])
    assert {"fit_class_random_forest", "predict_random_forest", "save_ml_model", "load_ml_model",
            "aggregate_spatial", "load_geojson", "terramind_similarity"} <= {p["id"] for p in con.list_processes()}
    emb = embeddings(con)
    model = emb.aggregate_spatial(geometries=labels, reducer="mean").fit_class_random_forest(
        target=labels, max_variables="sqrt", num_trees=20, seed=0)
    fit_job = model.save_ml_model().create_job(title="fit")
    fit_job.start_and_wait(max_poll_interval=1)
    assets = fit_job.get_results().get_metadata()["assets"]
    assert set(assets) == {"model.zip", "model.mlm.json"}
    item_path = fit_job.get_results().download_file(tmp_path / "model.mlm.json", key="model.mlm.json")
    item = json.loads(item_path.read_text())
    assert item["properties"]["mlm:input"][0]["bands"] == [f"emb_{i:03d}" for i in range(192)]
    assert [c["name"] for c in item["properties"]["mlm:output"][0]["classification:classes"]] == \
        sorted(NAMES.values())

    predicted = emb.predict_random_forest(model=con.load_ml_model(fit_job.job_id), dimension="bands")
    map_job = predicted.save_result("GTiff").create_job(title="predict")
    map_job.start_and_wait(max_poll_interval=1)
    files = map_job.get_results().download_files(tmp_path / "map")
    (tif,) = [f for f in files if f.suffix == ".tif"]
    with rasterio.open(tif) as src:
        classes = src.read(1)
        assert src.shape == (64, 64) and src.dtypes[0] == "uint8" and src.crs.to_epsg() == 32722
        names = [c.title for c in ClassScheme.from_json(src.tags(1)[GTIFF_TAG]).classes]
    assert set(np.unique(classes)) <= {0, 1, 2, 3} and names == sorted(NAMES.values())

    # the same fit and prediction in one synchronous request gives the same map
    direct = emb.predict_random_forest(model=model, dimension="bands")
    direct.download(tmp_path / "direct.tif", format="GTiff")
    with rasterio.open(tmp_path / "direct.tif") as src:
        np.testing.assert_array_equal(src.read(1), classes)

    # another user cannot load alice's model by its job id
    bob = openeo.connect(server).authenticate_basic("bob", PASSWORDS["bob"])
    stolen = embeddings(bob).predict_random_forest(model=bob.load_ml_model(fit_job.job_id), dimension="bands")
    with pytest.raises(openeo.rest.OpenEoApiError, match=f"no finished batch job '{fit_job.job_id}' of yours"):
        stolen.download(tmp_path / "stolen.tif", format="GTiff")


def test_knn_and_similarity_as_the_readme_writes_them(server, shared_data, labels, tmp_path):
    from openeo.internal.graph_building import PGNode
    from openeo.rest.mlmodel import MlModel

    con = openeo.connect(server).authenticate_basic("alice", PASSWORDS["alice"])
    emb = embeddings(con)
    samples = emb.aggregate_spatial(geometries=labels, reducer="mean")
    knn = MlModel(PGNode("terramind_fit_class_knn", predictors=samples, target=labels, k=3), connection=con)
    emb.predict_random_forest(model=knn, dimension="bands").download(tmp_path / "knn.tif", format="GTiff")
    with rasterio.open(tmp_path / "knn.tif") as src:
        assert src.shape == (64, 64) and set(np.unique(src.read(1))) <= {0, 1, 2, 3}
    water = {"type": "FeatureCollection", "features": [f for f in labels["features"]
                                                       if f["properties"]["target"] == "Water"]}
    emb.process("terramind_similarity", data=emb, examples=water).download(tmp_path / "sim.tif", format="GTiff")
    with rasterio.open(tmp_path / "sim.tif") as src:
        sim = src.read(1)
    assert sim.dtype == np.float32 and -1.0 - 1e-6 <= np.nanmin(sim) <= np.nanmax(sim) <= 1.0 + 1e-6

