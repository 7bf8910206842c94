"""Border tiles shared between processes through a directory (``inference.shared_tiles``)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import xarray as xr
from inference_helpers import PatchModel

from terramind_openeo.inference import RunStats, generate_cube
from terramind_openeo.inference.cache import MODEL_CACHE
from terramind_openeo.inference.shared_tiles import OneHot, SharedTileDir
from terramind_openeo.inference.tile_cache import TILE_CACHE, TileCache


def test_values_come_back_exactly_and_a_taken_tile_is_deleted(tmp_path):
    share = SharedTileDir(tmp_path)
    scores = np.random.default_rng(0).random((10, 64, 48), dtype=np.float32)
    classes = OneHot(np.random.default_rng(1).integers(0, 10, (64, 64)).astype(np.uint8), 10, np.float32)
    share.put(("scores", 1), scores)
    share.put(("votes", 2), classes)
    assert len(list(tmp_path.iterdir())) == 2 and not list(tmp_path.glob("*.part"))
    kept = share.take(("scores", 1), keep=True)  # a corner tile: more neighbours may come
    np.testing.assert_array_equal(kept, scores)
    assert kept.dtype == np.float32 and kept.flags.writeable
    np.testing.assert_array_equal(share.take(("scores", 1)), scores)
    votes = share.take(("votes", 2))
    assert isinstance(votes, OneHot) and votes.channels == 10 and votes.dtype == np.float32
    np.testing.assert_array_equal(votes.classes, classes.classes)
    assert list(tmp_path.iterdir()) == []  # both taken by their one neighbour
    assert share.take(("scores", 1)) is None and share.bytes == 0


def test_a_file_of_another_key_or_cut_short_is_not_used(tmp_path):
    share = SharedTileDir(tmp_path)
    share.put(("a",), np.ones((2, 4, 4), np.float32))
    [path] = tmp_path.iterdir()
    other, _ = share._file(("b",))
    path.rename(other)  # as if two keys had the same file name
    assert share.take(("b",)) is None
    share.put(("c",), np.ones((2, 4, 4), np.float32))
    path, _ = share._file(("c",))
    path.write_bytes(path.read_bytes()[:-4])
    assert share.take(("c",)) is None


def test_writing_stops_at_the_byte_bound(tmp_path):
    share = SharedTileDir(tmp_path, max_bytes=3000)
    for i in range(3):
        share.put(("t", i), np.zeros((1, 20, 20), np.float32))  # 1600 bytes each
    assert share.writes == 1 and len(list(tmp_path.iterdir())) == 1
    share.take(("t", 0))  # deleted by this process: room again
    share.put(("t", 1), np.zeros((1, 20, 20), np.float32))
    assert share.writes == 2
    SharedTileDir(tmp_path).take(("t", 1))  # taken by another process: room again too
    share.put(("t", 2), np.zeros((1, 20, 20), np.float32))
    assert share.writes == 3 and share.bytes == 1600


def test_an_unusable_directory_turns_sharing_off_with_one_warning(tmp_path, caplog):
    share = SharedTileDir(tmp_path / "gone")
    with caplog.at_level(logging.WARNING, logger="terramind_openeo.inference.shared_tiles"):
        share.put(("a",), np.ones((2, 4, 4), np.float32))
        share.put(("b",), np.ones((2, 4, 4), np.float32))
    assert not share.enabled and share.take(("a",)) is None
    assert len(caplog.records) == 1 and str(tmp_path / "gone") in caplog.text


def test_tile_caches_of_two_processes_meet_in_the_directory(tmp_path, configured):
    """Two ``TileCache`` objects stand for two worker processes: a tile kept by one with ``shared=True`` is
    found by the other; with ``shared=False`` (a key holding an object id) it never leaves its process."""
    configured(tile_share_dir=tmp_path)
    one, two = TileCache(1 << 20), TileCache(1 << 20)
    votes = np.eye(10, dtype=np.float32)[np.random.default_rng(0).integers(0, 10, (32, 32))].transpose(2, 0, 1)
    one.put(("k", 1), votes, shared=True)
    one.put(("k", 2), votes, shared=False)
    assert two.take(("k", 2), shared=True) is None
    np.testing.assert_array_equal(two.take(("k", 1), shared=True), votes)
    assert two.shared_hits == 1 and list(tmp_path.iterdir()) == []
    one.put(("k", 3), votes, shared=True)
    np.testing.assert_array_equal(one.take(("k", 3), shared=True), votes)  # from its own memory ...
    assert list(tmp_path.iterdir()) == []  # ... and the file, needed by nobody now, is gone too
    configured(tile_share_dir=None)
    one.put(("k", 4), votes, shared=True)
    assert list(tmp_path.iterdir()) == [] and one.share() is None


@pytest.fixture
def cached_patch_model(monkeypatch):
    """The model cache hands out one stand-in model (a chunk's ``model=None`` path, as in worker processes)."""
    model = PatchModel()
    monkeypatch.setattr(MODEL_CACHE, "loader", lambda key: model)
    MODEL_CACHE.clear()
    TILE_CACHE.clear()
    yield model
    MODEL_CACHE.clear()
    TILE_CACHE.clear()


def _chunks(cube: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """Two neighbouring chunks as ``apply_chunked`` cuts them (stride 48: one stride before, overlap after)."""
    return cube.isel(x=slice(0, 96 + 16)), cube.isel(x=slice(96 - 48, None))


def test_a_chunk_in_another_process_takes_the_border_tiles_from_the_directory(synthetic_cube, tmp_path,
                                                                             configured, cached_patch_model):
    """The left chunk runs, its process's memory is gone (the right chunk runs on another worker): the
    right chunk takes the common border column from the directory, runs the model only on the rest, and
    the stitched result equals the whole cube's."""
    cube = synthetic_cube.isel(t=0)
    ctx = {"model": "terramind_v1_tiny", "weights": "random", "tile_size": 64, "overlap": 16, "batch_size": 1,
           "target": "LULC", "argmax": True}
    whole = generate_cube(cube, ctx)
    configured(tile_share_dir=tmp_path)
    left_cube, right_cube = _chunks(cube)
    TILE_CACHE.clear()
    left = generate_cube(left_cube, ctx, share_tiles=(False, False, False, True))
    written = len(list(tmp_path.iterdir()))
    assert written >= 2
    TILE_CACHE.clear()
    stats, before = RunStats(), cached_patch_model.generate_calls
    right = generate_cube(right_cube, ctx, stats=stats, share_tiles=(False, False, True, False))
    assert stats.cached_tiles == written and TILE_CACHE.shared_hits == written
    assert cached_patch_model.generate_calls - before == stats.tiles - written
    assert list(tmp_path.iterdir()) == []
    stitched = xr.concat([left.isel(x=slice(0, 96)), right.isel(x=slice(48, None))], dim="x")
    np.testing.assert_array_equal(stitched.values, whole.values)


def test_a_model_passed_by_the_caller_keeps_its_tiles_in_the_process(synthetic_cube, tmp_path, configured):
    """Its cache keys hold the object's id, meaningless in another process: nothing goes to the directory."""
    configured(tile_share_dir=tmp_path)
    ctx = {"tile_size": 64, "overlap": 16, "batch_size": 1, "target": "LULC", "argmax": True}
    TILE_CACHE.clear()
    generate_cube(_chunks(synthetic_cube.isel(t=0))[0], ctx, model=PatchModel(), share_tiles=True)
    assert len(TILE_CACHE) > 0 and list(tmp_path.iterdir()) == []
    TILE_CACHE.clear()
