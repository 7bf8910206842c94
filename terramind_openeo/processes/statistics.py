"""GDAL band statistics on every GeoTIFF result, so that viewers get a value range without being told one.

QGIS and the openEO Web Editor stretch a raster between the band's ``STATISTICS_MINIMUM`` and
``STATISTICS_MAXIMUM`` (GDAL metadata of the band); without them the Web Editor draws a float result blank
until Min/Max are typed by hand. They are computed on the GeoTIFF before its COG conversion (or on the VRT
mosaic), which copies them into the COG: a COG cannot be changed in place without losing its layout.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import rasterio
from rasterio.errors import RasterioError

logger = logging.getLogger(__name__)

APPROX_ABOVE_PX = 50_000_000
"""Rasters larger than this get approximate statistics (GDAL reads a subsample), tagged as such."""


def add_statistics(path: Path) -> None:
    """``STATISTICS_MINIMUM``/``MAXIMUM``/``MEAN``/``STDDEV`` (and GDAL's ``VALID_PERCENT``) on every band of
    ``path`` (a GeoTIFF being written, or a VRT), nodata excluded; a band without valid pixels gets none."""
    with rasterio.open(path, "r+") as ds:
        approx = ds.width * ds.height > APPROX_ABOVE_PX
        for band in range(1, ds.count + 1):
            try:
                stats = ds.stats(indexes=band, approx=approx)[0]
            except RasterioError as exc:  # e.g. no valid pixel at all
                logger.debug("%s band %d: no statistics (%s)", path.name, band, exc)
                continue
            values = (stats.min, stats.max, stats.mean, stats.std)
            if not all(math.isfinite(v) for v in values):
                continue
            tags = dict(zip(("STATISTICS_MINIMUM", "STATISTICS_MAXIMUM", "STATISTICS_MEAN", "STATISTICS_STDDEV"),
                            (repr(float(v)) for v in values)))
            if approx:
                tags["STATISTICS_APPROXIMATE"] = "YES"
            ds.update_tags(band, **tags)
