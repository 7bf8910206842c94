"""Fixtures of the inference tests (helpers live in inference_helpers.py)."""

from __future__ import annotations

import pytest
import xarray as xr
from inference_helpers import make_synthetic_cube


@pytest.fixture
def synthetic_cube() -> xr.DataArray:
    """A 12-band S2L2A-like (t, bands, y, x) cube, 200 x 184 px, UTM 32N, 10 m, y descending."""
    return make_synthetic_cube()
