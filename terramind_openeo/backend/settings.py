"""Back-end settings: defaults, then a config file (TOML, JSON or YAML), then ``TERRAMIND_OPENEO_*`` variables.

Every field of :class:`Settings` can be set from the environment as ``TERRAMIND_OPENEO_<FIELD>`` (upper
case); lists and mappings are given as JSON there, e.g.
``TERRAMIND_OPENEO_BASIC_USERS='{"alice": "scrypt$..."}'``. One data directory holds everything the
back-end writes: the SQLite database, job results and the signing key.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

log = logging.getLogger(__name__)

ENV_PREFIX = "TERRAMIND_OPENEO_"
UDF_POLICIES = ("off", "users", "authenticated")
DASK_MODES_HELP = "'threads' (no cluster), 'local' (a local dask.distributed cluster) or a scheduler address"


class SettingsError(ValueError):
    """A setting has a value the back-end cannot use; the message names the setting."""


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
    def from_dict(cls, raw: dict) -> "OidcProviderConfig":
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


@dataclass(frozen=True)
class Settings:
    """Everything configurable about one back-end instance."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("terramind-openeo-data")
    """Holds ``jobs.sqlite``, ``jobs/<id>/`` (results, scratch) and ``signing.key``."""
    api_prefix: str = "/openeo/1.2"
    """Where the versioned API lives; ``/.well-known/openeo`` points there."""
    public_url: str = ""
    """Base URL clients reach the server at (links, download hrefs); empty: taken from each request."""
    title: str = "TerraMind openEO back-end"
    description: str = "TerraMind foundation-model inference as openEO processes, on Dask."
    catalog: str = ""
    """Collection catalog file for ``processes.Catalog.from_file``; empty: ``Catalog.default()``."""
    dask: str = "local"
    """How process graphs run: """ + DASK_MODES_HELP + "."
    isolation: str = "process"
    """'process': every execution in its own (forked) process, so a crash or a cancel ends only that run;
    'thread': executions in server threads (less overhead, no crash isolation)."""
    basic_users: dict[str, str] = field(default_factory=dict)
    """User name -> password hash from ``terramind-openeo serve --hash-password`` (never plain text)."""
    oidc_providers: tuple[OidcProviderConfig, ...] = ()
    token_ttl_s: int = 24 * 3600
    """Lifetime of bearer tokens issued by ``GET /credentials/basic``."""
    oidc_cache_ttl_s: int = 60
    """How long a userinfo answer for an OIDC access token is reused."""
    udf_policy: str = "authenticated"
    """Who may run UDFs (arbitrary code): 'off', 'users' (``udf_users`` only) or 'authenticated'."""
    udf_users: tuple[str, ...] = ()
    allowed_weights: tuple[str, ...] = ("hub", "random")
    """TerraMind weights graphs may ask for (``weights`` of ``terramind_*``, ``weights`` in a UDF context):
    names (``hub``, ``random``), absolute local paths (a checkpoint file, or a folder: everything inside)
    and URL prefixes ending in ``/``; anything else is refused before execution (no fetching of arbitrary
    URLs, no reading of server files). Env: ``TERRAMIND_OPENEO_ALLOWED_WEIGHTS='["hub", "/models/"]'``."""
    allowed_urls: tuple[str, ...] = ("https://", "http://")
    """URL prefixes users may have the back-end read (``load_stac`` and other URL arguments): ``"https://"``
    allows any public host, ``"https://host/"`` or ``"https://host/dir/"`` one host or folder. Whatever the
    list, hosts that resolve to loopback, private, link-local or other internal addresses are refused."""
    allowed_internal_urls: tuple[str, ...] = ()
    """URL prefixes (also listed in ``allowed_urls``) whose hosts may be internal: STAC servers of the
    operator's own network."""
    local_roots: tuple[str, ...] = ()
    """Absolute directories users may read files from by path (e.g. a shared STAC catalog on disk); empty:
    no local paths from users at all."""
    max_running_jobs: int = 2
    """Batch jobs running at once, all users together; more wait as ``queued``."""
    max_running_jobs_per_user: int = 2
    max_sync_requests: int = 4
    """Synchronous ``POST /result`` executions at once; more wait for a slot."""
    sync_log_ttl_s: int = 24 * 3600
    """Logs of synchronous requests (the ``Link: <...>; rel="monitor"`` header of ``POST /result``) are kept
    this many seconds."""
    max_request_bytes: int = 2 * 1024 * 1024
    """Largest accepted request body (a process graph with an inline UDF fits easily)."""
    download_link_ttl_s: int = 7 * 24 * 3600
    """Result asset links are signed and expire after this many seconds."""
    job_timeout_s: int = 0
    """Batch jobs running longer are canceled (0: no limit)."""
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.isolation not in ("process", "thread"):
            raise SettingsError(f"isolation must be 'process' or 'thread', not {self.isolation!r}")
        if self.udf_policy not in UDF_POLICIES:
            raise SettingsError(f"udf_policy must be one of {UDF_POLICIES}, not {self.udf_policy!r}")
        for name in ("max_running_jobs", "max_running_jobs_per_user", "max_sync_requests", "max_request_bytes"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1, not {getattr(self, name)}")
        for entry in self.allowed_weights:
            if not entry or not (entry.startswith("/") or entry.startswith(("http://", "https://"))
                                 or "/" not in entry and ":" not in entry):
                raise SettingsError(f"allowed_weights: {entry!r} is neither a name (like 'hub'), an absolute "
                                    "path nor an http(s) URL")
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
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **_coerce_all(changes))


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


def _coerce(name: str, value: Any, hint: Any) -> Any:
    hint_text = str(hint)
    try:
        if name == "oidc_providers":
            if isinstance(value, str):
                value = json.loads(value)
            return tuple(p if isinstance(p, OidcProviderConfig) else OidcProviderConfig.from_dict(p) for p in value)
        if hint is bool or hint_text == "bool":
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
        if hint is int or hint_text == "int":
            return int(value)
        if hint is Path or hint_text.endswith("Path"):
            return Path(value).expanduser()
        if hint_text.startswith("dict"):
            value = json.loads(value) if isinstance(value, str) else value
            if not isinstance(value, dict):
                raise TypeError("expected a mapping")
            return {str(k): str(v) for k, v in value.items()}
        if hint_text.startswith("tuple"):
            if isinstance(value, str):
                value = json.loads(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
            return tuple(str(v) for v in value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"setting {name!r}: cannot use {value!r} ({exc})") from exc


def _coerce_all(raw: dict) -> dict:
    hints = get_type_hints(Settings)
    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SettingsError(f"unknown settings {unknown}; known: {sorted(known)}")
    return {name: _coerce(name, value, hints[name]) for name, value in raw.items()}


def load_settings(config: str | Path | None = None, env: dict[str, str] | None = None,
                  **overrides: Any) -> Settings:
    """Defaults <- config file (``config`` or ``TERRAMIND_OPENEO_CONFIG``) <- environment <- ``overrides``."""
    env = dict(os.environ if env is None else env)
    raw: dict[str, Any] = {}
    config = config or env.get(ENV_PREFIX + "CONFIG")
    if config:
        path = Path(config).expanduser()
        if not path.is_file():
            raise SettingsError(f"config file {path} does not exist")
        raw.update(_load_file(path))
    known = {f.name for f in dataclasses.fields(Settings)}
    for key, value in env.items():
        if key.startswith(ENV_PREFIX) and key != ENV_PREFIX + "CONFIG":
            name = key[len(ENV_PREFIX):].lower()
            if name in known:
                raw[name] = value
            else:  # other layers use the same prefix (e.g. for kernels or data paths)
                log.debug("not a back-end setting: %s", key)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**_coerce_all(raw))


def url_policy(settings: Settings):
    """The ``processes.urls.UrlPolicy`` users of this back-end are held to."""
    from terramind_openeo.processes.urls import UrlPolicy

    return UrlPolicy(allowed=settings.allowed_urls, allowed_internal=settings.allowed_internal_urls,
                     local_roots=settings.local_roots)


def execution_policy(settings: Settings):
    """The ``processes.policy.Policy`` of every execution the back-end runs for a user."""
    from terramind_openeo.processes.policy import PACKAGED_UDF_DIR, Policy

    return Policy(urls=url_policy(settings), udf_roots=(str(PACKAGED_UDF_DIR),),
                  allowed_weights=settings.allowed_weights)
