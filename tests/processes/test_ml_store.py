"""save_ml_model / load_ml_model: a model saved by one run, loaded by the job id in another, predicts the
same; the STAC item carries the MLM fields; anything that is not the safe format is refused."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import zipfile

import numpy as np
import pytest
from ml_helpers import D, catalog_for, embedding_cube, fit_graph, labelled_points, predict_reducer, write_collection

from terramind_openeo.processes import execute_process_graph
from terramind_openeo.processes.errors import OpenEOError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A finished 'job': the results of fit + save_ml_model; and the catalog over the cube."""
    tmp = tmp_path_factory.mktemp("jobs")
    catalog = catalog_for(tmp, write_collection(tmp, embedding_cube(chunk=None)))
    names = ["water", "trees", "crops", "built"]
    points, _, _ = labelled_points(5, names=names)
    graph = fit_graph(points, "fit_class_random_forest", num_trees=15, seed=11)
    nodes = graph["process_graph"]
    nodes["pred"].pop("result")
    nodes["save"] = {"process_id": "save_ml_model", "arguments": {"data": {"from_node": "fit"}, "name": "lulc_rf"},
                     "result": True}
    results = tmp / "job-1" / "results"
    res = execute_process_graph(graph, results, catalog=catalog)
    expected = execute_process_graph(fit_graph(points, "fit_class_random_forest", num_trees=15, seed=11), None,
                                     catalog=catalog, chunk_size=16).value
    return {"results": results, "files": res.files, "catalog": catalog, "expected": expected, "tmp": tmp}


def predict_with_loaded(catalog, job_id, job_results):
    graph = {"process_graph": {
        "load": {"process_id": "load_collection", "arguments": {"id": "EMB", "spatial_extent": None,
                                                                "temporal_extent": None, "bands": None}},
        "model": {"process_id": "load_ml_model", "arguments": {"id": job_id}},
        "pred": {"process_id": "reduce_dimension", "arguments": {"data": {"from_node": "load"}, "dimension": "bands",
                                                                  "reducer": predict_reducer(),
                                                                  "context": {"from_node": "model"}}, "result": True}}}
    return execute_process_graph(graph, None, catalog=catalog, job_results=job_results, chunk_size=16).value


def test_saved_files_and_mlm_item(saved):
    names = sorted(p.name for p in saved["files"])
    assert names == ["lulc_rf.mlm.json", "lulc_rf.zip"]
    item = json.loads((saved["results"] / "lulc_rf.mlm.json").read_text())
    assert any("/mlm/" in e for e in item["stac_extensions"])
    props = item["properties"]
    assert props["mlm:name"] == "lulc_rf" and props["mlm:architecture"] == "RandomForestClassifier"
    assert props["mlm:tasks"] == ["classification"] and props["mlm:framework"] == "scikit-learn"
    assert props["mlm:input"][0]["bands"] == [f"emb_{i:03d}" for i in range(D)]
    assert props["mlm:input"][0]["input"]["shape"] == [-1, D]
    classes = props["mlm:output"][0]["classification:classes"]
    assert [(c["value"], c["name"]) for c in classes] == [(0, "built"), (1, "crops"), (2, "trees"), (3, "water")]
    assert props["mlm:hyperparameters"] == {"max_variables": "sqrt", "num_trees": 15, "seed": 11}
    assert props["terramind:training"]["samples_per_class"] == {"built": 5, "crops": 5, "trees": 5, "water": 5}
    asset = item["assets"]["model"]
    assert asset["href"] == "./lulc_rf.zip" and asset["roles"] == ["mlm:model"]
    assert asset["file:size"] == (saved["results"] / "lulc_rf.zip").stat().st_size


def test_load_by_job_id_predicts_the_same(saved):
    loaded = predict_with_loaded(saved["catalog"], "job-1", {"job-1": str(saved["results"])})
    np.testing.assert_array_equal(loaded.values, saved["expected"].values)


def test_unknown_or_foreign_job_id(saved):
    with pytest.raises(OpenEOError, match=r"no finished batch job 'job-2' of yours") as err:
        predict_with_loaded(saved["catalog"], "job-2", {"job-1": str(saved["results"])})
    assert err.value.code == "MLModelNotFound"
    with pytest.raises(OpenEOError, match=r"job ids are known only to the back-end"):
        predict_with_loaded(saved["catalog"], "job-1", None)
    with pytest.raises(OpenEOError, match=r"is neither a batch job id nor an http\(s\) URL"):
        predict_with_loaded(saved["catalog"], "../job-1", {"job-1": str(saved["results"])})


def _tampered(saved, name: str, item=None, model: bytes | None = None):
    """A copy of the saved job with its item and/or model file replaced."""
    target = saved["tmp"] / name / "results"
    shutil.copytree(saved["results"], target)
    if item is not None:
        (target / "lulc_rf.mlm.json").write_text(json.dumps(item))
    if model is not None:
        (target / "lulc_rf.zip").write_bytes(model)
    return {name: str(target)}


def _item(saved):
    return json.loads((saved["results"] / "lulc_rf.mlm.json").read_text())


def test_pickle_disguised_as_the_model_is_refused(saved):
    from sklearn.ensemble import RandomForestClassifier

    blob = pickle.dumps(RandomForestClassifier(n_estimators=2))
    item = _item(saved)
    item["assets"]["model"].pop("file:checksum")  # even with no checksum to catch the swap
    jobs = _tampered(saved, "pickled", item=item, model=blob)
    with pytest.raises(OpenEOError, match=r"not a model in the safe format .* \(it looks like a Python pickle, which "
                                          r"is never loaded\)") as err:
        predict_with_loaded(saved["catalog"], "pickled", jobs)
    assert err.value.code == "MLModelInvalid"
    # a pickle inside a ZIP that looks like ours: an object array member
    buf = io.BytesIO()
    with zipfile.ZipFile(saved["results"] / "lulc_rf.zip") as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            if info.filename == "threshold.npy":
                member = io.BytesIO()
                np.save(member, np.array([object()], dtype=object), allow_pickle=True)
                dst.writestr(info.filename, member.getvalue())
            else:
                dst.writestr(info, src.read(info))
    jobs = _tampered(saved, "object-array", item=item, model=buf.getvalue())
    with pytest.raises(OpenEOError, match=r"threshold.npy: .*allow_pickle=False"):
        predict_with_loaded(saved["catalog"], "object-array", jobs)


def test_tree_with_an_index_outside_the_tree_is_refused(saved):
    buf = io.BytesIO()
    with zipfile.ZipFile(saved["results"] / "lulc_rf.zip") as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "left.npy":
                left = np.load(io.BytesIO(data))
                left[0] = 10**9  # scikit-learn's tree walker would read far outside the node array
                member = io.BytesIO()
                np.save(member, left)
                data = member.getvalue()
            dst.writestr(info, data)
    item = _item(saved)
    item["assets"]["model"].pop("file:checksum")
    jobs = _tampered(saved, "bad-tree", item=item, model=buf.getvalue())
    with pytest.raises(OpenEOError, match=r"tree 0: a child index lies outside the tree or before its parent"):
        predict_with_loaded(saved["catalog"], "bad-tree", jobs)


@pytest.mark.parametrize("change, message", [
    (lambda item: item["assets"]["model"].update({"mlm:artifact_type": "sklearn.pickle"}),
     r"model artifact type 'sklearn.pickle': this back-end loads only"),
    (lambda item: item["properties"].pop("mlm:input"), r"no 'mlm:input' in its properties"),
    (lambda item: item.update({"stac_extensions": []}), r"does not declare the MLM extension"),
    (lambda item: item["assets"]["model"].update({"roles": ["data"]}), r"0 assets with role 'mlm:model'"),
    (lambda item: item["assets"]["model"].update({"href": "../../other/model.zip"}), r"is not a file of the job's"),
    (lambda item: item["assets"]["model"].update({"file:checksum": "1220" + "0" * 64}), r"does not match the item's"),
    (lambda item: item["properties"]["mlm:input"][0].update({"bands": ["B04"]}), r"mlm:input bands differ"),
])
def test_malformed_mlm_item(saved, change, message):
    item = _item(saved)
    change(item)
    jobs = _tampered(saved, f"item-{abs(hash(message))}", item=item)
    with pytest.raises(OpenEOError, match=message) as err:
        predict_with_loaded(saved["catalog"], next(iter(jobs)), jobs)
    assert err.value.code == "MLModelItemInvalid"


def test_job_with_two_models(saved):
    jobs = _tampered(saved, "two")
    target = next(iter(jobs.values()))
    shutil.copy(f"{target}/lulc_rf.mlm.json", f"{target}/other.mlm.json")
    with pytest.raises(OpenEOError, match=r"saved 2 models: load one of them by the URL of its item"):
        predict_with_loaded(saved["catalog"], "two", jobs)


@pytest.fixture
def served(saved):
    """The saved job's results over HTTP on loopback (a stand-in for any web server)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(saved["results"]))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def _predict_from(saved, url, policy):
    graph = {"process_graph": {
        "load": {"process_id": "load_collection", "arguments": {"id": "EMB", "spatial_extent": None,
                                                                "temporal_extent": None, "bands": None}},
        "model": {"process_id": "load_ml_model", "arguments": {"id": url}},
        "pred": {"process_id": "reduce_dimension", "arguments": {"data": {"from_node": "load"}, "dimension": "bands",
                                                                  "reducer": predict_reducer(),
                                                                  "context": {"from_node": "model"}}, "result": True}}}
    return execute_process_graph(graph, None, catalog=saved["catalog"], policy=policy, chunk_size=16).value


def test_load_by_item_url_through_the_url_rules(saved, served):
    from terramind_openeo.processes.policy import Policy
    from terramind_openeo.processes.urls import UrlPolicy

    url = served + "lulc_rf.mlm.json"
    allowed = Policy(urls=UrlPolicy(allowed=("http://",), allowed_internal=(served,)))
    np.testing.assert_array_equal(_predict_from(saved, url, allowed).values, saved["expected"].values)
    # the back-end's default rules refuse a loopback address, before anything is read
    with pytest.raises(OpenEOError, match=r"Node 'model', argument 'id': reading .* is not allowed on this "
                                          r"back-end \(the host does not resolve to a public address\)"):
        _predict_from(saved, url, Policy(urls=UrlPolicy(allowed=("http://", "https://"))))
    # an item on the web naming a local file as its model
    item = _item(saved)
    item["assets"]["model"]["href"] = "file:///etc/passwd"
    (saved["results"] / "local.mlm.json").write_text(json.dumps(item))
    with pytest.raises(OpenEOError, match=r"is not where its item is \(web vs local file\)"):
        _predict_from(saved, served + "local.mlm.json", allowed)
    (saved["results"] / "local.mlm.json").unlink()


def test_save_ml_model_checks_its_name():
    from terramind_openeo.processes.ml.store import save_ml_model

    with pytest.raises(OpenEOError, match=r"'../x' is not a valid name") as err:
        save_ml_model(_any_model(), name="../x")
    assert err.value.argument == "name"
    with pytest.raises(OpenEOError, match=r"must be an ml-model"):
        save_ml_model({"not": "a model"})


def _any_model():
    from terramind_openeo.processes.ml.fit import terramind_fit_class_logistic
    from terramind_openeo.processes.zonal import aggregate_spatial

    points, _, _ = labelled_points(2)
    return terramind_fit_class_logistic(aggregate_spatial(embedding_cube(), points,
                                                          lambda data, axis, **_: np.nanmean(data, axis=axis)),
                                        points)


@pytest.mark.parametrize("kind", ["knn", "logistic", "regressor"])
def test_every_kind_round_trips_bit_identical(kind):
    from terramind_openeo.processes.ml.fit import (
        fit_regr_random_forest,
        terramind_fit_class_knn,
        terramind_fit_class_logistic,
    )
    from terramind_openeo.processes.ml.safe_format import dump_model, load_model
    from terramind_openeo.processes.zonal import aggregate_spatial

    points, _, _ = labelled_points(4)
    preds = aggregate_spatial(embedding_cube(), points, lambda data, axis, **_: np.nanmean(data, axis=axis))
    model = {"knn": lambda: terramind_fit_class_knn(preds, points, k=3, metric="cosine"),
             "logistic": lambda: terramind_fit_class_logistic(preds, points, c=2.0),
             "regressor": lambda: fit_regr_random_forest(preds, points, num_trees=5, seed=1)}[kind]()
    again = load_model(dump_model(model))
    x = embedding_cube(chunk=None).values.reshape(D, -1).T
    if model.is_classifier:
        np.testing.assert_array_equal(again.predict_proba(x), model.predict_proba(x))
    np.testing.assert_array_equal(again.predict_codes(x), model.predict_codes(x))
    assert dump_model(again) == dump_model(model)
