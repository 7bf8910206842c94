"""The collection catalog: which openEO collection id maps to which data, from a user-editable file.

A catalog file (YAML or JSON) lists collections; each has a ``type``:

- ``stac_api``: a STAC API collection (``url``, ``stac_collection``), read lazily with pystac-client +
  odc-stac (``assets`` maps band names to asset keys, ``sign: planetary_computer`` signs hrefs);
- ``stac_static``: a static STAC catalog or collection JSON (``url``), same loading;
- ``netcdf`` / ``zarr``: one file whose data variables are the bands;
- ``geotiff``: files matching ``path`` (a glob), one item each, bands in file order named by ``bands``,
  dates from ``datetimes`` (file stem -> date) or ``datetime``;
- ``synthetic``: deterministic generated data over ``extent`` (for tests and API conformance).

Paths may use ``${VAR}`` / ``${VAR:-default}``; ``${SHARED_DATA}`` defaults to ``../shared/data`` beside the
checkout (or ``$TERRAMIND_OPENEO_SHARED_DATA``). Relative paths are relative to the catalog file. Local
collections whose files are missing are left out (logged), so the default catalog works anywhere.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from terramind_openeo.config import expand_variables, settings
from terramind_openeo.processes.errors import CatalogInvalid, CollectionNotFound

logger = logging.getLogger(__name__)

DEFAULT_CATALOG = Path(__file__).parent / "catalog_default.yaml"
SOURCE_TYPES = ("stac_api", "stac_static", "netcdf", "zarr", "geotiff", "synthetic")


@dataclass(frozen=True)
class Band:
    name: str
    common_name: str | None = None
    center_wavelength: float | None = None
    asset: str | None = None  # STAC asset key (default: the name)
    nodata: float | None = None
    scale: float | None = None
    offset: float | None = None


@dataclass(frozen=True, eq=False)  # hashed by identity: metadata caches key on it
class CollectionConfig:
    """One collection of the catalog (see the module docstring for the keys)."""

    id: str
    type: str
    title: str = ""
    description: str = ""
    path: str | None = None  # local file or glob (netcdf, zarr, geotiff)
    url: str | None = None  # STAC API root or static STAC JSON
    stac_collection: str | None = None
    bands: tuple[Band, ...] = ()
    nodata: float | None = None
    scale: float | None = None
    offset: float | None = None
    crs: str | None = None  # target CRS of the common grid (default: the data's own)
    resolution: float | None = None  # target pixel size in CRS units
    datetime: str | None = None
    datetimes: dict = field(default_factory=dict)
    extent: dict | None = None  # synthetic: {"bbox": [w, s, e, n], "crs": ..., "dates": [...]}
    sign: str | None = None
    license: str = "proprietary"
    keywords: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)

    @property
    def band_names(self) -> list[str]:
        return [b.name for b in self.bands]

    def files(self) -> list[str]:
        if self.path is None:
            return []
        return sorted(glob.glob(self.path)) if any(c in self.path for c in "*?[") else (
            [self.path] if os.path.exists(self.path) else [])

    def available(self) -> bool:
        if self.type in ("netcdf", "zarr", "geotiff"):
            return bool(self.files())
        return True


def _parse_band(entry: Any) -> Band:
    if isinstance(entry, str):
        return Band(name=entry)
    if isinstance(entry, dict) and "name" in entry:
        known = {k: entry[k] for k in Band.__dataclass_fields__ if k in entry}
        return Band(**known)
    raise CatalogInvalid(f"band entry {entry!r} must be a name or an object with 'name'")


def _parse_collection(entry: dict, base: Path) -> CollectionConfig:
    if not isinstance(entry, dict) or "id" not in entry or "type" not in entry:
        raise CatalogInvalid(f"catalog entry {entry!r:.100} needs 'id' and 'type'")
    if entry["type"] not in SOURCE_TYPES:
        raise CatalogInvalid(f"collection '{entry['id']}': type '{entry['type']}' is not one of {SOURCE_TYPES}")
    values = dict(entry)
    for key in ("path", "url"):
        if isinstance(values.get(key), str):
            text = expand_variables(values[key])
            if key == "path" and not os.path.isabs(text):
                text = str(base / text)
            if key == "url" and "://" not in text and not os.path.isabs(text):
                text = str(base / text)
            values[key] = text
    values["bands"] = tuple(_parse_band(b) for b in values.get("bands", []))
    values["keywords"] = tuple(values.get("keywords", ()))
    known = set(CollectionConfig.__dataclass_fields__)
    extra = {k: v for k, v in values.items() if k not in known}
    values = {k: v for k, v in values.items() if k in known}
    return CollectionConfig(**values, extra=extra)


class Catalog:
    """Collections by openEO id. ``Catalog.from_file(path)`` or ``Catalog.default()``."""

    def __init__(self, configs: list[CollectionConfig], source: str = "<memory>"):
        self.source = source
        self._configs: dict[str, CollectionConfig] = {}
        for cfg in configs:
            if not cfg.available():
                logger.info("catalog %s: collection %s left out, no files at %s", source, cfg.id, cfg.path)
                continue
            self._configs[cfg.id] = cfg

    @classmethod
    def from_dict(cls, data: dict, base: Path | None = None, source: str = "<dict>") -> Catalog:
        entries = data.get("collections") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise CatalogInvalid(f"catalog {source}: needs a top-level 'collections' list")
        base = base or Path.cwd()
        return cls([_parse_collection(e, base) for e in entries], source=source)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Catalog:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise CatalogInvalid(f"cannot read catalog file {path}: {exc}") from exc
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as exc:  # noqa: BLE001 - any parse error is a catalog error
            raise CatalogInvalid(f"catalog file {path} is not valid {path.suffix[1:]}: {exc}") from exc
        return cls.from_dict(data, base=path.resolve().parent, source=str(path))

    @classmethod
    def default(cls) -> Catalog:
        """The catalog of the ``catalog`` setting (``TERRAMIND_OPENEO_CATALOG``) or the one shipped with the package."""
        return cls.from_file(settings().catalog or DEFAULT_CATALOG)

    def ids(self) -> list[str]:
        return list(self._configs)

    def get(self, collection_id: str) -> CollectionConfig:
        try:
            return self._configs[collection_id]
        except KeyError:
            raise CollectionNotFound(f"collection '{collection_id}' does not exist "
                                     f"(available: {', '.join(self._configs) or 'none'})",
                                     argument="id") from None

    def collections(self) -> list[dict]:
        """STAC Collection dicts (with ``cube:dimensions`` and ``eo:bands``) of every collection."""
        from terramind_openeo.processes.collection_meta import describe

        return [describe(cfg) for cfg in self._configs.values()]

    def items(self, collection_id: str) -> list[dict]:
        """STAC Items of a local collection (one per file or date; see ``collection_meta.items``)."""
        from terramind_openeo.processes.collection_meta import items

        return items(self.get(collection_id))

    def collection(self, collection_id: str) -> dict:
        from terramind_openeo.processes.collection_meta import describe

        return describe(self.get(collection_id))
