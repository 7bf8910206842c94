"""Usage accounting in one place (backend/usage.py): the engine's, the worker's and the runner's figures."""

from __future__ import annotations

from terramind_openeo.backend.usage import UsageMeter, entry, process_cpu_seconds


def test_the_meter_fills_only_what_is_missing():
    meter = UsageMeter()
    sum(i * i for i in range(200_000))  # some CPU time
    usage = meter.add_to({"cpu": entry(12.345, "cpu-seconds"), "pixels": entry(10, "pixels")},
                         "cpu", "duration", "memory")
    assert usage["cpu"] == {"value": 12.35, "unit": "cpu-seconds"}  # the engine's (workers included) wins
    assert usage["duration"]["unit"] == "seconds" and usage["duration"]["value"] >= 0
    assert usage["memory"]["unit"] == "mb-peak" and usage["memory"]["value"] > 10
    assert process_cpu_seconds() >= meter.cpu0


def test_the_runner_and_the_worker_use_it():
    import inspect

    from terramind_openeo.backend import engine, isolation, runner

    for module in (engine, isolation, runner):
        source = inspect.getsource(module)
        assert "getrusage" not in source and "os.times" not in source, module.__name__
