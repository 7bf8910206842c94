"""Discovery, capabilities, metadata endpoints, auth and CORS against a live server with a fake engine."""

from __future__ import annotations

import httpx

from .conftest import auth_headers, basic_token

API = "/openeo/1.2"


def test_discovery_and_capabilities_list_real_endpoints(fake_server):
    url, _ = fake_server
    versions = httpx.get(f"{url}/.well-known/openeo").json()["versions"]
    assert versions[0]["api_version"] == "1.2.0" and versions[0]["url"].endswith("/openeo/1.2/")
    caps = httpx.get(f"{url}{API}/").json()
    assert caps["api_version"] == "1.2.0"
    paths = {e["path"]: set(e["methods"]) for e in caps["endpoints"]}
    assert paths["/jobs/{job_id}/results"] == {"GET", "POST", "DELETE"}
    assert {"/collections", "/processes", "/result", "/process_graphs/{process_graph_id}", "/me",
            "/credentials/basic", "/validation", "/udf_runtimes", "/file_formats"} <= set(paths)
    assert not any(p.startswith("/download") for p in paths)
    # every advertised endpoint answers something other than 404/405 for its methods
    for path, methods in paths.items():
        concrete = path.replace("{collection_id}", "FAKE_S2").replace("{job_id}", "nope").replace(
            "{process_graph_id}", "nope")
        for method in methods:
            resp = httpx.request(method, f"{url}{API}{concrete}")
            assert resp.status_code != 405, (method, path)


def test_double_slashes_and_trailing_slash_are_tolerated(fake_server):
    url, _ = fake_server
    assert httpx.get(f"{url}{API}//collections/").status_code == 200
    assert httpx.get(f"{url}//openeo//1.2//processes").status_code == 200


def test_metadata_endpoints(fake_server):
    url, _ = fake_server
    coll = httpx.get(f"{url}{API}/collections/FAKE_S2").json()
    assert coll["cube:dimensions"]["x"]["axis"] == "x"
    assert any(link["rel"] == "self" for link in coll["links"])
    assert httpx.get(f"{url}{API}/collections").json()["collections"][0]["id"] == "FAKE_S2"
    missing = httpx.get(f"{url}{API}/collections/NOPE")
    assert missing.status_code == 404 and missing.json()["code"] == "CollectionNotFound"
    assert {"id", "message"} <= set(missing.json())
    runtimes = httpx.get(f"{url}{API}/udf_runtimes").json()
    libs = runtimes["Python"]["versions"]["3"]["libraries"]
    assert {"torch", "terramind-openeo", "numpy", "xarray"} <= set(libs)
    assert "GTiff" in httpx.get(f"{url}{API}/file_formats").json()["output"]
    assert httpx.get(f"{url}{API}/service_types").json() == {}
    assert httpx.get(f"{url}{API}/conformance").json()["conformsTo"]
    unknown = httpx.get(f"{url}{API}/no/such/endpoint")
    assert unknown.status_code == 404 and unknown.json()["code"] == "NotFound"


def test_cors_preflight_and_headers(fake_server):
    url, _ = fake_server
    pre = httpx.options(f"{url}{API}/jobs", headers={"Origin": "https://editor.openeo.org",
                                                     "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "https://editor.openeo.org"
    assert "Authorization" in pre.headers["access-control-allow-headers"]
    plain = httpx.options(f"{url}{API}/collections")
    assert plain.status_code == 204
    resp = httpx.get(f"{url}{API}/", headers={"Origin": "https://editor.openeo.org"})
    assert resp.headers["access-control-allow-credentials"] == "true"
    assert "Location" in resp.headers["access-control-expose-headers"]


def test_basic_auth_and_me(fake_server):
    url, _ = fake_server
    api = url + API
    assert httpx.get(f"{api}/credentials/basic", auth=("alice", "wrong")).json()["code"] == "CredentialsInvalid"
    assert httpx.get(f"{api}/credentials/basic", auth=("mallory", "x")).status_code == 403
    assert httpx.get(f"{api}/credentials/basic").status_code == 401
    me = httpx.get(f"{api}/me", headers=auth_headers(api)).json()
    assert me["user_id"] == "alice"
    no_auth = httpx.get(f"{api}/me")
    assert no_auth.status_code == 401 and no_auth.json()["code"] == "AuthenticationRequired"
    forged = httpx.get(f"{api}/me", headers={"Authorization": "Bearer basic//forged-token"})
    assert forged.status_code == 403 and forged.json()["code"] == "TokenInvalid"
    wrong_scheme = httpx.get(f"{api}/me", headers={"Authorization": "Basic YWxpY2U6YWxpY2UtcHc="})
    assert wrong_scheme.status_code == 403 and wrong_scheme.json()["code"] == "AuthenticationSchemeInvalid"
    unknown_provider = httpx.get(f"{api}/me", headers={"Authorization": "Bearer oidc/nope/abc"})
    assert unknown_provider.status_code == 403


def test_expired_token_is_rejected(settings, tmp_path):
    from .conftest import live_server
    from .fake_engine import FakeEngine

    with live_server(settings.replace(token_ttl_s=0), FakeEngine()) as url:
        token = basic_token(url + API)
        resp = httpx.get(f"{url}{API}/me", headers={"Authorization": f"Bearer basic//{token}"})
        assert resp.status_code == 403 and resp.json()["code"] == "TokenInvalid"


def test_tokens_survive_restart(settings):
    from .conftest import live_server
    from .fake_engine import FakeEngine

    with live_server(settings, FakeEngine()) as url:
        headers = auth_headers(url + API)
    with live_server(settings, FakeEngine()) as url:
        assert httpx.get(f"{url}{API}/me", headers=headers).json()["user_id"] == "alice"


def test_cors_on_errors_and_preflight_everywhere(fake_server):
    url, _ = fake_server
    origin = {"Origin": "https://editor.openeo.org"}
    # preflights need no auth, also on protected, parametrised, unknown and `//` paths
    for path in ("/jobs/some-id/results", "//jobs//x/logs/", "/result", "/me", "/no/such/endpoint"):
        pre = httpx.options(f"{url}{API}{path}", headers={**origin, "Access-Control-Request-Method": "POST",
                                                          "Access-Control-Request-Headers": "authorization"})
        assert pre.status_code == 204 and pre.content == b"", path
        assert pre.headers["access-control-allow-origin"] == origin["Origin"]
        assert "POST" in pre.headers["access-control-allow-methods"]
    # error responses carry the CORS headers too (else browsers hide the openEO error from the editor)
    for resp in (httpx.get(f"{url}{API}/me", headers=origin), httpx.get(f"{url}{API}//jobs/x", headers=origin),
                 httpx.get(f"{url}{API}/nope", headers=origin),
                 httpx.post(f"{url}{API}/result", content=b"{", headers={**origin, **auth_headers(url + API),
                                                                         "Content-Type": "application/json"})):
        assert resp.status_code >= 400 and resp.json()["code"]
        assert resp.headers["access-control-allow-origin"] == origin["Origin"]
        assert "OpenEO-Identifier" in resp.headers["access-control-expose-headers"]
    # a `//` path reaches the same endpoint, with auth, for every method
    h = auth_headers(url + API)
    created = httpx.post(f"{url}{API}//jobs", headers=h, json={"process": {"process_graph": {
        "a": {"process_id": "add", "arguments": {"x": 1, "y": 2}, "result": True}}}})
    assert created.status_code == 201
    job_id = created.headers["OpenEO-Identifier"]
    assert httpx.get(f"{url}{API}//jobs/{job_id}/", headers=h).json()["id"] == job_id
    assert httpx.delete(f"{url}//openeo/1.2//jobs/{job_id}", headers=h).status_code == 204
