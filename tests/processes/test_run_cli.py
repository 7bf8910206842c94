"""``terramind-openeo run``: tiles, resume after a hard stop, mosaics, quicklook, STAC, parameters, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import xarray as xr
from processes_helpers import GRAPHS, REPO

from terramind_openeo.processes import execute_process_graph
from terramind_openeo.processes.cli import main

FULL = ["--param", "collection=S2_BOLZANO", "--param", "spatial_extent=null"]


def cli(args: list[str], **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "terramind_openeo.cli", "run", *args], cwd=REPO, text=True,
                          capture_output=True, env={**os.environ, **env}, timeout=300)


@pytest.fixture(scope="module")
def reference(catalog, tmp_path_factory) -> np.ndarray:
    """The NDVI composite over the whole Bolzano cube, computed in one go (no tiles)."""
    pg = json.loads((GRAPHS / "ndvi_composite.json").read_text())
    out = tmp_path_factory.mktemp("ref")
    res = execute_process_graph(pg, out, catalog=catalog, parameters={"collection": "S2_BOLZANO",
                                                                      "spatial_extent": None})
    with rasterio.open(res.files[0]) as src:
        return src.read(1)


def test_run_tiles_mosaic_quicklook_stac(catalog_file, reference, tmp_path):
    out = tmp_path / "out"
    rc = main([str(GRAPHS / "ndvi_composite.json"), "--output", str(out), "--scheduler", "threads",
               "--tile-size", "256", "--chunk-size", "128", "--catalog", str(catalog_file), "--no-progress", *FULL])
    assert rc == 0
    with rasterio.open(out / "openEO.tif") as src:
        assert src.shape == (705, 935) and src.crs.to_epsg() == 32632
        np.testing.assert_array_equal(src.read(1), reference)
    from rio_cogeo.cogeo import cog_validate

    assert cog_validate(out / "openEO.tif")[0]
    assert (out / "openEO_quicklook.png").stat().st_size > 0
    stac = json.loads((out / "collection.json").read_text())
    assert stac["type"] == "Collection" and (out / "openEO.tif.stac.json").is_file()
    manifest = (out / ".tiles/openEO/manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 12  # 705 x 935 px in tiles of 256 px: 3 x 4


# The CLI with a tile hook injected that SIGKILLs its own process once N tiles are written: a real hard stop
# (no cleanup, no finally blocks), at a deterministic point, with no test switch in the library.
KILLER = """
import functools, os, signal, sys
from terramind_openeo.processes import runner

def hook(tile, written):
    if written >= int(os.environ["KILL_AFTER_TILES"]):
        os.kill(os.getpid(), signal.SIGKILL)

runner.run_save = functools.partial(runner.run_save, on_tile_done=hook)
from terramind_openeo.processes.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_interrupted_run_resumes_and_equals_uninterrupted(catalog_file, reference, tmp_path):
    out = tmp_path / "out"
    args = [str(GRAPHS / "ndvi_composite.json"), "--output", str(out), "--scheduler", "threads", "--tile-size",
            "256", "--chunk-size", "128", "--catalog", str(catalog_file), "--no-progress", *FULL]
    first = subprocess.run([sys.executable, "-c", KILLER, *args], cwd=REPO, text=True, capture_output=True,
                           env={**os.environ, "KILL_AFTER_TILES": "5"}, timeout=300, check=False)
    assert first.returncode == -9, first.stderr[-2000:]  # killed by SIGKILL
    assert not (out / "openEO.tif").exists()  # nothing published from a broken run
    lines = (out / ".tiles/openEO/manifest.jsonl").read_text().splitlines()
    assert len(lines) == 5
    damaged = out / next(iter(json.loads(lines[0])["files"]))
    damaged.write_bytes(damaged.read_bytes()[:-100])  # a half-written tile must not be trusted
    second = cli(args)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "4 already done" in second.stderr and "missing or damaged" in second.stderr
    with rasterio.open(out / "openEO.tif") as src:
        np.testing.assert_array_equal(src.read(1), reference)


def test_zarr_netcdf_vrt_outputs(catalog_file, tmp_path):
    pg = json.loads((GRAPHS / "ndvi_composite.json").read_text())
    for fmt in ("Zarr", "netCDF"):
        pg["process_graph"]["save"]["arguments"]["format"] = fmt
        path = tmp_path / f"{fmt}.json"
        path.write_text(json.dumps(pg))
        assert main([str(path), "--output", str(tmp_path / fmt), "--scheduler", "threads", "--tile-size", "64",
                     "--chunk-size", "32", "--catalog", str(catalog_file), "--no-progress",
                     "--param", "collection=S2_BOLZANO"]) == 0
    z = xr.open_zarr(tmp_path / "Zarr/openEO.zarr")
    n = xr.open_dataset(tmp_path / "netCDF/openEO.nc", decode_coords="all")
    np.testing.assert_array_equal(z["NDVI"].values, n["NDVI"].values)
    assert n.rio.crs.to_epsg() == 32632 and z["NDVI"].shape == (84, 96)
    assert (tmp_path / "Zarr/openEO_quicklook.png").is_file()
    vrt = tmp_path / "vrt"
    assert main([str(GRAPHS / "ndvi_composite.json"), "--output", str(vrt), "--scheduler", "threads", "--mosaic",
                 "vrt", "--tile-size", "64", "--chunk-size", "32", "--catalog", str(catalog_file), "--no-progress",
                 "--param", "collection=S2_BOLZANO"]) == 0
    with rasterio.open(vrt / "openEO.vrt") as src:
        np.testing.assert_array_equal(src.read(1), n["NDVI"].values)


def test_class_map_quicklook_has_legend(catalog_file, tmp_path):
    from PIL import Image

    pg = {"process_graph": {
        "load": {"process_id": "load_collection", "arguments": {"id": "TM_LULC", "spatial_extent": None,
                                                               "temporal_extent": ["2021-07-01", "2021-08-01"]}},
        "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "load"}, "format": "GTiff"},
                 "result": True}}}
    path = tmp_path / "lulc.json"
    path.write_text(json.dumps(pg))
    assert main([str(path), "--output", str(tmp_path / "o"), "--scheduler", "threads", "--catalog",
                 str(catalog_file), "--no-progress"]) == 0
    img = Image.open(tmp_path / "o/openEO_quicklook.png")
    assert img.width > 224  # map plus legend column


def test_cli_errors(catalog_file, tmp_path, caplog):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main([str(bad), "--output", str(tmp_path / "o"), "--catalog", str(catalog_file)]) == 2
    assert "ProcessGraphInvalid" in caplog.text
    assert main([str(GRAPHS / "ndvi_composite.json"), "--output", str(tmp_path / "o"), "--catalog",
                 str(catalog_file), "--param", "collection=NOPE"]) == 2
    assert "CollectionNotFound" in caplog.text and "NOPE" in caplog.text
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main([str(GRAPHS / "ndvi_composite.json"), "--output", str(blocker / "o"), "--catalog",
                 str(catalog_file), "--param", "collection=S2_BOLZANO"]) == 1
    assert "OutputNotWritable" in caplog.text


@pytest.mark.parametrize("option", ["--workers", "--threads-per-worker"])
def test_cli_rejects_non_positive_counts(option, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(GRAPHS / "ndvi_composite.json"), "--output", str(tmp_path / "o"), option, "0"])
    assert exc.value.code == 2
    assert f"argument {option}: must be a positive integer, got '0'" in capsys.readouterr().err


def test_threads_per_worker_reaches_the_local_workers(monkeypatch):
    pytest.importorskip("distributed")
    from terramind_openeo.processes.cli import dask_scheduler

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # a nanny started earlier exported its values here
        monkeypatch.delenv(name, raising=False)
    with dask_scheduler("local", 1, threads_per_worker=7) as client:  # not cores / workers
        envs = client.run(lambda: (os.environ["OMP_NUM_THREADS"], os.environ["MKL_NUM_THREADS"]))
    assert list(envs.values()) == [("7", "7")]


def test_failing_tile_is_reported_and_finished_tiles_kept(catalog_file, tmp_path, caplog, monkeypatch):
    import terramind_openeo.processes.runner as runner

    real = runner.compute_tiles

    def flaky(cube, tiles, client, window=0):
        for tile, values in real(cube, tiles, client, window):
            yield tile, (RuntimeError("disk on fire") if tile.id == "r000_c001" else values)

    monkeypatch.setattr(runner, "compute_tiles", flaky)
    out = tmp_path / "o"
    args = [str(GRAPHS / "ndvi_composite.json"), "--output", str(out), "--scheduler", "threads", "--tile-size",
            "64", "--chunk-size", "32", "--catalog", str(catalog_file), "--no-progress",
            "--param", "collection=S2_BOLZANO"]
    assert main(args) == 1
    assert "r000_c001" in caplog.text and "TileFailed" in caplog.text
    assert not (out / "openEO.tif").exists()
    monkeypatch.setattr(runner, "compute_tiles", real)
    assert main(args) == 0 and (out / "openEO.tif").is_file()


def test_udf_messages_of_local_worker_processes_reach_the_run_log(catalog_file, tmp_path):
    """``run --scheduler local --workers 2``: the UDF runs in worker processes, its ``inspect`` messages
    still reach the ``run`` command's log (forwarded by dask.distributed)."""
    from test_distributed import inspect_graph

    path = tmp_path / "udf.json"
    path.write_text(json.dumps(inspect_graph("the-run-command")))
    proc = cli([str(path), "--output", str(tmp_path / "out"), "--scheduler", "local", "--workers", "2",
                "--catalog", str(catalog_file), "--no-progress", "--chunk-size", "32"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "UDF inspect" in line]
    assert len(lines) == 9 and all("from the-run-command" in line for line in lines), proc.stderr[-3000:]
