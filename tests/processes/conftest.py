"""Fixtures of the process-layer tests: a local catalog over ../shared/data (read in place)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from processes_helpers import catalog_dict


@pytest.fixture(scope="session")
def catalog_file(shared_data: Path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "catalog.json"
    path.write_text(json.dumps(catalog_dict(shared_data)))
    return path


@pytest.fixture(scope="session")
def catalog(catalog_file: Path):
    from terramind_openeo.processes import Catalog

    return Catalog.from_file(catalog_file)


