"""The TerraMind process graphs end to end on real tiles with random tiny weights (in process: one model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import xarray as xr
from processes_helpers import GRAPHS, SITE_BBOX, graph

from terramind_openeo.processes import execute_process_graph

TINY = {"model": "terramind_v1_tiny", "weights": "random"}


def run_graph(name: str, catalog, out, **params):
    pg = json.loads((GRAPHS / f"{name}.json").read_text())
    values = {"spatial_extent": SITE_BBOX, **TINY, **params}
    return execute_process_graph(pg, out, catalog=catalog, parameters=values)


@pytest.fixture(scope="module")
def s2_tile(shared_data):
    with rasterio.open(shared_data / "terramind-examples/S2L2A/282D_485L_3_3.tif") as src:
        return src.read(window=((0, 96), (0, 96))), src.transform, src.crs


def test_specs_match_the_inference_context_keys():
    from terramind_openeo.processes.registry import SPEC_DIR
    from terramind_openeo.processes.terramind import build_spec

    def key(spec):  # names, defaults and types must mirror the context; wording may drift
        return [(p["name"], p.get("default"), json.dumps(p["schema"], sort_keys=True)) for p in spec["parameters"]]

    for pid in ("terramind_embed", "terramind_generate", "terramind_predict", "terramind_locate"):
        assert key(json.loads((SPEC_DIR / f"{pid}.json").read_text())) == key(build_spec(pid)), \
            f"regenerate specs/{pid}.json from terramind_openeo.processes.terramind.build_spec"
        spec = json.loads((SPEC_DIR / f"{pid}.json").read_text())
        built = build_spec(pid)
        assert {k: v for k, v in spec.items() if k != "parameters"} == \
            {k: v for k, v in built.items() if k != "parameters"}, f"specs/{pid}.json differs from build_spec"


def test_s2_embeddings_patch_grid(catalog, tmp_path, s2_tile):
    res = run_graph("s2_embeddings", catalog, tmp_path, collection="TM_S2L2A")
    ds = xr.open_dataset(res.files[0], decode_coords="all")
    assert ds.rio.crs.to_epsg() == 32722
    names = list(ds.data_vars)
    assert names[0] == "emb_000" and len(names) == 192
    _, transform, _ = s2_tile
    dx = float(ds.x[1] - ds.x[0])
    assert dx == pytest.approx(160.0)  # 16 px patches of 10 m
    # patch centres sit in the middle of 16 px patches of the input pixel grid (whose edges here lie 6.04 m
    # off multiples of 10 m), the patches counted from the CRS origin as the inference tiles are
    edge = (transform.c % 10.0) - (10.0 if transform.c % 10.0 >= 5.0 else 0.0)  # edge offset of the nearest grid
    pixels = (float(ds.x[0]) - edge) / 10.0 - 8.0
    assert pixels / 16 == pytest.approx(round(pixels / 16), abs=1e-6)
    assert float(ds.x[0]) < transform.c + 160 and float(ds.x[-1]) > transform.c + 96 * 10 - 160
    values = ds["emb_000"].values
    assert np.isfinite(values).all() and values.std() > 0


def test_s2_to_lulc_process_equals_udf_path(catalog, tmp_path):
    proc = run_graph("s2_to_lulc", catalog, tmp_path / "p", collection="TM_S2L2A", timesteps=1)
    udf = run_graph("lulc_udf_neighborhood", catalog, tmp_path / "u", collection="TM_S2L2A", timesteps=1)
    [a], [b] = proc.files, udf.files
    assert a.name == b.name == "openEO_2021-07-23.tif"
    with rasterio.open(a) as pa, rasterio.open(b) as pb:
        va, vb = pa.read(1), pb.read(1)
        assert pa.dtypes[0] == "uint8" and pa.nodata == 255 and pa.crs.to_epsg() == 32722
        assert pa.shape == (96, 96) and pa.transform.c == pytest.approx(790236.04, abs=1e-3)
    assert va.max() <= 9
    np.testing.assert_array_equal(va, vb)
    # both paths name the classes: the process through the cube's attribute, the UDF's through its LULC band;
    # the colour table only where GeoTIFF allows one (uint8: the process; the UDF's result is float32)
    for path, stac in ((a, proc.stac), (b, udf.stac)):
        with rasterio.open(path) as src:
            assert "CLASSIFICATION_CLASSES" in src.tags(1)
            if path == a:
                assert src.colormap(1)[1] == (0x31, 0x71, 0xAD, 255)
        assert stac["features"][0]["assets"]["data"]["classification:classes"][1]["title"] == "Water"


def test_s1_to_s2(catalog, tmp_path):
    res = run_graph("s1_to_s2", catalog, tmp_path, collection="TM_S1RTC", timesteps=1)
    with rasterio.open(res.files[0]) as src:
        assert src.count == 12 and src.dtypes[0] == "float32" and src.crs.to_epsg() == 32722
        assert src.descriptions[0] == "B01" and src.descriptions[-1] == "B12"
        assert np.isfinite(src.read()).all()


@pytest.mark.parametrize("anchor", ["crs", "cube"])
def test_embed_does_not_depend_on_chunking(catalog, anchor, monkeypatch):
    """Chunks aligned to the tile stride with a halo give the numbers of the whole cube, with tiles anchored
    at the CRS origin or at the cube's first pixel (each chunk then anchors its tiles there too)."""
    from terramind_openeo import inference
    from terramind_openeo.processes.execute import execute_process_graph as run

    chunks = []  # the y/x size of every chunk the process hands to embed_cube
    embed_cube = inference.embed_cube
    monkeypatch.setattr(inference, "embed_cube", lambda cube, *a, **k: (
        chunks.append((cube.sizes["y"], cube.sizes["x"])), embed_cube(cube, *a, **k))[1])
    bbox = {**SITE_BBOX, "east": SITE_BBOX["west"] + 1600, "south": SITE_BBOX["north"] - 1600}  # 160 x 160 px
    context = {**TINY, "tile_size": 64, "overlap": 16, "resolution": "pixel", "tile_anchor": anchor}
    pg = graph(load={"process_id": "load_collection", "arguments": {"id": "TM_S2L2A", "spatial_extent": bbox,
                                                                    "temporal_extent": None, "bands": None}},
               e={"process_id": "terramind_embed", "arguments": {"data": {"from_node": "load"}, **context},
                  "result": True})
    small = run(pg, None, catalog=catalog, chunk_size=24).value  # 96 px cores: 2 x 2 chunks
    assert len(chunks) == 4, chunks
    chunks.clear()
    whole = run(pg, None, catalog=catalog, chunk_size=512).value  # 2048 px cores
    assert len(chunks) == (1 if anchor == "cube" else 2)  # the CRS-anchored cut falls inside the cube
    assert small.shape == whole.shape == (1, 192, 160, 160)
    np.testing.assert_allclose(small.values, whole.values, atol=1e-4)
    direct = __import__("terramind_openeo.inference", fromlist=["embed_cube"]).embed_cube(
        run(graph(load={**pg["process_graph"]["load"], "result": True}), None, catalog=catalog).value.compute(),
        context)
    np.testing.assert_allclose(direct.values, whole.values, atol=1e-4)
