"""The one place where the back-end calls the process-graph engine (``terramind_openeo.processes``).

The API talks to an :class:`Engine`; :class:`ProcessesEngine` adapts the ``processes`` layer to it
(catalog, process specs, execution, its errors), so a change of that layer's names touches only this
module. Tests may hand ``create_app`` any other object with the same methods.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from terramind_openeo.jsonable import to_jsonable

from .errors import OpenEOError, to_openeo_error
from .settings import Settings, execution_policy
from .usage import UsageMeter, entry, process_cpu_seconds

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What one execution produced."""

    files: list[Path] = field(default_factory=list)
    """Files written by ``save_result`` (all complete), inside the output directory."""
    stac: dict | None = None
    """STAC Collection describing ``files`` (from the engine)."""
    value: Any = None
    has_value: bool = False
    """True when the graph returned a plain value (no ``save_result``): answered as JSON."""
    usage: dict = field(default_factory=dict)


class Engine(Protocol):
    def collections(self) -> list[dict]: ...
    def collection_items(self, collection_id: str) -> list[dict]: ...
    def process_specs(self) -> list[dict]: ...
    def file_formats(self) -> dict: ...
    def execute(self, process_graph: dict, output_dir: Path, *, user_processes: dict[str, dict],
                logger: logging.Logger, cancel: threading.Event,
                progress: Callable[[float], None], job_results: dict[str, str] | None = None,
                max_pixels: int | None = None) -> Outcome: ...
    def close(self) -> None: ...


# Output formats save_result writes (processes issue); the engine may offer its own table instead.
DEFAULT_FILE_FORMATS = {
    "input": {
        "GTiff": {"title": "GeoTIFF", "gis_data_types": ["raster"], "parameters": {}},
        "netCDF": {"title": "netCDF", "gis_data_types": ["raster"], "parameters": {}},
    },
    "output": {
        "GTiff": {"title": "Cloud-Optimized GeoTIFF (one file per date)", "gis_data_types": ["raster"],
                  "parameters": {}},
        "netCDF": {"title": "netCDF (CF conventions)", "gis_data_types": ["raster"], "parameters": {}},
        "Zarr": {"title": "Zarr store", "gis_data_types": ["raster"], "parameters": {}},
        "JSON": {"title": "JSON", "gis_data_types": ["other"], "parameters": {}},
    },
}


def _dask_client(mode: str):
    """``threads`` -> None (the engine's threaded scheduler); ``local`` -> a LocalCluster; else an address."""
    from terramind_openeo.processes import heap

    if mode in ("", "threads"):
        heap.apply_policy()  # tiles are computed in this process
        return None
    import dask
    from dask.distributed import Client, LocalCluster

    if mode == "local":
        with dask.config.set({"distributed.nanny.pre-spawn-environ": heap.dask_pre_spawn_environ()}):
            cluster = LocalCluster(processes=True, dashboard_address=None)
        log.info("started a local Dask cluster with %d workers", len(cluster.workers))
        from terramind_openeo.processes.workers import QuickExit

        client = Client(cluster)
        client.register_plugin(QuickExit())  # the server stops without killing its workers
        return client
    log.info("connecting to the Dask scheduler at %s", mode)
    return Client(mode)


def workers_cpu_seconds(client) -> dict[str, float]:
    """CPU seconds each Dask worker process has used so far; ``{}`` if the workers cannot be asked."""
    try:
        return {k: float(v) for k, v in client.run(process_cpu_seconds).items()}
    except Exception as exc:  # noqa: BLE001 - usage is best effort, never a reason to fail a job
        log.warning("could not read the Dask workers' CPU time: %s", exc)
        return {}


def stac_pixels(stac: dict) -> int:
    """Pixels written (rows x columns x bands, summed over the result items' ``proj:shape``)."""
    total = 0
    for item in stac.get("features", []) or []:
        props = item.get("properties", {}) if isinstance(item, dict) else {}
        shape = props.get("proj:shape")
        if isinstance(shape, list) and all(isinstance(v, int) for v in shape):
            size = 1
            for v in shape:
                size *= v
            total += size * max(1, len(props.get("eo:bands") or []))
    return total


class ProcessesEngine:
    """Adapter onto ``terramind_openeo.processes`` (imported lazily: the API starts without it)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._catalog = None
        self._specs: list[dict] | None = None
        self._client = None
        self._lock = threading.Lock()

    @staticmethod
    def _module():
        from terramind_openeo import processes

        return processes

    @property
    def catalog(self):
        with self._lock:
            if self._catalog is None:
                processes = self._module()
                path = self.settings.catalog
                self._catalog = processes.Catalog.from_file(Path(path)) if path else processes.Catalog.default()
            return self._catalog

    def collections(self) -> list[dict]:
        return list(self.catalog.collections())

    def collection_items(self, collection_id: str) -> list[dict]:
        """STAC Items of one collection; ``CollectionNotFound`` (404) for an unknown id."""
        try:
            return list(self.catalog.items(collection_id))
        except OpenEOError:
            raise
        except Exception as exc:  # an unreadable file of the collection: named, its trace kept for the logs
            raise to_openeo_error(exc) from exc

    def process_specs(self) -> list[dict]:
        if self._specs is None:
            self._specs = list(self._module().list_process_specs())
        return self._specs

    def file_formats(self) -> dict:
        provider = getattr(self._module(), "list_file_formats", None)
        return provider() if callable(provider) else DEFAULT_FILE_FORMATS

    def _client_for_run(self):
        with self._lock:
            if self._client is None and self.settings.dask not in ("", "threads"):
                self._client = _dask_client(self.settings.dask)
            return self._client

    def execute(self, process_graph: dict, output_dir: Path, *, user_processes: dict[str, dict],
                logger: logging.Logger, cancel: threading.Event, progress: Callable[[float], None],
                job_results: dict[str, str] | None = None, max_pixels: int | None = None) -> Outcome:
        """``job_results``: the caller's finished batch jobs (id -> results directory), for ``load_ml_model``;
        ``max_pixels``: the synchronous budget (``Policy.max_pixels``)."""
        processes = self._module()
        output_dir.mkdir(parents=True, exist_ok=True)
        client = self._client_for_run()
        meter, workers0 = UsageMeter(), (workers_cpu_seconds(client) if client is not None else {})
        try:
            result = processes.execute_process_graph(
                process_graph, output_dir, catalog=self.catalog, user_processes=user_processes or None,
                logger=logger, cancel=cancel.is_set, progress=progress, dask_client=client,
                policy=dataclasses.replace(execution_policy(self.settings), max_pixels=max_pixels),
                job_results=job_results or {})
        except (OpenEOError, MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug or an unexpected failure deep inside: named, its trace kept for the logs
            raise to_openeo_error(exc) from exc
        files = [Path(f) for f in (getattr(result, "files", None) or [])]
        stac = getattr(result, "stac", None) or None
        usage = dict(getattr(result, "usage", None) or {})
        if stac and "pixels" not in usage:
            usage["pixels"] = entry(stac_pixels(stac), "pixels")
        if client is not None and "cpu" not in usage:
            # the tiles were computed in the workers' processes: their CPU time is the bulk of the job's. On a
            # cluster shared by several running jobs this includes theirs for the same period (an upper bound).
            workers1 = workers_cpu_seconds(client)
            spent = sum(max(0.0, workers1[w] - workers0[w]) for w in workers1 if w in workers0)
            usage["cpu"] = entry(process_cpu_seconds() - meter.cpu0 + spent, "cpu-seconds")
        outcome = Outcome(files=files, stac=stac, usage=usage)
        if not files and not getattr(result, "formats", None):
            outcome.value, outcome.has_value = to_jsonable(getattr(result, "value", None)), True
        return outcome

    def close(self) -> None:
        if self._client is not None:
            cluster = getattr(self._client, "cluster", None)
            self._client.close()
            if cluster is not None:
                cluster.close()
            self._client = None
