"""Whole files or none (terramind_openeo/files.py): the one "write .part, then rename" helper."""

from __future__ import annotations

import os

import pytest

from terramind_openeo import files


def test_a_file_appears_only_when_complete(tmp_path):
    target = tmp_path / "result.json"
    with files.atomic_path(target, durable=True) as part:
        part.write_text("{}")
        assert not target.exists() and part.name == "result.json.part"
    assert target.read_text() == "{}" and not part.exists()


def test_a_failed_write_leaves_neither_file_nor_part(tmp_path):
    target = tmp_path / "result.tif"
    target.write_text("old")
    with pytest.raises(RuntimeError), files.atomic_path(target) as part:
        part.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_a_stale_part_of_a_crash_is_replaced(tmp_path):
    target = tmp_path / "a.txt"
    (tmp_path / "a.txt.part").write_text("stale half file")
    files.write_text(target, "new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_directories_replace_directories(tmp_path):
    target = tmp_path / "cube.zarr"
    (target / "old").mkdir(parents=True)
    with files.atomic_path(target, durable=True) as part:
        (part / "new").mkdir(parents=True)
        (part / "new" / "0.0").write_bytes(b"x")
    assert [p.name for p in target.iterdir()] == ["new"]


def test_unique_parts_for_concurrent_writers(tmp_path):
    target = tmp_path / "tile"
    one = files.part_path(target, unique=True)
    assert str(os.getpid()) in one.name and one != files.part_path(target)


def test_durable_publish_syncs_the_data_and_the_directory(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real(fd))
    files.write_text(tmp_path / "x.json", "1", durable=True)
    assert synced == [str(tmp_path / "x.json.part"), str(tmp_path)]
    synced.clear()
    files.write_text(tmp_path / "y.json", "1")
    assert synced == []
