"""What the user of one execution may do: the back-end builds a :class:`Policy` from its settings for every
run; library and command-line use (the caller is the operator) get :meth:`Policy.trusted`.

The process implementations read it from the execution context (``context.current().policy``): user-given
URLs and paths (``urls``), local UDF files (``udf_roots``), TerraMind weights (``allowed_weights``) and
where UDF code runs (``udf_sandbox``: a sandbox configuration, or ``None`` for in-process execution, which
only a trusted policy allows).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from terramind_openeo.processes.urls import UrlPolicy

HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
"""A Hugging Face hub repo id (``owner/name``): a fine-tuned checkpoint for ``terramind_predict``, allowed by an
``allowed_weights`` entry ``hub:owner/name``."""

PACKAGED_UDF_DIR = Path(__file__).resolve().parents[2] / "udf"
"""The UDF files of this project (``udf/`` beside the package in a checkout)."""


@dataclass(frozen=True)
class Policy:
    urls: UrlPolicy = field(default_factory=UrlPolicy.trusted)
    udf_roots: tuple[str, ...] | None = None
    """Directories whose ``.py`` files a ``udf`` argument may name; None: any local file (trusted)."""
    allowed_weights: tuple[str, ...] | None = None
    """TerraMind ``weights`` values allowed (``backend.weights.weights_allowed`` rules); None: any."""
    udf_sandbox: Any = None
    """``sandbox.SandboxConfig`` (user code runs there), ``sandbox.UNAVAILABLE`` (UDFs refused) or None
    (in-process: trusted callers only)."""
    max_pixels: int | None = None
    """Largest cube (values: t x bands x y x x) any node of the run may produce; None: no bound. The
    back-end sets it for synchronous requests (``sync_max_pixels``)."""
    trusted: bool = False

    @classmethod
    def trusted_local(cls) -> Policy:
        """The operator's own runs (``terramind-openeo run``, library calls, tests): no restrictions."""
        return cls(trusted=True)


def weights_allowed(value: Any, allowed: tuple[str, ...]) -> bool:
    """True when TerraMind ``weights`` ``value`` is one of ``allowed``: a name, a path inside an allowed
    absolute path, a URL under an allowed URL prefix (ending in ``/``) or equal to an allowed URL."""
    if not isinstance(value, str) or not value or "\x00" in value:
        return False
    if value in allowed:
        return True
    if HUB_REPO_ID.match(value):  # a hub repo id (terramind_predict): allowed when listed as "hub:owner/name"
        return f"hub:{value}" in allowed
    scheme = urlparse(value).scheme
    if scheme in ("http", "https"):
        if ".." in urlparse(value).path.split("/"):
            return False
        return any(a.endswith("/") and urlparse(a).scheme in ("http", "https") and value.startswith(a)
                   for a in allowed)
    if scheme == "file":
        value = urlparse(value).path
    if not value.startswith("/"):
        return False
    path = posixpath.normpath(value)
    for entry in allowed:
        if not entry.startswith("/"):
            continue
        root = posixpath.normpath(entry)
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return True
    return False
