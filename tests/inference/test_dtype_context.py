"""The ``dtype`` context key (issue 20) at every openEO entry point: the refusal of a precision this CPU cannot
run fast (forced AVX2-only and AMX CPUs), and int8 really reaching the model through embed_cube and the UDF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from inference_helpers import TINY, example_cube
from openeo.udf import UdfData, XarrayDataCube, run_udf_code

from terramind_openeo.inference import embed_cube
from terramind_openeo.inference.cache import MODEL_CACHE
from terramind_openeo.inference.device import resolve_precision
from terramind_openeo.inference.errors import ContextError
from terramind_openeo.kernels import cpu_features, int8_linear

CPU = torch.device("cpu")
EMBED_UDF = Path(__file__).resolve().parents[2] / "udf" / "terramind_embed.py"


def test_default_and_explicit_precisions():
    assert resolve_precision(None, CPU) == "float32"
    assert resolve_precision(None, torch.device("cuda")) == "bfloat16"
    assert resolve_precision("int8", CPU) == "int8" and resolve_precision("float32", CPU) == "float32"


@pytest.mark.parametrize("dtype,missing", [("bfloat16", "no AMX-BF16 and no AVX512-BF16"),
                                           ("float16", "no AMX-FP16 and no AVX512-FP16")])
def test_a_cpu_without_the_hardware_refuses_with_the_reason(dtype, missing):
    with cpu_features.forced("avx2"), pytest.raises(ContextError, match=missing) as info:
        resolve_precision(dtype, CPU)
    assert info.value.key == "dtype" and "use float32, or int8" in str(info.value)
    with cpu_features.forced("amx"):
        assert resolve_precision(dtype, CPU) == dtype
    with pytest.raises(ContextError, match="CPU only"):
        resolve_precision("int8", torch.device("cuda"))


def test_refused_before_the_model_is_loaded(terramind_examples):
    cube = example_cube(terramind_examples, ["S2L2A"])
    loads = MODEL_CACHE.loads
    with cpu_features.forced("avx2"), pytest.raises(ContextError, match="AMX-BF16"):
        embed_cube(cube, {**TINY, "dtype": "bfloat16", "tile_anchor": "cube"})
    assert MODEL_CACHE.loads == loads


@pytest.mark.skipif(not int8_linear.available(), reason="torch built without oneDNN's int8 ops")
def test_int8_reaches_the_model_through_embed_cube_and_the_udf(terramind_examples):
    cube = example_cube(terramind_examples, ["S2L2A"])
    context = {**TINY, "tile_anchor": "cube"}
    full = embed_cube(cube, context)
    int8 = embed_cube(cube, {**context, "dtype": "int8"})
    a = full.values.reshape(full.sizes["bands"], -1)  # [D, patches]
    b = int8.values.reshape(int8.sizes["bands"], -1)
    cosine = (a * b).sum(0) / np.linalg.norm(a, axis=0) / np.linalg.norm(b, axis=0)
    assert cosine.mean() >= 0.995 and not np.array_equal(a, b)  # int8, not silently float32, within budget
    data = UdfData(datacube_list=[XarrayDataCube(cube)], user_context={**context, "dtype": "int8"})
    via_udf = run_udf_code(EMBED_UDF.read_text(), data).get_datacube_list()[0].get_array()
    xr.testing.assert_identical(via_udf, int8)
