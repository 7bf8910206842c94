"""OIDC with the conformance kit's mock issuer, settings from env/config files, the serve CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openeo
import pytest

from terramind_openeo.backend.auth import hash_password, verify_password
from terramind_openeo.backend.settings import SettingsError, load_settings

from .conftest import REPO_ROOT, live_server
from .fake_engine import FakeEngine

MOCK_OIDC = REPO_ROOT.parent / "shared" / "openeo-test-suite" / "mock_oidc.py"


@pytest.fixture
def mock_issuer(tmp_path):
    if not MOCK_OIDC.is_file():
        pytest.skip(f"the conformance kit's mock OIDC issuer is absent ({MOCK_OIDC})")
    port_file = tmp_path / "oidc.port"
    proc = subprocess.Popen([sys.executable, str(MOCK_OIDC), "--port", "0", "--port-file", str(port_file),
                             "--quiet", "--parent-pid", str(os.getpid())])
    try:
        deadline = time.monotonic() + 15
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("mock OIDC issuer did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{int(port_file.read_text())}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_oidc_client_credentials_with_userinfo_check(settings, mock_issuer):
    provider = {"id": "ots-mock", "issuer": mock_issuer, "title": "mock", "scopes": ["openid"]}
    with live_server(settings.replace(oidc_providers=[provider]), FakeEngine()) as url:
        api = url + "/openeo/1.2"
        listed = httpx.get(f"{api}/credentials/oidc").json()["providers"]
        assert listed == [{"id": "ots-mock", "issuer": mock_issuer, "title": "mock", "scopes": ["openid"]}]
        con = openeo.connect(url).authenticate_oidc_client_credentials(
            client_id="openeo-test-suite", client_secret="openeo-test-suite-secret", provider_id="ots-mock")
        me = con.describe_account()
        assert me["user_id"] == "ots-mock~client-openeo-test-suite"
        token = con.auth.bearer.split("/")[-1]
        assert httpx.get(f"{api}/me", headers={"Authorization": f"Bearer oidc/ots-mock/{token}"}).status_code == 200
        forged = httpx.get(f"{api}/me", headers={"Authorization": f"Bearer oidc/ots-mock/{token[:-4]}AAAA"})
        assert forged.status_code == 403 and forged.json()["code"] == "TokenInvalid"
        # an OIDC user and a basic user with the same name never share jobs
        assert con.list_jobs() == []


def test_password_hashes():
    stored = hash_password("s3cret")
    assert stored.startswith("scrypt$") and "s3cret" not in stored
    assert verify_password("s3cret", stored) and not verify_password("s3cre", stored)
    assert not verify_password("x", "plain-text") and not verify_password("x", "scrypt$1$2$3$!!$!!")


def test_settings_from_file_and_environment(tmp_path):
    config = tmp_path / "backend.toml"
    config.write_text('port = 9000\nudf_policy = "users"\nudf_users = ["alice"]\n'
                      '[basic_users]\nalice = "scrypt$x"\n'
                      '[[oidc_providers]]\nid = "egi"\nissuer = "https://aai.example/"\n')
    env = {"TERRAMIND_OPENEO_DATA_DIR": str(tmp_path / "d"), "TERRAMIND_OPENEO_MAX_RUNNING_JOBS": "5",
           "TERRAMIND_OPENEO_PORT": "9100", "TERRAMIND_OPENEO_SHARED_DATA": "/elsewhere"}
    s = load_settings(config, env=env)
    assert s.port == 9100 and s.max_running_jobs == 5 and s.data_dir == tmp_path / "d"
    assert s.udf_policy == "users" and s.udf_users == ("alice",) and s.basic_users == {"alice": "scrypt$x"}
    assert s.oidc_providers[0].issuer == "https://aai.example" and s.oidc_providers[0].scopes == ("openid",)
    json_config = tmp_path / "backend.json"
    json_config.write_text(json.dumps({"oidc_providers": [{"id": "a", "issuer": "http://x"}]}))
    assert load_settings(json_config, env={}).oidc_providers[0].id == "a"
    with pytest.raises(SettingsError, match="udf_policy"):
        load_settings(env={"TERRAMIND_OPENEO_UDF_POLICY": "everyone"})
    with pytest.raises(SettingsError, match="unknown settings"):
        load_settings(_write(tmp_path / "bad.json", {"prot": 1}), env={})
    with pytest.raises(SettingsError, match="max_running_jobs"):
        load_settings(env={"TERRAMIND_OPENEO_MAX_RUNNING_JOBS": "0"})


def _write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_serve_cli_hash_password_and_bad_config(tmp_path):
    from terramind_openeo.backend import cli

    out = subprocess.run([sys.executable, "-m", "terramind_openeo.cli", "serve", "--hash-password"],
                         input="pw\n", capture_output=True, text=True, check=True).stdout.strip()
    assert verify_password("pw", out)
    assert cli.main(["--config", str(tmp_path / "missing.toml")]) == 2


def test_example_config_loads():
    from terramind_openeo.backend import settings as settings_module

    example = Path(settings_module.__file__).with_name("config.example.toml")
    loaded = load_settings(example, env={})
    assert loaded.dask == "local" and loaded.isolation == "process" and loaded.udf_policy == "authenticated"
