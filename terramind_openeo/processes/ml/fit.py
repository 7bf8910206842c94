"""``fit_class_random_forest``, ``fit_regr_random_forest`` (openEO 1.2) and our ``terramind_fit_class_knn``,
``terramind_fit_class_logistic``: scikit-learn estimators fitted on the predictors at labelled geometries.

Each estimator is exactly the scikit-learn one with the hyper-parameters named here, fitted on the class
codes 0..K-1 of the sorted labels (scikit-learn orders classes the same way), so its predictions equal
those of scikit-learn called directly on the same arrays with the same seed. ``n_jobs=1``: a forest's
result does not depend on it, and prediction runs in parallel over chunks instead.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from terramind_openeo.processes import context as _ctx
from terramind_openeo.processes.errors import ProcessParameterInvalid
from terramind_openeo.processes.ml.model import MLModel
from terramind_openeo.processes.ml.training import TrainingData, training_data

logger = logging.getLogger(__name__)

MAX_TREES = 2000
MAX_VARIABLES = ("all", "log2", "onethird", "sqrt")


def _int(value: Any, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
        raise ProcessParameterInvalid(f"must be an integer, got {value!r}", argument=name)
    value = int(value)
    if value < low or (high is not None and value > high):
        raise ProcessParameterInvalid(f"must be in {low}..{high if high is not None else 'inf'}, got {value}",
                                      argument=name)
    return value


def max_features(max_variables: Any, n_features: int) -> int | str | None:
    """openEO ``max_variables`` as scikit-learn's ``max_features``."""
    if isinstance(max_variables, str):
        if max_variables not in MAX_VARIABLES:
            raise ProcessParameterInvalid(f"{max_variables!r} is not one of {', '.join(MAX_VARIABLES)} or an integer",
                                          argument="max_variables")
        return {"all": None, "log2": "log2", "sqrt": "sqrt"}.get(max_variables, max(1, n_features // 3))
    value = _int(max_variables, "max_variables", 1)
    if value > n_features:
        raise ProcessParameterInvalid(f"{value} exceeds the {n_features} predictor bands", argument="max_variables")
    return value


def _seed(seed: Any) -> int | None:
    return None if seed is None else _int(seed, "seed", 0, 2**32 - 1)


def _classes(labels: list) -> tuple[tuple, np.ndarray]:
    classes = tuple(sorted(set(labels)))
    codes = np.searchsorted(np.asarray(classes, dtype=object if isinstance(classes[0], str) else None), labels)
    return classes, codes.astype(np.int64)


def _training_facts(data: TrainingData, classes: tuple | None, codes: np.ndarray | None) -> dict:
    facts: dict[str, Any] = {"samples": int(data.x.shape[0]), "left_out_without_data": data.dropped}
    if classes is not None and codes is not None:
        facts["samples_per_class"] = {str(c): int(n) for c, n in zip(classes, np.bincount(codes, minlength=len(classes)))}
    return facts


def _fit(estimator, x: np.ndarray, y: np.ndarray):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator.fit(x, y)
    for w in caught:  # e.g. a logistic regression that did not converge: the job's log says so
        _ctx.current().logger.warning("%s: %s", type(estimator).__name__, w.message)
    return estimator


def fit_class_random_forest(predictors: Any, target: Any, max_variables: Any = "sqrt", num_trees: int = 100,
                            seed: int | None = None) -> MLModel:
    from sklearn.ensemble import RandomForestClassifier

    trees = _int(num_trees, "num_trees", 1, MAX_TREES)
    seed = _seed(seed)
    data = training_data(predictors, target, classification=True)
    features = max_features(max_variables, data.x.shape[1])
    classes, codes = _classes(data.labels)
    est = _fit(RandomForestClassifier(n_estimators=trees, max_features=features, random_state=seed, n_jobs=1),
               data.x, codes)
    logger.info("fit_class_random_forest: %d trees on %d samples, %d classes", trees, len(codes), len(classes))
    return MLModel("random_forest_classifier", est, data.bands, classes,
                   {"max_variables": max_variables, "num_trees": trees, "seed": seed},
                   _training_facts(data, classes, codes))


def fit_regr_random_forest(predictors: Any, target: Any, max_variables: Any = "onethird", num_trees: int = 100,
                           seed: int | None = None) -> MLModel:
    from sklearn.ensemble import RandomForestRegressor

    trees = _int(num_trees, "num_trees", 1, MAX_TREES)
    seed = _seed(seed)
    data = training_data(predictors, target, classification=False)
    features = max_features(max_variables, data.x.shape[1])
    est = _fit(RandomForestRegressor(n_estimators=trees, max_features=features, random_state=seed, n_jobs=1),
               data.x, np.asarray(data.labels, dtype=np.float64))
    return MLModel("random_forest_regressor", est, data.bands, None,
                   {"max_variables": max_variables, "num_trees": trees, "seed": seed},
                   _training_facts(data, None, None))


def terramind_fit_class_knn(predictors: Any, target: Any, k: int = 5, weights: str = "uniform",
                            metric: str = "euclidean") -> MLModel:
    from sklearn.neighbors import KNeighborsClassifier

    k = _int(k, "k", 1)
    if weights not in ("uniform", "distance"):
        raise ProcessParameterInvalid(f"{weights!r} is not 'uniform' or 'distance'", argument="weights")
    if metric not in ("euclidean", "cosine"):
        raise ProcessParameterInvalid(f"{metric!r} is not 'euclidean' or 'cosine'", argument="metric")
    data = training_data(predictors, target, classification=True)
    if k > data.x.shape[0]:
        raise ProcessParameterInvalid(f"k = {k} exceeds the {data.x.shape[0]} training samples", argument="k")
    classes, codes = _classes(data.labels)
    est = _fit(KNeighborsClassifier(n_neighbors=k, weights=weights, metric=metric, algorithm="brute"), data.x, codes)
    return MLModel("knn_classifier", est, data.bands, classes, {"k": k, "weights": weights, "metric": metric},
                   _training_facts(data, classes, codes))


def terramind_fit_class_logistic(predictors: Any, target: Any, c: float = 1.0, max_iter: int = 1000) -> MLModel:
    from sklearn.linear_model import LogisticRegression

    if isinstance(c, bool) or not isinstance(c, (int, float)) or not np.isfinite(c) or c <= 0:
        raise ProcessParameterInvalid(f"must be a number > 0, got {c!r}", argument="c")
    max_iter = _int(max_iter, "max_iter", 1, 100_000)
    data = training_data(predictors, target, classification=True)
    classes, codes = _classes(data.labels)
    est = _fit(LogisticRegression(C=float(c), max_iter=max_iter), data.x, codes)
    return MLModel("logistic_classifier", est, data.bands, classes, {"c": float(c), "max_iter": max_iter},
                   _training_facts(data, classes, codes))
