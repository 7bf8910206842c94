"""Shared fixtures: where the real sample data lives (read in place, never copied), settings overrides."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from terramind_openeo import config

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = config.settings().shared_data


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA} (set TERRAMIND_OPENEO_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def terramind_examples(shared_data: Path) -> Path:
    """TerraMesh sample tiles, one folder per modality (S2L2A, S2L1C, S2RGB, S1RTC, DEM, LULC, NDVI)."""
    path = shared_data / "terramind-examples"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture
def configured() -> Iterator[Callable[..., Any]]:
    """``configured(name=value, ...)``: settings changed (``config.override``) until the test ends; later
    calls stack on earlier ones."""
    with contextlib.ExitStack() as stack:
        yield lambda **changes: stack.enter_context(config.override(**changes))


@pytest.fixture
def no_cyclic_gc():
    """Python's cyclic garbage collector off for the test: what stays alive is held by a reference cycle."""
    import gc

    gc.collect()
    gc.disable()
    yield
    gc.enable()
