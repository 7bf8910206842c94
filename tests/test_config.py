"""The one configuration (terramind_openeo/config.py): read once, one parsing rule per type, explicit
overrides, the documentation table, and no environment reads elsewhere in the package."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import threading
from pathlib import Path

import dask
import pytest

from terramind_openeo import config
from terramind_openeo.config import Settings, SettingsError

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "terramind_openeo"


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("true", True), ("YES", True), (" on ", True),
                                               ("0", False), ("false", False), ("No", False), ("off", False)])
def test_one_boolean_rule(raw, expected):
    """``TERRAMIND_OPENEO_AUTOTUNE=false`` turns autotuning off (it once kept it on: only "0" did)."""
    assert Settings.from_env({"TERRAMIND_OPENEO_AUTOTUNE": raw}).autotune is expected
    assert Settings.from_env({"TRITON_INTERPRET": raw}).triton_interpret is expected


def test_an_empty_variable_means_the_default():
    assert Settings.from_env({"TERRAMIND_OPENEO_AUTOTUNE": "", "TERRAMIND_OPENEO_MODEL_CACHE_SIZE": " "}) == \
        Settings.from_env({})


@pytest.mark.parametrize(("variable", "value"), [("TERRAMIND_OPENEO_AUTOTUNE", "maybe"),
                                                 ("TERRAMIND_OPENEO_MODEL_CACHE_SIZE", "two"),
                                                 ("TERRAMIND_OPENEO_MODEL_CACHE_SIZE", "0"),
                                                 ("TERRAMIND_OPENEO_TILE_CACHE_MB", "-5"),
                                                 ("TERRAMIND_OPENEO_TILE_SHARE_MB", "nan"),
                                                 ("TERRAMIND_OPENEO_PREPACK_MB", "lots")])
def test_a_bad_value_names_its_variable(variable, value):
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_types_paths_and_defaults(tmp_path):
    s = Settings.from_env({"TERRAMIND_OPENEO_TILE_SHARE_DIR": str(tmp_path), "TERRAMIND_OPENEO_CACHE": "~/x",
                           "TERRAMIND_OPENEO_TILE_CACHE_MB": "1.5", "TERRAMIND_OPENEO_MODEL_CACHE_SIZE": "3"})
    assert s.tile_share_dir == tmp_path and s.cache_dir == Path.home() / "x"
    assert s.weights_cache_dir == Path.home() / "x" / "weights"
    assert s.tile_cache_mb == 1.5 and s.model_cache_size == 3
    default = Settings.from_env({})
    assert default.tile_share_dir is None and default.catalog is None and default.catalog_file.is_file()


def test_read_once_then_explicit_reload(monkeypatch):
    before = config.settings()
    monkeypatch.setenv("TERRAMIND_OPENEO_MODEL_CACHE_SIZE", str(before.model_cache_size + 5))
    assert config.settings() is before  # the environment is not read again on every call
    try:
        assert config.reload().model_cache_size == before.model_cache_size + 5
        assert config.settings().model_cache_size == before.model_cache_size + 5
    finally:
        monkeypatch.delenv("TERRAMIND_OPENEO_MODEL_CACHE_SIZE")
        config.reload()
        config.configure(**{f.name: getattr(before, f.name) for f in dataclasses.fields(before)})  # as it was


def test_override_is_for_this_thread_and_its_dask_tasks_only():
    base = config.settings().attention
    seen = {}
    with config.override(attention="reference") as inside:
        assert inside.attention == "reference" and config.settings() is inside
        thread = threading.Thread(target=lambda: seen.setdefault("thread", config.settings().attention))
        thread.start()
        thread.join()
        seen["task"] = dask.delayed(lambda: config.settings().attention)().compute(scheduler="threads")
        with config.override(autotune=False):
            assert config.settings().attention == "reference" and not config.settings().autotune
        assert config.settings().autotune == Settings.from_env().autotune
    assert config.settings().attention == base
    assert seen == {"thread": base, "task": "reference"}


def test_configure_is_for_the_whole_process():
    previous = config.settings()
    try:
        config.configure(model_cache_size="4")  # strings are parsed like variables
        seen = []
        thread = threading.Thread(target=lambda: seen.append(config.settings().model_cache_size))
        thread.start()
        thread.join()
        assert seen == [4]
        with pytest.raises(SettingsError, match="unknown settings"):
            config.configure(model_cache_sise=3)
    finally:
        config.configure(model_cache_size=previous.model_cache_size)


def test_model_and_tile_caches_follow_the_settings_in_force():
    from terramind_openeo.inference.cache import ModelCache
    from terramind_openeo.inference.tile_cache import TileCache

    with config.override(model_cache_size=5, tile_cache_mb=1):
        assert ModelCache().max_size == 5 and TileCache().max_bytes == 2**20
    assert ModelCache(max_size=1).max_size == 1


@pytest.mark.parametrize(("raw", "offline"), [("false", False), ("0", False), ("", False), ("1", True),
                                              ("true", True), ("YES", True)])
def test_hf_hub_offline_is_the_hubs_own_reading(raw, offline):
    """One rule, the hub's: HF_HUB_OFFLINE=false means online (tokenizers.py once took it for offline)."""
    code = "from terramind_openeo.config import hub_offline; print(hub_offline())"
    env = {"HF_HUB_OFFLINE": raw, "PYTHONPATH": str(REPO), "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(offline)


@pytest.mark.parametrize("offline", [False, True])
def test_weights_and_tokenizers_read_offline_mode_alike(monkeypatch, offline):
    """Both hub downloads take offline mode from :func:`config.hub_offline` and say so the same way."""
    import huggingface_hub
    from huggingface_hub import constants

    from terramind_openeo.model.config import get_config
    from terramind_openeo.model.errors import WeightsSourceError
    from terramind_openeo.model.generation_errors import TokenizerWeightsError
    from terramind_openeo.model.tokenizers import hub_checkpoint
    from terramind_openeo.model.weights import download_checkpoint

    def refuse(**kwargs):
        raise OSError("no network here")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    errors = []
    for call, error in ((lambda: download_checkpoint(get_config("terramind_v1_tiny")), WeightsSourceError),
                        (lambda: hub_checkpoint("DEM"), TokenizerWeightsError)):
        with pytest.raises(error) as info:
            call()
        errors.append(str(info.value))
    assert [("HF_HUB_OFFLINE is set" in e) for e in errors] == [offline, offline]


def test_catalog_variables_expand_from_the_environment_and_settings(monkeypatch, configured, tmp_path):
    monkeypatch.delenv("SHARED_DATA", raising=False)
    monkeypatch.delenv("TM_TEST_UNSET", raising=False)
    configured(shared_data=tmp_path)
    assert config.expand_variables("${SHARED_DATA}/a") == f"{tmp_path}/a"
    assert config.expand_variables("${TM_TEST_UNSET:-fallback}/b") == "fallback/b"
    monkeypatch.setenv("SHARED_DATA", "/elsewhere")
    assert config.expand_variables("${SHARED_DATA}/a") == "/elsewhere/a"


def test_backend_settings_share_the_base_and_its_rules():
    from terramind_openeo.backend.settings import Settings as BackendSettings
    from terramind_openeo.backend.settings import load_settings

    assert issubclass(BackendSettings, config.EnvSettings)
    assert load_settings(env={"TERRAMIND_OPENEO_PORT": "9001", "TERRAMIND_OPENEO_MODEL_CACHE_SIZE": "3"}).port == 9001
    with pytest.raises(SettingsError, match="TERRAMIND_OPENEO_PORT"):
        load_settings(env={"TERRAMIND_OPENEO_PORT": "eighty"})
    assert load_settings(env={"TERRAMIND_OPENEO_UDF_USERS": "a, b"}).udf_users == ("a", "b")
    assert load_settings(env={"TERRAMIND_OPENEO_UDF_USERS": '["a"]'}).udf_users == ("a",)


def test_every_setting_is_documented_and_the_page_is_current():
    for cls in (config.Settings, __import__("terramind_openeo.backend.settings", fromlist=["Settings"]).Settings):
        for f in cls.__dataclass_fields__.values():
            assert f.metadata.get("doc"), f"{cls.__module__}.{f.name} has no meaning for docs/settings.md"
    page = (REPO / "docs" / "settings.md").read_text(encoding="utf-8")
    assert page == config.markdown(), "docs/settings.md is stale: python -m terramind_openeo.config > docs/settings.md"
    assert "docs/settings.md" in (REPO / "README.md").read_text(encoding="utf-8")


# Where the package may touch os.environ: the configuration, and hand-offs of variables to child processes
# (dask's worker processes through their nannies, GDAL) that say so in a comment on the line.
_HANDOFF_FILES = {"config.py", "processes/cli.py"}
_ENVIRON = re.compile(r"\bos\.(environ|getenv|putenv|unsetenv)\b|\bfrom os import .*\b(environ|getenv)\b")


def test_no_module_reads_the_environment_but_the_configuration():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _ENVIRON.search(line) and name not in _HANDOFF_FILES:
                offenders.append(f"terramind_openeo/{name}:{number}: {line.strip()}")
    assert not offenders, "read settings through terramind_openeo.config instead:\n" + "\n".join(offenders)
