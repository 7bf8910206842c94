"""The stored form of an ml-model: a ZIP of one JSON document and plain numeric ``.npy`` arrays.

Why not pickle/joblib (or skops, or ONNX): a model may come from anyone (``load_ml_model`` takes URLs),
and unpickling runs whatever code the file names. Here nothing in a file is ever executed or looked up by
name: ``meta.json`` is parsed as JSON and checked field by field, arrays are read with
``numpy.lib.format.read_array(allow_pickle=False)`` (object arrays are refused), every member name, size,
dtype and shape is checked against what the estimator kind needs, and a forest's trees are checked as
trees (children after their parent and inside the tree, features inside the input, finite thresholds)
before scikit-learn sees them, since its compiled tree walker trusts those indices. The estimator is then
rebuilt from the arrays with the installed scikit-learn, so predictions are bit-identical to the fitted
one. ONNX was the alternative: it is as safe, but a forest exported to ONNX predicts in float32 with its
own tree walker (not bit-identical), and it adds two large dependencies; skops' allow-list still unpickles.

Layout (format ``terramind-openeo/ml-model``, version 1): ``meta.json`` (kind, input bands, classes,
hyper-parameters, training facts), and per kind:

- ``random_forest_*``: the nodes of all trees concatenated (``left``, ``right``, ``feature``,
  ``threshold``, ``impurity``, ``n_node_samples``, ``weighted_n_node_samples``, ``missing_go_to_left``,
  ``value``) and ``tree_offsets`` (where each tree starts); children are indices within their tree;
- ``knn_classifier``: ``fit_x`` (training predictors) and ``fit_y`` (class codes);
- ``logistic_classifier``: ``coef`` and ``intercept``.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from terramind_openeo.errors import MLModelInvalid
from terramind_openeo.processes.ml.model import KINDS, MLModel

FORMAT = "terramind-openeo/ml-model"
VERSION = 1
MEDIA_TYPE = "application/zip"
MAX_META_BYTES = 4 * 2**20
MAX_NODES = 5_000_000
MAX_BANDS = 100_000
MAX_CLASSES = 10_000

_TREE_ARRAYS: dict[str, str] = {"left": "int64", "right": "int64", "feature": "int64", "threshold": "float64",
                "impurity": "float64", "n_node_samples": "int64", "weighted_n_node_samples": "float64",
                "missing_go_to_left": "uint8", "value": "float64", "tree_offsets": "int64"}
ARRAYS: dict[str, Mapping[str, str | tuple[str, ...]]] = {
    "random_forest_classifier": _TREE_ARRAYS,
    "random_forest_regressor": _TREE_ARRAYS,
    # float32 or float64: kept as fitted (scikit-learn fits float32 predictors in float32)
    "knn_classifier": {"fit_x": ("float32", "float64"), "fit_y": "int64"},
    "logistic_classifier": {"coef": ("float32", "float64"), "intercept": ("float32", "float64")},
}


def max_file_bytes() -> int:
    """Largest model file read (setting ``ml_model_max_mb``)."""
    from terramind_openeo.config import settings

    return int(settings().ml_model_max_mb * 2**20)


# ---------------------------------------------------------------------------------------------- writing
def _forest_arrays(estimator) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {k: [] for k in _TREE_ARRAYS if k != "tree_offsets"}
    offsets = [0]
    for tree in (e.tree_ for e in estimator.estimators_):
        nodes = tree.__getstate__()["nodes"]
        parts["left"].append(nodes["left_child"])
        parts["right"].append(nodes["right_child"])
        parts["feature"].append(nodes["feature"])
        parts["threshold"].append(nodes["threshold"])
        parts["impurity"].append(nodes["impurity"])
        parts["n_node_samples"].append(nodes["n_node_samples"])
        parts["weighted_n_node_samples"].append(nodes["weighted_n_node_samples"])
        parts["missing_go_to_left"].append(nodes["missing_go_to_left"] if "missing_go_to_left" in nodes.dtype.names
                                           else np.zeros(tree.node_count, np.uint8))
        parts["value"].append(tree.value)
        offsets.append(offsets[-1] + tree.node_count)
    out = {k: np.concatenate(v).astype(_TREE_ARRAYS[k]) for k, v in parts.items()}
    out["tree_offsets"] = np.asarray(offsets, dtype=np.int64)
    return out


def model_arrays(model: MLModel) -> dict[str, np.ndarray]:
    est = model.estimator
    if model.kind.startswith("random_forest"):
        return _forest_arrays(est)
    if model.kind == "knn_classifier":
        return {"fit_x": np.asarray(est._fit_X), "fit_y": np.asarray(est._y, dtype=np.int64)}
    return {"coef": np.asarray(est.coef_), "intercept": np.asarray(est.intercept_)}


def model_meta(model: MLModel) -> dict:
    import sklearn

    return {"format": FORMAT, "version": VERSION, "kind": model.kind, "bands": list(model.bands),
            "classes": None if model.classes is None else [_json_label(c) for c in model.classes],
            "params": model.params, "training": model.training, "sklearn_version": sklearn.__version__}


def _json_label(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def dump_model(model: MLModel) -> bytes:
    """The model in the safe format (deterministic bytes for the same model)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("meta.json", date_time=(1980, 1, 1, 0, 0, 0))
        zf.writestr(info, json.dumps(model_meta(model), sort_keys=True, indent=1), zipfile.ZIP_DEFLATED)
        for name, array in sorted(model_arrays(model).items()):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), member.getvalue(),
                        zipfile.ZIP_DEFLATED)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- reading
def _fail(source: str, message: str) -> MLModelInvalid:
    return MLModelInvalid(f"{source}: {message}")


def _members(payload: bytes, source: str) -> tuple[dict, dict[str, np.ndarray]]:
    limit = max_file_bytes()
    if len(payload) > limit:
        raise _fail(source, f"{len(payload)} bytes exceed the limit of {limit}")
    if not payload.startswith(b"PK\x03\x04"):
        hint = " (it looks like a Python pickle, which is never loaded)" if payload[:1] == b"\x80" else ""
        raise _fail(source, f"not a model in the safe format '{FORMAT}' (not a ZIP archive){hint}")
    try:
        zf = zipfile.ZipFile(io.BytesIO(payload))
        infos = zf.infolist()
    except zipfile.BadZipFile as exc:
        raise _fail(source, f"damaged ZIP archive: {exc}") from exc
    names = [i.filename for i in infos]
    if len(set(names)) != len(names) or len(names) > 64:
        raise _fail(source, "repeated or too many archive members")
    total = sum(i.file_size for i in infos)
    if total > 4 * limit:
        raise _fail(source, f"its members unpack to {total} bytes, over the limit of {4 * limit}")
    if "meta.json" not in names:
        raise _fail(source, f"no meta.json: not a model in the safe format '{FORMAT}'")
    if zf.getinfo("meta.json").file_size > MAX_META_BYTES:
        raise _fail(source, "meta.json is too large")
    try:
        meta = json.loads(zf.read("meta.json").decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _fail(source, f"meta.json is not JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _fail(source, f"meta.json does not declare the format '{FORMAT}'")
    if meta.get("version") != VERSION:
        raise _fail(source, f"format version {meta.get('version')!r} is not supported (this back-end reads {VERSION})")
    kind = meta.get("kind")
    if kind not in ARRAYS:
        raise _fail(source, f"estimator kind {kind!r} is not one of {', '.join(ARRAYS)}")
    expected = {f"{n}.npy": dt for n, dt in ARRAYS[kind].items()}
    extra = sorted(set(names) - set(expected) - {"meta.json"})
    missing = sorted(set(expected) - set(names))
    if extra or missing:
        raise _fail(source, f"unexpected members {extra} / missing members {missing} for a {kind}")
    arrays = {}
    for member, dtype in expected.items():
        try:
            with zf.open(member) as f:
                array = np.lib.format.read_array(f, allow_pickle=False)
        except ValueError as exc:  # object arrays (pickles) and malformed headers end here
            raise _fail(source, f"{member}: {exc}") from exc
        allowed = (dtype,) if isinstance(dtype, str) else dtype
        if array.dtype not in [np.dtype(d) for d in allowed]:
            raise _fail(source, f"{member} has dtype {array.dtype}, expected {' or '.join(allowed)}")
        arrays[member[:-4]] = array
    return meta, arrays


def _labels(value: Any, source: str) -> tuple | None:
    if value is None:
        return None
    if not isinstance(value, list) or not 2 <= len(value) <= MAX_CLASSES:
        raise _fail(source, f"'classes' must list 2..{MAX_CLASSES} labels")
    ok = all((isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)) or isinstance(v, str)
             for v in value)
    if not ok or len({repr(v) for v in value}) != len(value):
        raise _fail(source, "'classes' must be distinct numbers or strings")
    return tuple(value)


def _check_meta(meta: dict, source: str) -> tuple[str, tuple[str, ...], tuple | None]:
    kind = meta["kind"]
    bands = meta.get("bands")
    if (not isinstance(bands, list) or not 1 <= len(bands) <= MAX_BANDS or not all(isinstance(b, str) for b in bands)
            or len(set(bands)) != len(bands)):
        raise _fail(source, f"'bands' must list 1..{MAX_BANDS} distinct band names")
    classes = _labels(meta.get("classes"), source)
    if (KINDS[kind] == "classification") != (classes is not None):
        raise _fail(source, f"a {kind} {'needs' if classes is None else 'has no'} 'classes'")
    for key in ("params", "training"):
        if not isinstance(meta.get(key, {}), dict):
            raise _fail(source, f"'{key}' must be an object")
    return kind, tuple(bands), classes


def _check_trees(a: dict[str, np.ndarray], n_features: int, n_classes: int, source: str) -> list[tuple[int, int, int]]:
    """Every tree a tree: (start, stop, depth) per tree. scikit-learn's tree walker follows these indices
    without bounds checks, so nothing reaches it unchecked."""
    offsets = a["tree_offsets"]
    total = a["left"].shape[0]
    if offsets.ndim != 1 or offsets.size < 2 or offsets[0] != 0 or offsets[-1] != total or np.any(np.diff(offsets) < 1):
        raise _fail(source, "tree_offsets must rise from 0 to the number of nodes")
    if total > MAX_NODES:
        raise _fail(source, f"{total} nodes exceed the limit of {MAX_NODES}")
    for name in ("right", "feature", "threshold", "impurity", "n_node_samples", "weighted_n_node_samples",
                 "missing_go_to_left"):
        if a[name].shape != (total,):
            raise _fail(source, f"{name} has shape {a[name].shape}, expected ({total},)")
    if a["value"].shape != (total, 1, n_classes):
        raise _fail(source, f"value has shape {a['value'].shape}, expected ({total}, 1, {n_classes})")
    if not (np.isfinite(a["value"]).all() and np.isfinite(a["impurity"]).all()
            and np.isfinite(a["weighted_n_node_samples"]).all()):
        raise _fail(source, "node values must be finite")
    trees = []
    for t in range(offsets.size - 1):
        start, stop = int(offsets[t]), int(offsets[t + 1])
        n = stop - start
        left, right, feature = a["left"][start:stop], a["right"][start:stop], a["feature"][start:stop]
        own = np.arange(n)
        leaf = left == -1
        if np.any(leaf != (right == -1)):
            raise _fail(source, f"tree {t}: a node has one child")
        inner = ~leaf
        if np.any((left[inner] <= own[inner]) | (left[inner] >= n) | (right[inner] <= own[inner]) | (right[inner] >= n)):
            raise _fail(source, f"tree {t}: a child index lies outside the tree or before its parent")
        if np.any((feature[inner] < 0) | (feature[inner] >= n_features)):
            raise _fail(source, f"tree {t}: a split reads a feature outside 0..{n_features - 1}")
        if not np.isfinite(a["threshold"][start:stop][inner]).all():
            raise _fail(source, f"tree {t}: non-finite split threshold")
        children = np.concatenate([left[inner], right[inner]])
        if children.size != n - 1 or np.unique(children).size != n - 1:
            raise _fail(source, f"tree {t}: nodes are not one tree (a node has several parents or none)")
        depth, frontier = 0, np.array([0])
        while True:  # level by level from the root (each node has one parent: this ends)
            frontier = frontier[inner[frontier]]
            if frontier.size == 0:
                break
            frontier = np.concatenate([left[frontier], right[frontier]])
            depth += 1
        trees.append((start, stop, depth))
    return trees


def _forest(kind: str, a: dict[str, np.ndarray], n_features: int, n_classes: int, source: str):
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
    from sklearn.tree._tree import NODE_DTYPE, Tree

    classifier = kind == "random_forest_classifier"
    width = n_classes if classifier else 1
    trees = _check_trees(a, n_features, width, source)
    estimators = []
    for start, stop, depth in trees:
        nodes = np.zeros(stop - start, dtype=NODE_DTYPE)
        fields = {"left_child": "left", "right_child": "right", "feature": "feature", "threshold": "threshold",
                  "impurity": "impurity", "n_node_samples": "n_node_samples",
                  "weighted_n_node_samples": "weighted_n_node_samples", "missing_go_to_left": "missing_go_to_left"}
        for field_name in NODE_DTYPE.names:
            if field_name in fields:
                nodes[field_name] = a[fields[field_name]][start:stop]
        leaf = nodes["left_child"] == -1
        nodes["feature"][leaf] = -2  # scikit-learn's TREE_UNDEFINED on leaves
        tree = Tree(n_features, np.array([width], dtype=np.intp), 1)
        tree.__setstate__({"max_depth": depth, "node_count": stop - start, "nodes": nodes,
                           "values": np.ascontiguousarray(a["value"][start:stop])})
        est = DecisionTreeClassifier() if classifier else DecisionTreeRegressor()
        est.tree_, est.n_features_in_, est.n_outputs_ = tree, n_features, 1
        est.max_features_ = n_features
        if classifier:
            est.classes_, est.n_classes_ = np.arange(n_classes), n_classes
        estimators.append(est)
    forest = (RandomForestClassifier if classifier else RandomForestRegressor)(n_estimators=len(estimators), n_jobs=1)
    forest.estimators_, forest.n_features_in_, forest.n_outputs_ = estimators, n_features, 1
    forest.estimator_ = estimators[0].__class__()
    if classifier:
        forest.classes_, forest.n_classes_ = np.arange(n_classes), n_classes
    return forest


def _knn(a: dict[str, np.ndarray], params: dict, n_features: int, n_classes: int, source: str):
    from sklearn.neighbors import KNeighborsClassifier

    x, y = a["fit_x"], a["fit_y"]
    if x.ndim != 2 or x.shape[1] != n_features or y.shape != (x.shape[0],) or not np.isfinite(x).all():
        raise _fail(source, f"fit_x must be finite [n, {n_features}] and fit_y [n]")
    if x.shape[0] > 1_000_000 or np.any((y < 0) | (y >= n_classes)):
        raise _fail(source, "too many training samples, or class codes outside the classes")
    k, weights, metric = params.get("k"), params.get("weights"), params.get("metric")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= x.shape[0]:
        raise _fail(source, f"'params.k' must be an integer in 1..{x.shape[0]}")
    if weights not in ("uniform", "distance") or metric not in ("euclidean", "cosine"):
        raise _fail(source, "'params.weights' must be uniform/distance and 'params.metric' euclidean/cosine")
    return KNeighborsClassifier(n_neighbors=k, weights=weights, metric=metric, algorithm="brute").fit(x, y)


def _logistic(a: dict[str, np.ndarray], n_features: int, n_classes: int, source: str):
    from sklearn.linear_model import LogisticRegression

    coef, intercept = a["coef"], a["intercept"]
    rows = 1 if n_classes == 2 else n_classes
    if coef.shape != (rows, n_features) or intercept.shape != (rows,):
        raise _fail(source, f"coef must be [{rows}, {n_features}] and intercept [{rows}]")
    if coef.dtype != intercept.dtype or not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
        raise _fail(source, "coefficients must be finite and of one dtype")
    est = LogisticRegression()
    est.coef_, est.intercept_, est.classes_, est.n_features_in_ = coef, intercept, np.arange(n_classes), n_features
    est.n_iter_ = np.zeros(1, dtype=np.int32)
    return est


def load_model(payload: bytes, source: str = "model") -> MLModel:
    """An :class:`MLModel` from bytes in the safe format; ``MLModelInvalid`` naming ``source`` otherwise."""
    meta, arrays = _members(payload, source)
    kind, bands, classes = _check_meta(meta, source)
    n_classes = len(classes) if classes is not None else 0
    params = meta.get("params", {})
    if kind.startswith("random_forest"):
        estimator = _forest(kind, arrays, len(bands), n_classes, source)
    elif kind == "knn_classifier":
        estimator = _knn(arrays, params, len(bands), n_classes, source)
    else:
        estimator = _logistic(arrays, len(bands), n_classes, source)
    return MLModel(kind, estimator, bands, classes, params, meta.get("training", {}))
