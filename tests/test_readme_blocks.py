"""Every code block of README.md and process_graphs/README.md, run as written (issue 17, problem 1).

Blocks are extracted from the Markdown and run in a temporary folder that links ``process_graphs/`` and
``udf/`` (so relative paths work and ``out/`` lands there). What is changed, and why:

- the offline form the READMEs document where the official weights would be needed (no internet here):
  ``--param weights=random --param model=terramind_v1_tiny`` for ``run``; ``model="terramind_v1_tiny",
  weights="random"`` added to each ``terramind_*`` call and to a UDF's ``context`` of the client code;
- ``terramind-openeo serve`` runs with its data in a temporary folder and on a free port (8000 may be taken on
  a shared machine), the client's URL pointing there; the password asked by ``--add-user`` is the
  snippet's ("secret");
- not run (``NOT_RUN`` says why): ``pip install ...`` (``.ci/run`` runs exactly these commands on a fresh
  virtual environment), ``python -m pytest -q`` (this is that run) and the fine-tuned model's example, which
  needs the reader's own checkpoint.

``test_every_block_is_covered`` fails when a block appears that none of these rules handles.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
READMES = (REPO / "README.md", REPO / "process_graphs" / "README.md")
OFFLINE_RUN = ["--param", "weights=random", "--param", "model=terramind_v1_tiny"]
OFFLINE_CONTEXT = {"model": "terramind_v1_tiny", "weights": "random"}
NOT_RUN = {"pip install": ".ci/run installs exactly this on a fresh virtual environment",
           "python -m pytest": "this is that test run",
           "terramind-openeo run process_graphs/flood_map.json": "needs the reader's own fine-tuned checkpoint "
           "(best.ckpt); tests/processes run this graph with one they write"}
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(path: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(path.read_text())]


def commands(script: str) -> list[str]:
    """Shell commands of a bash block: continuation lines joined, comments dropped, ``&&`` chains split."""
    joined = re.sub(r"\\\n\s*", " ", script)
    out = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        out += [part.strip() for part in line.split("&&") if part.strip()]
    return out


def skipped(command: str) -> str | None:
    return next((why for prefix, why in NOT_RUN.items() if command.startswith(prefix)), None)


def _env(tmp: Path, shared: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TERRAMIND_OPENEO_", "HF_"))}
    env.update(PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TERRAMIND_OPENEO_SHARED_DATA=str(shared), HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp / "hf-cache"),
               **extra)
    return env


def _workdir(tmp: Path) -> Path:
    work = tmp / "work"
    work.mkdir()
    for name in ("process_graphs", "udf"):
        (work / name).symlink_to(REPO / name)
    return work


def _cli(command: str) -> list[str]:
    args = shlex.split(command)
    assert args[0] == "terramind-openeo", command
    return [sys.executable, "-m", "terramind_openeo.cli", *args[1:]]


def _offline_run(args: list[str]) -> list[str]:
    """``run`` of a graph whose weights default to the hub: the documented offline form."""
    import json

    graph = json.loads((REPO / args[2]).read_text())  # terramind-openeo run GRAPH ...
    params = {p["name"]: p.get("default") for p in graph.get("parameters", [])}
    return args + OFFLINE_RUN if params.get("weights") == "hub" else args


class _Offline(ast.NodeTransformer):
    """``model``/``weights`` of every ``x.process("terramind_*", ...)`` call and UDF ``context`` dict."""

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        name = node.func.attr if isinstance(node.func, ast.Attribute) else ""
        if name == "process" and node.args and isinstance(node.args[0], ast.Constant) \
                and str(node.args[0].value).startswith("terramind_"):
            node.keywords = [k for k in node.keywords if k.arg not in OFFLINE_CONTEXT]
            node.keywords += [ast.keyword(arg=k, value=ast.Constant(v)) for k, v in OFFLINE_CONTEXT.items()]
        if name == "from_file":
            for k in node.keywords:
                if k.arg == "context" and isinstance(k.value, ast.Dict):
                    k.value.keys += [ast.Constant(key) for key in OFFLINE_CONTEXT]
                    k.value.values += [ast.Constant(v) for v in OFFLINE_CONTEXT.values()]
        return node


def offline_python(code: str) -> str:
    return ast.unparse(ast.fix_missing_locations(_Offline().visit(ast.parse(code))))


def test_every_block_is_covered():
    """Each block is bash (commands run or listed in NOT_RUN) or Python (client code, run against serve)."""
    seen = 0
    for path in READMES:
        for lang, code in blocks(path):
            seen += 1
            assert lang in ("bash", "python"), (path.name, lang)
            if lang == "bash":
                for command in commands(code):
                    assert skipped(command) or command.startswith("terramind-openeo "), (path.name, command)
    assert seen >= 6


def _run_commands(path: Path, tmp: Path, shared: Path) -> list[str]:
    work = _workdir(tmp)
    ran = []
    for lang, code in blocks(path):
        if lang != "bash":
            continue
        for command in commands(code):
            if skipped(command) or not command.startswith("terramind-openeo run "):
                continue
            args = _offline_run(shlex.split(command))
            done = subprocess.run(_cli(shlex.join(args)), cwd=work, env=_env(tmp, shared), capture_output=True,
                                  text=True, timeout=900)
            assert done.returncode == 0, (command, done.stderr[-4000:])
            ran.append(command)
    return ran


def test_readme_run_commands(shared_data, tmp_path):
    import rasterio

    ran = _run_commands(READMES[0], tmp_path, shared_data)
    assert ran == ["terramind-openeo run process_graphs/s2_to_lulc.json --output out/"]
    tif = tmp_path / "work" / "out" / "openEO_2021-07-23.tif"
    with rasterio.open(tif) as src:
        classes = src.read(1)
    assert set(map(int, set(classes.ravel().tolist()))) <= set(range(10)) | {255}


def test_process_graphs_readme_run_commands(shared_data, tmp_path):
    ran = _run_commands(READMES[1], tmp_path, shared_data)
    assert len(ran) == 1 and "--output out/tanzania" in ran[0]
    assert list((tmp_path / "work" / "out" / "tanzania").glob("openEO*.tif"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readme_serve_and_client_code(shared_data, tmp_path):
    """``serve --add-user``, ``serve``, then the Python blocks in order in one namespace, offline form."""
    import rasterio
    import xarray as xr

    serve = [c for lang, code in blocks(READMES[0]) if lang == "bash" for c in commands(code)
             if c.startswith("terramind-openeo serve")]
    assert serve == ["terramind-openeo serve --add-user alice", "terramind-openeo serve"]
    port = _free_port()
    env = _env(tmp_path, shared_data, TERRAMIND_OPENEO_DATA_DIR=str(tmp_path / "data"),
               TERRAMIND_OPENEO_PORT=str(port), TERRAMIND_OPENEO_DASK="threads")
    work = _workdir(tmp_path)
    added = subprocess.run(_cli(serve[0]), input="secret\n", cwd=work, env=env, capture_output=True, text=True,
                           timeout=120)
    assert added.returncode == 0, added.stderr
    with open(tmp_path / "serve.log", "w") as log:
        server = subprocess.Popen(_cli(serve[1]), cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=log,
                                  start_new_session=True)
    try:
        _wait_for(port, server, tmp_path / "serve.log")
        code = "\n".join(offline_python(c) for lang, c in blocks(READMES[0]) if lang == "python")
        code = code.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}")
        cwd = os.getcwd()
        os.chdir(work)
        try:
            exec(compile(code, "README.md", "exec"), {"__name__": "readme"})  # noqa: S102 - our own README
        finally:
            os.chdir(cwd)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
    for name in ("lulc.tif", "lulc_udf.tif"):
        with rasterio.open(work / name) as src:
            assert src.count == 1 and src.width == 224 and src.height == 224, name
    with xr.open_dataset(work / "embeddings.nc") as ds:
        assert 14 <= ds.sizes["x"] <= 15 and 14 <= ds.sizes["y"] <= 15  # 16 px patches (CRS-anchored) of 224 px
    with rasterio.open(work / "lulc_fewshot.tif") as src:  # the few-shot map, on the embeddings' patch grid
        assert src.count == 1 and 14 <= src.width <= 15 and 14 <= src.height <= 15


def _wait_for(port: int, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"serve exited: {log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    pytest.fail(f"serve did not listen on {port}: {log.read_text()[-3000:]}")
