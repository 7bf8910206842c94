"""generate_cube with the real TerraMind (tiny, random weights and tokenizers): invariance, nodata, cache."""

from __future__ import annotations

import numpy as np
import torch
from inference_helpers import TINY, example_cube

from terramind_openeo.inference import RunStats, generate_cube
from terramind_openeo.inference.cache import ModelCache
from terramind_openeo.inference.cube import geometry
from terramind_openeo.inference.weights_download import resolve_weights

CONTEXT = {**TINY, "target": "LULC", "tile_size": 64, "overlap": 16, "batch_size": 4}


def test_sampled_lulc_does_not_depend_on_the_cube_extent(terramind_examples):
    """Per-tile seeds from the tile's grid position: a crop's inner pixels equal the larger cube's."""
    cube = example_cube(terramind_examples, ["S2L2A"])
    geo = geometry(cube, "crs")
    r, c = (-geo.row0) % 48, (-geo.col0) % 48  # a crop starting on the tile grid (stride 48)
    small = generate_cube(cube.isel(y=slice(r, r + 112), x=slice(c, c + 112)), CONTEXT)
    big = generate_cube(cube.isel(y=slice(r, r + 160), x=slice(c, c + 160)), CONTEXT)
    inner = small.isel(y=slice(16, 80), x=slice(16, 80))  # covered only by tiles inside the crop
    np.testing.assert_array_equal(inner.values, big.sel(y=inner.y, x=inner.x).values)
    again = generate_cube(cube.isel(y=slice(r, r + 112), x=slice(c, c + 112)), {**CONTEXT, "batch_size": 1})
    np.testing.assert_array_equal(again.values, small.values)


def test_probabilities_and_nodata(terramind_examples):
    cube = example_cube(terramind_examples, ["S2L2A"]).isel(y=slice(0, 64), x=slice(0, 96)).copy()
    cube[2, 5, 7] = np.nan
    cube[:, 40:, :] = -9999
    stats = RunStats()
    out = generate_cube(cube, {**CONTEXT, "probabilities": True, "nodata": -9999, "tile_anchor": "cube"},
                        stats=stats)
    assert out.dtype == np.float32 and list(out.bands.values[:2]) == ["LULC", "LULC_P00"]
    assert np.isnan(out.values[:, 5, 7]).all() and np.isnan(out.values[:, 40:]).all()
    valid = out.values[:, :40]
    valid = valid[:, np.isfinite(valid[0])]
    np.testing.assert_allclose(valid[1:].sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(valid[0], valid[1:].argmax(axis=0))
    assert stats.tiles == 2  # one tile row (64 px) by two tile columns (96 px at stride 48)


def test_model_cache_is_bounded_and_reused():
    loads = []
    cache = ModelCache(max_size=2, loader=lambda key: loads.append(key) or object())
    cpu = torch.device("cpu")
    a = cache.get("terramind_v1_tiny", "random", cpu, torch.float32)
    assert cache.get("terramind_v1_tiny", "random", cpu, torch.float32) is a and len(loads) == 1
    cache.get("terramind_v1_tiny", "random", cpu, torch.bfloat16)
    cache.get("terramind_v1_small", "random", cpu, torch.float32)  # evicts the least recently used (a)
    assert len(cache) == 2
    assert cache.get("terramind_v1_tiny", "random", cpu, torch.float32) is not a and len(loads) == 4


def test_chained_lulc_then_dem_in_physical_units(terramind_examples):
    cube = example_cube(terramind_examples, ["S2L2A"]).isel(y=slice(0, 64), x=slice(0, 64)).copy()
    cube[:, 0, 0] = np.nan
    context = {**TINY, "target": ["LULC", "DEM"], "tile_size": 64, "tile_anchor": "cube", "timesteps": 1}
    out = generate_cube(cube, context)
    assert out.dtype == np.float32 and list(out.bands.values) == ["LULC", "DEM"] and out.shape == (2, 64, 64)
    assert np.isnan(out.values[:, 0, 0]).all() and np.isfinite(out.values).sum() == 2 * (64 * 64 - 1)
    dem = out.sel(bands="DEM").values
    assert np.nanstd(dem) > 1.0  # metres (de-standardised), not standardised units


def test_weights_by_url_are_downloaded_once(tmp_path, configured):
    configured(cache_dir=tmp_path / "cache")
    source = tmp_path / "TerraMind_v1_tiny.pt"
    source.write_bytes(b"not really a checkpoint")
    local = resolve_weights(source.as_uri())
    assert local.endswith("TerraMind_v1_tiny.pt") and open(local, "rb").read() == b"not really a checkpoint"
    source.unlink()
    assert resolve_weights(source.as_uri()) == local  # cached: no second download
    assert resolve_weights("random") == "random" and resolve_weights("/data/w.pt") == "/data/w.pt"


def test_argmax_lulc_is_batched_and_independent_of_the_seed(terramind_examples):
    cube = example_cube(terramind_examples, ["S2L2A"]).isel(y=slice(0, 96), x=slice(0, 96))
    stats = RunStats()
    a = generate_cube(cube, {**CONTEXT, "argmax": True, "seed": 1}, stats=stats)
    b = generate_cube(cube, {**CONTEXT, "argmax": True, "seed": 2, "batch_size": 1})
    np.testing.assert_array_equal(a.values, b.values)
    assert stats.batches == 1 and stats.tiles == 4


def test_cube_inference_packs_no_linear_weights(terramind_examples, monkeypatch):
    """Chunks' last batches change size: the runner keeps MKL packing (a weight copy per row count) off."""
    from torch import nn

    from terramind_openeo.inference.cache import MODEL_CACHE
    from terramind_openeo.kernels import prepack

    monkeypatch.delenv("TERRAMIND_OPENEO_PREPACK_LINEAR", raising=False)
    prepack.release()
    cube = example_cube(terramind_examples, ["S2L2A"]).isel(y=slice(0, 96), x=slice(0, 96))
    generate_cube(cube, {**CONTEXT, "argmax": True, "batch_size": 3})
    model = MODEL_CACHE.get(TINY["model"], TINY["weights"], torch.device("cpu"), torch.float32)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears and not any(prepack.is_packed(m) for m in linears)
    with torch.inference_mode():  # the same model called directly still packs
        model.encode({"S2L2A": torch.randn(1, 12, 224, 224)})
    assert any(prepack.is_packed(m) for m in linears) or not torch.backends.mkl.is_available()
    prepack.release()
