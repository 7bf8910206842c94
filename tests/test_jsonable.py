"""The one JSON conversion of results (terramind_openeo/jsonable.py), used by the API and by save_result."""

from __future__ import annotations

import datetime
import json
import math

import dask.array as da
import numpy as np
import xarray as xr

from terramind_openeo.jsonable import to_jsonable


def test_arrays_scalars_and_containers():
    cube = xr.DataArray(np.array([[1.5, np.nan], [np.inf, 2.0]], dtype=np.float32), dims=("y", "x"))
    assert to_jsonable(cube, nan_as_null=True) == [[1.5, None], [None, 2.0]]
    kept = to_jsonable(cube)
    assert math.isnan(kept[0][1]) and kept[1][0] == math.inf  # the API's answers keep NaN/Infinity tokens
    assert to_jsonable({1: np.int64(3), "b": (np.bool_(True), None)}) == {"1": 3, "b": [True, None]}
    assert to_jsonable(da.from_array(np.arange(3))) == [0, 1, 2]
    assert to_jsonable(np.float64(2.5)) == 2.5 and type(to_jsonable(np.int32(2))) is int


def test_dates_and_other_objects():
    when = datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC)
    assert to_jsonable(when) == "2024-05-01T12:00:00+00:00"

    class Wrapped:  # the date types of openeo-pg-parser-networkx hold the value in .root
        root = datetime.date(2024, 5, 1)

    assert to_jsonable(Wrapped()) == "2024-05-01"
    assert to_jsonable(object.__new__(type("Thing", (), {"__str__": lambda self: "thing"}))) == "thing"
    json.dumps(to_jsonable({"a": [when, np.arange(2)]}))


def test_the_api_and_save_result_use_it():
    from terramind_openeo.backend import engine, web
    from terramind_openeo.processes import writers

    assert engine.to_jsonable is to_jsonable and writers.to_jsonable is to_jsonable
    assert json.loads(web.NanJSONResponse({"v": np.float32(1.5)}).body) == {"v": 1.5}
