"""``predict_cube``: fine-tuned models over cubes larger than a tile, against terratorch's ``tiled_inference``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr
from inference_helpers import SITE

from terramind_openeo.classes import CLASSES_ATTR, ClassScheme, scheme_of
from terramind_openeo.inference import predict_cube
from terramind_openeo.inference.errors import InferenceError, MissingBandError
from terramind_openeo.inference.tiling import ramp_weights
from terramind_openeo.model.task import load_task_model

S2L1C = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
NECKS = [{"name": "SelectIndices", "indices": [2, 5, 8, 11]},
         {"name": "ReshapeTokensToImage", "remove_cls_token": False}, {"name": "LearnedInterpolateToPyramidal"}]
MODEL_ARGS = {"backbone": "terramind_v1_tiny", "backbone_modalities": ["S2L1C", "S1GRD"], "necks": NECKS,
              "decoder": "UNetDecoder", "decoder_channels": [32, 16, 16, 8], "head_dropout": 0.1, "num_classes": 2}
MEANS = {"S2L1C": [2357.089, 2137.385, 2018.788, 2082.986, 2295.651, 2854.537, 3122.849, 3040.560, 3306.481,
                   1473.847, 506.070, 2472.825, 1838.929], "S1GRD": [-12.599, -20.293]}
STDS = {"S2L1C": [1624.683, 1675.806, 1557.708, 1833.702, 1823.738, 1733.977, 1732.131, 1679.732, 1727.26,
                  1024.687, 442.165, 1331.411, 1160.419], "S1GRD": [5.195, 5.890]}
CONFIG = {"task": "segmentation", "model_args": MODEL_ARGS, "class_names": ["Others", "Flood"], "means": MEANS,
          "stds": STDS}


def _flood_cube(shared_data) -> xr.DataArray:
    """The real S2L1C + S1 (VV, VH dB) sample tile of one site as a (bands, y, x) cube, 224 x 224 px."""
    import rioxarray

    root = shared_data / "terramind-examples"
    s2 = rioxarray.open_rasterio(root / "S2L1C" / f"{SITE}.tif").astype(np.float32)
    s1 = rioxarray.open_rasterio(root / "S1RTC" / f"{SITE}.tif").astype(np.float32)
    s2 = s2.rename(band="bands").assign_coords(bands=S2L1C)
    s1 = s1.rename(band="bands").assign_coords(bands=["VV", "VH"])
    return xr.concat([s2, s1], dim="bands", coords="minimal", compat="override", join="override")


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "flood.json"
    path.write_text(json.dumps(CONFIG))
    return path


def _context(config_file, **extra) -> dict:
    return {"checkpoint": "random", "config": str(config_file), "tile_size": 96, "overlap": 32,
            "tile_anchor": "cube", **extra}


class OurBlend:
    """terratorch ``TileSink`` that blends chips with this package's raised-cosine weights (no ramp towards the
    outside of the first and last tiles): terratorch's chips, model and tiling, our blend."""

    def __init__(self, height: int, width: int, crop: int, overlap: int):
        self.h, self.w, self.crop, self.overlap = height, width, crop, overlap
        self.sum = self.weight = None

    def write(self, tile, prediction):
        rows, cols = tile.input_coords
        if self.sum is None:
            self.sum = torch.zeros(prediction.shape[0], self.h, self.w)
            self.weight = torch.zeros(self.h, self.w)
        wr = ramp_weights(self.crop, self.overlap, rows.start > 0, rows.stop < self.h)
        wc = ramp_weights(self.crop, self.overlap, cols.start > 0, cols.stop < self.w)
        w = torch.from_numpy(np.outer(wr, wc)).float()
        self.sum[:, rows, cols] += prediction * w
        self.weight[rows, cols] += w

    def finalize(self):
        return (self.sum / self.weight)[None]


@pytest.mark.oracle
def test_tiled_cube_equals_terratorch_tiled_inference(shared_data, config_file):
    """A 224 px cube in 96 px tiles (overlap 32: 9 tiles) through ``predict_cube`` equals terratorch's
    ``tiled_inference`` with the same weights, chips (crop 96, stride 64) and blend; nodata pixels are the one
    documented difference (ours 255; terratorch sees the standardised mean there)."""
    import terratorch_task_ref

    tt = terratorch_task_ref.require()
    torch.manual_seed(0)
    ref = tt.factory.build_model("segmentation", **MODEL_ARGS, backbone_pretrained=False).eval()
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
        for name, b in ref.named_buffers():
            if name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
    ours = load_task_model({f"model.{k}": v for k, v in ref.state_dict().items()}, CONFIG)

    cube = _flood_cube(shared_data)
    cube[:, 100:120, 30:70] = np.nan  # a cloud
    ctx = _context(config_file, probabilities=True)
    result = predict_cube(cube, ctx, model=ours)
    assert list(result.bands.values) == ["class", "P_others", "P_flood"]

    x = {}
    for name, bands in (("S2L1C", S2L1C), ("S1GRD", ["VV", "VH"])):
        values = torch.from_numpy(cube.sel(bands=bands).values)[None]
        mean = torch.tensor(MEANS[name]).view(1, -1, 1, 1)
        std = torch.tensor(STDS[name]).view(1, -1, 1, 1)
        x[name] = torch.nan_to_num((values - mean) / std, nan=0.0)
    logits = tt.tiled_inference(lambda batch: ref(batch).output, x, crop=96, stride=64, delta=0, padding=False,
                                batch_size=4, sink=OurBlend(224, 224, 96, 32))
    probs = logits.softmax(dim=1)[0].numpy()
    valid = np.isfinite(cube.values).all(axis=0)
    ours_p = result.sel(bands=["P_others", "P_flood"]).values
    assert np.abs(ours_p[:, valid] - probs[:, valid]).max() <= 1e-4
    assert np.isnan(ours_p[:, ~valid]).all() and np.isnan(result.sel(bands="class").values[~valid]).all()
    margin = np.abs(probs[1] - probs[0]) > 1e-3  # class ids equal wherever the arg-max is not a tie
    ids = result.sel(bands="class").values
    assert (ids[valid & margin] == probs.argmax(axis=0)[valid & margin]).all()
    # terratorch's own blend (its cosine ramps, no delta) differs only inside the overlaps
    plain = tt.tiled_inference(lambda batch: ref(batch).output, x, crop=96, stride=64, delta=0, padding=False,
                               batch_size=4).softmax(dim=1)[0].numpy()
    single = np.zeros(224, bool)
    single[[*range(0, 64), *range(96, 128), *range(160, 224)]] = True
    once = single[:, None] & single[None, :] & valid
    assert np.abs(ours_p[:, once] - plain[:, once]).max() <= 1e-4


def test_classes_nodata_and_class_names(shared_data, config_file):
    cube = _flood_cube(shared_data)
    cube[:, :40, :40] = np.nan
    out = predict_cube(cube, _context(config_file))
    assert out.dims == ("bands", "y", "x") and list(out.bands.values) == ["class"] and out.dtype == np.uint8
    assert (out.values[0, :40, :40] == 255).all() and set(np.unique(out.values[0, 40:, 40:])) <= {0, 1}
    scheme = scheme_of(out)
    assert [c.title for c in scheme.classes] == ["Others", "Flood"] and scheme.nodata == 255
    assert ClassScheme.from_json(out.attrs[CLASSES_ATTR]) == scheme
    np.testing.assert_array_equal(out.x.values, cube.x.values)
    probs = predict_cube(cube, _context(config_file, probabilities=True, blend="probabilities"))
    p = probs.sel(bands=["P_others", "P_flood"]).values
    np.testing.assert_allclose(np.nansum(p, axis=0)[40:, 40:], 1.0, atol=1e-5)


def test_temporal_model_reads_the_dates_at_once(shared_data, tmp_path):
    """A model with terratorch's temporal wrapper (concat over 2 dates) gives one map from a 2-date cube,
    equal to the model on the stacked dates."""
    args = {**MODEL_ARGS, "backbone_use_temporal": True, "backbone_temporal_pooling": "concat",
            "backbone_temporal_n_timestamps": 2}
    path = tmp_path / "temporal.json"
    path.write_text(json.dumps({**CONFIG, "model_args": args}))
    one = _flood_cube(shared_data).isel(y=slice(0, 96), x=slice(0, 96))
    cube = xr.concat([one, one * 0.9], dim="t").assign_coords(t=np.array(["2021-07-01", "2021-07-13"],
                                                                          dtype="datetime64[ns]"))
    model = load_task_model(None, path, weights="random", seed=3)
    out = predict_cube(cube, {"checkpoint": "random", "config": str(path), "tile_size": 96, "tile_anchor": "cube",
                              "probabilities": True}, model=model)
    assert "t" not in out.dims and out.sizes["y"] == 96
    x = {}
    for name, bands in (("S2L1C", S2L1C), ("S1GRD", ["VV", "VH"])):
        values = torch.from_numpy(cube.sel(bands=bands).transpose("bands", "t", "y", "x").values)[None]
        shape = (1, -1, 1, 1, 1)
        x[name] = (values - torch.tensor(MEANS[name]).view(shape)) / torch.tensor(STDS[name]).view(shape)
    with torch.no_grad():
        expected = model(x).softmax(dim=1)[0].numpy()
    np.testing.assert_allclose(out.sel(bands=["P_others", "P_flood"]).values, expected, atol=1e-5)
    with pytest.raises(InferenceError, match="dimension 't'.*2 at once"):
        predict_cube(cube.isel(t=[0]), {"checkpoint": "random", "config": str(path)})


def test_regression_output(shared_data, tmp_path):
    args = {k: v for k, v in MODEL_ARGS.items() if k not in ("num_classes", "head_dropout")}
    path = tmp_path / "reg.json"
    path.write_text(json.dumps({"task": "regression", "model_args": args, "means": MEANS, "stds": STDS}))
    cube = _flood_cube(shared_data).isel(y=slice(0, 160), x=slice(0, 128))
    cube[:, 0, 0] = np.nan
    out = predict_cube(cube, {"checkpoint": "random", "config": str(path), "tile_size": 96})
    assert list(out.bands.values) == ["prediction"] and out.dtype == np.float32
    assert np.isnan(out.values[0, 0, 0]) and np.isfinite(out.values[0, 1:, 1:]).all()
    assert CLASSES_ATTR not in out.attrs


# ------------------------------------------------------------------------------------------- bad input
def test_bands_the_cube_lacks_are_named(shared_data, config_file):
    cube = _flood_cube(shared_data).drop_sel(bands=["B10", "VH"])
    with pytest.raises(MissingBandError, match=r"bands B10 \(S2L1C\), VH \(S1GRD\): needed by the fine-tuned model"):
        predict_cube(cube, _context(config_file))


def test_config_without_statistics_needs_a_choice(shared_data, tmp_path):
    path = tmp_path / "nostats.json"
    path.write_text(json.dumps({"task": "segmentation", "model_args": MODEL_ARGS}))
    cube = _flood_cube(shared_data)
    with pytest.raises(InferenceError, match="standardization.*no data means/stds for S2L1C, S1GRD"):
        predict_cube(cube, {"checkpoint": "random", "config": str(path)})
    out = predict_cube(cube, {"checkpoint": "random", "config": str(path), "standardization": "pretraining",
                              "tile_size": 224})
    assert out.sizes["x"] == 224


@pytest.mark.parametrize("change,match", [
    ({"decoder": "ASPPSegmentationHead"}, "model_args.decoder.*'ASPPSegmentationHead' is not supported"),
    ({"necks": [{"name": "FeaturePyramidNetworkNeck"}]}, r"necks\[0\].name.*'FeaturePyramidNetworkNeck'"),
    ({"decoder_kernel": 3}, "decoder_\\*.*UNetDecoder.*decoder_kernel|kernel"),
    ({"peft_config": {"method": "LORA"}}, "model_args.peft_config"),
])
def test_unsupported_config_fields_are_named(shared_data, tmp_path, change, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**CONFIG, "model_args": {**MODEL_ARGS, **change}}))
    with pytest.raises(InferenceError, match=match):
        predict_cube(_flood_cube(shared_data), {"checkpoint": "random", "config": str(path)})


def test_checkpoint_that_does_not_fit_its_config(shared_data, tmp_path, config_file):
    """Keys of another decoder, and a head with another class count: errors naming the tensors."""
    upernet = {**CONFIG, "model_args": {**MODEL_ARGS, "decoder": "UperNetDecoder", "decoder_channels": 16}}
    model = load_task_model(None, upernet, weights="random")
    ckpt = tmp_path / "upernet.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    cube = _flood_cube(shared_data)
    keys = r"(?s)missing.*decoder\.decoder\.blocks\.0\.conv1.*unexpected.*decoder\.fpn_bottleneck"
    with pytest.raises(InferenceError, match=keys):
        predict_cube(cube, {"checkpoint": str(ckpt), "config": str(config_file)})
    three = {**CONFIG, "class_names": ["a", "b", "c"], "model_args": {**MODEL_ARGS, "num_classes": 3}}
    model = load_task_model(None, three, weights="random")
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    with pytest.raises(InferenceError, match=r"head\.head\.2\.weight: checkpoint \[3, 8, 1, 1\], model \[2, 8, 1, 1\]"):
        predict_cube(cube, {"checkpoint": str(ckpt), "config": str(config_file)})
    wrong_names = tmp_path / "names.json"
    wrong_names.write_text(json.dumps({**CONFIG, "class_names": ["Others", "Flood", "Cloud"]}))
    with pytest.raises(InferenceError, match="class_names.*3 names for num_classes=2"):
        predict_cube(cube, {"checkpoint": "random", "config": str(wrong_names)})


def test_context_needs_a_checkpoint(shared_data):
    with pytest.raises(InferenceError, match="context key 'checkpoint': required"):
        predict_cube(_flood_cube(shared_data), {})


def test_checkpoint_and_config_by_url_go_through_the_weights_cache(shared_data, tmp_path, config_file):
    """``file://`` URLs (as ``http(s)://``) are copied into the weights cache once, then loaded strictly."""
    from terramind_openeo import config as settings
    from terramind_openeo.inference.predict import TASK_MODEL_CACHE

    model = load_task_model(None, CONFIG, weights="random", seed=4)
    ckpt = tmp_path / "m.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    cube = _flood_cube(shared_data).isel(y=slice(0, 96), x=slice(0, 96))
    with settings.override(cache_dir=tmp_path / "cache"):
        TASK_MODEL_CACHE.clear()
        out = predict_cube(cube, {"checkpoint": ckpt.as_uri(), "config": config_file.as_uri(), "tile_size": 96,
                                  "probabilities": True})
        cached = sorted(p.name.split("-", 1)[1] for p in (tmp_path / "cache" / "weights").iterdir())
    assert cached == ["flood.json", "m.ckpt"]
    plain = predict_cube(cube, {"checkpoint": "random", "config": str(config_file), "tile_size": 96,
                                "probabilities": True}, model=model)
    np.testing.assert_array_equal(out.values, plain.values)


def test_dtype_reaches_the_fine_tuned_model(shared_data, config_file):
    """``dtype="int8"``: the backbone's linear layers of the cached task model run in int8 (probabilities close to
    float32's, not equal: not silently float32); bfloat16 on a CPU without bf16 hardware (forced AVX2-only) is
    refused naming the missing support, before any model is loaded."""
    from terramind_openeo.inference.errors import ContextError
    from terramind_openeo.inference.predict import TASK_MODEL_CACHE
    from terramind_openeo.kernels import cpu_features, int8_linear, prepack

    cube = _flood_cube(shared_data)
    context = _context(config_file, probabilities=True, blend="probabilities")
    loads = TASK_MODEL_CACHE.loads
    with cpu_features.forced("avx2"), pytest.raises(ContextError, match="no AMX-BF16 and no AVX512-BF16"):
        predict_cube(cube, {**context, "dtype": "bfloat16"})
    assert TASK_MODEL_CACHE.loads == loads
    if not int8_linear.available():
        pytest.skip("torch built without oneDNN's int8 ops")
    full = predict_cube(cube, context).values
    int8 = predict_cube(cube, {**context, "dtype": "int8"}).values
    linears = [m for m in TASK_MODEL_CACHE.lookup(TASK_MODEL_CACHE.keys()[-1]).modules()
               if isinstance(m, torch.nn.Linear)]
    assert linears and all(prepack.runs_int8(m) for m in linears)
    assert not np.array_equal(full, int8) and np.nanmax(np.abs(full - int8)) <= 0.05
    prepack.release()


def test_sampled_tim_model_gives_the_same_map_however_tiles_are_batched(shared_data, tmp_path):
    """A TiM backbone that samples its tokens (terratorch's default, temperature 1): each tile draws from a seed
    made of the context's ``seed`` and the tile's position, never from its place in a batch."""
    args = {**MODEL_ARGS, "backbone": "terramind_v1_tiny_tim", "backbone_tim_modalities": ["LULC"]}
    config = {**CONFIG, "model_args": args}
    path = tmp_path / "tim.json"
    path.write_text(json.dumps(config))
    model = load_task_model(None, config, weights="random")
    assert model.samples
    cube = _flood_cube(shared_data)
    context = {**_context(path), "probabilities": True}
    one = predict_cube(cube, {**context, "batch_size": 1}, model=model).values
    four = predict_cube(cube, {**context, "batch_size": 4}, model=model).values
    other_seed = predict_cube(cube, {**context, "batch_size": 4, "seed": 5}, model=model).values
    np.testing.assert_array_equal(one, four)
    assert not np.array_equal(one, other_seed)
