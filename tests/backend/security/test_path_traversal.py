"""Attack 4: ``save_result``'s ``filename_prefix`` wrote outside the output directory (an absolute path or
``..``), and with Zarr removed an existing directory outside it. Any user, no UDF rights needed."""

from __future__ import annotations

import pytest

from .conftest import LOAD_TINY, base_settings, clients, serve

# "../" enough times to reach "/" from any output directory (extra ones stay at "/"), then the victim
PREFIXES = ["{victim}/x", "../" * 32 + "{victim}/x", "..", "a/../../b", "a/b", ".hidden", "x\x00y",
            "con\\..\\x", " x", "x" * 300]


def save_graph(fmt: str, prefix: str) -> dict:
    return {"load": LOAD_TINY, "save": {"process_id": "save_result", "arguments": {
        "data": {"from_node": "load"}, "format": fmt, "options": {"filename_prefix": prefix}}, "result": True}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("paths")
    with serve(base_settings(base / "data")) as root:
        yield root, base


@pytest.mark.parametrize("fmt", ["GTiff", "netCDF", "Zarr"])
@pytest.mark.parametrize("prefix", PREFIXES)
def test_filename_prefix_cannot_leave_the_output_directory(server, tmp_path, fmt, prefix):
    root, _ = server
    victim = tmp_path / "victim"  # one per case: what one case wrote cannot fail another
    victim.mkdir()
    alice, _ = clients(root)
    resp = alice.result(save_graph(fmt, prefix.format(victim=victim)))
    assert list(victim.iterdir()) == [], resp.text[:300]  # the attack itself first, then how it was answered
    assert resp.status_code == 400, resp.text[:300]
    assert resp.json()["code"] == "ProcessParameterInvalid" and "filename_prefix" in resp.json()["message"]


def test_zarr_prefix_naming_an_outside_directory_removes_nothing(server):
    root, base = server
    victim = base / "important.zarr"
    victim.mkdir(exist_ok=True)
    (victim / "keep.txt").write_text("precious")
    alice, _ = clients(root)
    resp = alice.result(save_graph("Zarr", str(base / "important")))
    assert (victim / "keep.txt").exists() and (victim / "keep.txt").read_text() == "precious", resp.text[:300]
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"], resp.text[:300]
    assert resp.status_code == 400, resp.text[:300]


def test_a_batch_job_with_a_traversing_prefix_is_refused_at_creation(server):
    root, base = server
    alice, _ = clients(root)
    resp = alice.create_job(save_graph("GTiff", str(base / "victim" / "job")))
    assert resp.status_code == 400, resp.text[:300]


def test_control_a_safe_prefix_still_names_the_result(server):
    """Control: held before issue 15 too (the rules must not refuse an ordinary name)."""
    root, _ = server
    alice, _ = clients(root)
    resp = alice.result(save_graph("netCDF", "my_result-1.v2"))
    assert resp.status_code == 200, resp.text[:300]
    assert "my_result-1.v2.nc" in resp.headers.get("content-disposition", "")
