"""``aggregate_temporal`` and ``ndvi`` where openeo-processes-dask's differ from the spec.

``aggregate_temporal`` with the openEO semantics (intervals include their start, exclude their end).

openeo-processes-dask bins with ``groupby_bins``, whose bins are closed on the right: a date equal to an
interval's end lands in it and one equal to its start does not. Here each interval selects
``start <= t < end`` and the reducer runs on that selection (once per interval, a fresh evaluation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from terramind_openeo.processes.errors import ProcessParameterInvalid
from terramind_openeo.processes.extents import parse_temporal_extent, select_times


def aggregate_temporal(data: xr.DataArray, intervals: list, reducer: Callable, labels: list | None = None,
                       dimension: str | None = None, context: Any = None) -> xr.DataArray:
    dim = dimension or "t"
    if dim not in data.dims:
        raise ProcessParameterInvalid(f"dimension '{dim}' does not exist (dims: {list(data.dims)})",
                                      code="DimensionNotAvailable", argument="dimension")
    if not isinstance(intervals, list) or not intervals:
        raise ProcessParameterInvalid("must be a non-empty list of [start, end] intervals", argument="intervals")
    if labels and len(labels) != len(intervals):
        raise ProcessParameterInvalid(f"{len(labels)} labels for {len(intervals)} intervals",
                                      code="DistinctDimensionLabelsRequired", argument="labels")
    times = data[dim].values
    pieces = []
    for i, interval in enumerate(intervals):
        span = parse_temporal_extent(interval, argument="intervals")
        selected = data.isel({dim: np.flatnonzero(select_times(times, span))})
        if selected.sizes[dim]:
            reduced = selected.reduce(reducer, dim=dim, keep_attrs=True, positional_parameters={"data": 0},
                                      named_parameters={"context": context})
        else:
            reduced = xr.full_like(data.isel({dim: 0}, drop=True), np.nan, dtype="float64")
        start = span[0] if span is not None else None
        label = labels[i] if labels else pd.Timestamp(start).to_datetime64() if start is not None else str(i)
        pieces.append(reduced.expand_dims({dim: [label]}))
    out = xr.concat(pieces, dim=dim)
    return out.transpose(*data.dims)


def ndvi(data: xr.DataArray, nir: str = "nir", red: str = "red", target_band: str | None = None) -> xr.DataArray:
    """``ndvi`` resolving ``nir``/``red`` by band name or by the collection's common names."""
    from openeo_processes_dask.process_implementations.cubes.indices import ndvi as _ndvi

    names = [str(b) for b in data["bands"].values] if "bands" in data.dims else []
    by_common = {c: b for b, c in data.attrs.get("common_names", {}).items()}
    resolved = []
    for arg, value in (("nir", nir), ("red", red)):
        band = value if value in names else by_common.get(value)
        if band is None:
            raise ProcessParameterInvalid(f"no band '{value}' (bands: {names})",
                                          code="NirBandAmbiguous" if arg == "nir" else "RedBandAmbiguous",
                                          argument=arg)
        resolved.append(band)
    out = _ndvi(data, nir=resolved[0], red=resolved[1], target_band=target_band)
    out.attrs = {k: v for k, v in data.attrs.items() if k != "common_names"}
    return out
