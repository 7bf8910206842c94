"""Attack 5: ``load_stac`` fetched any URL (loopback included), read local paths, and its error text told
whether a target exists (and even quoted file bytes). A loopback server that records hits must record none."""

from __future__ import annotations

import http.server
import threading

import pytest

from .conftest import base_settings, clients, serve

# every spelling of the loopback address (and of "this host") a URL parser or resolver may accept
LOOPBACK_SPELLINGS = ["127.0.0.1", "localhost", "127.1", "0x7f.0.0.1", "0x7f000001", "2130706433", "0177.0.0.1",
                      "127.000.000.001", "[::1]", "[::ffff:127.0.0.1]", "[0:0:0:0:0:ffff:7f00:1]", "0.0.0.0", "0",
                      "LOCALHOST.", "127.0.0.1.nip.io"]
INTERNAL = ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://192.168.1.1/",
            "http://172.16.0.1/", "http://[fd00::1]/", "http://[fe80::1]/", "http://100.64.0.1/"]


def load_stac(url) -> dict:
    return {"ls": {"process_id": "load_stac", "arguments": {"url": url}, "result": True}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("ssrf")
    with serve(base_settings(base / "data")) as root:
        yield root, base


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_load_stac_never_reaches_loopback(server, recorder, host):
    root, _ = server
    alice, _ = clients(root)
    resp = alice.result(load_stac(f"http://{host}:{recorder.port}/collections/x"))
    assert recorder.hits == [], resp.text[:300]  # the attack itself first, then how it was answered
    assert 400 <= resp.status_code < 500, resp.text[:300]
    assert "not allowed" in resp.json()["message"]


@pytest.mark.parametrize("url", INTERNAL + ["ftp://example.org/x", "gopher://127.0.0.1/", "data:,{}",
                                            "//127.0.0.1/x", "http://user@127.0.0.1/"])
def test_load_stac_refuses_internal_addresses_and_other_schemes(server, url):
    root, _ = server
    alice, _ = clients(root)
    resp = alice.result(load_stac(url))
    assert 400 <= resp.status_code < 500, resp.text[:300]
    assert "not allowed" in resp.json()["message"]


def test_local_paths_are_refused_alike_whether_they_exist_or_not(server):
    root, base = server
    secret = base / "secret.json"
    secret.write_text('{"type": "Catalog", "id": "secret-bytes-1234", "description": "x", "links": []}')
    alice, _ = clients(root)
    answers = []
    for target in (str(secret), str(base / "missing.json"), f"file://{secret}", f"file://{base}/missing.json",
                   "/etc/passwd", "/etc/does-not-exist"):
        resp = alice.result(load_stac(target))
        assert "secret-bytes-1234" not in resp.text and "root:" not in resp.text, resp.text[:300]  # no leak
        assert 400 <= resp.status_code < 500, resp.text[:300]
        body = resp.json()
        answers.append((resp.status_code, body["code"], body["message"].replace(target, "<url>")))
    assert len(set(answers)) == 1, answers


class Redirector:
    """A loopback server that answers every request with a redirect to ``target``."""

    def __init__(self, target: str):
        self.hits = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits.append(self.path)
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_redirect_from_an_allowed_server_to_a_forbidden_one_is_not_followed(tmp_path, recorder):
    """The operator lists one internal STAC server as allowed; its redirect to another loopback port is not."""
    redirector = Redirector(f"{recorder.url}/collections/x")
    try:
        allowed = f"http://127.0.0.1:{redirector.port}/"
        with serve(base_settings(tmp_path / "data", allowed_urls=(allowed,), allowed_internal_urls=(allowed,))) as root:
            alice, _ = clients(root)
            resp = alice.result(load_stac(f"{allowed}catalog.json"))
            assert recorder.hits == [], resp.text[:300]  # the attack itself first, then how it was answered
            assert redirector.hits, "the allowed server was asked"
            assert 400 <= resp.status_code < 500, resp.text[:300]
            assert "not allowed" in resp.json()["message"]
    finally:
        redirector.close()
