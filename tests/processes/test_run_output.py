"""What ``terramind-openeo run`` prints (issue 17, problem 7): the useful lines only, a bar only on a terminal,
warnings above it, an area rate right for slow runs, ``--list-params``, plain help, a quick clean shutdown.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys

import pytest
from processes_helpers import GRAPHS, REPO

from terramind_openeo.processes import progress as progress_module
from terramind_openeo.processes.cli import main

SITE = '{"west": 790236.04, "east": 791196.04, "south": 7197079.25, "north": 7198039.25, "crs": 32722}'


def _run(args: list[str], shared, tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), TERRAMIND_OPENEO_SHARED_DATA=str(shared))
    return subprocess.run([sys.executable, "-m", "terramind_openeo.cli", "run", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)  # stderr is a pipe: no terminal


def test_a_run_without_a_terminal_prints_plain_useful_lines(shared_data, tmp_path):
    done = _run([str(GRAPHS / "s2_to_lulc.json"), "--output", str(tmp_path / "out"), "--workers", "1",
                 "--param", "weights=random", "--param", "model=terramind_v1_tiny", "--param", f"spatial_extent={SITE}",
                 "--param", "tile_size=64"], shared_data, tmp_path)
    err = done.stderr
    assert done.returncode == 0, err[-3000:]
    assert "INFO distributed" not in err and "distributed.nanny" not in err  # Dask's INFO lines silenced
    assert "killed by signal" not in err and "still alive" not in err  # workers leave by themselves
    assert "\r" not in err and "tile/s" not in err  # no bar drawn into a pipe or a log file
    assert "tile 1/1 done, 0.922 km²" in err and "km²/h" in err, err[-3000:]  # 96 x 96 px at 10 m
    assert "1 work tile of up to 96 px" in err
    warnings = [line for line in err.splitlines() if " WARNING " in line and "RANDOM weights" in line]
    assert warnings and "terramind_generate" in warnings[0]


def test_verbose_brings_back_dasks_info_lines(shared_data, tmp_path):
    done = _run([str(GRAPHS / "ndvi_composite.json"), "--output", str(tmp_path / "out"), "--workers", "1", "-v",
                 "--param", "collection=SENTINEL2_L2A_BOLZANO", "--param",
                 'spatial_extent={"west": 679720, "east": 680680, "south": 5151080, "north": 5151920, "crs": 32632}'],
                shared_data, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "INFO distributed." in done.stderr


def test_list_params_needs_no_output_and_shows_defaults(capsys):
    assert main([str(GRAPHS / "s2_to_lulc.json"), "--list-params"]) == 0
    out = capsys.readouterr().out
    assert 'weights (string, default "hub")' in out and "model (string, default \"terramind_v1_base\")" in out
    assert "spatial_extent (object|null, default {" in out and "'hub', a local checkpoint path" in out


def test_output_is_still_required_for_a_run(capsys):
    with pytest.raises(SystemExit):
        main([str(GRAPHS / "s2_to_lulc.json")])
    assert "--output is required" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "serve", "weights", "encode", None])
def test_help_is_plain_text(command):
    args = [sys.executable, "-m", "terramind_openeo.cli", *([command] if command else []), "--help"]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "`" not in done.stdout, done.stdout


def test_the_rate_is_an_area_per_hour_right_for_slow_runs(monkeypatch, caplog):
    """One 224 x 224 px tile at 10 m (5.02 km²) in an hour: Mpx/s read 0.00, this reads 5.02 km²/h."""
    clock = [1000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    progress = progress_module.Progress(4, 0, bar=False, km2_per_pixel=1e-4)
    clock[0] += 3600
    with caplog.at_level(logging.INFO, logger="terramind_openeo.run"):
        progress.update(224 * 224)
    assert "tile 1/4 done, 5.02 km² in 1:00:00, 5.02 km²/h, about 3:00:00 left" in caplog.text
    assert progress_module.Progress(4, 0, bar=False).rate().endswith("tiles/h")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_only_on_a_terminal_and_log_lines_above_it(monkeypatch):
    assert not progress_module.wants_bar(False, io.StringIO())
    assert not progress_module.wants_bar(True, _Terminal())
    assert progress_module.wants_bar(False, _Terminal())
    screen = _Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    handler = logging.StreamHandler(screen)
    logging.root.addHandler(handler)
    try:
        with progress_module.logs_above_bar(True):
            progress = progress_module.Progress(2, 0, bar=True, km2_per_pixel=1e-4)
            progress.update(100)
            logging.getLogger("terramind_openeo.test").warning("a warning while the bar is drawn")
            progress.update(100)
            progress.close()
    finally:
        logging.root.removeHandler(handler)
    text = screen.getvalue()
    assert "tiles:" in text and "2/2" in text
    line = next(part for part in text.split("\n") if "a warning while the bar is drawn" in part)
    assert "tiles:" not in line.split("\r")[-1], repr(line)  # the warning has a line of its own
