"""Band labels -> TerraMind modalities.

A cube's ``bands`` labels are mapped to canonical band names (``b8a`` -> ``B8A``, ``B2`` -> ``B02``,
``vv_dB`` -> ``VV``, ``elevation`` -> ``DEM``), then grouped into the modalities the model reads, each in the
band order of pre-training. Aliases are accepted only where they cannot mean two things; Sentinel-1 labels
fit both ``S1GRD`` and ``S1RTC``, so the context must name the modality when the cube holds VV/VH.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from terramind_openeo.classes import CLASS_NODATA  # noqa: F401 - re-exported for the inference layer

from .errors import AmbiguousModalityError, BandError, DuplicateBandError, MissingBandError

_log = logging.getLogger(__name__)

S2L2A_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
S2L1C_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")

#: Bands of every modality, in the order the model was pre-trained with.
MODALITY_BANDS: dict[str, tuple[str, ...]] = {
    "S2L2A": S2L2A_BANDS,
    "S2L1C": S2L1C_BANDS,
    "S2RGB": ("RED", "GREEN", "BLUE"),
    "S1GRD": ("VV", "VH"),
    "S1RTC": ("VV", "VH"),
    "DEM": ("DEM",),
    "NDVI": ("NDVI",),
    "LULC": ("LULC",),
}
MODALITIES = tuple(MODALITY_BANDS)
S1_MODALITIES = ("S1GRD", "S1RTC")
S2_MODALITIES = ("S2L2A", "S2L1C")

#: Number of LULC classes (0..9); CLASS_NODATA (terramind_openeo.classes): the class value written where the
#: input was nodata.
LULC_CLASSES = 10

# Optional collection prefixes as openEO tools write them (GFMap, WorldCereal: "S2-L2A-B04", "S1-SIGMA0-VV").
_S2_LABEL = re.compile(r"^(?:S2[-_]?(?:L2A|L1C)?[-_])?B(0?[1-9]|1[0-2]|8A)$", re.IGNORECASE)
_S1_LABEL = re.compile(r"^(?:S1[-_](?:(SIGMA0|GAMMA0)[-_])?)?(VV|VH)(?:_DB)?$", re.IGNORECASE)
_SIMPLE_ALIASES = {
    "DEM": "DEM",
    "ELEVATION": "DEM",
    "NDVI": "NDVI",
    "LULC": "LULC",
    "RED": "RED",
    "GREEN": "GREEN",
    "BLUE": "BLUE",
}


def canonical_band(label: object) -> str | None:
    """The canonical name of a band label, or ``None`` where the label is no TerraMind band (e.g. ``SCL``)."""
    text = str(label).strip()
    match = _S2_LABEL.match(text)
    if match:
        number = match.group(1).upper()
        return "B8A" if number == "8A" else f"B{int(number):02d}"
    match = _S1_LABEL.match(text)
    if match:
        return match.group(2).upper()
    return _SIMPLE_ALIASES.get(text.upper())


@dataclass(frozen=True)
class ModalityLayout:
    """Where one modality's bands sit on the cube's ``bands`` axis."""

    modality: str
    """Modality name as the model knows it (``S2L2A``, ``S1RTC``, ...)."""
    bands: tuple[str, ...]
    """Canonical band names in pre-training order."""
    indices: tuple[int | None, ...]
    """Index of each band on the cube's ``bands`` axis; ``None`` for a missing band filled with its mean."""

    @property
    def missing(self) -> tuple[str, ...]:
        """Bands filled with the pre-training mean because the cube lacks them."""
        return tuple(b for b, i in zip(self.bands, self.indices) if i is None)


def _canonical_index(labels: list[str]) -> dict[str, int]:
    seen: dict[str, int] = {}
    raw_seen: set[str] = set()
    for index, label in enumerate(labels):
        if label in raw_seen:
            raise DuplicateBandError(label, "appears more than once on the 'bands' dimension")
        raw_seen.add(label)
        name = canonical_band(label)
        if name is None:
            continue
        if name in seen:
            first = labels[seen[name]]
            raise DuplicateBandError(
                [first, label], f"both mean band {name}; keep one of them (e.g. with filter_bands)"
            )
        seen[name] = index
    return seen


def layout_for(labels: list[object], modality: str, bands: tuple[str, ...], owner: str) -> ModalityLayout:
    """Where ``bands`` (canonical names, a model's input order, e.g. a fine-tuned model's band subset) of
    ``modality`` sit on a cube's ``bands`` axis; every one must be there (``owner`` names who asks for them)."""
    text_labels = [str(label) for label in labels]
    index = _canonical_index(text_labels)
    indices = tuple(index.get(band) for band in bands)
    missing = [band for band, i in zip(bands, indices) if i is None]
    if missing:
        raise MissingBandError(missing, f"needed for modality {modality} by {owner} but missing from the cube "
                               f"(bands {text_labels})")
    return ModalityLayout(modality=modality, bands=tuple(bands), indices=indices)


def infer_modalities(labels: list[str]) -> list[str]:
    """Modalities that the band labels form, in a fixed order (S2 first, then S1, DEM, NDVI, LULC)."""
    present = set(_canonical_index(labels))
    modalities: list[str] = []
    s2 = present & set(S2L1C_BANDS)
    if s2:
        modalities.append("S2L1C" if "B10" in s2 else "S2L2A")
    s1_labels = [label for label in labels if canonical_band(label) in ("VV", "VH")]
    if s1_labels and all("SIGMA0" in label.upper() for label in s1_labels):
        modalities.append("S1GRD")  # sigma0 backscatter: ground-range detected, not terrain-flattened
    elif s1_labels:
        raise AmbiguousModalityError(
            sorted(present & {"VV", "VH"}),
            "Sentinel-1 bands fit both S1GRD and S1RTC; set the context key 'modalities' "
            "(e.g. ['S1RTC'] for terrain-corrected gamma0, ['S1GRD'] for sigma0)",
        )
    if present & {"RED", "GREEN", "BLUE"}:
        modalities.append("S2RGB")
    for name in ("DEM", "NDVI", "LULC"):
        if name in present:
            modalities.append(name)
    if not modalities:
        raise BandError(
            [str(label) for label in labels],
            "no TerraMind modality among these labels; expected Sentinel-2 (B01..B12, B8A), "
            "Sentinel-1 (VV, VH), DEM/elevation, NDVI or LULC",
        )
    return modalities


def map_bands(
    labels: Sequence[object], modalities: Sequence[str] | None, *, missing_bands: str = "error"
) -> list[ModalityLayout]:
    """Layouts of the requested (or inferred) modalities on the cube's ``bands`` axis.

    ``missing_bands="mean"`` accepts a modality of which some (not all) bands are absent and fills those
    with the pre-training mean; the default raises :class:`MissingBandError` naming every missing band.
    """
    text_labels = [str(label) for label in labels]
    index = _canonical_index(text_labels)
    if modalities is None:
        modalities = infer_modalities(text_labels)
        _log.info("modalities inferred from band labels %s: %s", text_labels, modalities)
    used: set[str] = set()
    layouts = []
    for modality in modalities:
        bands = MODALITY_BANDS[modality]
        if used & set(bands):
            raise BandError(
                sorted(used & set(bands)), f"used by two modalities in {modalities}; a band feeds one modality"
            )
        used |= set(bands)
        indices = tuple(index.get(band) for band in bands)
        missing = [band for band, i in zip(bands, indices) if i is None]
        if missing and (missing_bands != "mean" or len(missing) == len(bands)):
            hint = (
                "load them with the collection"
                + ("" if len(missing) == len(bands) else ", or set missing_bands='mean' to fill them with the "
                   "pre-training mean (results degrade)")
            )
            raise MissingBandError(missing, f"missing for modality {modality} (cube has {text_labels}); {hint}")
        if missing:
            _log.warning("modality %s: bands %s missing, filled with the pre-training mean", modality, missing)
        layouts.append(ModalityLayout(modality=modality, bands=bands, indices=indices))
    ignored = [label for label in text_labels if canonical_band(label) not in used]
    if ignored:
        _log.info("bands not fed to the model: %s", ignored)
    return layouts
