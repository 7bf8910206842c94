"""A tiny stand-in for the processes layer: same methods as ``backend.engine.Engine``, no array maths.

Used by the API tests that check HTTP behaviour (errors, auth, jobs, isolation, load) independently of the
engine; the acceptance tests run the real engine.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from terramind_openeo.backend.engine import DEFAULT_FILE_FORMATS, Outcome
from terramind_openeo.errors import JobCanceled, OpenEOError

COLLECTION = {
    "type": "Collection", "stac_version": "1.0.0", "id": "FAKE_S2", "title": "fake", "description": "fake S2",
    "license": "proprietary",
    "extent": {"spatial": {"bbox": [[11.0, 46.0, 12.0, 47.0]]},
               "temporal": {"interval": [["2022-06-01T00:00:00Z", "2022-07-01T00:00:00Z"]]}},
    "cube:dimensions": {"x": {"type": "spatial", "axis": "x", "extent": [0, 1]},
                        "y": {"type": "spatial", "axis": "y", "extent": [0, 1]},
                        "t": {"type": "temporal", "extent": ["2022-06-01T00:00:00Z", "2022-07-01T00:00:00Z"]},
                        "bands": {"type": "bands", "values": ["B04", "B08"]}},
    "summaries": {"eo:bands": [{"name": "B04"}, {"name": "B08"}]},
    "links": [],
}


def _spec(pid: str, *params: str) -> dict:
    return {"id": pid, "description": pid, "parameters": [
        {"name": p, "description": p, "schema": {}} for p in params], "returns": {"description": "x", "schema": {}}}


SPECS = [_spec("load_collection", "id", "spatial_extent", "temporal_extent", "bands"),
         _spec("save_result", "data", "format", "options"), _spec("add", "x", "y"), _spec("absolute", "x"),
         _spec("run_udf", "data", "udf", "runtime", "context"), _spec("sleep", "data", "seconds"),
         _spec("fail", "data"), _spec("crash", "data"), _spec("apply_neighborhood", "data", "process", "size", "overlap", "context"),
         _spec("terramind_embed", "data", "model", "weights"),
         _spec("terramind_generate", "data", "model", "weights", "target")]


class FakeEngine:
    def __init__(self):
        self.executions = 0

    def collections(self) -> list[dict]:
        return [COLLECTION]

    def process_specs(self) -> list[dict]:
        return SPECS

    def file_formats(self) -> dict:
        return DEFAULT_FILE_FORMATS

    def close(self) -> None:
        pass

    def execute(self, process_graph, output_dir: Path, *, user_processes, logger, cancel, progress,
                job_results=None, max_pixels=None) -> Outcome:
        self.executions += 1
        output_dir.mkdir(parents=True, exist_ok=True)
        values: dict[str, object] = {}
        result = None
        for node_id, node in process_graph.items():  # fake graphs are written in execution order
            args = {k: (values[v["from_node"]] if isinstance(v, dict) and "from_node" in v else v)
                    for k, v in node.get("arguments", {}).items()}
            pid = node["process_id"]
            if pid in user_processes:
                pid = "absolute"
            if pid == "load_collection":
                values[node_id] = {"collection": args["id"]}
            elif pid == "add":
                values[node_id] = args["x"] + args["y"]
            elif pid == "absolute":
                values[node_id] = abs(args["x"])
            elif pid == "run_udf":
                logger.info("udf says hello", extra={"data": {"x": 1}})
                values[node_id] = args.get("data")
            elif pid == "sleep":
                end = time.monotonic() + float(args["seconds"])
                while time.monotonic() < end:
                    progress(1 - (end - time.monotonic()) / float(args["seconds"]))
                    if cancel.is_set():
                        raise JobCanceled("canceled")
                    time.sleep(0.02)
                values[node_id] = args["data"]
            elif pid == "fail":
                raise OpenEOError("the fake process failed on purpose", code="ProcessFailed", status=400)
            elif pid == "crash":  # a bug of the engine, not an openEO error
                raise RuntimeError("the fake engine crashed on purpose")
            elif pid == "save_result":
                fmt = str(args.get("format", "JSON")).lower()
                name = {"gtiff": "result.tif", "netcdf": "result.nc"}.get(fmt, "result.json")
                path = output_dir / name
                path.write_text(json.dumps({"data": args["data"], "format": fmt}))
                values[node_id] = path
            if node.get("result"):
                result = values[node_id]
        if isinstance(result, Path):
            return Outcome(files=[result], stac={"type": "Collection", "id": "x", "stac_version": "1.0.0"})
        return Outcome(value=result, has_value=True)
