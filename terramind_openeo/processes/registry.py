"""The process registry: openeo-processes-dask's standard processes plus ours, registered explicitly.

Standard implementations and specs come from the installed openeo-processes-dask package; ours are
listed in ``OWN_PROCESSES`` (``id -> "module:function"``) with their spec JSON in ``specs/`` beside the
code, and replace a standard implementation of the same id (``load_collection``, ``save_result``,
``run_udf`` ... have none or a broken one there, see ``../shared/DESIGN.md``). Our implementations are
imported lazily, so a layer that is not installed yet (``inference/``) breaks only its own processes.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SPEC_DIR = Path(__file__).parent / "specs"

# id -> "module:function"; the module is imported on first use.
OWN_PROCESSES: dict[str, str] = {
    "load_collection": "terramind_openeo.processes.load:load_collection",
    "load_stac": "terramind_openeo.processes.load:load_stac",
    "save_result": "terramind_openeo.processes.save:save_result",
    "apply_neighborhood": "terramind_openeo.processes.neighborhood:apply_neighborhood",
    "run_udf": "terramind_openeo.processes.udf:run_udf",
    "terramind_embed": "terramind_openeo.processes.terramind:terramind_embed",
    "terramind_generate": "terramind_openeo.processes.terramind:terramind_generate",
    "terramind_predict": "terramind_openeo.processes.terramind:terramind_predict",
    "terramind_locate": "terramind_openeo.processes.locate:terramind_locate",
    "aggregate_temporal": "terramind_openeo.processes.temporal:aggregate_temporal",
    "ndvi": "terramind_openeo.processes.temporal:ndvi",
    # standard processes whose openeo-processes-dask implementation is wrong (standard_fixes.py says how)
    "apply_dimension": "terramind_openeo.processes.standard_fixes:apply_dimension",
    "rename_labels": "terramind_openeo.processes.standard_fixes:rename_labels",
    "order": "terramind_openeo.processes.standard_fixes:order",
    "reduce_dimension": "terramind_openeo.processes.standard_fixes:reduce_dimension",
    # vector data and machine learning (vector.py, zonal.py, ml/, similarity.py)
    "load_geojson": "terramind_openeo.processes.vector:load_geojson",
    "load_url": "terramind_openeo.processes.vector:load_url",
    "aggregate_spatial": "terramind_openeo.processes.zonal:aggregate_spatial",
    "fit_class_random_forest": "terramind_openeo.processes.ml.fit:fit_class_random_forest",
    "fit_regr_random_forest": "terramind_openeo.processes.ml.fit:fit_regr_random_forest",
    "terramind_fit_class_knn": "terramind_openeo.processes.ml.fit:terramind_fit_class_knn",
    "terramind_fit_class_logistic": "terramind_openeo.processes.ml.fit:terramind_fit_class_logistic",
    "predict_random_forest": "terramind_openeo.processes.ml.predict:predict_random_forest",
    "predict_probabilities": "terramind_openeo.processes.ml.predict:predict_probabilities",
    "save_ml_model": "terramind_openeo.processes.ml.store:save_ml_model",
    "load_ml_model": "terramind_openeo.processes.ml.store:load_ml_model",
    "terramind_similarity": "terramind_openeo.processes.similarity:terramind_similarity",
}

# Modules with further replacements of standard processes, each exporting ``FIXES: dict[str, str]``
# (``id -> "module:function"``, same form as ``OWN_PROCESSES``): scalar null/type semantics and array
# processes, kept apart so that each concern stays in one module.
FIX_MODULES = ("terramind_openeo.processes.fixes_scalar", "terramind_openeo.processes.fixes_array")

# Standard processes that openeo-processes-dask implements but that we do not offer (need vector or ML
# stacks that are not installed, or are experimental there).
EXCLUDED = {"apply_neighborhood_intertwin", "ddmc", "inspect"}


@dataclass(frozen=True)
class ProcessDef:
    """One process as the engine sees it."""

    id: str
    spec: dict
    target: str | Callable  # "module:function" (ours) or the implementation itself (standard)
    standard: bool  # True: an openeo-processes-dask implementation (gets pg-parser typed arguments)

    @functools.cached_property
    def implementation(self) -> Callable:
        if callable(self.target):
            return self.target
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)

    @functools.cached_property
    def accepted_kwargs(self) -> frozenset[str] | None:
        """Keyword names the implementation accepts (None when it takes ``**kwargs``)."""
        params = inspect.signature(self.implementation).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return frozenset(p.name for p in params)


def _standard_specs() -> dict[str, dict]:
    from openeo_processes_dask.specs import json_path  # the openEO processes JSON files

    specs = {}
    for path in sorted(Path(json_path).glob("*.json")):
        spec = json.loads(path.read_text())
        specs[spec["id"]] = spec
    return specs


def _standard_implementations() -> dict[str, Callable]:
    # its optional ML processes (xgboost) are not installed: keep their import warning out of every log
    quiet = logging.getLogger("openeo_processes_dask.process_implementations")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        impl = importlib.import_module("openeo_processes_dask.process_implementations")
    except ImportError as exc:  # missing optional import of the package: say which
        logger.error("openeo-processes-dask implementations unavailable: %s", exc)
        return {}
    finally:
        quiet.setLevel(level)
    return {name.lstrip("_"): func for name, func in inspect.getmembers(impl, inspect.isfunction)
            if getattr(func, "__module__", "").startswith("openeo_processes_dask")}


def own_spec(process_id: str) -> dict | None:
    path = SPEC_DIR / f"{process_id}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _own_targets() -> dict[str, str]:
    """``OWN_PROCESSES`` plus the ``FIXES`` of every module in ``FIX_MODULES`` (an id in both is an error)."""
    targets = dict(OWN_PROCESSES)
    for module in FIX_MODULES:
        for pid, target in importlib.import_module(module).FIXES.items():
            if pid in targets:
                raise RuntimeError(f"process {pid!r} replaced twice: {targets[pid]} and {target}")
            targets[pid] = target
    return targets


@functools.lru_cache(maxsize=1)
def registry() -> dict[str, ProcessDef]:
    """All processes by id (built once per interpreter)."""
    specs = _standard_specs()
    own = _own_targets()
    procs: dict[str, ProcessDef] = {}
    for pid, func in _standard_implementations().items():
        if pid in EXCLUDED or pid in own or pid not in specs:
            continue
        procs[pid] = ProcessDef(pid, specs[pid], func, standard=True)
    for pid, target in own.items():
        spec = own_spec(pid) or specs.get(pid)
        if spec is None:
            raise RuntimeError(f"no spec for our process {pid!r}: add specs/{pid}.json")
        procs[pid] = ProcessDef(pid, spec, target, standard=False)
    return procs


def get_process(process_id: str) -> ProcessDef | None:
    return registry().get(process_id)


def list_process_specs() -> list[dict]:
    """openEO process specs of every process the engine runs (standard + ours), sorted by id."""
    return [copy.deepcopy(p.spec) for _, p in sorted(registry().items())]
