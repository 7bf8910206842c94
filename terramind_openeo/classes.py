"""Class maps: what each class value means and how it is drawn, carried from the model to every output.

A :class:`ClassScheme` names the band that holds class ids, each class's value, title and colour, and the
value written where there was no data. It travels on the cube as one string attribute
(``cube.attrs["classification:classes"]``, JSON: a scalar attribute survives ``save_result``'s
normalisation and the chunked process path), and the writers turn it into the COG's colour table and band
metadata, netCDF/Zarr ``flag_values``/``flag_meanings``, the STAC ``classification:classes`` of each item and
the quicklook's legend. A band labelled ``LULC`` is TerraMind's zero-shot land cover even without the
attribute (a UDF result from another back-end arrives without attributes).

TerraMind's LULC modality holds the 10 classes of the Esri / Impact Observatory 10 m land-cover product
(TerraMesh regridded it; the values are Esri's 0, 1, 2, 4, 5, 7, 8, 9, 10, 11 renumbered 0..9). The colours
are those TerraMind's own examples draw LULC with (IBM/terramind ``notebooks/plotting_utils.py``,
``COLORBLIND_HEX``). The class order was checked on the sample tiles: class 1 has negative NDVI (water),
class 2 the highest (trees), class 4 covers 88 % of a Danish farmland tile (crops).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

#: Value of a class map where the input held no data.
CLASS_NODATA = 255

#: Attribute of a cube (and band metadata key of a GeoTIFF) holding its class scheme as JSON.
CLASSES_ATTR = "classification:classes"
#: GeoTIFF band metadata key (GDAL keys take no ':'): the scheme as JSON.
GTIFF_TAG = "CLASSIFICATION_CLASSES"
#: Bounds on a scheme read from user code (``ClassScheme.from_stac``): classes, class value, title length.
MAX_CLASSES, MAX_CLASS_VALUE, MAX_TITLE = 1024, 65535, 200
# Colours for classes that bring none (a fine-tuned model's config names classes, never colours):
# a qualitative palette, class k -> colour k mod 12.
PALETTE = ((31, 119, 180), (44, 160, 44), (214, 39, 40), (255, 127, 14), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (255, 187, 120), (152, 223, 138))


def _hex(colour: tuple[int, int, int]) -> str:
    return "".join(f"{c:02X}" for c in colour)


def _rgb(text: str) -> tuple[int, int, int]:
    text = text.lstrip("#")
    return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)


def slug(title: str) -> str:
    """A class name as STAC's classification extension and CF ``flag_meanings`` want it:
    letters, digits, ``-`` and ``_`` only (``"Built area"`` -> ``"built_area"``)."""
    text = re.sub(r"[^0-9A-Za-z-]+", "_", str(title).strip()).strip("_").lower()
    return text or "class"


@dataclass(frozen=True)
class ClassInfo:
    """One class of a class map."""

    value: int
    """The class id stored in the raster."""
    title: str
    """Human-readable name (``"Flooded vegetation"``)."""
    colour: tuple[int, int, int]
    """RGB, 0..255."""

    @property
    def name(self) -> str:
        return slug(self.title)


@dataclass(frozen=True)
class ClassScheme:
    """The classes of the band ``band`` of a cube."""

    band: str
    """Label of the band holding class ids."""
    classes: tuple[ClassInfo, ...]
    nodata: int | None = CLASS_NODATA
    """Value written where there was no data (not a class)."""

    @classmethod
    def from_names(cls, band: str, titles: Sequence[str], colours: Sequence[tuple[int, int, int]] | None = None,
                   nodata: int | None = CLASS_NODATA) -> ClassScheme:
        """Classes ``0..n-1`` named ``titles``; colours from ``colours`` or the default palette."""
        colours = list(colours) if colours is not None else [PALETTE[i % len(PALETTE)] for i in range(len(titles))]
        pairs = enumerate(zip(titles, colours, strict=True))
        return cls(str(band), tuple(ClassInfo(i, str(t), (c[0], c[1], c[2])) for i, (t, c) in pairs), nodata)

    def title_of(self, value: int) -> str:
        for info in self.classes:
            if info.value == value:
                return info.title
        return f"{self.band} class {value}"

    def colour_of(self, value: int) -> tuple[int, int, int]:
        for info in self.classes:
            if info.value == value:
                return info.colour
        return PALETTE[int(value) % len(PALETTE)]

    # ------------------------------------------------------------------ formats
    def to_json(self) -> str:
        return json.dumps({"band": self.band, "nodata": self.nodata,
                           "classes": [{"value": c.value, "title": c.title, "color_hint": _hex(c.colour)}
                                       for c in self.classes]}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ClassScheme:
        data = json.loads(text)
        return cls(str(data["band"]),
                   tuple(ClassInfo(int(c["value"]), str(c["title"]), _rgb(c["color_hint"])) for c in data["classes"]),
                   None if data.get("nodata") is None else int(data["nodata"]))

    @classmethod
    def from_stac(cls, band: str, classes: object) -> ClassScheme:
        """The scheme of band ``band`` from a STAC ``classification:classes`` list (``stac_classes``' form; an
        entry with ``"nodata": true`` gives the no-data value). The list may come from user code: every entry is
        checked; a ``ValueError`` names the first bad one."""
        if not isinstance(classes, list) or not classes or len(classes) > MAX_CLASSES:
            raise ValueError(f"must be a list of 1..{MAX_CLASSES} class objects")
        infos: list[ClassInfo] = []
        nodata, seen = None, set()
        for i, entry in enumerate(classes):
            value = entry.get("value") if isinstance(entry, dict) else None
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_CLASS_VALUE:
                raise ValueError(f"class {i}: 'value' must be an integer 0..{MAX_CLASS_VALUE}")
            if value in seen:
                raise ValueError(f"class {i}: value {value} is given twice")
            seen.add(value)
            title = entry.get("title", entry.get("name"))
            if not isinstance(title, str) or not title.strip() or len(title) > MAX_TITLE:
                raise ValueError(f"class {i} (value {value}): needs a 'title' or 'name' of 1..{MAX_TITLE} characters")
            hint = entry.get("color_hint")
            if hint is not None and (not isinstance(hint, str) or not re.fullmatch(r"#?[0-9A-Fa-f]{6}", hint)):
                raise ValueError(f"class {i} (value {value}): 'color_hint' must be six hex digits (RRGGBB)")
            if entry.get("nodata") is True:
                if nodata is not None:
                    raise ValueError(f"class {i} (value {value}): a second no-data entry")
                nodata = value
                continue
            infos.append(ClassInfo(value, title.strip(), _rgb(hint) if hint else PALETTE[value % len(PALETTE)]))
        if not infos:
            raise ValueError("names no class besides no-data")
        return cls(str(band), tuple(infos), nodata)

    def stac_classes(self) -> list[dict]:
        """The STAC classification extension's ``classification:classes`` (v2.0.0)."""
        out = [{"value": c.value, "name": c.name, "title": c.title, "color_hint": _hex(c.colour)}
               for c in self.classes]
        if self.nodata is not None:
            out.append({"value": self.nodata, "name": "nodata", "title": "No input data", "nodata": True})
        return out

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """A GDAL colour table: each class opaque, nodata transparent."""
        table = {c.value: (*c.colour, 255) for c in self.classes}
        if self.nodata is not None:
            table[self.nodata] = (0, 0, 0, 0)
        return table

    def flag_attrs(self) -> dict:
        """CF ``flag_values`` / ``flag_meanings`` of the class band, plus the scheme itself."""
        return {"flag_values": np.array([c.value for c in self.classes], dtype=np.int16),
                "flag_meanings": " ".join(c.name for c in self.classes), GTIFF_TAG.lower(): self.to_json()}


LULC_SCHEME = ClassScheme.from_names("LULC", [
    "No data", "Water", "Trees", "Flooded vegetation", "Crops", "Built area", "Bare ground", "Snow/ice", "Clouds",
    "Rangeland",
], [_rgb(h) for h in ("000000", "3171AD", "469C76", "83CA70", "EAE159", "C07CB8", "C19368", "6FB2E4", "F1F1F1",
                      "C66526")])
"""TerraMind's zero-shot land cover (``terramind_generate`` with ``target='LULC'``)."""


def attach(cube, scheme: ClassScheme):
    """``cube`` with ``scheme`` in its attributes (in place; returned for chaining)."""
    cube.attrs[CLASSES_ATTR] = scheme.to_json()
    return cube


def scheme_of(cube) -> ClassScheme | None:
    """The class scheme of a cube whose bands include the scheme's band, else None.

    From the attribute :data:`CLASSES_ATTR`; without it, a band ``LULC`` is TerraMind's land cover. An attribute
    naming a band the cube no longer has (it came along from an input cube) is ignored."""
    bands = [str(b) for b in np.atleast_1d(cube["bands"].values)] if "bands" in cube.coords else \
        [str(cube.name) if cube.name is not None else "band_1"]
    text = cube.attrs.get(CLASSES_ATTR)
    if isinstance(text, str):
        try:
            scheme = ClassScheme.from_json(text)
        except (ValueError, KeyError, TypeError, IndexError):
            scheme = None
        if scheme is not None and scheme.band in bands:
            return scheme
    if "LULC" in bands:  # as floats (a UDF's result) NaN marks nodata, not 255
        return LULC_SCHEME if np.dtype(cube.dtype).kind in "ui" else replace(LULC_SCHEME, nodata=None)
    return None


# ---------------------------------------------------------------------------------------------------- UDFs
# A UDF states its result's classes in what its ``apply_metadata`` returns. openEO's metadata objects have no
# field for them, but a ``CollectionMetadata`` holds STAC collection metadata, and STAC's place for one band's
# classes is that band's object: ``summaries["eo:bands"][i]["classification:classes"]``.

def declare_classes(metadata, scheme: ClassScheme | None):
    """``metadata`` (what an ``apply_metadata`` returns) stating that band ``scheme.band`` holds ``scheme``'s
    classes, as a ``CollectionMetadata`` with the same dimensions. ``scheme`` None: ``metadata`` unchanged."""
    if scheme is None:
        return metadata
    from openeo.metadata import CollectionMetadata

    bands = [{"name": b} for b in metadata.band_names]
    for band in bands:
        if band["name"] == scheme.band:
            band[CLASSES_ATTR] = scheme.stac_classes()
    original = metadata.get() if isinstance(metadata, CollectionMetadata) else {}
    described = {**(original if isinstance(original, dict) else {})}
    described["summaries"] = {**(described.get("summaries") or {}), "eo:bands": bands}
    # openEO's metadata classes give no public access to their dimension list; _clone_and_update uses it too
    return CollectionMetadata(described, dimensions=metadata._dimensions)


def declared_classes(metadata) -> tuple[str, object] | None:
    """``(band, classification:classes)`` of the first band whose classes ``metadata`` (an ``apply_metadata``
    result) states (see :func:`declare_classes`), unchecked; None when it states none."""
    getter = getattr(metadata, "get", None)
    if not callable(getter):
        return None
    bands = getter("summaries", "eo:bands")
    if not isinstance(bands, list):
        return None
    names = set(metadata.band_names) if metadata.has_band_dimension() else set()
    for band in bands:
        if isinstance(band, dict) and CLASSES_ATTR in band and band.get("name") in names:
            return str(band["name"]), band[CLASSES_ATTR]
    return None
