"""Work tiles of a large-area run: planning, writing, the resume manifest and the final mosaic.

A work tile is a rectangle of the result cube made of whole dask chunks (so no chunk, and no halo of a
model chunk, is computed twice). Each finished tile is written under a temporary name, renamed, then its
files' SHA-256 appended to ``.tiles/manifest.jsonl``; a rerun skips a tile only when every file it listed
still exists with that checksum, so a half-written or damaged tile is always computed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import rioxarray  # noqa: F401 - registers the .rio accessor (also in dask workers)
import xarray as xr
from affine import Affine

from terramind_openeo.classes import GTIFF_TAG, scheme_of
from terramind_openeo.files import atomic_path, write_text
from terramind_openeo.processes.writers import _gtiff_dtype, cube_nodata, cube_transform

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkTile:
    """One unit of work: rows ``y0:y1`` and columns ``x0:x1`` of the result cube (all dates, all bands)."""

    row: int
    col: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def id(self) -> str:
        return f"r{self.row:03d}_c{self.col:03d}"

    @property
    def pixels(self) -> int:
        return (self.y1 - self.y0) * (self.x1 - self.x0)


def _group(bounds: list[int], size: int) -> list[int]:
    """Merge consecutive chunk bounds into pieces of at most ``size`` (or one chunk, if larger)."""
    out = [bounds[0]]
    for prev, b in zip(bounds[:-1], bounds[1:]):
        if b - out[-1] > size and prev > out[-1]:
            out.append(prev)
    if out[-1] != bounds[-1]:
        out.append(bounds[-1])
    return out


def plan_tiles(cube: xr.DataArray, tile_size: int) -> list[WorkTile]:
    """Tiles of about ``tile_size`` px aligned to the cube's dask chunks."""
    chunks = cube.chunks if cube.chunks else None
    dims = list(cube.dims)
    if chunks:
        ychunks, xchunks = chunks[dims.index("y")], chunks[dims.index("x")]
    else:
        ychunks, xchunks = (cube.sizes["y"],), (cube.sizes["x"],)
    yb = _group(list(np.cumsum((0,) + tuple(ychunks))), tile_size)
    xb = _group(list(np.cumsum((0,) + tuple(xchunks))), tile_size)
    return [WorkTile(i, j, int(yb[i]), int(yb[i + 1]), int(xb[j]), int(xb[j + 1]))
            for i in range(len(yb) - 1) for j in range(len(xb) - 1)]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Manifest:
    """Finished tiles with their files' checksums (append-only JSON lines)."""

    def __init__(self, path: Path, signature: str):
        self.path = path
        self.signature = signature
        self._lock = threading.Lock()
        self.done: dict[str, dict[str, str]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line of an interrupted run
                if entry.get("signature") == signature:
                    self.done[entry["tile"]] = entry["files"]

    def verified(self, tile: WorkTile, root: Path) -> bool:
        files = self.done.get(tile.id)
        if not files:
            return False
        for rel, digest in files.items():
            p = root / rel
            if not p.is_file() or sha256(p) != digest:
                logger.warning("tile %s: %s missing or damaged, computing it again", tile.id, rel)
                return False
        return True

    def record(self, tile: WorkTile, root: Path, files: list[Path]) -> None:
        """``tile`` done, written to ``files`` (checksums kept, paths relative to ``root``)."""
        self.add(tile, {str(p.relative_to(root)): sha256(p) for p in files})

    def add(self, tile: WorkTile, checks: dict[str, str]) -> None:
        """``tile`` done, with its checks (file -> checksum, or ``values`` -> checksum), on disk when this returns."""
        entry = {"tile": tile.id, "signature": self.signature, "files": checks}
        with self._lock, open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done[tile.id] = checks


def date_labels(cube: xr.DataArray) -> list[str]:
    if "t" not in cube.coords:
        return ["all"] * cube.sizes["t"]
    return [pd.Timestamp(t).strftime("%Y-%m-%d") if not isinstance(t, (int, np.integer)) else f"{i:03d}"
            for i, t in enumerate(cube.t.values)]


def write_tile_gtiffs(cube: xr.DataArray, values: np.ndarray, tile: WorkTile, tiles_dir: Path) -> list[Path]:
    """One GeoTIFF per date of a computed tile ``values [t, bands, y, x]``; renamed when complete."""
    transform = cube_transform(cube) * Affine.translation(tile.x0, tile.y0)
    dtype = _gtiff_dtype(values.dtype)
    nodata = cube_nodata(cube)
    out = []
    for i, label in enumerate(date_labels(cube)):
        path = tiles_dir / label / f"{tile.id}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        profile = {"driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
                   "count": values.shape[1], "height": values.shape[2], "width": values.shape[3],
                   "dtype": dtype.name, "crs": cube.rio.crs, "transform": transform}
        if nodata is not None:
            profile["nodata"] = nodata
        with atomic_path(path, durable=True) as part, rasterio.open(part, "w", **profile) as dst:
            dst.write(values[i].astype(dtype, copy=False))
            for b, name in enumerate(cube.bands.values, start=1):
                dst.set_band_description(b, str(name))
        out.append(path)
    return out


def write_vrt(tiles: list[Path], shape: tuple[int, int], cube: xr.DataArray, path: Path) -> Path:
    """A GDAL VRT mosaic of tile GeoTIFFs (paths relative to the VRT)."""
    from xml.sax.saxutils import escape

    t = cube_transform(cube)
    dtype = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
             "float32": "Float32", "float64": "Float64"}[_gtiff_dtype(cube.dtype).name]
    nodata = cube_nodata(cube)
    h, w = shape
    geometry = []  # each tile opened once, not once per band
    for tif in tiles:
        with rasterio.open(tif) as src:
            xoff = int(round((src.transform.c - t.c) / t.a))
            yoff = int(round((src.transform.f - t.f) / t.e))
            geometry.append((tif, xoff, yoff, src.width, src.height))
    bands_xml = []
    scheme = scheme_of(cube)
    for b, name in enumerate(cube.bands.values, start=1):
        sources = []
        for tif, xoff, yoff, sw, sh in geometry:
            rel = os.path.relpath(tif, path.parent)
            sources.append(f'    <SimpleSource><SourceFilename relativeToVRT="1">{escape(rel)}</SourceFilename>'
                           f'<SourceBand>{b}</SourceBand><SrcRect xOff="0" yOff="0" xSize="{sw}" ySize="{sh}"/>'
                           f'<DstRect xOff="{xoff}" yOff="{yoff}" xSize="{sw}" ySize="{sh}"/></SimpleSource>')
        nd = "" if nodata is None else f"<NoDataValue>{'nan' if isinstance(nodata, float) and np.isnan(nodata) else nodata}</NoDataValue>"
        classes = ""
        if scheme is not None and scheme.band == str(name):  # class names and colours (terramind_openeo.classes)
            classes = f'<Metadata><MDI key="{GTIFF_TAG}">{escape(scheme.to_json())}</MDI></Metadata>'
            if len(cube.bands) == 1 and dtype == "Byte":
                table = scheme.colormap()
                entries = "".join('<Entry c1="{}" c2="{}" c3="{}" c4="{}"/>'.format(*table.get(v, (0, 0, 0, 0)))
                                  for v in range(256))
                classes += f"<ColorInterp>Palette</ColorInterp><ColorTable>{entries}</ColorTable>"
        bands_xml.append(f'  <VRTRasterBand dataType="{dtype}" band="{b}"><Description>{escape(str(name))}</Description>'
                         f'{nd}{classes}\n' + "\n".join(sources) + "\n  </VRTRasterBand>")
    xml = (f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}">\n  <SRS>{escape(cube.rio.crs.to_wkt())}</SRS>\n'
           f'  <GeoTransform>{t.c}, {t.a}, {t.b}, {t.f}, {t.d}, {t.e}</GeoTransform>\n' + "\n".join(bands_xml)
           + "\n</VRTDataset>\n")
    return write_text(path, xml, durable=True)


def vrt_to_cog(vrt: Path, cog: Path) -> Path:
    """The mosaic as a COG (read window by window by GDAL, validated, renamed when complete)."""
    from rio_cogeo.cogeo import cog_translate, cog_validate
    from rio_cogeo.profiles import cog_profiles

    from terramind_openeo.processes.statistics import add_statistics

    profile = cog_profiles.get("deflate")
    with rasterio.open(vrt) as src:
        if src.count > 4:  # pixel-interleaved 512 px blocks of e.g. 192 embedding bands: 200 MB a block
            profile.update(interleave="band")
        block = profile["blockxsize"]
        if max(src.width, src.height) > block:  # e.g. 513 x 512 px: a 512 px block as wide as the image reads
            while block > 64 and min(src.width, src.height) <= block:  # as "not tiled" to the COG validator
                block //= 2
            profile.update(blockxsize=block, blockysize=block)
    add_statistics(vrt)  # a value range for viewers, copied into the COG with the band tags
    with atomic_path(cog, durable=True) as part:
        cog_translate(vrt, part, profile, in_memory=False, quiet=True, use_cog_driver=False, forward_band_tags=True)
        valid, errors, _ = cog_validate(part)
        if not valid:
            raise RuntimeError(f"{cog.name} is not a valid COG: {errors}")
    return cog
