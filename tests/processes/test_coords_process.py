"""The coords context key and target through the terramind_* processes (chunked, real tile, tiny random weights)."""

from __future__ import annotations

import numpy as np
from processes_helpers import SITE_BBOX, graph

from terramind_openeo.processes.execute import execute_process_graph as run

TINY = {"model": "terramind_v1_tiny", "weights": "random"}
BBOX = {**SITE_BBOX, "east": SITE_BBOX["west"] + 1600, "south": SITE_BBOX["north"] - 1600}  # 160 x 160 px, UTM 22S


def _graph(process: str, **arguments) -> dict:
    return graph(load={"process_id": "load_collection", "arguments": {"id": "TM_S2L2A", "spatial_extent": BBOX,
                                                                      "temporal_extent": None, "bands": None}},
                 p={"process_id": process, "arguments": {"data": {"from_node": "load"}, **TINY, **arguments},
                    "result": True})


def test_embeddings_with_the_location_do_not_depend_on_chunking(catalog):
    """Each tile's location comes from its grid position, so chunks with a halo give the whole cube's numbers."""
    pg = _graph("terramind_embed", tile_size=64, overlap=16, coords=True)
    small = run(pg, None, catalog=catalog, chunk_size=24).value.compute()  # 48 px cores: many chunks
    whole = run(pg, None, catalog=catalog, chunk_size=512).value.compute()
    assert small.shape == whole.shape and whole.shape[:2] == (1, 192)
    np.testing.assert_allclose(small.values, whole.values, atol=1e-4)
    without = run(_graph("terramind_embed", tile_size=64, overlap=16), None, catalog=catalog,
                  chunk_size=512).value.compute()
    assert float(np.abs(without.values - whole.values).max()) > 1e-3


def test_generate_coords_on_the_patch_grid(catalog):
    """Bands lon, lat on the grid of patch-resolution embeddings (16 px cells, CRS-anchored)."""
    pg = _graph("terramind_generate", target="coords", tile_size=64, overlap=16, argmax=True)
    out = run(pg, None, catalog=catalog, chunk_size=24).value.compute()
    assert list(out.bands.values) == ["lon", "lat"] and out.dtype == np.float32
    patches = run(_graph("terramind_embed", tile_size=64, overlap=16), None, catalog=catalog,
                  chunk_size=512).value
    assert out.shape[2:] == patches.shape[2:]
    np.testing.assert_array_equal(out.x.values, patches.x.values)
    np.testing.assert_array_equal(out.y.values, patches.y.values)
    assert float(out.x[1] - out.x[0]) == 160.0 and out.rio.crs.to_epsg() == 32722
