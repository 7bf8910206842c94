"""PNG quicklook of a result raster: a class map with a legend, or a stretched greyscale/RGB image."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

from terramind_openeo.classes import GTIFF_TAG, LULC_SCHEME, PALETTE, ClassScheme
from terramind_openeo.files import atomic_path

logger = logging.getLogger(__name__)


def is_class_map(dtype: str, band_names: list[str]) -> bool:
    return len(band_names) == 1 and (np.dtype(dtype).kind in "ui" or band_names[0].upper() in ("LULC", "CLASS"))


def _class_scheme(src, names: list[str]) -> ClassScheme | None:
    """The class names and colours the writers put into the raster (band metadata, colour table)."""
    text = src.tags(1).get(GTIFF_TAG)
    if text:
        try:
            return ClassScheme.from_json(text)
        except (ValueError, KeyError, TypeError, IndexError):
            logger.warning("quicklook: unreadable %s metadata on band 1", GTIFF_TAG)
    return LULC_SCHEME if names[0] == "LULC" else None


def write_quicklook(raster: Path, png: Path, max_size: int = 1024) -> Path:
    from PIL import Image, ImageDraw

    with rasterio.open(raster) as src:
        scale = max(src.width, src.height) / max_size
        shape = (max(1, int(src.height / max(scale, 1))), max(1, int(src.width / max(scale, 1))))
        names = [d or f"band_{i + 1}" for i, d in enumerate(src.descriptions)]
        # a class band first (class ids, then per-class probabilities) is drawn as the class map
        classes = is_class_map(src.dtypes[0], names) or GTIFF_TAG in src.tags(1)
        scheme = _class_scheme(src, names) if classes else None
        bands = [1] if classes or src.count < 3 else [1, 2, 3]
        data = src.read(bands, out_shape=(len(bands), *shape),
                        resampling=Resampling.nearest if classes else Resampling.average, masked=True)
    if classes:
        values = data[0].filled(255).astype(np.int64)
        present = [int(v) for v in np.unique(values) if v != 255 and (src.nodata is None or v != src.nodata)]
        rgb = np.zeros((*values.shape, 3), np.uint8)
        def colour(v: int) -> tuple[int, int, int]:
            return scheme.colour_of(v) if scheme is not None else PALETTE[v % len(PALETTE)]

        def title(v: int) -> str:
            return f"{v} {scheme.title_of(v)}" if scheme is not None else f"{names[0]} class {v}"

        for v in present:
            rgb[values == v] = colour(v)
        img = Image.fromarray(rgb)
        legend_h = 18 * len(present) + 8
        width = 40 + 7 * max((len(title(v)) for v in present), default=10)
        canvas = Image.new("RGB", (img.width + max(150, width), max(img.height, legend_h)), "white")
        canvas.paste(img, (0, 0))
        draw = ImageDraw.Draw(canvas)
        for i, v in enumerate(present):
            y = 6 + 18 * i
            draw.rectangle([img.width + 8, y, img.width + 22, y + 12], fill=colour(v), outline="black")
            draw.text((img.width + 28, y), title(v), fill="black")
        img = canvas
    else:
        arr = data.astype("float64").filled(np.nan)
        out = np.zeros(arr.shape, np.uint8)
        for i in range(arr.shape[0]):
            finite = arr[i][np.isfinite(arr[i])]
            lo, hi = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
            out[i] = np.clip((np.nan_to_num(arr[i], nan=lo) - lo) / max(hi - lo, 1e-12) * 255, 0, 255)
        img = Image.fromarray(out[0] if out.shape[0] == 1 else np.moveaxis(out, 0, -1))
        canvas = Image.new("RGB", (img.width, img.height + 22), "white")
        canvas.paste(img.convert("RGB"), (0, 0))
        ImageDraw.Draw(canvas).text((4, img.height + 4), f"{', '.join(names[b - 1] for b in bands)}: "
                                    "2-98 % stretch", fill="black")
        img = canvas
    with atomic_path(png, durable=True) as part:
        img.save(part, format="PNG")
    return png
