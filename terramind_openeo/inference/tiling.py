"""Tiles over a cube of any size: grid, reflect-padded extraction, raised-cosine blending.

The tile grid lives in *grid coordinates*: integer pixel indices counted from an anchor. With
``tile_anchor='crs'`` the anchor is the CRS origin (pixel index = edge coordinate / resolution), so a pixel
falls into the same tiles whatever the extent of the cube that holds it: a pixel whose tiles lie inside two
different cubes (or chunks) gets the same numbers in both. With ``'cube'`` the anchor is the cube's top-left
pixel. Tiles start at multiples of ``stride = tile_size - overlap``; every tile that touches the cube is
computed (unless all its pixels in the cube are nodata), and parts of a tile outside the cube are filled by
reflecting the cube at its border (no edge repeat, like ``numpy.pad(mode='reflect')``).

Blending: along each axis a tile's weight ramps up over its first ``overlap`` pixels as
``sin^2(pi/2 * (i + 1/2) / overlap)`` and down symmetrically at its end (not towards the outside of the
first and last tile); the up-ramp of one tile and the down-ramp of its neighbour sum to exactly 1, so the
stitched result is a partition-of-unity blend and an output that does not depend on tile context (a
per-pixel function) comes out exactly as if untiled.

What is invariant: a pixel gets the same numbers in two cubes when the tiles that cover it lie inside both
(with ``'crs'``: pixels at least ``tile_size`` from either cube's border always qualify; fewer when a cube
border falls on the tile grid). Nearer a border, tiles see reflected content, which differs by cube.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


def regular_step(coord: np.ndarray) -> float | None:
    """The signed step of a regular numeric coordinate (mean of the differences), else ``None``."""
    coord = np.asarray(coord)
    if coord.size < 2 or not np.issubdtype(coord.dtype, np.number):
        return None
    steps = np.diff(coord.astype(np.float64))
    step = float(steps.mean())
    if step == 0 or np.abs(steps - step).max() > 1e-3 * abs(step):  # float32 lat/lon coords are noisy
        return None
    return step


def anchor_index(first: float, step: float) -> int:
    """Grid index (from the CRS origin) of the pixel whose centre is ``first``: its leading edge in units of
    the signed ``step``, rounded, so grids offset by a fraction of a pixel get consistent indices."""
    return int(np.floor((float(first) - step / 2) / step + 0.5))


def cell_centres(first: float, step: float, index0: int, cells: np.ndarray, scale: int) -> np.ndarray:
    """Coordinates of output cells ``cells`` (grid indices in units of ``scale`` pixels) on the pixel grid
    whose pixel ``index0`` has its centre at ``first``: the centre of each cell's ``scale`` pixels."""
    offsets = np.asarray(cells) * scale - index0 + (scale - 1) / 2  # from the first pixel, in pixels
    return float(first) + offsets * step


def cell_index(coords: np.ndarray, first: float, step: float, index0: int, scale: int) -> np.ndarray:
    """Inverse of :func:`cell_centres`: the grid index of each cell coordinate."""
    pixels = (np.asarray(coords, dtype=np.float64) - float(first)) / step + index0 - (scale - 1) / 2
    return np.rint(pixels / scale).astype(int)


def axis_origins(start: int, length: int, tile: int, overlap: int) -> list[int]:
    """Origins ``k * stride`` of the tiles that cover ``[start, start + length)``.

    The first tile is the last one starting at or before ``start``; the last is the first one whose
    overlap-free part reaches the end. Tiles that would only add a ramp (covering pixels that a neighbour
    already covers) are left out.
    """
    stride = tile - overlap
    first = (start // stride) * stride
    last = max(((start + length - 1 - overlap) // stride) * stride, first)
    return list(range(first, last + 1, stride))


def reflect_index(index: np.ndarray, n: int) -> np.ndarray:
    """Map indices onto ``0..n-1`` by reflecting at the borders without repeating the edge pixel."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    folded = np.mod(index, period)
    return np.where(folded < n, folded, period - folded)


def ramp_weights(size: int, overlap: int, start: bool = True, end: bool = True) -> np.ndarray:
    """1-D raised-cosine weights of a tile of ``size`` whose ends overlap neighbours by ``overlap``;
    ``start``/``end`` False: no neighbour on that side (first/last tile), weight 1 up to the edge."""
    weights = np.ones(size, dtype=np.float64)
    if overlap:
        ramp = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2
        if start:
            weights[:overlap] = ramp
        if end:
            weights[size - overlap :] = ramp[::-1]
    return weights


@dataclass(frozen=True)
class Tile:
    """One tile of a date: its top-left pixel in grid coordinates."""

    date: int
    """Index on the cube's ``t`` axis (0 when the cube has none)."""
    row: int
    """Grid row of the tile's first pixel (a multiple of the stride)."""
    col: int
    """Grid column of the tile's first pixel."""


@dataclass(frozen=True)
class TileGrid:
    """Where a cube sits in grid coordinates and how it is tiled."""

    height: int
    """Cube rows."""
    width: int
    """Cube columns."""
    row0: int
    """Grid row of the cube's first row."""
    col0: int
    """Grid column of the cube's first column."""
    tile_size: int
    overlap: int

    @property
    def stride(self) -> int:
        return self.tile_size - self.overlap

    @cached_property
    def row_origins(self) -> list[int]:
        return axis_origins(self.row0, self.height, self.tile_size, self.overlap)

    @cached_property
    def col_origins(self) -> list[int]:
        return axis_origins(self.col0, self.width, self.tile_size, self.overlap)

    def tiles(self, dates: int, valid: np.ndarray | None = None) -> list[Tile]:
        """Tiles of every date, skipping those whose pixels inside the cube are all invalid.

        ``valid``: boolean ``[dates, height, width]`` (True = data), or None when every pixel is valid.
        """
        out = []
        for date in range(dates):
            for row in self.row_origins:
                for col in self.col_origins:
                    if valid is not None:
                        rows, cols = self.cube_window(row, col)
                        if not valid[date, rows, cols].any():
                            continue
                    out.append(Tile(date, row, col))
        return out

    def cube_window(self, row: int, col: int) -> tuple[slice, slice]:
        """The part of the tile at grid ``(row, col)`` that lies inside the cube, as cube slices."""
        r0 = max(row - self.row0, 0)
        r1 = min(row - self.row0 + self.tile_size, self.height)
        c0 = max(col - self.col0, 0)
        c1 = min(col - self.col0 + self.tile_size, self.width)
        return slice(r0, r1), slice(c0, c1)

    def extract(self, array: np.ndarray, row: int, col: int) -> np.ndarray:
        """Tile ``[..., tile, tile]`` of a cube-shaped ``array [..., height, width]``, reflected at borders."""
        steps = np.arange(self.tile_size)
        rows = reflect_index(row - self.row0 + steps, self.height)
        cols = reflect_index(col - self.col0 + steps, self.width)
        r0, c0 = row - self.row0, col - self.col0
        if r0 >= 0 and c0 >= 0 and r0 + self.tile_size <= self.height and c0 + self.tile_size <= self.width:
            return array[..., r0 : r0 + self.tile_size, c0 : c0 + self.tile_size]  # interior: a view
        return array[..., rows[:, None], cols[None, :]]


@dataclass(frozen=True)
class OutputGrid:
    """The grid that stitched outputs are written on: the cube's pixels or its 16 px patches."""

    scale: int
    """Grid pixels per output cell (1: pixel resolution, 16: patch resolution)."""
    row0: int
    """Output row of the first output cell, in output cells from the anchor."""
    col0: int
    height: int
    width: int

    @classmethod
    def for_cube(cls, grid: TileGrid, scale: int) -> OutputGrid:
        """Every output cell that intersects the cube (patches may stick out at the borders)."""
        row0, col0 = grid.row0 // scale, grid.col0 // scale
        row1 = (grid.row0 + grid.height - 1) // scale
        col1 = (grid.col0 + grid.width - 1) // scale
        return cls(scale, row0, col0, row1 - row0 + 1, col1 - col0 + 1)


class Stitcher:
    """Accumulates weighted tile outputs on an :class:`OutputGrid`; ``result()`` divides by the weights."""

    def __init__(self, dates: int, channels: int, out: OutputGrid, grid: TileGrid):
        if grid.tile_size % out.scale or grid.overlap % out.scale:
            raise ValueError(f"tile_size {grid.tile_size} and overlap {grid.overlap} must be multiples of "
                             f"{out.scale}")
        self.out = out
        self.grid = grid
        self.cells = grid.tile_size // out.scale
        self.ramp = grid.overlap // out.scale
        self.values = np.zeros((dates, channels, out.height, out.width), dtype=np.float32)
        self.total = np.zeros((dates, out.height, out.width), dtype=np.float32)

    def weights(self, tile: Tile) -> np.ndarray:
        """``[cells, cells]`` blending weights; no ramp towards the outside of the first/last tiles."""
        rows, cols = self.grid.row_origins, self.grid.col_origins
        w_row = ramp_weights(self.cells, self.ramp, tile.row != rows[0], tile.row != rows[-1])
        w_col = ramp_weights(self.cells, self.ramp, tile.col != cols[0], tile.col != cols[-1])
        return np.outer(w_row, w_col).astype(np.float32)

    def add(self, tile: Tile, values: np.ndarray) -> None:
        """Add one tile's output ``[channels, cells, cells]``."""
        r = tile.row // self.out.scale - self.out.row0
        c = tile.col // self.out.scale - self.out.col0
        r0, c0 = max(r, 0), max(c, 0)
        r1, c1 = min(r + self.cells, self.out.height), min(c + self.cells, self.out.width)
        if r1 <= r0 or c1 <= c0:
            return
        w = self.weights(tile)[r0 - r : r1 - r, c0 - c : c1 - c]
        self.values[tile.date, :, r0:r1, c0:c1] += values[:, r0 - r : r1 - r, c0 - c : c1 - c] * w
        self.total[tile.date, r0:r1, c0:c1] += w

    def result(self) -> np.ndarray:
        """Blended ``[dates, channels, height, width]``; NaN where no tile was computed.

        Divides the accumulator in place, one date and channel plane at a time (no copy of the whole
        output): the stitcher is spent afterwards."""
        empty = self.total == 0
        with np.errstate(invalid="ignore", divide="ignore"):
            for date in range(self.values.shape[0]):
                for channel in range(self.values.shape[1]):
                    plane = self.values[date, channel]
                    plane /= self.total[date]
                    plane[empty[date]] = np.nan
        return self.values

    def argmax(self, invalid: np.ndarray, nodata: int) -> np.ndarray:
        """``uint8 [dates, height, width]``: the channel with the highest blended score, ``nodata`` where no
        tile was computed or ``invalid`` (boolean, same shape) is True.

        Dividing by the positive blending weight does not change the arg-max, so the accumulator is used as
        it is, a block of rows at a time: no float copy of the class scores, no int64 plane."""
        dates, _, height, width = self.values.shape
        out = np.empty((dates, height, width), dtype=np.uint8)
        rows = max(1, (1 << 20) // max(width, 1))
        for date in range(dates):
            for r0 in range(0, height, rows):
                r1 = min(r0 + rows, height)
                block = self.values[date, :, r0:r1]
                classes = block.argmax(axis=0).astype(np.uint8)
                classes[(self.total[date, r0:r1] == 0) | invalid[date, r0:r1]] = nodata
                out[date, r0:r1] = classes
        return out
