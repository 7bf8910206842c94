"""Training data for the ``fit_*`` processes: predictors from a vector cube, labels from the target.

The predictors are a vector cube from ``aggregate_spatial`` (``geometry`` x ``bands``, or another feature
dimension; a ``t`` dimension of one date is dropped). The target gives one label per geometry, in the same
order: a vector cube (``load_geojson(..., properties=["label"])``), GeoJSON whose features carry the label
(property ``target``, else the one property every feature has, as the openEO Python client sends it), or
the predictors cube itself when its features carried the label through ``aggregate_spatial``.

Labels are checked before the predictors are computed (the predictors are where the heavy work is:
embeddings at the labelled points): missing labels, a single class, a different number of geometries or
geometries that differ from the predictors' are errors naming the feature.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from terramind_openeo.processes import context as _ctx
from terramind_openeo.processes.errors import ProcessParameterInvalid
from terramind_openeo.processes.vector import Features, features_of

logger = logging.getLogger(__name__)

LABEL_PROPERTY = "target"
"""The property holding the label when features carry several (the openEO client's convention)."""
MAX_SAMPLES = 200_000


@dataclass(frozen=True)
class TrainingData:
    x: np.ndarray
    """Predictors ``[n, features]`` (rows with no-data dropped)."""
    labels: list
    """One label per row of ``x``."""
    bands: tuple[str, ...]
    dropped: int
    """Rows left out because a predictor was no-data there."""


def _feature_dim(predictors: xr.DataArray) -> tuple[xr.DataArray, str]:
    if not isinstance(predictors, xr.DataArray) or "geometry" not in predictors.dims:
        raise ProcessParameterInvalid("must be a vector data cube with a geometry dimension (the result of "
                                      "aggregate_spatial)", argument="predictors")
    if "t" in predictors.dims:
        if predictors.sizes["t"] != 1:
            raise ProcessParameterInvalid(f"has {predictors.sizes['t']} dates: reduce the temporal dimension "
                                          "first (one model per date is not supported)", argument="predictors")
        predictors = predictors.isel(t=0, drop=True)
    other = [d for d in predictors.dims if d != "geometry"]
    if len(other) != 1:
        raise ProcessParameterInvalid(f"needs dimensions (geometry, bands), got {predictors.dims}",
                                      argument="predictors")
    return predictors.transpose("geometry", other[0]), other[0]


def _label_key(props: list[dict]) -> str:
    common = set(props[0]) if props else set()
    for p in props[1:]:
        common &= set(p)
    if LABEL_PROPERTY in common or any(LABEL_PROPERTY in p for p in props):
        return LABEL_PROPERTY
    if len(common) == 1:
        return next(iter(common))
    keys = sorted({k for p in props for k in p})
    raise ProcessParameterInvalid(f"cannot tell which property is the label: name it '{LABEL_PROPERTY}' (the "
                                  f"features have {keys or 'no properties'})", argument="target")


def _labels_from_features(features: Features) -> list:
    key = _label_key(features.properties)
    return [p.get(key) for p in features.properties]


def target_labels(target: Any, predictors: xr.DataArray) -> tuple[list, Features | None]:
    """One label per geometry (None where missing) and the target's geometries (None: not known)."""
    if isinstance(target, xr.DataArray) and "geometry" in target.dims:
        others = [d for d in target.dims if d != "geometry"]
        if target is predictors or (others and target.sizes[others[0]] > 1 and "properties" not in others):
            feats = features_of(target, "target")  # the label carried along as a coordinate
            return _labels_from_features(feats), feats
        if len(others) > 1 or (others and target.sizes[others[0]] != 1):
            labels = [str(v) for v in target[others[0]].values] if others else []
            if LABEL_PROPERTY not in labels:
                raise ProcessParameterInvalid(f"has several values per geometry ({others[0]}: {labels}); load "
                                              f"one property (or name it '{LABEL_PROPERTY}')", argument="target")
            target = target.isel({others[0]: labels.index(LABEL_PROPERTY)})
        labels = [_plain(v) for v in np.asarray(target.values).reshape(-1)]
        feats = features_of(target, "target")
        if not others and all(v is None for v in labels):  # load_geojson without properties: the coordinates
            return _labels_from_features(feats), feats
        return labels, feats
    if isinstance(target, dict):
        feats = features_of(target, "target")
        return _labels_from_features(feats), feats
    raise ProcessParameterInvalid(f"must be a vector data cube or GeoJSON with one label per geometry, got "
                                  f"{type(target).__name__}", argument="target")


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v


def _check_geometries(target: Features | None, predictors: xr.DataArray) -> None:
    """Same geometries in the same order (within a millimetre-scale tolerance after reprojection)."""
    if target is None:
        return
    import shapely

    source = features_of(predictors, "predictors")
    if len(target) != len(source):
        raise ProcessParameterInvalid(f"has {len(target)} geometries, the predictors {len(source)}: use the "
                                      "same features for both", argument="target")
    mine = target.geometries
    if target.crs != source.crs:
        from pyproj import Transformer

        t = Transformer.from_crs(target.crs, source.crs, always_xy=True)
        mine = [shapely.transform(g, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1]))) for g in mine]
    tolerance = 1e-8 if source.crs.is_geographic else 1e-3
    same = shapely.equals_exact(np.asarray(mine, dtype=object), np.asarray(source.geometries, dtype=object),
                                tolerance=tolerance)
    if not np.all(same):
        first = int(np.flatnonzero(~same)[0])
        raise ProcessParameterInvalid(f"feature {first} is not the predictors' geometry {first}: the target must "
                                      "list the same features in the same order", argument="target")


def check_labels(labels: list, classification: bool) -> list:
    """Labels checked (none missing; numbers or strings; two classes or more to classify)."""
    missing = [i for i, v in enumerate(labels) if v is None]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ProcessParameterInvalid(f"feature {missing[0]}{more} has no label", argument="target")
    if len(labels) > MAX_SAMPLES:
        raise ProcessParameterInvalid(f"{len(labels)} training samples exceed the limit of {MAX_SAMPLES}",
                                      argument="target")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in labels)
    if classification:
        if not numbers and not all(isinstance(v, str) for v in labels):
            raise ProcessParameterInvalid("labels must be all numbers or all strings", argument="target")
        if numbers:
            labels = [int(v) if float(v).is_integer() else float(v) for v in labels]
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise ProcessParameterInvalid(f"all {len(labels)} labels are of one class ({classes[0]!r}): a "
                                          "classifier needs two classes or more", argument="target")
    elif not numbers or not all(math.isfinite(v) for v in labels):
        raise ProcessParameterInvalid("regression needs a finite number per feature", argument="target")
    return labels


def compute(array: Any) -> np.ndarray:
    """A lazy array computed now, on the run's Dask scheduler."""
    import dask

    client = _ctx.current().scheduler
    if client is None:
        return np.asarray(dask.compute(array)[0])
    return np.asarray(client.compute(array).result())


def training_data(predictors: Any, target: Any, classification: bool) -> TrainingData:
    """Labels checked first (cheap), then the predictors computed at the labelled geometries."""
    cube, feature_dim = _feature_dim(predictors)
    labels, target_features = target_labels(target, predictors)
    _check_geometries(target_features, cube)
    labels = check_labels(labels, classification)
    if len(labels) != cube.sizes["geometry"]:
        raise ProcessParameterInvalid(f"has {len(labels)} labels for {cube.sizes['geometry']} geometries",
                                      argument="target")
    bands = tuple(str(b) for b in cube[feature_dim].values) if feature_dim in cube.coords else \
        tuple(f"feature_{i}" for i in range(cube.sizes[feature_dim]))
    x = compute(cube.data)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    keep = np.isfinite(x).all(axis=1)
    dropped = int((~keep).sum())
    if dropped:
        _ctx.current().logger.warning("%d of %d training geometries have no data in some predictor band and are "
                                      "left out", dropped, len(labels))
    x = x[keep]
    labels = [v for v, k in zip(labels, keep) if k]
    if classification and len(set(labels)) < 2:
        raise ProcessParameterInvalid(f"after leaving out {dropped} geometries without data, the labels left are "
                                      f"of fewer than two classes", argument="predictors")
    if not labels:
        raise ProcessParameterInvalid("no geometry has data in every predictor band", argument="predictors")
    return TrainingData(x, labels, bands, dropped)
