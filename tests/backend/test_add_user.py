"""Setting up ``serve`` (issue 17, problem 5): one command adds a user; the data lives outside the checkout.

``terramind-openeo serve --add-user NAME`` asks for the password (here: one line on stdin) and writes its
hash to the users file (``users_file``, default ``<data_dir>/users.json``), which a running server reads
when it changes.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import httpx

from terramind_openeo.backend.settings import Settings

from .conftest import REPO_ROOT, live_server

API = "/openeo/1.2"


def _add_user(data_dir, name: str, password: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env = {k: v for k, v in env.items() if not k.startswith("TERRAMIND_OPENEO_") or k == "TERRAMIND_OPENEO_SHARED_DATA"}
    return subprocess.run([sys.executable, "-m", "terramind_openeo.cli", "serve", "--data-dir", str(data_dir),
                           "--add-user", name], input=password + "\n", capture_output=True, text=True, env=env,
                          timeout=120)


def _login(url: str, name: str, password: str) -> httpx.Response:
    return httpx.get(f"{url}{API}/credentials/basic", auth=(name, password))


def test_add_user_writes_a_hash_a_running_server_accepts(tmp_path):
    data = tmp_path / "data"
    done = _add_user(data, "alice", "secret")
    assert done.returncode == 0, done.stderr
    users = json.loads((data / "users.json").read_text())
    assert list(users) == ["alice"] and users["alice"].startswith("scrypt$") and "secret" not in users["alice"]
    assert stat.S_IMODE((data / "users.json").stat().st_mode) == 0o600
    with live_server(Settings(dask="threads", data_dir=data)) as url:
        login = _login(url, "alice", "secret")
        assert login.status_code == 200
        me = httpx.get(f"{url}{API}/me", headers={"Authorization": f"Bearer basic//{login.json()['access_token']}"})
        assert me.status_code == 200 and me.json()["user_id"] == "alice", me.text  # the token works, too
        assert _login(url, "alice", "wrong").status_code == 403
        assert _add_user(data, "bob", "bob-pw").returncode == 0  # while the server runs
        assert _login(url, "bob", "bob-pw").status_code == 200
        assert _add_user(data, "alice", "new-pw").returncode == 0  # a new password
        assert _login(url, "alice", "new-pw").status_code == 200 and _login(url, "alice", "secret").status_code == 403


def test_add_user_refuses_bad_names_and_empty_passwords(tmp_path):
    bad = _add_user(tmp_path, "al ice/..", "pw")
    assert bad.returncode == 2 and "user name" in bad.stderr
    empty = _add_user(tmp_path, "carol", "")
    assert empty.returncode == 2 and "empty" in empty.stderr
    assert not (tmp_path / "users.json").exists()


def test_the_default_data_directory_is_outside_the_checkout():
    data_dir = Settings().data_dir
    assert data_dir.is_absolute(), data_dir
    assert REPO_ROOT.resolve() not in data_dir.resolve().parents
