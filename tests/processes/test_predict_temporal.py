"""A fine-tuned model with terratorch's temporal wrapper through ``terramind_predict``: every date of a chunk at
once, one map without ``t``, the same numbers as ``predict_cube`` on the whole cube, through a process graph from a
2-date collection to a GeoTIFF with its class names; a cube with the wrong number of dates is a 400 naming ``t``.
``map_chunks`` declares what such a function returns (one date), and refuses a chunk function that drops ``t``
where the cube's dimensions must stay."""

from __future__ import annotations

import json

import dask
import numpy as np
import pytest
import rasterio
import xarray as xr
from processes_helpers import SITE_BBOX

from terramind_openeo.classes import GTIFF_TAG, ClassScheme
from terramind_openeo.inference import predict_cube
from terramind_openeo.processes import Catalog, execute_process_graph
from terramind_openeo.processes.errors import OpenEOError

S2L1C = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
MODEL_ARGS = {"backbone": "terramind_v1_tiny", "backbone_modalities": ["S2L1C", "S1GRD"],
              "backbone_use_temporal": True, "backbone_temporal_pooling": "concat",
              "backbone_temporal_n_timestamps": 2,
              "necks": [{"name": "SelectIndices", "indices": [2, 5, 8, 11]},
                        {"name": "ReshapeTokensToImage", "remove_cls_token": False},
                        {"name": "LearnedInterpolateToPyramidal"}],
              "decoder": "UNetDecoder", "decoder_channels": [32, 16, 16, 8], "num_classes": 2}
CONFIG = {"task": "segmentation", "model_args": MODEL_ARGS, "class_names": ["Others", "Burned"]}
CONTEXT = {"checkpoint": "random", "standardization": "pretraining", "tile_size": 64, "overlap": 16}


@pytest.fixture(scope="module")
def two_dates(shared_data, tmp_path_factory):
    """160 x 160 px of the Parana tile (S2L1C + S1 dB) on two dates (the second darker), as a cube and as a
    netCDF collection; and the model config."""
    import rioxarray

    from terramind_openeo.processes.writers import write_netcdf

    root = shared_data / "terramind-examples"
    parts = []
    for folder, bands in (("S2L1C", S2L1C), ("S1RTC", ["VV", "VH"])):
        da = rioxarray.open_rasterio(root / folder / "282D_485L_3_3.tif").astype(np.float32)
        parts.append(da.rename(band="bands").assign_coords(bands=bands))
    one = xr.concat(parts, dim="bands").isel(y=slice(0, 160), x=slice(0, 160))
    cube = xr.concat([one, one * 0.9], dim="t").assign_coords(
        t=np.array(["2021-07-01", "2021-07-13"], dtype="datetime64[ns]")).transpose("t", "bands", "y", "x")
    cube = cube.rio.write_crs(one.rio.crs)
    folder = tmp_path_factory.mktemp("temporal")
    [nc] = write_netcdf(cube, folder, "two_dates")
    config = folder / "burn.json"
    config.write_text(json.dumps(CONFIG))
    catalog = Catalog.from_dict({"collections": [{"id": "TWO_DATES", "type": "netcdf", "path": str(nc), "crs": 32722,
                                                  "bands": S2L1C + ["VV", "VH"]}]})
    return cube, catalog, config


def test_the_process_reads_every_date_at_once_in_chunks(two_dates):
    from terramind_openeo.processes import context as _ctx
    from terramind_openeo.processes.terramind import terramind_predict

    cube, catalog, config = two_dates
    context = {**CONTEXT, "config": str(config)}
    whole = predict_cube(cube, context)
    token = _ctx.activate(_ctx.ExecutionContext(catalog=catalog, chunk_size=16))  # 64 px cores: many chunks
    try:
        lazy = terramind_predict(cube.chunk({"t": 1, "y": 64, "x": 64}), **context)
        assert len(lazy.data.chunks[1]) > 1 and "t" not in lazy.dims
        with dask.config.set(scheduler="synchronous"):
            out = lazy.compute()
    finally:
        _ctx.deactivate(token)
    assert out.dims == ("bands", "y", "x") and out.dtype == np.uint8 and set(np.unique(out.values)) <= {0, 1}
    np.testing.assert_array_equal(out.values, whole.values)


def test_a_graph_from_a_two_date_collection_to_a_named_class_map(two_dates, tmp_path):
    cube, catalog, config = two_dates
    bbox = {"west": float(cube.x[0]) - 5, "east": float(cube.x[-1]) + 5, "south": float(cube.y[-1]) - 5,
            "north": float(cube.y[0]) + 5, "crs": SITE_BBOX["crs"]}
    graph = {"process_graph": {
        "load": {"process_id": "load_collection", "arguments": {"id": "TWO_DATES", "spatial_extent": bbox,
                                                                "temporal_extent": None}},
        "burn": {"process_id": "terramind_predict", "arguments": {"data": {"from_node": "load"}, **CONTEXT,
                                                                  "config": str(config)}},
        "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "burn"}, "format": "GTiff"},
                 "result": True}}}
    res = execute_process_graph(graph, tmp_path, catalog=catalog, chunk_size=16)
    [tif] = res.files  # one map for both dates
    with rasterio.open(tif) as src:
        values = src.read(1)
        assert src.dtypes[0] == "uint8" and src.shape == (160, 160)
        assert [c.title for c in ClassScheme.from_json(src.tags(1)[GTIFF_TAG]).classes] == ["Others", "Burned"]
    np.testing.assert_array_equal(values, predict_cube(cube, {**CONTEXT, "config": str(config)}).values[0])

    graph["process_graph"]["load"]["arguments"]["temporal_extent"] = ["2021-07-01", "2021-07-02"]  # one date
    with pytest.raises(OpenEOError) as info:
        execute_process_graph(graph, tmp_path / "one", catalog=catalog)
    assert info.value.status == 400 and "dimension 't'" in info.value.message and "2 at once" in info.value.message


def _mean_over_dates(chunk: xr.DataArray) -> xr.DataArray:
    return chunk.mean("t")


def test_map_chunks_declares_a_reduced_time_dimension(two_dates):
    from terramind_openeo.processes.chunked import map_chunks, plan_for

    cube = two_dates[0].isel(bands=[3, 13])
    plan = plan_for(cube, 64, 16, 0, 0, anchored=False)
    out = map_chunks(cube, _mean_over_dates, plan, ["B04", "VV"], "float32", per_date=False, reduces_t=True)
    assert out.sizes["t"] == 1 and out.data.shape == (1, 2, 160, 160)
    with dask.config.set(scheduler="synchronous"):
        values = out.data.compute()
    assert values.shape == out.data.shape
    np.testing.assert_allclose(values[0], cube.mean("t").values, rtol=1e-6)
    kept = map_chunks(cube, _mean_over_dates, plan, ["B04", "VV"], "float32", per_date=False)
    with pytest.raises(ValueError, match="no dimension 't' for a chunk of 2 dates"), \
            dask.config.set(scheduler="synchronous"):
        kept.compute()
