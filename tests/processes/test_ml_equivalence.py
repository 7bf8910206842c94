"""Our fit/predict processes give what scikit-learn called directly on the same arrays gives, and the
chunked map equals predicting the whole array at once (the issue's equivalence criteria)."""

from __future__ import annotations

import numpy as np
import pytest
from ml_helpers import (
    CLASSES,
    D,
    H,
    W,
    catalog_for,
    class_map,
    embedding_cube,
    fit_graph,
    labelled_points,
    predict_reducer,
    write_collection,
)
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from terramind_openeo.processes import execute_process_graph


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("emb")
    cube = embedding_cube(chunk=None)
    return cube.values, catalog_for(tmp, write_collection(tmp, cube))


def _training(values, per_class=6, seed=1):
    points, rows, cols = labelled_points(per_class, seed=seed)
    return points, values[:, rows, cols].T, class_map()[rows, cols]


CASES = [
    ("fit_class_random_forest", {"num_trees": 25, "seed": 7},
     lambda: RandomForestClassifier(n_estimators=25, max_features="sqrt", random_state=7)),
    ("fit_class_random_forest", {"num_trees": 10, "seed": 0, "max_variables": 5},
     lambda: RandomForestClassifier(n_estimators=10, max_features=5, random_state=0)),
    ("fit_class_random_forest", {"num_trees": 8, "seed": 3, "max_variables": "all"},
     lambda: RandomForestClassifier(n_estimators=8, max_features=None, random_state=3)),
    ("terramind_fit_class_knn", {"k": 3, "metric": "cosine", "weights": "distance"},
     lambda: KNeighborsClassifier(3, metric="cosine", weights="distance", algorithm="brute")),
    ("terramind_fit_class_knn", {},
     lambda: KNeighborsClassifier(5, algorithm="brute")),
    ("terramind_fit_class_logistic", {"c": 0.5},
     lambda: LogisticRegression(C=0.5, max_iter=1000)),
]


@pytest.mark.parametrize("fit, args, make", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_map_equals_scikit_learn_on_the_same_arrays(setup, fit, args, make):
    values, catalog = setup
    points, x, y = _training(values)
    result = execute_process_graph(fit_graph(points, fit, **args), None, catalog=catalog, chunk_size=16).value
    assert result.dims == ("t", "y", "x") and result.shape == (1, H, W)
    est = make().fit(x, y)
    expected = est.predict(values.reshape(D, -1).T).reshape(H, W)
    np.testing.assert_array_equal(result.isel(t=0).values, expected)
    assert len(np.unique(expected)) > 1


def test_probabilities_equal_scikit_learn(setup):
    values, catalog = setup
    points, x, y = _training(values)
    graph = fit_graph(points, "fit_class_random_forest", num_trees=12, seed=5)
    graph["process_graph"]["pred"] = {"process_id": "apply_dimension", "arguments": {
        "data": {"from_node": "load"}, "dimension": "bands", "process": predict_reducer("predict_probabilities"),
        "context": {"from_node": "fit"}}, "result": True}
    result = execute_process_graph(graph, None, catalog=catalog, chunk_size=16).value
    assert [str(b) for b in result.bands.values] == [str(c) for c in range(CLASSES)]
    est = RandomForestClassifier(n_estimators=12, max_features="sqrt", random_state=5).fit(x, y)
    expected = est.predict_proba(values.reshape(D, -1).T).T.reshape(CLASSES, H, W).astype(np.float32)
    np.testing.assert_array_equal(result.isel(t=0).values, expected)


def test_regression_forest_equals_scikit_learn(setup):
    values, catalog = setup
    points, rows, cols = labelled_points(6)
    target = 1.5 * class_map()[rows, cols] + np.linspace(0, 1, rows.size)
    for feature, value in zip(points["features"], target):
        feature["properties"]["target"] = float(value)
    graph = fit_graph(points, "fit_regr_random_forest", num_trees=15, seed=2, max_variables="onethird")
    result = execute_process_graph(graph, None, catalog=catalog, chunk_size=16).value
    est = RandomForestRegressor(n_estimators=15, max_features=D // 3, random_state=2)
    est.fit(values[:, rows, cols].T, target)
    expected = est.predict(values.reshape(D, -1).T).reshape(H, W).astype(np.float32)
    np.testing.assert_array_equal(result.isel(t=0).values, expected)


def test_chunked_prediction_equals_the_whole_array_at_once(setup):
    from terramind_openeo.processes.ml.fit import fit_class_random_forest
    from terramind_openeo.processes.ml.predict import predict_cube
    from terramind_openeo.processes.zonal import aggregate_spatial

    values, _ = setup
    points, _, _ = labelled_points(6)
    cube = embedding_cube(chunk=16)
    predictors = aggregate_spatial(cube, points, lambda data, axis, **_: np.nanmean(data, axis=axis))
    model = fit_class_random_forest(predictors, points, num_trees=20, seed=4)
    lazy = predict_cube(cube, model, "proba", keep_bands=True)
    assert lazy.data.npartitions == 9  # 3 x 3 chunks of 16 px, one task each
    whole = model.predict_proba(values.reshape(D, -1).T).T.reshape(CLASSES, H, W).astype(np.float32)
    np.testing.assert_array_equal(lazy.values, whole)
    classes = predict_cube(cube, model, "value", keep_bands=False)
    np.testing.assert_array_equal(classes.values, model.predict_codes(values.reshape(D, -1).T).reshape(H, W))
    assert classes.dtype == np.uint8 and classes.attrs["nodata"] == 255


def test_nodata_pixels_predict_nodata_and_text_labels_map_to_codes(setup):
    from terramind_openeo.processes.ml.fit import terramind_fit_class_knn
    from terramind_openeo.processes.ml.predict import predict_cube
    from terramind_openeo.processes.zonal import aggregate_spatial

    names = ["water", "trees", "crops", "built"]
    points, _, _ = labelled_points(5, names=names)
    cube = embedding_cube(chunk=16)
    predictors = aggregate_spatial(cube, points, lambda data, axis, **_: np.nanmean(data, axis=axis))
    model = terramind_fit_class_knn(predictors, points, k=1)
    assert model.classes == tuple(sorted(names))
    holes = cube.where(~((cube.x == cube.x[5]) & (cube.y == cube.y[7])))  # one pixel of NaN in every band
    out = predict_cube(holes, model, "value", keep_bands=False).values
    assert out[7, 5] == 255 and (np.delete(out.ravel(), 7 * W + 5) < 4).all()
    assert model.class_names() == {0: "built", 1: "crops", 2: "trees", 3: "water"}
