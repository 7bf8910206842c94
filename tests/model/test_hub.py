"""The hub, fail-fast (issue 17, problem 3): one quick attempt per process, a message that says what to do,
and ``terramind-openeo weights download`` to fill a cache that can be copied to a machine without internet.

No internet here: a local stand-in serves the hub's ``resolve`` URLs (``tests/hub_standin.py``); the files
are a few bytes (a real tiny checkpoint is 212 MB, the LULC tokenizer 736 MB), since what is tested is where
they go and how they are found, not their contents.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from hub_standin import hub_standin, point_hub_at, resolve_requests

from terramind_openeo.model.errors import HubUnavailableError, WeightsSourceError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILES = {("ibm-esa-geospatial/TerraMind-1.0-tiny", "TerraMind_v1_tiny.pt"): b"tiny checkpoint bytes",
         ("ibm-esa-geospatial/TerraMind-1.0-Tokenizer-LULC", "TerraMind_Tokenizer_LULC.pt"): b"lulc tokenizer"}


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty cache and no failure remembered from earlier tests."""
    import huggingface_hub.constants as constants

    from terramind_openeo.model import hub

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub.forget_failures()
    yield hub
    hub.forget_failures()


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def test_weights_download_fills_a_cache_that_works_offline_elsewhere(tmp_path):
    target = tmp_path / "copy-me"
    with hub_standin(FILES) as standin:
        done = subprocess.run([sys.executable, "-m", "terramind_openeo.cli", "weights", "download",
                               "terramind_v1_tiny", "LULC", "--to", str(target)],
                              env=_env(HF_ENDPOINT=standin.url, HF_HUB_CACHE=str(tmp_path / "unused")),
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"HF_HUB_CACHE={target}" in done.stdout
    # "the other machine": offline, an unreachable endpoint, only the copied folder as its cache
    moved = tmp_path / "elsewhere"
    target.rename(moved)
    code = ("from terramind_openeo.model.hub import fetch, hub_file\n"
            "for name in ('terramind_v1_tiny', 'LULC'):\n"
            "    print(fetch(hub_file(name)).read_bytes().decode())\n")
    read = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=_env(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(moved), HF_ENDPOINT="http://127.0.0.1:9"))
    assert read.returncode == 0, read.stderr
    assert read.stdout.split("\n")[:2] == ["tiny checkpoint bytes", "lulc tokenizer"]


def test_weights_list_and_unknown_names(tmp_path):
    done = subprocess.run([sys.executable, "-m", "terramind_openeo.cli", "weights", "download", "terramind_v9"],
                          env=_env(HF_HUB_CACHE=str(tmp_path)), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "unknown weights name 'terramind_v9'" in done.stderr
    listed = subprocess.run([sys.executable, "-m", "terramind_openeo.cli", "weights", "list"],
                            env=_env(HF_HUB_CACHE=str(tmp_path)), capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "terramind_v1_base" in listed.stdout and "LULC" in listed.stdout
    assert "coords" in listed.stdout  # the geo-localisation tokenizer (generation target coords) too


def test_an_unreachable_hub_is_one_quick_attempt_with_a_message_saying_what_to_do(fresh, monkeypatch):
    with hub_standin({}) as standin:  # answers 404 to everything, and counts
        point_hub_at(monkeypatch, standin.url)
        with pytest.raises(HubUnavailableError) as err:
            fresh.fetch_all([fresh.hub_file("terramind_v1_base"), fresh.hub_file("LULC")])
        requests = len(resolve_requests(standin))
        with pytest.raises(HubUnavailableError):  # the next tile of the run: no new attempt
            fresh.fetch(fresh.hub_file("terramind_v1_base"))
        assert len(resolve_requests(standin)) == requests == 1, standin.requests
    message = str(err.value)
    for text in ("TerraMind_v1_base.pt", "TerraMind_Tokenizer_LULC.pt",
                 "terramind-openeo weights download terramind_v1_base LULC --to DIR", "HF_HUB_CACHE",
                 "--param weights=/path/TerraMind_v1_base.pt", "load_terramind", "allowed_weights",
                 "--param weights=random --param model=terramind_v1_tiny"):
        assert text in message, (text, message)
    assert "rerun" not in message


def test_a_hub_that_does_not_answer_costs_one_timeout(fresh, monkeypatch):
    """A port that accepts connections and never answers: the reachability check gives up after its timeout."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        point_hub_at(monkeypatch, f"http://127.0.0.1:{silent.getsockname()[1]}")
        start = time.monotonic()
        with pytest.raises(HubUnavailableError, match="did not answer within 0.5 s"):
            fresh.fetch(fresh.hub_file("terramind_v1_tiny"), timeout=0.5)
        assert time.monotonic() - start < 30  # not the five retries with back-off of huggingface_hub


def test_offline_mode_without_the_file_says_so(fresh, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsSourceError, match="HF_HUB_OFFLINE is set"):
        fresh.fetch(fresh.hub_file("terramind_v1_tiny"))
