"""The official checkpoints on the Hugging Face hub: found in the cache, or fetched with one quick attempt.

``huggingface_hub`` retries an unreachable hub five times with back-off (about 45 s) and a map run used to
do that once per tile; a hub that cannot be reached is not going to appear on a rerun either. So: the cache
first; else one request with a short timeout (the ``hub_timeout_s`` setting) to see whether the hub answers, and only
then the download. A failure is remembered for the life of the process (every later tile of the run fails
at once with the same message), and its message says how to give the weights instead: a local file from
the command line, the Python API or a back-end (whose ``allowed_weights`` must list it), or a cache
filled elsewhere with ``terramind-openeo weights download``.

Names a user types: a model (``terramind_v1_base``) or a tokenizer's modality (``LULC``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from terramind_openeo.config import hub_offline, settings
from terramind_openeo.model.config import MODEL_NAMES, get_config
from terramind_openeo.model.errors import HubUnavailableError, WeightsSourceError

logger = logging.getLogger(__name__)

TOKENIZER_REPO = "ibm-esa-geospatial/TerraMind-1.0-Tokenizer-{modality}"
TOKENIZER_FILE = "TerraMind_Tokenizer_{modality}.pt"
TOKENIZER_MODALITIES = ("S2L2A", "S1GRD", "S1RTC", "DEM", "NDVI", "LULC")
COORDS_REPO = "ibm-esa-geospatial/TerraMind-1.0-Tokenizer-Coords"
COORDS_FILE = "config.json"
"""The geo-localisation tokenizer (``coords``): a vocabulary of 0.25 degree cells, no weights."""
HUB_NAMES = (*MODEL_NAMES, *TOKENIZER_MODALITIES, "coords")
"""Every name :func:`hub_file` knows, as a user types it (``terramind-openeo weights download NAME``)."""


@dataclass(frozen=True)
class HubFile:
    """One checkpoint on the hub."""

    name: str
    """What a user types: ``terramind_v1_base`` or a tokenizer's modality (``LULC``)."""
    repo: str
    filename: str

    def __str__(self) -> str:
        return f"{self.filename} ({self.repo})"


def hub_file(name: str) -> HubFile:
    """The checkpoint of a model name or of a tokenizer's modality."""
    if name in MODEL_NAMES:
        config = get_config(name)
        return HubFile(name, config.hub_repo, config.hub_filename)
    modality = name.removeprefix("tokenizer_").removeprefix("Tokenizer-")
    if modality in TOKENIZER_MODALITIES:
        return HubFile(modality, TOKENIZER_REPO.format(modality=modality), TOKENIZER_FILE.format(modality=modality))
    if modality == "coords":
        return HubFile(modality, COORDS_REPO, COORDS_FILE)
    raise WeightsSourceError(f"unknown weights name {name!r}; expected a model ({', '.join(MODEL_NAMES)}) or a "
                             f"tokenizer ({', '.join(HUB_NAMES[len(MODEL_NAMES):])})")


def cached(file: HubFile, cache_dir: str | Path | None = None) -> Path | None:
    """The file's path in the Hugging Face cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(file.repo, file.filename, cache_dir=cache_dir)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


RETRY_AFTER_S = 300.0
"""How long a failed attempt stands for every later one in this process (a server outlives a network outage)."""
_FAILED: dict[tuple, tuple[float, str]] = {}  # (file, where from, where to) -> (when, why) of the failed attempt
_LOCK = threading.Lock()


def _attempt_key(file: HubFile, cache_dir: str | Path | None) -> tuple:
    from huggingface_hub import constants

    return (file, constants.ENDPOINT, str(cache_dir or constants.HF_HUB_CACHE), bool(constants.HF_HUB_OFFLINE))


def _failure(file: HubFile, cache_dir: str | Path | None) -> str | None:
    entry = _FAILED.get(_attempt_key(file, cache_dir))
    return entry[1] if entry is not None and time.monotonic() - entry[0] < RETRY_AFTER_S else None




def _unreachable(file: HubFile, timeout: float) -> str | None:
    """Why the hub does not serve ``file`` (one request, no retries), or None when it answers."""
    from urllib.parse import quote

    import httpx
    from huggingface_hub import constants
    from huggingface_hub.utils import build_hf_headers

    url = f"{constants.ENDPOINT}/{file.repo}/resolve/{constants.DEFAULT_REVISION}/{quote(file.filename)}"
    try:
        resp = httpx.head(url, headers=build_hf_headers(), timeout=timeout, follow_redirects=False)
    except httpx.TimeoutException:
        return f"{constants.ENDPOINT} did not answer within {timeout:g} s"
    except httpx.HTTPError as exc:
        return f"{constants.ENDPOINT} cannot be reached ({type(exc).__name__}: {exc})"
    if resp.status_code in (401, 403, 404):
        return f"{url} answered HTTP {resp.status_code} (no such file, or it needs a token)"
    if resp.status_code >= 400:
        return f"{url} answered HTTP {resp.status_code}"
    return None


def fetch(file: HubFile, cache_dir: str | Path | None = None, timeout: float | None = None) -> Path:
    """Path of ``file`` in the cache, downloaded first if needed: one attempt per process (module doc)."""
    return fetch_all([file], cache_dir, timeout)[0]


def fetch_all(files: list[HubFile], cache_dir: str | Path | None = None,
              timeout: float | None = None) -> list[Path]:
    """Paths of ``files`` in the cache, the missing ones downloaded. One check of the hub for all of them
    (``timeout``: default the ``hub_timeout_s`` setting); when it fails, one :class:`HubUnavailableError`
    lists every missing file and how to give them."""
    paths = [cached(f, cache_dir) for f in files]
    missing = [f for f, p in zip(files, paths) if p is None]
    if not missing:
        return [p for p in paths if p is not None]
    with _LOCK:  # one thread asks the hub; the others wait for its answer
        reason = next((r for r in (_failure(f, cache_dir) for f in missing) if r), None)
        if reason is None:
            reason = _download(missing, cache_dir, settings().hub_timeout_s if timeout is None else timeout)
            if reason is not None:
                for f in missing:
                    _FAILED[_attempt_key(f, cache_dir)] = (time.monotonic(), reason)
        if reason is not None:
            still = [f for f in missing if cached(f, cache_dir) is None]
            raise HubUnavailableError(unavailable_message(still or missing, reason))
    return [cached(f, cache_dir) or Path() for f in files]


def _download(files: list[HubFile], cache_dir: str | Path | None, timeout: float) -> str | None:
    """Download ``files``; None, or why they could not all be downloaded."""
    if hub_offline():
        return "HF_HUB_OFFLINE is set and they are not in the Hugging Face cache"
    reason = _unreachable(files[0], timeout)
    if reason is not None:
        return reason
    from huggingface_hub import constants, hf_hub_download

    for file in files:
        logger.info("downloading %s from the Hugging Face hub", file)
        try:
            hf_hub_download(file.repo, file.filename, cache_dir=cache_dir, etag_timeout=timeout,
                            endpoint=constants.ENDPOINT)
        except Exception as exc:  # noqa: BLE001 - network, disk, hub errors: all end in the one message
            return f"the download of {file.filename} failed ({type(exc).__name__}: {exc})"
    return None


def forget_failures() -> None:
    """Allow another attempt in this process (tests; a long-lived server after the network came back)."""
    with _LOCK:
        _FAILED.clear()


def unavailable_message(files: list[HubFile], reason: str) -> str:
    """What is missing, why, and every way to give the weights instead."""
    models = [f for f in files if f.name in MODEL_NAMES]
    names = " ".join(f.name for f in files)
    lines = [f"cannot get {', '.join(str(f) for f in files)} from the Hugging Face hub: {reason}.",
             f"Fetch once on a machine with internet: `terramind-openeo weights download {names} --to DIR`, copy DIR "
             "here and set HF_HUB_CACHE=DIR (or copy its contents into ~/.cache/huggingface/hub)."]
    if models:
        file = models[0].filename
        lines.append(f"Or give a local checkpoint: `terramind-openeo run GRAPH.json --param weights=/path/{file}` "
                     f"(command line), weights=\"/path/{file}\" (load_terramind, the terramind_* processes, a UDF's "
                     "context); on a back-end, a path that its allowed_weights setting lists.")
    lines.append('For a test run without meaningful outputs: weights "random" (with the tiny model: '
                 "`--param weights=random --param model=terramind_v1_tiny`).")
    return " ".join(lines)
