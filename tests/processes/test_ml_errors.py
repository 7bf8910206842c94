"""Bad input to the vector and machine-learning processes: each a clear openEO error naming the culprit,
raised before any pixel is read (a "poisoned" cube fails the test if it is computed)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from ml_helpers import catalog_for, embedding_cube, fit_graph, labelled_points, mean_reducer, write_collection

from terramind_openeo.processes import execute_process_graph
from terramind_openeo.processes.errors import OpenEOError, ProcessParameterInvalid


def poisoned(cube):
    def boom(block):
        raise AssertionError("pixels were read before the input was checked")

    return cube.copy(data=cube.data.map_blocks(boom, dtype=cube.dtype))


def mean(data, axis, **_):
    return np.nanmean(data, axis=axis)


@pytest.fixture(scope="module")
def model():
    from terramind_openeo.processes.ml.fit import fit_class_random_forest
    from terramind_openeo.processes.zonal import aggregate_spatial

    points, _, _ = labelled_points(4)
    cube = embedding_cube()
    return fit_class_random_forest(aggregate_spatial(cube, points, mean), points, num_trees=5, seed=0)


def _predictors(points):
    from terramind_openeo.processes.zonal import aggregate_spatial

    return aggregate_spatial(poisoned(embedding_cube()), points, mean)


def test_missing_label_named_before_the_predictors_are_computed():
    from terramind_openeo.processes.ml.fit import fit_class_random_forest

    points, _, _ = labelled_points(3)
    del points["features"][4]["properties"]["target"]
    with pytest.raises(ProcessParameterInvalid, match=r"feature 4 has no label") as err:
        fit_class_random_forest(_predictors(points), points)
    assert err.value.argument == "target"


def test_labels_of_one_class():
    from terramind_openeo.processes.ml.fit import terramind_fit_class_logistic

    points, _, _ = labelled_points(3)
    for f in points["features"]:
        f["properties"]["target"] = 2
    with pytest.raises(ProcessParameterInvalid, match=r"all 12 labels are of one class \(2\)"):
        terramind_fit_class_logistic(_predictors(points), points)


def test_no_label_property_to_pick():
    from terramind_openeo.processes.ml.fit import fit_class_random_forest

    points, _, _ = labelled_points(2, label="cls")  # features carry 'cls' and 'id': which is the label?
    with pytest.raises(ProcessParameterInvalid, match=r"cannot tell which property is the label: name it 'target'"):
        fit_class_random_forest(_predictors(points), points)


def test_target_geometries_must_match_the_predictors():
    from terramind_openeo.processes.ml.fit import fit_class_random_forest

    points, _, _ = labelled_points(3)
    swapped = copy.deepcopy(points)
    swapped["features"][0], swapped["features"][5] = swapped["features"][5], swapped["features"][0]
    with pytest.raises(ProcessParameterInvalid, match=r"feature 0 is not the predictors' geometry 0"):
        fit_class_random_forest(_predictors(points), swapped)
    fewer = {"type": "FeatureCollection", "features": points["features"][:-1]}
    with pytest.raises(ProcessParameterInvalid, match=r"has 11 geometries, the predictors 12"):
        fit_class_random_forest(_predictors(points), fewer)


def test_point_outside_the_cube_names_the_feature():
    from terramind_openeo.processes.zonal import aggregate_spatial

    points, _, _ = labelled_points(2)
    points["features"][3]["geometry"]["coordinates"] = [9.5, 45.0]  # far west of the cube
    with pytest.raises(ProcessParameterInvalid, match=r"feature 3: Point \(9\.5.*covers no pixel of the data cube"):
        aggregate_spatial(poisoned(embedding_cube()), points, mean)


def test_model_whose_bands_the_cube_lacks(model):
    from terramind_openeo.processes.ml.predict import predict_cube

    other = embedding_cube().assign_coords(bands=[f"B{i:02d}" for i in range(16)])
    with pytest.raises(ProcessParameterInvalid, match=r"reads bands emb_000, emb_001.*that the data cube lacks") as err:
        predict_cube(poisoned(other), model, "value", keep_bands=False)
    assert err.value.argument == "model"
    fewer = embedding_cube().isel(bands=slice(0, 12))
    with pytest.raises(ProcessParameterInvalid, match=r"emb_012, emb_013, emb_014, emb_015 that the data cube lacks"):
        predict_cube(poisoned(fewer), model, "value", keep_bands=False)


def test_hyper_parameters_checked(model):
    from terramind_openeo.processes.ml.fit import fit_class_random_forest, terramind_fit_class_knn

    points, _, _ = labelled_points(2)
    with pytest.raises(ProcessParameterInvalid, match=r"must be in 1..2000, got 0") as err:
        fit_class_random_forest(_predictors(points), points, num_trees=0)
    assert err.value.argument == "num_trees"
    with pytest.raises(ProcessParameterInvalid, match=r"'half' is not one of all, log2, onethird, sqrt"):
        fit_class_random_forest(aggregate(points), points, max_variables="half")
    with pytest.raises(ProcessParameterInvalid, match=r"17 exceeds the 16 predictor bands"):
        fit_class_random_forest(aggregate(points), points, max_variables=17)
    with pytest.raises(ProcessParameterInvalid, match=r"k = 9 exceeds the 8 training samples"):
        terramind_fit_class_knn(aggregate(points), points, k=9)


def aggregate(points):
    from terramind_openeo.processes.zonal import aggregate_spatial

    return aggregate_spatial(embedding_cube(), points, mean)


@pytest.mark.parametrize("geojson, message", [
    ({"type": "FeatureCollection", "features": []}, "the GeoJSON has no features"),
    ({"type": "GeometryCollection", "geometries": []}, "GeoJSON type 'GeometryCollection' is not supported"),
    ({"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": None, "properties": {}}]},
     "feature 0 has no geometry"),
    ({"type": "Point", "coordinates": [float("nan"), 1.0]}, "non-finite"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}, "invalid Polygon"),
    ({"type": "Point", "coordinates": "here"}, "malformed Point coordinates"),
    ({"type": "Point", "coordinates": [1, 2], "crs": {"type": "name", "properties": {"name": "EPSG:nope"}}},
     "is not a coordinate reference system"),
])
def test_bad_geojson(geojson, message):
    from terramind_openeo.processes.vector import load_geojson

    with pytest.raises(ProcessParameterInvalid, match=message) as err:
        load_geojson(geojson)
    assert err.value.argument == "data"


def test_errors_through_the_graph_name_node_and_argument(tmp_path):
    catalog = catalog_for(tmp_path, write_collection(tmp_path, embedding_cube(chunk=None)))
    points, _, _ = labelled_points(2)
    for f in points["features"]:
        f["properties"]["target"] = 1
    with pytest.raises(OpenEOError) as err:
        execute_process_graph(fit_graph(points), None, catalog=catalog)
    assert err.value.code == "ProcessParameterInvalid" and err.value.status == 400
    assert "Node 'fit', argument 'target'" in err.value.message and "one class" in err.value.message
    graph = fit_graph(labelled_points(2)[0])
    graph["process_graph"]["pred"]["arguments"]["reducer"]["process_graph"]["p"]["process_id"] = "predict_probabilities"
    with pytest.raises(OpenEOError, match=r"Node 'pred', argument 'reducer': predict_probabilities returns several"):
        execute_process_graph(graph, None, catalog=catalog)
    bad_reducer = fit_graph(labelled_points(2)[0])
    bad_reducer["process_graph"]["agg"]["arguments"]["target_dimension"] = "result"
    with pytest.raises(OpenEOError, match=r"Node 'agg', argument 'target_dimension'"):
        execute_process_graph(bad_reducer, None, catalog=catalog)
    assert mean_reducer()  # the helper graph stays the one the other tests use
