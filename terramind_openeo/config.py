"""One configuration: every setting of the package, its environment variable, default and meaning.

Read once. The first call of :func:`settings` reads the environment and keeps the result for the life of
the process; a process started later (a dask worker, a job's sandbox) reads its own environment once, which
is how ``run`` hands settings to its workers. Code that wants other values says so explicitly:

- :func:`override`, a context manager: values for the calls made inside the block, in this thread or dask
  task only (a context variable; dask's threaded scheduler copies it into the tasks it runs);
- :func:`configure`: new values for the whole process, every thread (the way timm's ``set_fused_attn`` works);
- :func:`reload`: read the environment again (after a hand-off that changed it, and in tests).

Adding a setting: a field of :class:`Settings` declared with ``setting(default, "meaning")``; its variable is
``TERRAMIND_OPENEO_<FIELD>`` unless ``env=`` names another; then regenerate ``docs/settings.md``
(``python -m terramind_openeo.config > docs/settings.md``; a test compares the two).
Reading one: ``from terramind_openeo.config import settings``, then ``settings().model_cache_size``.

One rule per type, for every variable: booleans are ``1/true/yes/on`` or ``0/false/no/off`` (any case),
numbers are decimal, lists are JSON or comma-separated, mappings are JSON; an empty variable means the
default; anything else is a :class:`SettingsError` naming the variable. ``HF_HUB_OFFLINE`` is the Hugging
Face hub's own variable and is read by the hub, with the hub's rule (:func:`hub_offline`).

This module is the only one of the package that reads ``os.environ``; the other places that touch it are
documented hand-offs to child processes (``processes/cli.py`` exports variables for dask's worker processes).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import os
import re
import threading
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar, get_type_hints

ENV_PREFIX = "TERRAMIND_OPENEO_"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

S = TypeVar("S", bound="EnvSettings")


class SettingsError(ValueError):
    """A setting has a value the package cannot use; the message names the setting and its variable."""


def setting(default: Any = dataclasses.MISSING, doc: str = "", *, env: str | None = None,
            factory: Callable[[], Any] | None = None, parse: Callable[[Any], Any] | None = None,
            shown: str | None = None) -> Any:
    """A settings field: its ``default`` (or ``factory``), its meaning (``doc``, one line for the table), the
    environment variable (``env``; default ``<prefix><FIELD>``), a ``parse`` function for values that need
    more than the per-type rule, and how the table ``shown``s a default computed at run time."""
    metadata = {"doc": doc, "env": env, "parse": parse, "shown": shown}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def parse_bool(raw: Any, name: str = "value") -> bool:
    """The one boolean rule: ``1/true/yes/on`` or ``0/false/no/off`` (stripped, any case)."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SettingsError(f"{name}: {raw!r} is not a boolean (use 1/true/yes/on or 0/false/no/off)")


def _strip_none(hint: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (hint, False)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` (a string from a variable or a file, or already the right type) as a ``hint``."""
    hint, optional = _strip_none(hint)
    if optional and (value is None or isinstance(value, str) and not value.strip()):
        return None
    origin = typing.get_origin(hint)
    if hint is bool:
        return parse_bool(value)
    if hint is int:
        if isinstance(value, bool):
            raise TypeError("expected an integer, not a boolean")
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{value} is not a whole number")
        return int(value.strip() if isinstance(value, str) else value)
    if hint is float:
        if isinstance(value, bool):
            raise TypeError("expected a number, not a boolean")
        return float(value.strip() if isinstance(value, str) else value)
    if hint is Path:
        return Path(value).expanduser()
    if origin is dict:
        value = json.loads(value) if isinstance(value, str) else value
        if not isinstance(value, Mapping):
            raise TypeError("expected a mapping (JSON object)")
        return {str(k): str(v) for k, v in value.items()}
    if origin is tuple:
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else [v.strip() for v in text.split(",") if v.strip()]
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise TypeError("expected a list")
        return tuple(str(v) for v in value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise TypeError(f"expected a string, not {type(value).__name__}")
        return str(value)
    return value


class EnvSettings:
    """Base of the package's settings classes (frozen dataclasses): typed fields read from the environment
    with one rule per type, errors that name the variable, and the documentation table."""

    env_prefix: ClassVar[str] = ENV_PREFIX

    @classmethod
    def env_name(cls, f: dataclasses.Field) -> str:
        return f.metadata.get("env") or cls.env_prefix + f.name.upper()

    @classmethod
    def _fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)  # type: ignore[arg-type]

    @classmethod
    def coerce(cls, raw: Mapping[str, Any], source: str = "") -> dict[str, Any]:
        """``raw`` values by field name, each as its field's type; unknown names are an error."""
        fields = {f.name: f for f in cls._fields()}
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise SettingsError(f"unknown settings {unknown}{source}; known: {sorted(fields)}")
        hints = get_type_hints(cls)
        out = {}
        for name, value in raw.items():
            f = fields[name]
            try:
                parse = f.metadata.get("parse")
                out[name] = parse(value) if parse is not None else _coerce(value, hints[name])
            except SettingsError as exc:
                raise SettingsError(f"setting {name!r} ({cls.env_name(f)}): {exc}") from None
            except (TypeError, ValueError) as exc:
                raise SettingsError(f"setting {name!r} ({cls.env_name(f)}): cannot use {value!r} ({exc})") from None
        return out

    @classmethod
    def values_from_env(cls, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The raw values the environment (``os.environ`` if None) gives the fields of this class; empty
        variables are left out (they mean the default)."""
        env = os.environ if env is None else env
        raw = {}
        for f in cls._fields():
            value = env.get(cls.env_name(f))
            if value is not None and value.strip():
                raw[f.name] = value
        return raw

    @classmethod
    def from_env(cls: type[S], env: Mapping[str, str] | None = None, **overrides: Any) -> S:
        """Defaults <- the environment (``os.environ`` if None) <- ``overrides`` (None values ignored)."""
        raw: dict[str, Any] = dict(cls.values_from_env(env))
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**cls.coerce(raw))

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes`` (strings parsed by the same rules as variables)."""
        return dataclasses.replace(self, **type(self).coerce(changes))  # type: ignore[type-var]

    @classmethod
    def table(cls) -> str:
        """The Markdown table of this class's settings: variable, default, meaning."""
        rows = ["| variable | setting | default | meaning |", "|---|---|---|---|"]
        for f in cls._fields():
            shown = f.metadata.get("shown")
            if shown is None:
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                shown = "(none)" if default is None else json.dumps(default, default=str)
            doc = " ".join(f.metadata.get("doc", "").split()).replace("|", "\\|")
            rows.append(f"| `{cls.env_name(f)}` | `{f.name}` | {shown} | {doc} |")
        return "\n".join(rows)


def _default_shared_data() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


@dataclass(frozen=True)
class Settings(EnvSettings):
    """The settings of the library (model, inference, processes, kernels). The back-end's own settings
    (``backend.settings.Settings``) are built on the same base."""

    # kernels: which implementation runs an op (kernels/dispatch.py); names are checked where they are used
    attention: str = setting("auto", "attention implementation: auto (triton on CUDA, else sdpa), triton, "
                                     "sdpa or reference")
    layernorm: str = setting("auto", "add + LayerNorm implementation: auto (torch), triton, torch or reference")
    swiglu: str = setting("auto", "SwiGLU implementation: auto (torch), triton, torch or reference")
    prepack: str = setting("auto", "CPU convolution weight pre-packing: auto (mkldnn on CPU), mkldnn or torch")
    prepack_linear: str = setting("auto", "CPU linear weight pre-packing: auto (mkl on CPU), mkl or torch")
    prepack_mb: float = setting(2048.0, "memory the pre-packed weight copies may take, MiB (0: no packing)")
    autotune: bool = setting(True, "autotune the Triton attention kernel on CUDA (false: one heuristic "
                                   "configuration per shape)")
    triton_interpret: bool = setting(False, "Triton's own switch: run kernels in its CPU interpreter (set it "
                                            "before triton is imported)", env="TRITON_INTERPRET")
    # inference: caches
    cache_dir: Path = setting(doc="where checkpoints given by URL are downloaded (under weights/)",
                              factory=lambda: Path.home() / ".cache" / "terramind-openeo",
                              shown="`~/.cache/terramind-openeo`", env=ENV_PREFIX + "CACHE")
    weights_cache_mb: float = setting(20480.0, "checkpoints downloaded by URL kept under `cache_dir`/weights, "
                                               "MiB; least recently used ones are deleted beyond it")
    model_cache_size: int = setting(2, "loaded models each process keeps (least recently used out)")
    tokenizer_cache_size: int = setting(3, "loaded tokenizers each process keeps for generation (least recently "
                                           "used out; a diffusion tokenizer holds ~1.1 GB)")
    hub_timeout_s: float = setting(10.0, "how long the Hugging Face hub may take to answer the one check "
                                         "before a download (an unreachable hub fails the run at once), s")
    tile_cache_mb: float = setting(512.0, "memory for model outputs of border tiles kept for the neighbouring "
                                          "chunk, MiB (0: off)")
    tile_share_dir: Path | None = setting(None, "directory through which the worker processes of one machine "
                                                "share border tiles (`run`'s local cluster sets one)")
    tile_share_mb: float = setting(1024.0, "bytes of tile files one process may keep in the share "
                                           "directory, MiB")
    # processes: collections and UDFs
    catalog: Path | None = setting(None, "collection catalog file (YAML/JSON) of `run` and the back-end; "
                                         "none: the packaged one")
    shared_data: Path = setting(doc="the sample data folder that `${SHARED_DATA}` in catalog files names",
                                factory=_default_shared_data, shown="`../shared/data` beside the checkout")
    udf_user_logger: str = setting("openeo.udf.debug.user", "logger whose records a UDF's `inspect()` "
                                   "calls reach (the openEO client's variable)", env="OPENEO_UDF_USER_LOGGER")
    # processes: vector data and machine learning (limits on what one request may ask; docs/fewshot.md)
    vector_max_features: int = setting(100_000, "features one GeoJSON or GeoParquet (labels, examples) may hold")
    aggregate_max_pixels: int = setting(4_000_000, "pixel positions one aggregate_spatial may gather "
                                                   "(geometries x pixels of the largest)")
    ml_model_max_mb: float = setting(512.0, "largest model file load_ml_model reads, MiB")
    # read to know whether the user chose them; they act on GDAL and glibc themselves
    gdal_cachemax: str | None = setting(None, "GDAL's raster cache (GDAL reads it); `run` gives its workers "
                                              "512 MB unless it is set", env="GDAL_CACHEMAX")
    malloc_trim_threshold: str | None = setting(None, "glibc's variable; when it or MALLOC_MMAP_THRESHOLD_ is "
                                                      "set, the heap policy of processes/heap.py stays off",
                                                env="MALLOC_TRIM_THRESHOLD_")
    malloc_mmap_threshold: str | None = setting(None, "glibc's variable (see MALLOC_TRIM_THRESHOLD_)",
                                                env="MALLOC_MMAP_THRESHOLD_")

    def __post_init__(self) -> None:
        for name in ("model_cache_size", "tokenizer_cache_size"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} ({ENV_PREFIX}{name.upper()}) must be at least 1, "
                                    f"not {getattr(self, name)}")
        for name in ("vector_max_features", "aggregate_max_pixels"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} ({ENV_PREFIX}{name.upper()}) must be at least 1, not {getattr(self, name)}")
        for name in ("prepack_mb", "tile_cache_mb", "tile_share_mb", "weights_cache_mb", "ml_model_max_mb"):
            value = getattr(self, name)
            if not value >= 0:  # also NaN
                raise SettingsError(f"{name} ({ENV_PREFIX}{name.upper()}) must be a number of MiB >= 0, "
                                    f"not {value!r}")

    @property
    def weights_cache_dir(self) -> Path:
        """Where checkpoints given by URL are kept."""
        return self.cache_dir / "weights"

    @property
    def catalog_file(self) -> Path:
        """The collection catalog to read: the configured one, else the packaged one."""
        return self.catalog or Path(__file__).parent / "processes" / "catalog_default.yaml"


# ---- the process's settings and explicit overrides ------------------------------------------------------

_LOCK = threading.Lock()
_global: Settings | None = None
_override: contextvars.ContextVar[Settings | None] = contextvars.ContextVar("terramind_openeo_settings",
                                                                            default=None)


def settings() -> Settings:
    """The settings in force here: an :func:`override` of this thread or task, else the process's (read from
    the environment at the first call)."""
    current = _override.get()
    if current is not None:
        return current
    return _global if _global is not None else _load()


def _load() -> Settings:
    global _global
    with _LOCK:
        if _global is None:
            _global = Settings.from_env()
        return _global


def reload(env: Mapping[str, str] | None = None) -> Settings:
    """Read the environment (``os.environ`` if None) again and make the result the process's settings."""
    global _global
    fresh = Settings.from_env(env)
    with _LOCK:
        _global = fresh
    return fresh


def configure(**changes: Any) -> Settings:
    """Change settings for the whole process (all threads), e.g. ``configure(attention="sdpa")``."""
    global _global
    with _LOCK:
        _global = (_global or Settings.from_env()).replace(**changes)
        return _global


@contextlib.contextmanager
def override(**changes: Any) -> Iterator[Settings]:
    """Settings changed for the calls made inside the block, in this thread or dask task only; the block
    sees the settings in force at its start, plus ``changes``."""
    token = _override.set(settings().replace(**changes))
    try:
        yield _override.get()  # type: ignore[misc]
    finally:
        _override.reset(token)


def config_file_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """The back-end's config file named by ``TERRAMIND_OPENEO_CONFIG`` in ``env`` (``os.environ`` if None)."""
    value = (os.environ if env is None else env).get(ENV_PREFIX + "CONFIG", "").strip()
    return value or None


def hub_offline() -> bool:
    """Whether the Hugging Face hub works from its cache only: the hub's own reading of ``HF_HUB_OFFLINE``
    (``1/ON/YES/TRUE`` offline, anything else online), which its downloads obey whatever we think."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def expand_variables(text: str) -> str:
    """``${NAME}`` and ``${NAME:-default}`` in an operator's file (a collection catalog) replaced by the
    environment's values; ``${SHARED_DATA}`` is the ``shared_data`` setting unless ``SHARED_DATA`` is set."""
    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name == "SHARED_DATA":
            return os.environ.get("SHARED_DATA") or str(settings().shared_data)
        return os.environ.get(name, default if default is not None else "")

    return _VARIABLE.sub(sub, text)


def markdown() -> str:
    """docs/settings.md: the tables of the library's and the back-end's settings."""
    from terramind_openeo.backend.settings import Settings as BackendSettings

    return "\n".join([
        "# Settings",
        "",
        "Every setting of terramind-openeo: its environment variable, default and meaning. Generated by",
        "`python -m terramind_openeo.config > docs/settings.md` from `terramind_openeo/config.py` (a test",
        "checks that this page matches it). Booleans are `1/true/yes/on` or `0/false/no/off`, numbers are",
        "decimal, lists JSON or comma-separated, mappings JSON; an empty variable means the default; a value",
        "that does not parse is an error naming the variable. Each process reads them once; in code,",
        "`config.override(...)` (this thread or task) and `config.configure(...)` (the whole process) change",
        "them explicitly.",
        "",
        "## Library (model, inference, processes, kernels)",
        "",
        Settings.table(),
        "",
        "Read by other libraries themselves, with their own rules:",
        "",
        "| variable | read by | meaning |",
        "|---|---|---|",
        "| `HF_HUB_OFFLINE` | huggingface_hub | `1/ON/YES/TRUE`: hub checkpoints come from the local cache only "
        "(anything else, `false` included, means online) |",
        "| `HF_HOME`, `HF_HUB_CACHE` | huggingface_hub | where hub checkpoints are cached |",
        "| `SHARED_DATA`, any `${NAME}` | catalog files | `${NAME}` / `${NAME:-default}` in a catalog's `path` "
        "and `url` are replaced by the variable |",
        "",
        "## Back-end (`terramind-openeo serve`)",
        "",
        f"Also read from a config file (`--config FILE` or `{ENV_PREFIX}CONFIG`; TOML, JSON or YAML, keys are "
        "the setting names); the variables win over the file.",
        "",
        BackendSettings.table(),
        "",
    ])


if __name__ == "__main__":
    print(markdown(), end="")
