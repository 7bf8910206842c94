"""TerraMind embeddings under ``apply_neighborhood`` (issue 17, problem 2).

The embedding UDF used as its docstring says (``apply_neighborhood``, 448 px, overlap 32) with the default
context returns one value per 16 px patch, a grid ``apply_neighborhood`` cannot put back on the input's
pixels: that used to be a 500 from the first chunk ("chunk result covers (12, 12) cells of the core ...").
Now the combination is refused at validation with a 400 naming the context value to use, and that value
works. Tiny model, random weights, 96 x 96 px of a real tile.
"""

from __future__ import annotations

import pytest
from processes_helpers import REPO, SITE_BBOX, graph, load_node

from terramind_openeo.processes import execute_process_graph
from terramind_openeo.processes.errors import OpenEOError

EMBED_UDF = (REPO / "udf" / "terramind_embed.py").read_text()
TINY = {"model": "terramind_v1_tiny", "weights": "random", "tile_size": 64, "overlap": 16, "batch_size": 4}
SIZE = [{"dimension": "x", "value": 448, "unit": "px"}, {"dimension": "y", "value": 448, "unit": "px"}]
OVERLAP = [{"dimension": "x", "value": 32, "unit": "px"}, {"dimension": "y", "value": 32, "unit": "px"}]


def _load() -> dict:
    return load_node("TM_S2L2A", bands=None, bbox=SITE_BBOX, temporal=None)


def _udf_graph(context: dict) -> dict:
    child = {"u": {"process_id": "run_udf", "arguments": {"data": {"from_parameter": "data"}, "udf": EMBED_UDF,
                                                           "runtime": "Python", "context": context},
                   "result": True}}
    return graph(load=_load(), nb={"process_id": "apply_neighborhood", "arguments": {
        "data": {"from_node": "load"}, "size": SIZE, "overlap": OVERLAP, "process": {"process_graph": child}}},
                 save={"process_id": "save_result", "arguments": {"data": {"from_node": "nb"}, "format": "netCDF"},
                       "result": True})


def test_the_embedding_udf_at_patch_resolution_is_refused_before_any_work(catalog, tmp_path):
    from terramind_openeo.inference import MODEL_CACHE

    loads = MODEL_CACHE.loads
    with pytest.raises(OpenEOError) as err:
        execute_process_graph(_udf_graph(dict(TINY)), tmp_path / "out", catalog=catalog)
    exc = err.value
    assert exc.status == 400 and exc.code == "ProcessParameterInvalid", exc
    assert '"resolution": "pixel"' in exc.message and "apply_neighborhood" in exc.message, exc.message
    assert "Node 'nb'" in exc.message
    assert MODEL_CACHE.loads == loads  # refused before any model ran


def test_the_embedding_udf_at_pixel_resolution_runs_on_the_pixel_grid(catalog, tmp_path):
    import xarray as xr

    result = execute_process_graph(_udf_graph({**TINY, "resolution": "pixel"}), tmp_path / "out", catalog=catalog)
    with xr.open_dataset(result.files[0]) as ds:
        assert ds.sizes["x"] == 96 and ds.sizes["y"] == 96
        assert "emb_000" in ds.data_vars and "emb_191" in ds.data_vars


def test_terramind_embed_in_a_neighborhood_callback_needs_pixel_resolution(catalog, tmp_path):
    def callback(**extra) -> dict:
        node = {"process_id": "terramind_embed", "arguments": {"data": {"from_parameter": "data"}, **TINY, **extra},
                "result": True}
        return graph(load=_load(), nb={"process_id": "apply_neighborhood", "arguments": {
            "data": {"from_node": "load"}, "size": SIZE, "overlap": OVERLAP, "process": {"process_graph": {"e": node}}},
            "result": True})

    with pytest.raises(OpenEOError) as err:
        execute_process_graph(callback(), None, catalog=catalog)
    assert err.value.status == 400 and 'resolution="pixel"' in err.value.message, err.value
    value = execute_process_graph(callback(resolution="pixel"), None, catalog=catalog).value
    assert value.sizes["x"] == 96 and value.sizes["y"] == 96 and str(value.bands.values[0]) == "emb_000"


def test_apply_metadata_declares_the_patch_grid():
    from openeo.metadata import Band, BandDimension, CubeMetadata, SpatialDimension
    from openeo.udf.run_code import load_module_from_string

    apply_metadata = load_module_from_string(EMBED_UDF)["apply_metadata"]
    meta = CubeMetadata(dimensions=[BandDimension(name="bands", bands=[Band(name="B04")]),
                                    SpatialDimension(name="x", extent=[0, 1], step=10),
                                    SpatialDimension(name="y", extent=[0, 1], step=10)])
    patch = apply_metadata(meta, dict(TINY))
    assert [d.step for d in patch.spatial_dimensions] == [160, 160]
    assert patch.band_names[:2] == ["emb_000", "emb_001"]
    pixel = apply_metadata(meta, {**TINY, "resolution": "pixel"})
    assert [d.step for d in pixel.spatial_dimensions] == [10, 10]
