"""Fixtures of the back-end tests: settings in a temp data dir, basic users, in-process or live servers."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from terramind_openeo.backend.app import create_app
from terramind_openeo.backend.auth import hash_password
from terramind_openeo.backend.settings import Settings

from .fake_engine import FakeEngine

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}
_HASHES = {name: hash_password(pw) for name, pw in PASSWORDS.items()}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(dask="threads", data_dir=tmp_path / "data", basic_users=dict(_HASHES), max_running_jobs=3,
                    max_running_jobs_per_user=2, max_request_bytes=64 * 1024)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(settings: Settings, engine=None):
    """uvicorn on a free loopback port in a thread; yields the root URL; always stopped."""
    port = free_port()
    settings = settings.replace(port=port)
    app = create_app(settings, engine=engine)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError("test server did not start")
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def fake_server(settings):
    engine = FakeEngine()
    with live_server(settings, engine) as url:
        yield url, engine


def basic_token(api: str, user: str = "alice") -> str:
    resp = httpx.get(f"{api}/credentials/basic", auth=(user, PASSWORDS[user]))
    resp.raise_for_status()
    return resp.json()["access_token"]


def auth_headers(api: str, user: str = "alice") -> dict:
    return {"Authorization": f"Bearer basic//{basic_token(api, user)}"}
