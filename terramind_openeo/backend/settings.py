"""Back-end settings: defaults, then a config file (TOML, JSON or YAML), then ``TERRAMIND_OPENEO_*`` variables.

Built on the package's one settings base (``terramind_openeo.config.EnvSettings``): every field can be set
from the environment as ``TERRAMIND_OPENEO_<FIELD>`` (upper case), parsed by the same rules as the library's
settings; lists and mappings are given as JSON there, e.g.
``TERRAMIND_OPENEO_BASIC_USERS='{"alice": "scrypt$..."}'``. docs/settings.md lists them all. One data
directory holds everything the back-end writes: the SQLite database, job results and the signing key.
"""

from __future__ import annotations

import json
import logging
import shutil
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from terramind_openeo.config import ENV_PREFIX, EnvSettings, SettingsError, config_file_from_env, setting
from terramind_openeo.processes.policy import HUB_REPO_ID

log = logging.getLogger(__name__)

__all__ = ["ENV_PREFIX", "OidcProviderConfig", "Settings", "SettingsError", "load_settings"]

UDF_POLICIES = ("off", "users", "authenticated")
DASK_MODES_HELP = "'threads' (no cluster), 'local' (a local dask.distributed cluster) or a scheduler address"


def default_udf_policy() -> str:
    """'authenticated' where the UDF sandbox tool (bwrap) is installed, else 'off'."""
    return "authenticated" if shutil.which("bwrap") else "off"


@dataclass(frozen=True)
class OidcProviderConfig:
    """One OpenID Connect provider whose access tokens the back-end accepts."""

    id: str
    """Provider id in ``GET /credentials/oidc`` and in bearer tokens ``oidc/<id>/<token>``."""
    issuer: str
    """Issuer URL (discovery at ``<issuer>/.well-known/openid-configuration``)."""
    title: str = ""
    scopes: tuple[str, ...] = ("openid",)
    default_clients: tuple[dict, ...] = ()
    """openEO ``default_clients`` (client id, grant types, redirect URLs) advertised to clients."""

    @classmethod
    def from_dict(cls, raw: dict) -> OidcProviderConfig:
        try:
            return cls(
                id=str(raw["id"]),
                issuer=str(raw["issuer"]).rstrip("/"),
                title=str(raw.get("title") or raw["id"]),
                scopes=tuple(raw.get("scopes") or ("openid",)),
                default_clients=tuple(raw.get("default_clients") or ()),
            )
        except KeyError as exc:
            raise SettingsError(f"oidc_providers: a provider lacks the key {exc.args[0]!r}") from None


def _oidc_providers(value: Any) -> tuple[OidcProviderConfig, ...]:
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, dict) or not isinstance(value, (list, tuple)):
        raise TypeError("expected a list of providers")
    return tuple(p if isinstance(p, OidcProviderConfig) else OidcProviderConfig.from_dict(p) for p in value)


@dataclass(frozen=True)
class Settings(EnvSettings):
    """Everything configurable about one back-end instance."""

    host: str = setting("127.0.0.1", "address the server listens on")
    port: int = setting(8000, "port the server listens on")
    data_dir: Path = setting(doc="holds `jobs.sqlite`, `jobs/<id>/` (results, scratch), `signing.key` and "
                                 "`users.json`; in the user's home, never inside a checkout",
                             factory=lambda: Path.home() / ".local" / "share" / "terramind-openeo",
                             shown="`~/.local/share/terramind-openeo`")
    api_prefix: str = setting("/openeo/1.2", "where the versioned API lives; `/.well-known/openeo` points there")
    public_url: str = setting("", "base URL clients reach the server at (links, download hrefs); empty: taken "
                                  "from each request")
    title: str = setting("TerraMind openEO back-end", "title in the capabilities document")
    description: str = setting("TerraMind foundation-model inference as openEO processes, on Dask.",
                               "description in the capabilities document")
    catalog: str = setting("", "collection catalog file; empty: the library's `catalog` setting (the same "
                               "variable), else the packaged catalog")
    dask: str = setting("local", "how process graphs run: " + DASK_MODES_HELP)
    isolation: str = setting("process", "'process': every execution in its own (forked) process, so a crash "
                                        "or a cancel ends only that run; 'thread': in server threads (less "
                                        "overhead, no crash isolation)")
    basic_users: dict[str, str] = setting(doc="user name -> password hash from `terramind-openeo serve "
                                              "--hash-password` (never plain text), as JSON", factory=dict)
    users_file: str = setting("", "JSON file of further basic-auth users, written by `terramind-openeo serve "
                                  "--add-user NAME` and read while the server runs; empty: `<data_dir>/users.json`")
    oidc_providers: tuple[OidcProviderConfig, ...] = setting(
        (), "OpenID Connect providers whose tokens are accepted, as a JSON list of {id, issuer, title, scopes, "
            "default_clients}", parse=_oidc_providers)
    token_ttl_s: int = setting(24 * 3600, "lifetime of bearer tokens issued by `GET /credentials/basic`, s")
    oidc_cache_ttl_s: int = setting(60, "how long a userinfo answer for an OIDC access token is reused, s")
    login_max_failures_per_user: int = setting(5, "failed basic logins per user name within `login_window_s`; "
                                                  "then 429 until the window passes")
    login_max_failures_per_client: int = setting(20, "failed basic logins per client address within "
                                                     "`login_window_s`")
    login_window_s: int = setting(300, "window of the failed-login counts, s")
    udf_policy: str = setting(doc="who may run UDFs (arbitrary code, always in a bubblewrap sandbox): 'off', "
                                  "'users' (`udf_users` only) or 'authenticated'", factory=default_udf_policy,
                              shown="'authenticated' where `bwrap` is installed, else 'off'")
    udf_users: tuple[str, ...] = setting((), "users allowed to run UDFs when `udf_policy` is 'users'")
    allowed_weights: tuple[str, ...] = setting(
        ("hub", "random"), "TerraMind weights graphs may ask for: names (`hub`, `random`), absolute local "
        "paths (a checkpoint file, or a folder: everything inside), URL prefixes ending in `/` and hub repos of "
        "fine-tuned models as `hub:owner/name` (also `terramind_predict`'s checkpoint and config); anything else "
        "is refused before execution")
    allowed_urls: tuple[str, ...] = setting(
        ("https://", "http://"), "URL prefixes users may have the back-end read (`load_stac` and other URL "
        "arguments): `https://` allows any public host, `https://host/` or `https://host/dir/` one host or folder; "
        "whatever the list, hosts that resolve to loopback, private, link-local or other internal addresses are "
        "refused")
    allowed_internal_urls: tuple[str, ...] = setting(
        (), "URL prefixes (also listed in `allowed_urls`) whose hosts may be internal: STAC servers of the "
            "operator's own network")
    local_roots: tuple[str, ...] = setting(
        (), "absolute directories users may read files from by path (e.g. a shared STAC catalog on disk); empty: "
            "no local paths from users at all")
    udf_memory_mb: int = setting(8192, "address space of each process in a UDF sandbox (RLIMIT_AS), MiB")
    udf_cpu_s: int = setting(4 * 3600, "CPU seconds of each process in a UDF sandbox (RLIMIT_CPU)")
    udf_file_mb: int = setting(1024, "largest file a UDF may write (RLIMIT_FSIZE), MiB")
    udf_tmp_mb: int = setting(512, "size of a UDF sandbox's private /tmp, MiB")
    udf_processes: int = setting(256, "processes and threads of a UDF sandbox (RLIMIT_NPROC)")
    udf_threads: int = setting(4, "UDF calls (chunks) one sandbox runs at once, in one process: a run's model "
                                  "loads once and its chunks still run in parallel")
    udf_timeout_s: int = setting(900, "longest single UDF call (one chunk), s; the sandbox is killed after it")
    udf_sandbox_uid: int = setting(61000, "when the server runs as root: the unprivileged host uid/gid of UDF "
                                          "sandboxes")
    max_running_jobs: int = setting(2, "batch jobs running at once, all users together; more wait as `queued`")
    max_running_jobs_per_user: int = setting(2, "batch jobs of one user running at once")
    max_sync_requests: int = setting(4, "synchronous `POST /result` executions at once; more wait for a slot")
    max_sync_requests_per_user: int = setting(2, "synchronous requests one user may have running at once; more "
                                                 "are answered 429")
    sync_max_pixels: int = setting(16_000_000, "largest cube (values: dates x bands x rows x columns) a "
                                   "synchronous request may load or produce; larger ones are refused before any "
                                   "pixel is computed, with an error that says to use a batch job")
    sync_timeout_s: int = setting(900, "synchronous requests running longer are stopped (the error says to use a "
                                       "batch job), s")
    max_active_jobs_per_user: int = setting(10, "queued plus running batch jobs of one user; starting more is "
                                                "answered 429")
    max_result_mb_per_user: int = setting(20_480, "stored job results of one user, MiB; starting a job beyond "
                                                  "it is refused until results are deleted")
    result_ttl_s: int = setting(30 * 24 * 3600, "results of finished jobs are deleted this long after the job "
                                                "finished, s (0: kept forever)")
    sync_log_ttl_s: int = setting(24 * 3600, "logs of synchronous requests (the `Link: <...>; rel=\"monitor\"` "
                                             "header of `POST /result`) are kept this long, s")
    max_request_bytes: int = setting(2 * 1024 * 1024, "largest accepted request body, bytes")
    download_link_ttl_s: int = setting(7 * 24 * 3600, "result asset links are signed and expire after this "
                                                      "long, s")
    job_timeout_s: int = setting(12 * 3600, "batch jobs running longer are stopped, s (0: no limit)")
    log_level: str = setting("INFO", "log level of the server")

    def __post_init__(self) -> None:
        if self.isolation not in ("process", "thread"):
            raise SettingsError(f"isolation must be 'process' or 'thread', not {self.isolation!r}")
        if self.udf_policy not in UDF_POLICIES:
            raise SettingsError(f"udf_policy must be one of {UDF_POLICIES}, not {self.udf_policy!r}")
        for name in ("max_running_jobs", "max_running_jobs_per_user", "max_sync_requests", "max_request_bytes",
                     "max_sync_requests_per_user", "sync_max_pixels", "sync_timeout_s",
                     "max_active_jobs_per_user", "max_result_mb_per_user", "login_max_failures_per_user", "login_max_failures_per_client", "login_window_s",
                     "udf_memory_mb", "udf_cpu_s", "udf_file_mb", "udf_tmp_mb", "udf_processes", "udf_timeout_s", "udf_threads"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1, not {getattr(self, name)}")
        for entry in self.allowed_weights:
            if not entry or not (entry.startswith("/") or entry.startswith(("http://", "https://"))
                                 or "/" not in entry and ":" not in entry
                                 or entry.startswith("hub:") and HUB_REPO_ID.match(entry[4:])):
                raise SettingsError(f"allowed_weights: {entry!r} is neither a name (like 'hub'), a hub repo "
                                    "('hub:owner/name'), an absolute path nor an http(s) URL")
        for name in ("allowed_urls", "allowed_internal_urls"):
            for entry in getattr(self, name):
                if not entry.lower().startswith(("http://", "https://")):
                    raise SettingsError(f"{name}: {entry!r} is not an http(s) URL prefix")
        for entry in self.local_roots:
            if not entry.startswith("/"):
                raise SettingsError(f"local_roots: {entry!r} is not an absolute path")
        if self.api_prefix and not self.api_prefix.startswith("/"):
            raise SettingsError(f"api_prefix must start with '/': {self.api_prefix!r}")

    @property
    def db_path(self) -> Path:
        return self.data_dir / "jobs.sqlite"

    @property
    def users_path(self) -> Path:
        return Path(self.users_file).expanduser() if self.users_file else self.data_dir / "users.json"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"


def _load_file(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix == ".json":
            return json.loads(text)
        if suffix in (".yaml", ".yml"):
            import yaml  # optional: only needed for YAML config files

            return yaml.safe_load(text) or {}
    except (ValueError, ImportError) as exc:
        raise SettingsError(f"cannot read config file {path}: {exc}") from exc
    raise SettingsError(f"config file {path}: unsupported suffix {suffix!r} (use .toml, .json or .yaml)")


def load_settings(config: str | Path | None = None, env: Mapping[str, str] | None = None,
                  **overrides: Any) -> Settings:
    """Defaults <- config file (``config`` or ``TERRAMIND_OPENEO_CONFIG``) <- the environment (the process's
    if ``env`` is None) <- ``overrides`` (None values ignored)."""
    raw: dict[str, Any] = {}
    config = config or config_file_from_env(env)
    if config:
        path = Path(config).expanduser()
        if not path.is_file():
            raise SettingsError(f"config file {path} does not exist")
        raw.update(Settings.coerce(_load_file(path), source=f" in {path}"))
    raw.update(Settings.coerce(Settings.values_from_env(env)))
    raw.update(Settings.coerce({k: v for k, v in overrides.items() if v is not None}))
    return Settings(**raw)


def url_policy(settings: Settings):
    """The ``processes.urls.UrlPolicy`` users of this back-end are held to."""
    from terramind_openeo.processes.urls import UrlPolicy

    return UrlPolicy(allowed=settings.allowed_urls, allowed_internal=settings.allowed_internal_urls,
                     local_roots=settings.local_roots)


def weights_cache_dirs() -> tuple[str, ...]:
    """Model weights caches a UDF sandbox sees read-only: the Hugging Face hub's cache and ours."""
    from huggingface_hub import constants

    from terramind_openeo.config import settings as library_settings

    dirs = (str(Path(constants.HF_HUB_CACHE)), str(library_settings().cache_dir))
    return tuple(d for d in dirs if Path(d).is_dir())


def udf_sandbox(settings: Settings):
    """The ``processes.sandbox.SandboxConfig`` of this back-end's UDFs, or ``sandbox.Unavailable``."""
    from terramind_openeo.processes.sandbox import default_config

    return default_config(hidden=(str(settings.data_dir.resolve()),), weights_dirs=weights_cache_dirs(),
                          memory_mb=settings.udf_memory_mb, cpu_s=settings.udf_cpu_s, file_mb=settings.udf_file_mb,
                          tmp_mb=settings.udf_tmp_mb, processes=settings.udf_processes, threads=settings.udf_threads,
                          call_timeout_s=float(settings.udf_timeout_s), drop_to_uid=settings.udf_sandbox_uid)


def execution_policy(settings: Settings):
    """The ``processes.policy.Policy`` of every execution the back-end runs for a user: user code only in
    the sandbox (or refused), URLs and paths by the back-end's rules."""
    from terramind_openeo.processes.policy import PACKAGED_UDF_DIR, Policy

    return Policy(urls=url_policy(settings), udf_roots=(str(PACKAGED_UDF_DIR),),
                  allowed_weights=settings.allowed_weights, udf_sandbox=udf_sandbox(settings))
