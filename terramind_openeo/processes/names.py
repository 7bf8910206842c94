"""Names users give to things written on disk (``save_result``'s ``filename_prefix``), and the one check
that a path built from such a name stays inside its directory.

A name is one path component of safe characters: it cannot name a parent (``..``), an absolute path, a
hidden file, a sub-directory or another drive, whatever the platform or the writer does with it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from terramind_openeo.processes.errors import ProcessParameterInvalid

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
"""Letters, digits, ``.``, ``_`` and ``-``; starts with a letter or digit; at most 100 characters."""


def check_name(value: Any, argument: str = "filename_prefix") -> str:
    """``value`` when it is a safe file name (see :data:`SAFE_NAME`), else an error naming ``argument``."""
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value):
        shown = repr(value)[:80]
        raise ProcessParameterInvalid(
            f"{shown} is not a valid name: use 1 to 100 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (no paths)", argument=argument)
    return value


def inside(root: Path, name: str, argument: str = "filename_prefix") -> Path:
    """``root / name`` resolved, checked to lie directly inside ``root`` (also through symbolic links)."""
    check_name(name, argument)
    base = Path(root).resolve()
    path = (base / name).resolve()
    if path.parent != base:
        raise ProcessParameterInvalid(f"{name!r} does not name a file inside the output directory",
                                      argument=argument)
    return path
