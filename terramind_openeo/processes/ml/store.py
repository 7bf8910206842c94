"""``save_ml_model`` and ``load_ml_model``: models as batch-job results with a STAC item (MLM extension).

``save_ml_model`` records the model like ``save_result`` records a cube; once the graph has run, the
writer puts two result files side by side: ``<name>.zip`` (the safe format of ``safe_format.py``) and
``<name>.mlm.json``, a STAC Item with the Machine Learning Model extension (``mlm:input``: the band names
and their number, ``mlm:output``: the classes with their map values, hyper-parameters, framework) whose
``mlm:model`` asset points at the ZIP by a relative href and carries its SHA-256 (``file:checksum``).

``load_ml_model`` takes a batch-job id of the same user (the back-end hands the engine a lookup that sees
only that user's finished jobs) or the URL of such an item (fetched under the back-end's URL rules,
``remote.py``, ``urls.py``). Either way the item is checked, the model file is read in the safe format only, its
checksum verified and its bands and classes compared with the item's, before the model is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

from terramind_openeo.errors import MLModelItemInvalid, MLModelNotFound, ProcessParameterInvalid
from terramind_openeo.processes import context as _ctx
from terramind_openeo.processes.ml.model import MLModel
from terramind_openeo.processes.ml.safe_format import FORMAT, MEDIA_TYPE, dump_model, load_model, max_file_bytes
from terramind_openeo.processes.names import check_name, inside

MLM_SCHEMA = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"
FILE_SCHEMA = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
ARTIFACT_TYPE = f"{FORMAT}-v1"
SAVE_FORMAT = "MLModel"
"""``SaveRequest.format`` of a model (``writers.WRITERS`` key); not a ``save_result`` format."""
ITEM_SUFFIX = ".mlm.json"
MAX_ITEM_BYTES = 2 * 2**20
_JOB_ID = re.compile(r"^[\w\-.~]{1,128}$")
_ARCHITECTURES = {"random_forest_classifier": "RandomForestClassifier",
                  "random_forest_regressor": "RandomForestRegressor",
                  "knn_classifier": "KNeighborsClassifier", "logistic_classifier": "LogisticRegression"}


# ---------------------------------------------------------------------------------------------- saving
def save_ml_model(data: Any, options: dict | None = None, name: str | None = None) -> bool:
    if not isinstance(data, MLModel):
        raise ProcessParameterInvalid(f"must be an ml-model (from fit_* or load_ml_model), got {type(data).__name__}",
                                      argument="data")
    if options not in (None, {}) and not isinstance(options, dict):
        raise ProcessParameterInvalid("must be an object", argument="options")
    name = check_name(name if name is not None else (options or {}).get("name", "model"), "name")
    unknown = sorted(set(options or {}) - {"name"})
    if unknown:
        raise ProcessParameterInvalid(f"unknown option(s) {unknown} (options: name)", argument="options")
    _ctx.current().saves.append(_ctx.SaveRequest(data=data, format=SAVE_FORMAT, options={"filename_prefix": name}))
    return True


def _total_parameters(model: MLModel) -> int:
    from terramind_openeo.processes.ml.safe_format import model_arrays

    return int(sum(a.size for a in model_arrays(model).values()))


def mlm_item(model: MLModel, name: str, href: str, payload: bytes) -> dict:
    """The STAC Item (MLM extension) describing a saved model."""
    import sklearn

    from terramind_openeo.processes.ml.predict import output_coding

    _, dtype, _ = output_coding(model, "value")
    output: dict[str, Any] = {"name": "prediction", "tasks": [model.task],
                              "result": {"shape": [-1, 1], "dim_order": ["batch", "class" if model.is_classifier
                                                                         else "score"], "data_type": dtype}}
    if model.is_classifier:
        output["classification:classes"] = [{"value": v, "name": n} for v, n in model.class_names().items()]
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": name,
        "stac_extensions": [MLM_SCHEMA, FILE_SCHEMA],
        "geometry": None,
        "properties": {
            "datetime": None, "start_datetime": "1900-01-01T00:00:00Z", "end_datetime": "9999-12-31T23:59:59Z",
            "description": f"{_ARCHITECTURES[model.kind]} trained by terramind-openeo on {len(model.bands)} bands",
            "mlm:name": name, "mlm:architecture": _ARCHITECTURES[model.kind], "mlm:tasks": [model.task],
            "mlm:framework": "scikit-learn", "mlm:framework_version": sklearn.__version__,
            "mlm:pretrained": False, "mlm:pretrained_source": None,
            "mlm:total_parameters": _total_parameters(model),
            "mlm:input": [{"name": "predictors", "bands": list(model.bands),
                           "input": {"shape": [-1, len(model.bands)], "dim_order": ["batch", "bands"],
                                     "data_type": "float32"}}],
            "mlm:output": [output],
            "mlm:hyperparameters": dict(model.params),
            "terramind:training": dict(model.training),
        },
        "assets": {"model": {"href": href, "type": MEDIA_TYPE, "title": f"{name} ({FORMAT})",
                             "roles": ["mlm:model"], "mlm:artifact_type": ARTIFACT_TYPE,
                             "file:size": len(payload),
                             "file:checksum": "1220" + hashlib.sha256(payload).hexdigest()}},
        "links": [],
    }


def _write(path: Path, payload: bytes) -> None:
    part = path.with_name(path.name + ".part")
    part.write_bytes(payload)
    os.replace(part, path)


def write_ml_model(model: MLModel, out_dir: Path, basename: str, **_: Any) -> list[Path]:
    """The model file and its MLM item, each written under a ``.part`` name and renamed when complete."""
    out_dir = Path(out_dir)
    payload = dump_model(model)
    model_path, item_path = inside(out_dir, f"{basename}.zip"), inside(out_dir, f"{basename}{ITEM_SUFFIX}")
    _write(model_path, payload)
    item = mlm_item(model, basename, f"./{model_path.name}", payload)
    _write(item_path, json.dumps(item, indent=1).encode())
    return [model_path, item_path]


# ---------------------------------------------------------------------------------------------- loading
def _item_fail(source: str, message: str) -> MLModelItemInvalid:
    return MLModelItemInvalid(f"{source}: {message}", argument="id")


def model_asset(item: Any, source: str) -> dict:
    """The ``mlm:model`` asset of an MLM item, after checking the fields this back-end relies on."""
    if not isinstance(item, dict) or item.get("type") != "Feature":
        raise _item_fail(source, "not a STAC Item")
    if not any(isinstance(e, str) and "/mlm/" in e for e in item.get("stac_extensions") or []):
        raise _item_fail(source, "the STAC Item does not declare the MLM extension")
    props = item.get("properties")
    if not isinstance(props, dict) or not isinstance(props.get("mlm:input"), list) or not props["mlm:input"]:
        raise _item_fail(source, "no 'mlm:input' in its properties")
    if not isinstance(props.get("mlm:output"), list) or not props["mlm:output"]:
        raise _item_fail(source, "no 'mlm:output' in its properties")
    assets = item.get("assets")
    models = [a for a in (assets or {}).values() if isinstance(a, dict) and "mlm:model" in (a.get("roles") or [])]
    if len(models) != 1:
        raise _item_fail(source, f"{len(models)} assets with role 'mlm:model' (needs exactly one)")
    asset = models[0]
    if asset.get("mlm:artifact_type") != ARTIFACT_TYPE:
        raise _item_fail(source, f"model artifact type {asset.get('mlm:artifact_type')!r}: this back-end loads only "
                                 f"'{ARTIFACT_TYPE}' (its safe format; pickled models are never loaded)")
    if not isinstance(asset.get("href"), str) or not asset["href"]:
        raise _item_fail(source, "the model asset has no href")
    return asset


def _check_against_item(model: MLModel, item: dict, asset: dict, payload: bytes, source: str) -> None:
    checksum = asset.get("file:checksum")
    if checksum is not None and checksum != "1220" + hashlib.sha256(payload).hexdigest():
        raise _item_fail(source, "the model file does not match the item's file:checksum")
    bands = item["properties"]["mlm:input"][0].get("bands")
    if isinstance(bands, list) and bands and [b if isinstance(b, str) else b.get("name") for b in bands] != list(model.bands):
        raise _item_fail(source, "the item's mlm:input bands differ from the model file's")


def model_from_item(item: Any, read: Callable[[str], bytes], source: str) -> MLModel:
    asset = model_asset(item, source)
    payload = read(asset["href"])
    model = load_model(payload, source=f"{source}: model file {asset['href']}")
    _check_against_item(model, item, asset, payload, source)
    return model


def _from_job(job_id: str) -> MLModel:
    lookup = _ctx.current().job_results
    results = lookup.get(job_id) if lookup is not None else None
    if results is None:
        raise MLModelNotFound(f"no finished batch job '{job_id}' of yours" + ("" if lookup is not None else
                              " (job ids are known only to the back-end; pass the URL of an MLM item)"),
                              argument="id")
    folder = Path(results)
    items = sorted(p for p in folder.glob(f"*{ITEM_SUFFIX}") if p.is_file())
    if len(items) != 1:
        raise MLModelNotFound(f"batch job '{job_id}' saved {len(items)} models" + (
            ": load one of them by the URL of its item" if items else " (it has no save_ml_model)"), argument="id")
    raw = items[0].read_bytes()[:MAX_ITEM_BYTES + 1]
    if len(raw) > MAX_ITEM_BYTES:
        raise _item_fail(f"job '{job_id}'", "the model item is too large")

    def read(href: str) -> bytes:
        name = href.removeprefix("./")
        target = folder / name
        if "/" in name or name.startswith(".") or not target.is_file():
            raise _item_fail(f"job '{job_id}'", f"the model asset {href!r} is not a file of the job's results")
        if target.stat().st_size > max_file_bytes():
            raise _item_fail(f"job '{job_id}'", "the model file is too large")
        return target.read_bytes()

    return model_from_item(json.loads(raw), read, f"job '{job_id}'")


def _from_url(url: str) -> MLModel:
    from terramind_openeo.processes.remote import fetch_bytes

    raw = fetch_bytes(url, MAX_ITEM_BYTES, argument="id")
    try:
        item = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _item_fail(url, f"not JSON: {exc}") from exc

    def read(href: str) -> bytes:
        target = urljoin(url, href)
        if _is_web(url) != _is_web(target):  # a web item names web files, a local item local files
            raise _item_fail(url, f"the model asset {href!r} is not where its item is (web vs local file)")
        return fetch_bytes(target, max_file_bytes(), argument="id")

    return model_from_item(item, read, url)


def _is_web(url: str) -> bool:
    return urlparse(url).scheme.lower() in ("http", "https")


def load_ml_model(id: str) -> MLModel:
    """A model by batch-job id, or from its MLM item at a URL (or a local path, where the run's URL rules
    let users read one: ``terramind-openeo run``), fetched through ``processes.urls``."""
    if not isinstance(id, str) or not id:
        raise ProcessParameterInvalid("must be a batch job id or the URL of an MLM STAC item", argument="id")
    if _is_web(id) or id.startswith(("/", "file:")):
        return _from_url(id)
    if not _JOB_ID.match(id):
        raise ProcessParameterInvalid(f"{id[:80]!r} is neither a batch job id nor an http(s) URL", argument="id")
    return _from_job(id)
