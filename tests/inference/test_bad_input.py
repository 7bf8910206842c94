"""Bad cubes are refused with an error naming the culprit, before any model work starts."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from inference_helpers import ExplodingModel

from terramind_openeo.inference import embed_cube, generate_cube
from terramind_openeo.inference.errors import (
    DimensionError,
    DuplicateBandError,
    InputRangeError,
    MissingBandError,
    NoValidDataError,
    UnknownContextKeyError,
)

RUNS = [embed_cube, generate_cube]


@pytest.fixture(params=RUNS, ids=["embed", "generate"])
def run(request):
    def call(cube, context=None):
        return request.param(cube, context, model=ExplodingModel())
    return call


def test_missing_dimension(run, synthetic_cube):
    with pytest.raises(DimensionError, match="'x'.*missing"):
        run(synthetic_cube.isel(x=0))


def test_extra_dimension_is_named_with_a_hint(run, synthetic_cube):
    with pytest.raises(DimensionError, match="'band'.*rename it to 'bands'"):
        run(synthetic_cube.rename(bands="band"))
    with pytest.raises(DimensionError, match="'level'"):
        run(synthetic_cube.expand_dims(level=[1]))


def test_too_small(run, synthetic_cube):
    with pytest.raises(DimensionError, match="'y'.*15 pixels.*at least 16"):
        run(synthetic_cube.isel(y=slice(0, 15)))


def test_unlabelled_bands(run, synthetic_cube):
    with pytest.raises(DimensionError, match="'bands'.*no labels"):
        run(synthetic_cube.drop_vars("bands"))


def test_all_nan(run, synthetic_cube):
    with pytest.raises(NoValidDataError, match="every pixel"):
        run(synthetic_cube * np.nan)


def test_all_declared_nodata(run, synthetic_cube):
    with pytest.raises(NoValidDataError):
        run(xr.zeros_like(synthetic_cube), {"nodata": 0})


def test_uint16_wraparound(run, synthetic_cube):
    cube = synthetic_cube.astype(np.uint16)
    cube[0, 3, 5, 5] = 65036  # what 500 - 1000 gives in uint16: the offset subtracted in the wrong type
    with pytest.raises(InputRangeError, match="band B04.*65036.*wrap-around"):
        run(cube)


def test_missing_and_duplicate_bands(run, synthetic_cube):
    with pytest.raises(MissingBandError, match="B8A"):
        run(synthetic_cube.drop_sel(bands="B8A"))
    dup = synthetic_cube.assign_coords(bands=["B01"] + list(synthetic_cube.bands.values[1:-1]) + ["B01"])
    with pytest.raises(DuplicateBandError, match="B01"):
        run(dup)


def test_unknown_context_key(run, synthetic_cube):
    with pytest.raises(UnknownContextKeyError, match="valid keys are"):
        run(synthetic_cube, {"tile": 224})


def test_not_a_dataarray(run, synthetic_cube):
    with pytest.raises(DimensionError, match="DataArray"):
        run(synthetic_cube.to_dataset(dim="bands"))
