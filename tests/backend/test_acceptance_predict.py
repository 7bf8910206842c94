"""Acceptance: fine-tuned TerraMind models through the real ``openeo`` client against the back-end with the real
engine: ``terramind_predict`` synchronously and as a batch job, and ``udf/terramind_predict.py`` through
``apply_neighborhood``, on the real TerraMesh sample tiles (S2L1C + S1), with a checkpoint the test writes the way
terratorch's Lightning task writes it (a tiny random model: the numbers mean nothing, the plumbing does)."""

from __future__ import annotations

import json

import numpy as np
import openeo
import pytest
import rasterio
import torch
import yaml

from terramind_openeo.backend.settings import Settings
from terramind_openeo.classes import GTIFF_TAG, ClassScheme
from terramind_openeo.model.task import load_task_model

from .conftest import _HASHES, PASSWORDS, REPO_ROOT, live_server

# the top-left 64 x 64 px of the TerraMesh tile 38D_378R_2_3 (Tanzania, 2023-06-10)
TANZANIA_64PX = {"west": 617301.8198784497, "east": 617941.8198784497, "south": 9624458.22745184,
                 "north": 9625098.22745184, "crs": "EPSG:32736"}
JUNE_2023 = ["2023-06-01", "2023-06-30"]
S2L1C = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
MODEL_ARGS = {"backbone": "terramind_v1_tiny", "backbone_modalities": ["S2L1C", "S1GRD"],
              "necks": [{"name": "SelectIndices", "indices": [2, 5, 8, 11]},
                        {"name": "ReshapeTokensToImage", "remove_cls_token": False},
                        {"name": "LearnedInterpolateToPyramidal"}],
              "decoder": "UNetDecoder", "decoder_channels": [32, 16, 16, 8], "num_classes": 2}
CONFIG = {"model": {"class_path": "terratorch.tasks.SemanticSegmentationTask", "init_args": {
    "model_factory": "EncoderDecoderFactory", "model_args": MODEL_ARGS, "loss": "dice",
    "class_names": ["Others", "Flood"]}}}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    (folder / "flood.yaml").write_text(yaml.safe_dump(CONFIG))
    model = load_task_model(None, folder / "flood.yaml", weights="random", seed=1)
    torch.save({"epoch": 1, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}},
               folder / "flood.ckpt")
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir):
    settings = Settings(dask="threads", data_dir=tmp_path_factory.mktemp("backend") / "data",
                        basic_users=dict(_HASHES), allowed_weights=("hub", "random", f"{model_dir}/"))
    with live_server(settings) as url:
        yield url


@pytest.fixture
def con(server, shared_data):
    return openeo.connect(server).authenticate_basic("alice", PASSWORDS["alice"])


def s2_and_s1(con):
    s2 = con.load_collection("TERRAMIND_S2L1C", spatial_extent=TANZANIA_64PX, temporal_extent=JUNE_2023,
                             bands=S2L1C)
    s1 = con.load_collection("TERRAMIND_S1RTC", spatial_extent=TANZANIA_64PX, temporal_extent=JUNE_2023)
    return s2.merge_cubes(s1)


def _check_flood_tif(path):
    with rasterio.open(path) as src:
        values = src.read(1)
        assert src.dtypes[0] == "uint8" and src.descriptions == ("class",)
        scheme = ClassScheme.from_json(src.tags(1)[GTIFF_TAG])
        assert [c.title for c in scheme.classes] == ["Others", "Flood"]
        assert src.colormap(1)[1][:3] == scheme.colour_of(1)
    assert set(np.unique(values)) <= {0, 1} and values.shape[0] in (64, 65)
    return values


def test_terramind_predict_sync_and_batch(con, model_dir, tmp_path):
    cube = s2_and_s1(con)
    assert "terramind_predict" in {p["id"] for p in con.list_processes()}
    flood = cube.process("terramind_predict", data=cube, checkpoint=str(model_dir / "flood.ckpt"),
                         config=str(model_dir / "flood.yaml"), standardization="pretraining", tile_size=64)
    sync = _check_flood_tif(flood.download(tmp_path / "flood.tif", format="GTiff") or tmp_path / "flood.tif")
    job = flood.save_result("GTiff").execute_batch(max_poll_interval=1, title="flood")
    assert job.status() == "finished"
    results = job.get_results()
    meta = results.get_metadata()
    assert [c["title"] for c in meta["summaries"]["classification:classes"]][:2] == ["Others", "Flood"]
    files = results.download_files(tmp_path / "batch")
    batch = _check_flood_tif([f for f in files if f.suffix == ".tif"][0])
    np.testing.assert_array_equal(sync, batch)


def test_checkpoint_outside_the_allowed_list_is_refused(con, tmp_path):
    cube = s2_and_s1(con)
    flood = cube.process("terramind_predict", data=cube, checkpoint="/etc/passwd", tile_size=64)
    with pytest.raises(openeo.rest.OpenEoApiError) as info:
        flood.download(tmp_path / "x.tif", format="GTiff")
    assert info.value.http_status_code == 400 and "checkpoint" in info.value.message


def test_predict_udf_through_apply_neighborhood(con, tmp_path):
    """The UDF file with its config inline (no file to read inside the UDF sandbox) and random weights."""
    context = {"checkpoint": "random", "config": {"task": "segmentation", "model_args": MODEL_ARGS,
                                                  "class_names": ["Others", "Flood"]},
               "standardization": "pretraining", "tile_size": 64, "overlap": 0}
    udf = openeo.UDF.from_file(REPO_ROOT / "udf" / "terramind_predict.py", context=context)
    flood = s2_and_s1(con).apply_neighborhood(udf, size=[{"dimension": "x", "value": 64, "unit": "px"},
                                                         {"dimension": "y", "value": 64, "unit": "px"}],
                                              overlap=[])
    job = flood.save_result("netCDF").execute_batch(max_poll_interval=1, title="flood udf")
    assert job.status() == "finished"
    import xarray as xr

    results = job.get_results()  # the class names the UDF's apply_metadata states, through the sandbox
    assert [c["title"] for c in results.get_metadata()["summaries"]["classification:classes"]][:2] == \
        ["Others", "Flood"]
    [nc] = [f for f in results.download_files(tmp_path / "udf") if f.suffix == ".nc"]
    with xr.open_dataset(nc) as ds:
        values = ds["class"].values
        assert ds["class"].attrs["flag_meanings"] == "others flood"
    assert set(np.unique(values[np.isfinite(values)])) <= {0.0, 1.0}
    # the same map as a GeoTIFF: uint8 with the colour table, as terramind_predict writes it
    _check_flood_tif(flood.download(tmp_path / "udf.tif", format="GTiff") or tmp_path / "udf.tif")
    assert json.dumps(context)  # the context travelled as JSON
