"""Files that appear whole or not at all: write ``<name>.part``, then rename it onto ``<name>``.

A reader (a user downloading a result, a resumed run, a worker taking a border tile) never sees half a file:
the rename is atomic on POSIX file systems. ``durable=True`` (every result the package publishes) also
flushes the data and then the directory entry to disk, so a machine that loses power right after the rename
does not leave a complete-looking name on an empty file. Files and directories (a Zarr store) alike.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path


def part_path(path: Path, unique: bool = False) -> Path:
    """The temporary name beside ``path``; ``unique``: one per process and thread, for files that several
    writers may produce at once (only one rename wins, each with a complete file)."""
    if unique:
        return path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    return path.with_name(path.name + ".part")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for root, _, names in os.walk(path):
            for name in names:
                _fsync(Path(root) / name)
            _fsync(Path(root))
    else:
        _fsync(path)


def remove(path: Path) -> None:
    """Delete a file or a directory tree, if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def publish(part: Path, path: Path, durable: bool = False) -> Path:
    """Rename the complete ``part`` onto ``path`` (a directory there is replaced); ``durable``: its data and
    the rename are on disk when this returns."""
    part, path = Path(part), Path(path)
    if durable:
        _fsync_tree(part)
    if part.is_dir() and path.is_dir():
        shutil.rmtree(path)  # os.replace cannot replace a non-empty directory
    os.replace(part, path)
    if durable:
        _fsync(path.parent)
    return path


@contextlib.contextmanager
def atomic_path(path: Path, durable: bool = False, unique: bool = False) -> Iterator[Path]:
    """The temporary path to write ``path``'s content to; renamed onto ``path`` when the block ends normally,
    deleted when it raises (a stale one from an earlier crash is deleted first)."""
    part = part_path(Path(path), unique)
    remove(part)
    try:
        yield part
    except BaseException:
        remove(part)
        raise
    publish(part, Path(path), durable)


def write_bytes(path: Path, data: bytes, durable: bool = False) -> Path:
    """``data`` as the whole content of ``path``, atomically."""
    with atomic_path(path, durable) as part:
        part.write_bytes(data)
    return Path(path)


def write_text(path: Path, text: str, durable: bool = False) -> Path:
    """``text`` (UTF-8) as the whole content of ``path``, atomically."""
    return write_bytes(path, text.encode("utf-8"), durable)
