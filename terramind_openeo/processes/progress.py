"""Progress of a map run (``terramind-openeo run``): a bar on a terminal, plain log lines otherwise.

The rate is an area (km² per hour) where the cube's CRS is in metres, else tiles per hour: TerraMind runs at a
few km² per hour on a laptop CPU, where megapixels per second read 0.00. While the bar is drawn, log records
(warnings included) are written above it, never onto its line.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import time
from collections.abc import Iterator
from typing import IO, Any

logger = logging.getLogger("terramind_openeo.run")
LOG_EVERY_S = 5.0
"""Without a bar: at most one progress line per this many seconds (and the last tile's)."""


def wants_bar(no_progress: bool, stream: IO) -> bool:
    """A bar only where someone watches: not asked off, and the stream is a terminal."""
    isatty = getattr(stream, "isatty", None)
    return not no_progress and bool(isatty and isatty())


def pixel_area_km2(cube: Any) -> float | None:
    """Area of one pixel of ``cube`` in km², None where the CRS is not in metres (or unknown)."""
    from terramind_openeo.crs import crs_of

    crs = crs_of(cube)
    if crs is None or cube.sizes.get("x", 0) < 2 or cube.sizes.get("y", 0) < 2:
        return None
    try:
        from pyproj import CRS

        unit = CRS.from_user_input(crs).axis_info[0].unit_name
    except Exception:  # noqa: BLE001 - a CRS pyproj cannot read: no area, tiles per hour instead
        return None
    if unit not in ("metre", "meter"):
        return None
    dx = abs(float(cube.x[1] - cube.x[0]))
    dy = abs(float(cube.y[1] - cube.y[0]))
    return dx * dy / 1e6


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(round(seconds))))


class Progress:
    """Tiles done, area rate and time left."""

    def __init__(self, total: int, done: int, *, bar: bool, km2_per_pixel: float | None = None):
        self.total, self.done, self.km2_per_pixel = total, done, km2_per_pixel
        self.start = self.last_line = time.monotonic()
        self.tiles = 0  # done by this run (a rerun starts with the finished ones)
        self.pixels = 0
        self.bar = None
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="tile", desc="tiles", dynamic_ncols=True)

    def rate(self) -> str:
        """``12.3 km²/h`` (or ``4.5 tiles/h``) over this run so far."""
        hours = max(time.monotonic() - self.start, 1e-9) / 3600
        if self.km2_per_pixel is not None:
            return f"{self.pixels * self.km2_per_pixel / hours:.3g} km²/h"
        return f"{self.tiles / hours:.3g} tiles/h"

    def update(self, pixels: int) -> None:
        self.done += 1
        self.tiles += 1
        self.pixels += pixels
        if self.bar is not None:
            self.bar.set_postfix_str(self.rate(), refresh=False)
            self.bar.update(1)
            return
        now = time.monotonic()
        if now - self.last_line < LOG_EVERY_S and self.done < self.total:
            return
        self.last_line = now
        left = (self.total - self.done) * (now - self.start) / self.tiles
        area = f", {self.pixels * self.km2_per_pixel:.3g} km²" if self.km2_per_pixel is not None else ""
        logger.info("tile %d/%d done%s in %s, %s, about %s left", self.done, self.total, area,
                    _duration(now - self.start), self.rate(), _duration(left))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def logs_above_bar(bar: bool) -> Iterator[None]:
    """While a bar may be drawn: the console's log records written above it (``tqdm.write``)."""
    if not bar:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(loggers=[logging.root, logging.getLogger("distributed")]):
        yield
