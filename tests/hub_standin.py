"""A local stand-in for the Hugging Face hub (no internet on the test machines).

Serves ``HEAD``/``GET /{repo}/resolve/{revision}/{filename}`` with the headers ``huggingface_hub`` reads
(``X-Repo-Commit``, ``ETag``, ``Content-Length``), 404 for anything else, and records the requests. Point
``HF_ENDPOINT`` of a subprocess at :attr:`HubStandIn.url`, or this process with :func:`point_hub_at`.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubStandIn:
    def __init__(self, files: dict[tuple[str, str], bytes]):
        self.files = dict(files)
        self.requests: list[tuple[str, str]] = []
        self.url = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _file(self) -> bytes | None:
                hub.requests.append((self.command, self.path))
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return None
                return hub.files.get(("/".join(parts[:2]), "/".join(parts[4:])))

            def _headers(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
                self.send_header("X-Repo-Commit", COMMIT)
                self.end_headers()

            def _missing(self) -> None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
                body = self._file()
                self._headers(body) if body is not None else self._missing()

            def do_GET(self) -> None:  # noqa: N802
                body = self._file()
                if body is None:
                    self._missing()
                    return
                self._headers(body)
                self.wfile.write(body)

        return Handler


@contextmanager
def hub_standin(files: dict[tuple[str, str], bytes]) -> Iterator[HubStandIn]:
    hub = HubStandIn(files)
    server = ThreadingHTTPServer(("127.0.0.1", 0), hub.handler())
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()


def point_hub_at(monkeypatch, url: str) -> None:
    """``huggingface_hub`` of this process talks to ``url`` (it reads ``HF_ENDPOINT`` once, at import)."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")


def resolve_requests(hub: HubStandIn) -> list[tuple[str, str]]:
    """The requests for files (``huggingface_hub`` also asks ``/api/...`` on its own)."""
    return [r for r in hub.requests if "/resolve/" in r[1]]
