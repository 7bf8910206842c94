"""``dtype`` through the processes and ``run --dtype`` (issue 20): refused when the graph is checked on a CPU
without the hardware (forced AVX2-only), and ``--dtype`` set on every terramind_* node that does not set one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from terramind_openeo.inference.context import DTYPES
from terramind_openeo.kernels import cpu_features
from terramind_openeo.processes.cli import (
    DTYPE_CHOICES,
    DTYPE_PROCESSES,
    build_parser,
    with_dtype,
)
from terramind_openeo.processes.errors import ProcessParameterInvalid
from terramind_openeo.processes.registry import SPEC_DIR
from terramind_openeo.processes.terramind import build_spec, terramind_embed


def test_run_offers_the_context_dtypes():
    assert DTYPE_CHOICES == DTYPES
    assert all(any(p["name"] == "dtype" for p in build_spec(pid)["parameters"]) for pid in DTYPE_PROCESSES)
    with_dtype_param = {path.stem for path in SPEC_DIR.glob("*.json")
                        if any(p.get("name") == "dtype" for p in json.loads(path.read_text()).get("parameters", []))}
    assert with_dtype_param == set(DTYPE_PROCESSES)  # run --dtype reaches every process that has the parameter
    assert build_parser().parse_args(["g.json", "-o", "out", "--dtype", "int8"]).dtype == "int8"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["g.json", "-o", "out", "--dtype", "fp8"])


def test_with_dtype_fills_every_terramind_node_and_keeps_explicit_ones():
    graph = {"process_graph": {
        "load": {"process_id": "load_collection", "arguments": {"id": "S2"}},
        "embed": {"process_id": "terramind_embed", "arguments": {"data": {"from_node": "load"}}},
        "gen": {"process_id": "terramind_generate", "arguments": {"data": {"from_node": "load"}, "dtype": "float32"}},
        "hood": {"process_id": "apply_neighborhood", "arguments": {"process": {"process_graph": {
            "inner": {"process_id": "terramind_generate", "arguments": {"data": {"from_parameter": "data"}},
                      "result": True}}}}},
    }}
    nodes = with_dtype(graph, "int8")["process_graph"]
    assert nodes["embed"]["arguments"]["dtype"] == "int8"
    assert nodes["gen"]["arguments"]["dtype"] == "float32"  # the graph's own choice wins
    assert nodes["hood"]["arguments"]["process"]["process_graph"]["inner"]["arguments"]["dtype"] == "int8"
    assert "dtype" not in nodes["load"]["arguments"]


def _cube() -> xr.DataArray:
    bands = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    data = np.full((12, 32, 32), 1000, dtype=np.float32)
    return xr.DataArray(data, dims=("bands", "y", "x"), coords={"bands": bands, "y": 5e6 - 10 * np.arange(32),
                                                                  "x": 6e5 + 10 * np.arange(32)})


def test_a_process_refuses_bfloat16_on_a_cpu_without_it_when_the_graph_is_checked():
    with cpu_features.forced("avx2"), pytest.raises(ProcessParameterInvalid, match="AMX-BF16") as info:
        terramind_embed(_cube(), model="terramind_v1_tiny", weights="random", dtype="bfloat16")
    assert "dtype" in str(info.value)
    with cpu_features.forced("amx"):  # accepted: the result is lazy, nothing runs yet
        terramind_embed(_cube(), model="terramind_v1_tiny", weights="random", dtype="bfloat16")
