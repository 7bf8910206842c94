"""embed_cube with the real TerraMind (tiny, random weights) on the real sample tiles."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from inference_helpers import TINY, bolzano_cube, example_cube

from terramind_openeo.inference import MODEL_CACHE, embed_cube
from terramind_openeo.inference.cube import geometry
from terramind_openeo.inference.errors import ContextError
from terramind_openeo.kernels import cpu_features
from terramind_openeo.model import standardize


def tiny_model():
    return MODEL_CACHE.get("terramind_v1_tiny", "random", torch.device("cpu"), torch.float32)


def direct(cube, modalities, merge="mean"):
    """The model on one 224 px tile, without the inference layer."""
    inputs = {}
    for modality in modalities:
        bands = {"S2L2A": slice(0, 12), "S1RTC": slice(12, 14), "DEM": slice(14, 15)}[modality]
        x = torch.from_numpy(cube.values[bands].astype(np.float32))[None]
        inputs[modality] = standardize(modality, x)
    tokens = tiny_model().encode(inputs, layers=-1, merge=merge)  # [1, 196, D]
    return tokens[0].T.reshape(-1, 14, 14).numpy()


def test_one_tile_equals_the_model(terramind_examples):
    cube = example_cube(terramind_examples, ["S2L2A"])
    out = embed_cube(cube, {**TINY, "tile_anchor": "cube"})
    assert out.dims == ("bands", "y", "x") and out.shape == (192, 14, 14)
    np.testing.assert_allclose(out.values, direct(cube, ["S2L2A"]), rtol=1e-4, atol=1e-4)
    # coordinates: patch centres, CRS kept
    res = float(cube.x[1] - cube.x[0])
    np.testing.assert_allclose(out.x.values, cube.x.values[0] + res * (7.5 + 16 * np.arange(14)))
    np.testing.assert_allclose(out.y.values, cube.y.values[0] - res * (7.5 + 16 * np.arange(14)))
    assert out.rio.crs == cube.rio.crs and "spatial_ref" in out.coords


def test_three_modalities(terramind_examples):
    cube = example_cube(terramind_examples, ["S2L2A", "S1RTC", "DEM"])
    context = {**TINY, "tile_anchor": "cube", "modalities": ["S2L2A", "S1RTC", "DEM"]}
    out = embed_cube(cube, context)
    np.testing.assert_allclose(out.values, direct(cube, ["S2L2A", "S1RTC", "DEM"]), rtol=1e-4, atol=1e-4)
    concat = embed_cube(cube, {**context, "merge": "concat"})
    assert concat.sizes["bands"] == 3 * 192 and concat.bands.values[-1] == "emb_575"


def test_pixel_resolution_keeps_the_input_grid(terramind_examples):
    cube = example_cube(terramind_examples, ["S2L2A"]).isel(y=slice(0, 100), x=slice(0, 120))
    out = embed_cube(cube, {**TINY, "resolution": "pixel", "overlap": 24})
    assert out.shape == (192, 100, 120)
    np.testing.assert_array_equal(out.x.values, cube.x.values)
    np.testing.assert_array_equal(out.y.values, cube.y.values)
    assert out.rio.crs == cube.rio.crs and np.isfinite(out.values).all()


def _aligned_start(first_pixel: int, size: int, crop: int, stride: int = 192) -> int:
    """First index i (within the cube) where a crop of ``crop`` px starts on the tile grid."""
    i = (-first_pixel) % stride
    assert i + crop <= size
    return i


def test_same_pixel_same_numbers_in_a_448_and_a_672_cube(shared_data):
    """Seamless / chunk-invariant: tiles anchored at the CRS origin, so the 448 px crop's inner patches
    (covered only by tiles inside it) equal those of a 672 px cube around it."""
    cube = bolzano_cube(shared_data).isel(t=0)
    context = {**TINY, "missing_bands": "mean"}
    geo = geometry(cube, "crs")
    r = _aligned_start(geo.row0, cube.sizes["y"], 448)
    c = _aligned_start(geo.col0, cube.sizes["x"], 448)
    rb, cb = max(0, min(r, cube.sizes["y"] - 672)), max(0, min(c, cube.sizes["x"] - 672))
    assert rb <= r and rb + 672 >= r + 448 and cb <= c and cb + 672 >= c + 448
    small = embed_cube(cube.isel(y=slice(r, r + 448), x=slice(c, c + 448)), context)
    big = embed_cube(cube.isel(y=slice(rb, rb + 672), x=slice(cb, cb + 672)), context)
    assert small.shape == (192, 28, 28)
    inner = small.isel(y=slice(2, 24), x=slice(2, 24))  # pixels 32..384 of the crop: tiles inside it only
    expected = big.sel(y=inner.y, x=inner.x)
    np.testing.assert_allclose(inner.values, expected.values, rtol=1e-4, atol=1e-4)
    # the patch grid lies on the absolute 16 px grid of the CRS
    res = float(cube.x[1] - cube.x[0])
    edges = (inner.x.values - 8 * res) / res
    assert np.allclose(edges % 16, 0)


def test_dates_are_independent(shared_data):
    cube = bolzano_cube(shared_data, dates=2).isel(y=slice(0, 64), x=slice(0, 80))
    context = {**TINY, "missing_bands": "mean", "tile_size": 64, "overlap": 16}
    both = embed_cube(cube, context)
    assert both.dims == ("t", "bands", "y", "x") and list(both.t.values) == list(cube.t.values)
    second = embed_cube(cube.isel(t=[1]), context)
    np.testing.assert_allclose(both.isel(t=[1]).values, second.values, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["bfloat16"])
def test_dtype_override_on_cpu(terramind_examples, dtype):
    """bfloat16 on the CPU: refused where the CPU lacks bf16 hardware (forced AVX2-only); the numbers checked on
    every CPU: where this one lacks it, the check is told it has AVX512-BF16 (torch then emulates bf16 on this
    CPU's own kernels: slow, the same arithmetic; oneDNN's bf16 convolution packing stays off, as this CPU's
    flags still say)."""
    cube = example_cube(terramind_examples, ["S2L2A"]).isel(y=slice(0, 32), x=slice(0, 32))
    context = {**TINY, "dtype": dtype, "tile_size": 32, "overlap": 0, "tile_anchor": "cube"}
    with cpu_features.forced("avx2"), pytest.raises(ContextError, match="no AMX-BF16 and no AVX512-BF16"):
        embed_cube(cube, context)
    cpu = cpu_features.detect()
    with cpu_features.forced(cpu if cpu.bf16_fast else replace(cpu, flags=cpu.flags | {"avx512_bf16"})):
        out = embed_cube(cube, context)
    ref = embed_cube(cube, {**TINY, "tile_size": 32, "overlap": 0, "tile_anchor": "cube"})
    assert out.dtype == np.float32 and not np.array_equal(out.values, ref.values)  # really bfloat16
    np.testing.assert_allclose(out.values, ref.values, atol=0.15 * float(np.abs(ref.values).max()))


def test_a_core_chunk_with_its_halo_equals_the_whole_cube(terramind_examples):
    """The contract the chunked processes rely on: a core [a, b) whose bounds lie on the tile grid (multiples
    of the stride s from the CRS origin), given s pixels before and `overlap` pixels after, gets exactly the
    tiles and weights it gets inside the whole cube."""
    cube = example_cube(terramind_examples, ["S2L2A"])
    context = {**TINY, "tile_size": 64, "overlap": 16, "resolution": "pixel"}
    stride, overlap = 48, 16
    geo = geometry(cube, "crs")
    a_row, a_col = (-geo.row0) % stride + stride, (-geo.col0) % stride + stride  # core start on the grid
    b_row, b_col = a_row + 2 * stride, a_col + 2 * stride
    whole = embed_cube(cube, context)
    chunk = embed_cube(cube.isel(y=slice(a_row - stride, b_row + overlap), x=slice(a_col - stride, b_col + overlap)),
                       context)
    core = dict(y=slice(a_row, b_row), x=slice(a_col, b_col))
    inner = chunk.sel(y=whole.y[core["y"]], x=whole.x[core["x"]])
    np.testing.assert_allclose(inner.values, whole.isel(**core).values, rtol=1e-5, atol=1e-5)
