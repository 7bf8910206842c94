"""``terramind_predict`` and ``process_graphs/flood_map.json`` on the real sample tiles, with a fine-tuned
checkpoint this test writes the way terratorch's Lightning task writes it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
import yaml
from processes_helpers import GRAPHS, SITE_BBOX

from terramind_openeo.classes import GTIFF_TAG, ClassScheme
from terramind_openeo.model.task import load_task_model
from terramind_openeo.processes import execute_process_graph
from terramind_openeo.processes.errors import OpenEOError

S2L1C = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
NECKS = [{"name": "SelectIndices", "indices": [2, 5, 8, 11]},
         {"name": "ReshapeTokensToImage", "remove_cls_token": False}, {"name": "LearnedInterpolateToPyramidal"}]
MODEL_ARGS = {"backbone": "terramind_v1_tiny", "backbone_pretrained": True, "backbone_modalities": ["S2L1C", "S1GRD"],
              "backbone_merge_method": "mean", "necks": NECKS, "decoder": "UNetDecoder",
              "decoder_channels": [32, 16, 16, 8], "head_dropout": 0.1, "num_classes": 2}

FLOOD_STATS = {  # sen1floods11's band statistics, as IBM/terramind's configs give them
    "means": {"S2L1C": [2357.089, 2137.385, 2018.788, 2082.986, 2295.651, 2854.537, 3122.849, 3040.560, 3306.481,
                        1473.847, 506.070, 2472.825, 1838.929], "S1GRD": [-12.599, -20.293]},
    "stds": {"S2L1C": [1624.683, 1675.806, 1557.708, 1833.702, 1823.738, 1733.977, 1732.131, 1679.732, 1727.26,
                       1024.687, 442.165, 1331.411, 1160.419], "S1GRD": [5.195, 5.890]}}


def write_flood_checkpoint(folder) -> tuple:
    """A tiny sen1floods11-style model: ``best.ckpt`` (Lightning layout: ``state_dict`` with ``model.`` keys, a loss
    buffer, trainer state) and its terratorch YAML, as IBM/terramind's configs write it."""
    config = {
        "seed_everything": 42, "trainer": {"max_epochs": 100},
        "data": {"class_path": "terratorch.datamodules.GenericMultiModalDataModule", "init_args": {
            "modalities": ["S2L1C", "S1GRD"],
            **FLOOD_STATS}},
        "model": {"class_path": "terratorch.tasks.SemanticSegmentationTask", "init_args": {
            "model_factory": "EncoderDecoderFactory", "model_args": MODEL_ARGS, "loss": "dice", "ignore_index": -1,
            "freeze_backbone": False, "class_names": ["Others", "Flood"]}},
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 2e-5}},
    }
    cfg = folder / "terramind_v1_tiny_sen1floods11.yaml"
    cfg.write_text(yaml.safe_dump(config))
    model = load_task_model(None, cfg, weights="random", seed=5)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():  # a decisive head, so that both classes appear
        model.head.head[2].bias.copy_(torch.tensor([0.0, 0.0]))
        for p in model.decoder.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    ckpt = folder / "best.ckpt"
    torch.save({"epoch": 9, "global_step": 90, "pytorch-lightning_version": "2.6.1",
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "loops": {}}, ckpt)
    return ckpt, cfg


@pytest.fixture(scope="module")
def flood_checkpoint(tmp_path_factory):
    return write_flood_checkpoint(tmp_path_factory.mktemp("flood"))


def _params(ckpt, cfg, **extra) -> dict:
    return {"checkpoint": str(ckpt), "config": str(cfg), "s2_collection": "TM_S2L1C", "s1_collection": "TM_S1RTC",
            "spatial_extent": SITE_BBOX, "tile_size": 64, **extra}


def test_flood_map_graph_names_its_classes(catalog, tmp_path, flood_checkpoint, shared_data):
    ckpt, cfg = flood_checkpoint
    pg = json.loads((GRAPHS / "flood_map.json").read_text())
    res = execute_process_graph(pg, tmp_path, catalog=catalog, parameters=_params(ckpt, cfg))
    [tif] = res.files
    with rasterio.open(tif) as src:
        values = src.read(1)
        assert src.dtypes[0] == "uint8" and src.nodata == 255 and src.shape == (96, 96)
        assert src.descriptions == ("class",)
        scheme = ClassScheme.from_json(src.tags(1)[GTIFF_TAG])
        assert [c.title for c in scheme.classes] == ["Others", "Flood"]
        assert src.colormap(1)[1][:3] == scheme.colour_of(1)
    assert set(np.unique(values)) == {0, 1}
    classes = res.stac["features"][0]["assets"]["data"]["classification:classes"]
    assert [c["name"] for c in classes] == ["others", "flood", "nodata"]

    # the same numbers as the plain API (the UDF's path) on the same cube
    from terramind_openeo.inference import predict_cube

    plain = predict_cube(site_cube(shared_data), {"checkpoint": str(ckpt), "config": str(cfg), "tile_size": 64})
    np.testing.assert_array_equal(plain.values[0], values)


def predict_udf_node(context: dict) -> dict:
    """flood_map.json's ``flood`` node as ``udf/terramind_predict.py`` in ``apply_neighborhood`` (one 96 px chunk:
    the whole site)."""
    return {"process_id": "apply_neighborhood", "arguments": {
        "data": {"from_node": "merged"}, "size": [{"dimension": "x", "value": 96, "unit": "px"},
                                                  {"dimension": "y", "value": 96, "unit": "px"}],
        "overlap": [], "context": context,
        "process": {"process_graph": {"udf": {"process_id": "run_udf", "arguments": {
            "data": {"from_parameter": "data"}, "udf": str(GRAPHS.parent / "udf" / "terramind_predict.py"),
            "runtime": "Python", "context": {"from_parameter": "context"}}, "result": True}}}}}


def test_predict_udf_through_apply_neighborhood_names_its_classes(catalog, tmp_path, flood_checkpoint):
    """``udf/terramind_predict.py`` in ``apply_neighborhood`` (one 96 px chunk): the same uint8 map with the same
    class names, colour table and STAC classes as ``terramind_predict`` (the flood_map graph)."""
    ckpt, cfg = flood_checkpoint
    pg = json.loads((GRAPHS / "flood_map.json").read_text())
    graphs = pg["process_graph"]
    graphs["flood"] = predict_udf_node({"checkpoint": str(ckpt), "config": str(cfg), "tile_size": 64})
    res = execute_process_graph(pg, tmp_path / "udf", catalog=catalog, parameters=_params(ckpt, cfg))
    by_process = execute_process_graph(json.loads((GRAPHS / "flood_map.json").read_text()), tmp_path / "process",
                                       catalog=catalog, parameters=_params(ckpt, cfg))
    [tif], [expected] = res.files, by_process.files
    with rasterio.open(tif) as src, rasterio.open(expected) as ref:
        assert src.dtypes == ref.dtypes == ("uint8",) and src.nodata == ref.nodata == 255
        assert src.descriptions == ("class",) and src.tags(1)[GTIFF_TAG] == ref.tags(1)[GTIFF_TAG]
        assert src.colormap(1) == ref.colormap(1)
        np.testing.assert_array_equal(src.read(1), ref.read(1))
    classes = res.stac["features"][0]["assets"]["data"]["classification:classes"]
    assert classes == by_process.stac["features"][0]["assets"]["data"]["classification:classes"]
    assert [c["title"] for c in classes] == ["Others", "Flood", "No input data"]


def site_cube(shared_data):
    """The 96 px of SITE_BBOX: S2L1C and S1 of the Parana sample tile as one (bands, y, x) cube."""
    import rioxarray
    import xarray as xr

    parts = []
    for folder, bands in (("S2L1C", S2L1C), ("S1RTC", ["VV", "VH"])):
        da = rioxarray.open_rasterio(shared_data / "terramind-examples" / folder / "282D_485L_3_3.tif")
        parts.append(da.astype(np.float32).rename(band="bands").assign_coords(bands=bands))
    return xr.concat(parts, dim="bands").isel(y=slice(0, 96), x=slice(0, 96))


def test_run_flood_map_writes_cog_stac_and_quicklook_legend(catalog_file, tmp_path, flood_checkpoint):
    """``terramind-openeo run process_graphs/flood_map.json`` with the written checkpoint."""
    from PIL import Image

    from terramind_openeo.processes.cli import main

    ckpt, cfg = flood_checkpoint
    args = [str(GRAPHS / "flood_map.json"), "--output", str(tmp_path / "o"), "--scheduler", "threads",
            "--catalog", str(catalog_file), "--no-progress"]
    for key, value in _params(ckpt, cfg).items():
        args += ["--param", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    assert main(args) == 0
    [tif] = sorted((tmp_path / "o").glob("*.tif"))
    with rasterio.open(tif) as src:
        assert src.colormap(1)[0][3] == 255 and "Flood" in src.tags(1)[GTIFF_TAG]
        values = src.read(1)
    item = json.loads((tmp_path / "o" / f"{tif.name}.stac.json").read_text())
    assert item["assets"]["data"]["classification:classes"][1]["title"] == "Flood"
    img = np.asarray(Image.open(tmp_path / "o" / "openEO_quicklook.png").convert("RGB"))
    scheme = ClassScheme.from_names("class", ["Others", "Flood"])
    r, c = np.argwhere(values == 1)[0]
    assert tuple(img[r, c]) == scheme.colour_of(1) and img.shape[1] > values.shape[1]


def test_bad_input_is_a_400_naming_the_culprit(catalog, tmp_path, flood_checkpoint):
    ckpt, cfg = flood_checkpoint
    pg = json.loads((GRAPHS / "flood_map.json").read_text())
    pg["process_graph"]["s1"]["arguments"]["bands"] = ["VV"]  # the model needs VH too
    with pytest.raises(OpenEOError) as info:
        execute_process_graph(pg, tmp_path, catalog=catalog, parameters=_params(ckpt, cfg))
    assert info.value.status == 400 and "VH (S1GRD)" in info.value.message and not list(tmp_path.glob("*.tif"))
    pg = json.loads((GRAPHS / "flood_map.json").read_text())
    with pytest.raises(OpenEOError) as info:
        execute_process_graph(pg, tmp_path, catalog=catalog, parameters=_params(tmp_path / "nope.ckpt", cfg))
    assert info.value.status == 400 and "nope.ckpt" in info.value.message


def test_tim_model_through_the_process_and_the_udf(catalog, tmp_path, shared_data):
    """A fine-tuned model with a Thinking-in-Modalities backbone (``terramind_v1_tiny_tim`` thinking in LULC, as
    IBM/terramind's ``terramind_v1_base_tim_lulc_sen1floods11.yaml``; seeded random weights: a TiM checkpoint
    holds the ~0.8 GB LULC tokenizer) end to end, with class probabilities (random weights give one class
    everywhere): ``terramind_predict`` in the flood_map graph (64 px tiles over the 96 px site),
    ``udf/terramind_predict.py`` in ``apply_neighborhood`` (one 96 px chunk) and the plain API give the same
    numbers, and the context's ``seed`` changes them (the weights and the sampled tokens)."""
    from terramind_openeo.inference import predict_cube

    cfg = tmp_path / "tim.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"class_path": "terratorch.tasks.SemanticSegmentationTask", "init_args": {
            "model_factory": "EncoderDecoderFactory", "class_names": ["Others", "Flood"],
            "model_args": {**MODEL_ARGS, "backbone": "terramind_v1_tiny_tim", "backbone_tim_modalities": ["LULC"]}}},
        "data": {"init_args": FLOOD_STATS}}))
    context = {"checkpoint": "random", "config": str(cfg), "tile_size": 64, "seed": 3, "probabilities": True}

    def via_graph(folder, udf=False, seed=3):
        pg = json.loads((GRAPHS / "flood_map.json").read_text())
        if udf:
            pg["process_graph"]["flood"] = predict_udf_node({**context, "seed": seed})
        else:
            pg["process_graph"]["flood"]["arguments"].update(seed=seed, probabilities=True)
        res = execute_process_graph(pg, folder, catalog=catalog, parameters=_params("random", cfg))
        [tif] = res.files
        with rasterio.open(tif) as src:
            return src.descriptions, src.read()

    names, by_process = via_graph(tmp_path / "process")
    assert names == ("class", "P_others", "P_flood") and by_process.shape == (3, 96, 96), names
    probs = by_process[1:]
    assert np.allclose(probs.sum(axis=0), 1, atol=1e-5) and probs.std(axis=(1, 2)).min() > 1e-4  # not constant
    udf_names, by_udf = via_graph(tmp_path / "udf", udf=True)
    assert udf_names == names
    np.testing.assert_allclose(by_udf, by_process, atol=1e-5)
    plain = predict_cube(site_cube(shared_data), context)
    np.testing.assert_allclose(plain.transpose("bands", "y", "x").values, by_process, atol=1e-5)
    _, other_seed = via_graph(tmp_path / "seed4", seed=4)
    assert np.abs(other_seed[1:] - probs).max() > 1e-3
