"""The UDF sandbox as a server of one run's calls: concurrent calls, answers and log lines to the right call,
one call's failure or timeout (real bubblewrap; the attacks it stops are in tests/backend/security)."""

from __future__ import annotations

import dataclasses
import logging
import threading

import numpy as np
import pytest
import xarray as xr

from terramind_openeo.processes.errors import UdfError
from terramind_openeo.processes.sandbox import Sandbox, SandboxConfig, default_config, imported_modules

CONFIG = default_config()
pytestmark = pytest.mark.skipif(not isinstance(CONFIG, SandboxConfig),
                                reason=f"no UDF sandbox here: {getattr(CONFIG, 'reason', '')}")

UDF = '''
import os, time
from openeo.udf import XarrayDataCube, inspect

def apply_datacube(cube: XarrayDataCube, context: dict) -> XarrayDataCube:
    role = context["role"]
    if role == "wait":  # returns only once a concurrent call of the same sandbox has signalled
        for _ in range(600):
            if os.path.exists("/tmp/signal"):
                return cube
            time.sleep(0.05)
        raise TimeoutError("no concurrent call signalled")
    if role == "signal":
        open("/tmp/signal", "w").close()
        return cube
    if role == "double":
        inspect(message=f"call {context['n']}")
        time.sleep(0.01 * (context["n"] % 3))
        return XarrayDataCube(cube.get_array() * 2)
    if role == "fail":
        raise ValueError("meant to fail")
    if role == "sleep":
        time.sleep(60)
    return cube
'''


def cube(value: float) -> xr.DataArray:
    return xr.DataArray(np.full((1, 4, 4), value, dtype="float32"), dims=("bands", "y", "x"),
                        coords={"bands": ["b"], "y": np.arange(4.0), "x": np.arange(4.0)})


@pytest.fixture
def box():
    sandbox = Sandbox(dataclasses.replace(CONFIG, threads=4))
    yield sandbox
    sandbox.close()


def in_threads(*calls):
    """Run the calls at once; their results (or exceptions) in order."""
    results: list = [None] * len(calls)

    def run(i, call):
        try:
            results[i] = call()
        except Exception as exc:  # noqa: BLE001
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_calls_of_one_run_run_at_once(box):
    """A call that waits for a second one returns: the sandbox runs them at the same time (served one at a
    time, the first would wait 30 s and fail)."""
    waiting, signalling = in_threads(lambda: box.apply(UDF, cube(1), {"role": "wait"}),
                                     lambda: box.apply(UDF, cube(2), {"role": "signal"}))
    assert not isinstance(waiting, Exception), waiting
    assert float(waiting.values.max()) == 1.0 and float(signalling.values.max()) == 2.0


def test_each_answer_and_log_line_reaches_its_own_call(box):
    loggers, seen = [], []
    for n in range(12):
        logger = logging.getLogger(f"test-sandbox-call-{n}")
        records: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record, records=records: records.append(record.getMessage())  # type: ignore[method-assign]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        loggers.append(logger)
        seen.append(records)
    results = in_threads(*[lambda n=n: box.apply(UDF, cube(n), {"role": "double", "n": n}, logger=loggers[n])
                           for n in range(12)])
    for n, result in enumerate(results):
        assert not isinstance(result, Exception), result
        assert float(result.values.max()) == 2.0 * n
        assert seen[n] == [f"UDF inspect [User]: call {n}"]


def test_a_failing_call_leaves_the_others_and_the_sandbox_working(box):
    failed, fine = in_threads(lambda: box.apply(UDF, cube(1), {"role": "fail"}),
                              lambda: box.apply(UDF, cube(3), {"role": "double", "n": 0}))
    assert isinstance(failed, UdfError) and "ValueError: meant to fail" in str(failed)
    assert float(fine.values.max()) == 6.0
    assert float(box.apply(UDF, cube(4), {"role": "double", "n": 1}).values.max()) == 8.0


def test_a_timeout_ends_the_sandbox_and_every_call_in_it():
    box = Sandbox(dataclasses.replace(CONFIG, threads=4, call_timeout_s=3.0))
    try:
        results = in_threads(lambda: box.apply(UDF, cube(1), {"role": "sleep"}),
                             lambda: box.apply(UDF, cube(2), {"role": "sleep"}))
        assert all(isinstance(r, UdfError) for r in results), results
        assert any("longer than 3 s" in str(r) for r in results)
        assert box.proc.poll() is not None
        with pytest.raises(UdfError, match="ended before the call"):
            box.apply(UDF, cube(3), {"role": "double", "n": 0})
    finally:
        box.close()


def test_imports_are_read_from_the_code_without_running_it():
    code = "import os, xml.dom\nfrom json import dumps as d, loads\nfrom . import x\nraise SystemExit('never run')\n"
    assert imported_modules(code) == [["os", []], ["xml.dom", []], ["json", ["dumps", "loads"]]]
    assert imported_modules("def (") == []


def test_preload_imports_installed_modules_by_name_only(box):
    reply, _ = box._call({"op": "preload", "modules": [["xml.dom.minidom", []], ["json", ["decoder"]],
                                                       ["os; import tabnanny", []], ["no_such_module_xyz", []], "x"]},
                         (), None)
    assert reply["ok"] and reply["failed"] == ["no_such_module_xyz"]
    probe = ('import sys\nfrom openeo.udf import XarrayDataCube\n\n'
             'def apply_datacube(cube: XarrayDataCube, context: dict) -> XarrayDataCube:\n'
             '    loaded = [m in sys.modules for m in ("xml.dom.minidom", "json.decoder", "tabnanny")]\n'
             '    return XarrayDataCube(cube.get_array() * 0 + sum(2 ** i * v for i, v in enumerate(loaded)))\n')
    assert float(box.apply(probe, cube(0), {}).values.max()) == 3.0  # minidom and json.decoder, not tabnanny


def test_the_server_of_a_sandboxed_run_does_not_import_torch():
    """The engine's modules leave torch to the processes that run a model (the sandbox, or an in-process
    UDF): a server importing it for nothing doubles the start of every sandboxed run on a small machine."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, terramind_openeo.processes.execute, "
                          "terramind_openeo.processes.chunked, terramind_openeo.inference.tiling; "
                          "print('torch' in sys.modules)"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_early_sandbox_ends_with_a_run_that_fails_its_checks(tmp_path, monkeypatch):
    """A request mentioning run_udf starts its sandbox before the graph is checked; a graph the checks
    refuse leaves no sandbox behind."""
    from terramind_openeo.processes import Catalog, execute, execute_process_graph
    from terramind_openeo.processes.errors import OpenEOError
    from terramind_openeo.processes.policy import Policy

    started: list[Sandbox] = []

    def recording(config):
        started.append(execute_start_early(config))
        return started[-1]

    execute_start_early = execute.start_early
    monkeypatch.setattr(execute, "start_early", recording)
    graph = {"process_graph": {"u": {"process_id": "run_udf", "result": True, "arguments": {
        "data": {"from_parameter": "no_such_parameter"}, "udf": UDF, "runtime": "Python"}}}}
    with pytest.raises(OpenEOError, match="no_such_parameter"):
        execute_process_graph(graph, tmp_path, catalog=Catalog.default(), policy=Policy(udf_sandbox=CONFIG))
    assert len(started) == 1 and started[0].closed and started[0].proc.poll() is not None
