"""Fixtures of the attack tests: the real back-end (``create_app`` + the real ``processes`` engine, served by
uvicorn on a loopback port) with two users, and a loopback HTTP server that records every hit.

Each attack test drives the server as an outside user would (HTTP only) and checks what the attacker got
back, what reached the recorder and what changed on disk.
"""

from __future__ import annotations

import dataclasses
import http.server
import secrets
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from terramind_openeo.backend.settings import Settings

from ..conftest import _HASHES, PASSWORDS, live_server

API = "/openeo/1.2"
# a few pixels of the synthetic collection of the default catalog (no sample data needed)
TINY = {"west": 10.0, "east": 10.04, "south": 46.0, "north": 46.04}
LOAD_TINY = {"process_id": "load_collection", "arguments": {
    "id": "CGLS_SSM_1KM", "spatial_extent": TINY, "temporal_extent": ["2020-01-01", "2020-01-02"]}}
# TerraMind needs at least 16 x 16 px: 20 x 20 of the synthetic collection
LOAD_20PX = {"process_id": "load_collection", "arguments": {
    "id": "CGLS_SSM_1KM", "spatial_extent": {"west": 10.0, "east": 10.2, "south": 46.0, "north": 46.2},
    "temporal_extent": ["2020-01-01", "2020-01-02"]}}


def known_settings(changes: dict) -> dict:
    """``changes`` restricted to the fields Settings has (so that these tests also run against the code
    before the settings they tune existed, and fail there on the attack itself)."""
    names = {f.name for f in dataclasses.fields(Settings)}
    return {k: v for k, v in changes.items() if k in names}


def base_settings(data_dir: Path, **changes) -> Settings:
    """Two basic users, the real engine on the threaded scheduler, every execution in a worker process."""
    values = {"dask": "threads", "data_dir": data_dir, "basic_users": dict(_HASHES), "max_running_jobs": 2,
              "max_running_jobs_per_user": 2}
    values.update(changes)
    return Settings(**known_settings(values))


@dataclass
class Client:
    """One user's view of the server: a bearer token and a few helpers."""

    root: str
    user: str
    token: str = ""
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=300))

    @property
    def api(self) -> str:
        return self.root + API

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer basic//{self.token}"}

    def login(self) -> Client:
        resp = self.http.get(f"{self.api}/credentials/basic", auth=(self.user, PASSWORDS[self.user]))
        assert resp.status_code == 200, resp.text
        self.token = resp.json()["access_token"]
        return self

    def get(self, path: str, **kw) -> httpx.Response:
        return self.http.get(self.api + path, headers=self.headers, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return self.http.post(self.api + path, headers=self.headers, **kw)

    def put(self, path: str, **kw) -> httpx.Response:
        return self.http.put(self.api + path, headers=self.headers, **kw)

    def result(self, graph: dict, **kw) -> httpx.Response:
        return self.post("/result", json={"process": {"process_graph": graph}}, **kw)

    def create_job(self, graph: dict, **extra) -> httpx.Response:
        return self.post("/jobs", json={"process": {"process_graph": graph}, **extra})

    def wait_job(self, job_id: str, timeout: float = 300) -> dict:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(f"/jobs/{job_id}").json()
            if job["status"] in ("finished", "error", "canceled"):
                return job
            time.sleep(0.3)
        raise AssertionError(f"job {job_id} did not end within {timeout} s")


def clients(root: str) -> tuple[Client, Client]:
    return Client(root, "alice").login(), Client(root, "bob").login()


class Recorder:
    """A loopback HTTP server that answers 200 to everything and records each request it receives."""

    def __init__(self):
        self.hits: list[str] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self):
                recorder.hits.append(f"{self.command} {self.path}")
                body = b'{"type": "Catalog", "id": "x", "stac_version": "1.0.0", "description": "x", "links": []}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_HEAD = _any

            def log_message(self, *args):  # quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder():
    rec = Recorder()
    yield rec
    rec.close()


@contextmanager
def serve(settings: Settings):
    with live_server(settings) as root:
        yield root


def canary() -> str:
    return "canary-" + secrets.token_hex(8)
