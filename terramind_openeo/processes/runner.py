"""Computing the work tiles of one ``save_result`` on Dask and writing them as they finish."""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import dask
import numpy as np
import xarray as xr

from terramind_openeo.errors import describe
from terramind_openeo.files import part_path, publish
from terramind_openeo.processes import heap
from terramind_openeo.processes.stac_out import build_stac
from terramind_openeo.processes.statistics import add_statistics
from terramind_openeo.processes.tiles import (
    Manifest,
    WorkTile,
    date_labels,
    plan_tiles,
    vrt_to_cog,
    write_tile_gtiffs,
    write_vrt,
)
from terramind_openeo.processes.writers import (
    _as_dataset,
    normalise_cube,
    write_geojson,
    write_json,
    write_ml_model,
    write_netcdf,
)

logger = logging.getLogger("terramind_openeo.run")


@dataclass
class RunResult:
    files: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    """The exceptions of the failed tiles, in ``failed``'s order."""


def compute_tiles(cube: xr.DataArray, tiles: list[WorkTile], client: Any, window: int = 0
                  ) -> Iterator[tuple[WorkTile, np.ndarray | BaseException]]:
    """Yield ``(tile, values | exception)`` as tiles finish; at most ``window`` in flight on a cluster."""
    data = cube.data
    if client is None:
        for tile in tiles:
            try:
                yield tile, np.asarray(dask.compute(data[:, :, tile.y0:tile.y1, tile.x0:tile.x1])[0])
            except Exception as exc:  # noqa: BLE001 - reported per tile
                yield tile, exc
        return
    from distributed import as_completed

    workers = sorted(client.scheduler_info().get("workers", {}))
    window = window or 2 * max(len(workers), 1)
    pending, home = _by_worker(list(tiles), workers)
    futures = {}

    def submit() -> None:
        while pending and len(futures) < window:
            tile = pending.pop(0)
            where = {"workers": [home[tile]], "allow_other_workers": True} if tile in home else {}
            fut = client.compute(data[:, :, tile.y0:tile.y1, tile.x0:tile.x1], retries=1, **where)
            futures[fut] = tile

    submit()
    queue = as_completed(list(futures))
    while futures:
        fut = next(queue)
        tile = futures.pop(fut)
        try:
            values: np.ndarray | BaseException = np.asarray(fut.result())
        except Exception as exc:  # noqa: BLE001
            values = exc
        fut.release()  # the worker drops the tile now, not when the run ends
        del fut
        try:
            yield tile, values
        finally:
            del values
            heap.trim()
        before = set(futures)
        submit()
        for new in set(futures) - before:
            queue.add(new)


def _by_worker(tiles: list[WorkTile], workers: list[str]) -> tuple[list[WorkTile], dict[WorkTile, str]]:
    """Each worker a contiguous run of tiles in raster order (a band of rows) with about the same number of
    pixels, submitted in turns.

    Neighbouring tiles on one worker share the model outputs of their border tiles (``share_tiles`` in
    ``inference``: a per-process cache), so a band per worker computes fewer tiles than tiles dealt out
    in raster order. Bands are cut by pixels, not by tile count: tiles on a CRS-anchored grid are uneven
    (edge tiles can be slivers), and equal counts would leave one worker alone at the end. A soft
    preference: an idle worker still takes a tile of another band.
    """
    if len(workers) < 2 or len(tiles) < 2:
        return tiles, {}
    n = min(len(workers), len(tiles))
    total = sum(t.pixels for t in tiles) or 1
    bands: list[list[WorkTile]] = [[] for _ in range(n)]
    done = 0
    for tile in tiles:  # a tile goes to the band its middle pixel falls in
        k = min(n - 1, int((done + tile.pixels / 2) * n // total))
        bands[k].append(tile)
        done += tile.pixels
    bands = [band for band in bands if band]
    home = {tile: workers[k] for k, band in enumerate(bands) for tile in band}
    order = [band[i] for i in range(max(map(len, bands))) for band in bands if i < len(band)]
    return order, home


class TileSink(Protocol):
    """Where the values of computed work tiles go, one format: what a resumed run keeps, each tile as it
    finishes (recorded in the manifest), and the published result once every tile is in."""

    def verified(self, tile: WorkTile) -> bool:
        """The tile of an earlier run is there, intact (checked against the manifest)."""

    def write(self, tile: WorkTile, values: np.ndarray) -> None:
        """Write one tile's values ``[t, bands, y, x]`` and record it in the manifest."""

    def finish(self, tiles: list[WorkTile]) -> list[Path]:
        """Publish the result of all ``tiles``; the files written."""


class _GtiffSink:
    """Tiles as GeoTIFFs per date (checksums of the files); the result a COG or VRT mosaic per date, or one
    netCDF read through the VRTs."""

    def __init__(self, cube: xr.DataArray, manifest: Manifest, state: Path, out: Path, basename: str,
                 fmt: str, mosaic: str):
        self.cube, self.manifest, self.state, self.out = cube, manifest, state, out
        self.basename, self.fmt, self.mosaic = basename, fmt, mosaic
        self.tiles_dir = state / "tiles"

    def verified(self, tile: WorkTile) -> bool:
        return self.manifest.verified(tile, self.out)

    def write(self, tile: WorkTile, values: np.ndarray) -> None:
        self.manifest.record(tile, self.out, write_tile_gtiffs(self.cube, values, tile, self.tiles_dir))

    def finish(self, tiles: list[WorkTile]) -> list[Path]:
        cube, state, out, basename = self.cube, self.state, self.out, self.basename
        shape = (cube.sizes["y"], cube.sizes["x"])
        labels = list(dict.fromkeys(date_labels(cube)))
        vrts = [write_vrt([self.tiles_dir / label / f"{t.id}.tif" for t in tiles], shape, cube,
                          state / f"{label}.vrt") for label in labels]
        if self.fmt == "netCDF":
            import rioxarray

            arrays = [rioxarray.open_rasterio(v, chunks={"band": -1, "y": 1024, "x": 1024}) for v in vrts]
            mos = xr.concat(arrays, dim="band_t").rename({"band_t": "t", "band": "bands"}) \
                .transpose("t", "bands", "y", "x")
            mos = mos.assign_coords(bands=cube.bands.values, y=cube.y.values, x=cube.x.values)
            if "t" in cube.coords:
                mos = mos.assign_coords(t=cube.t.values)
            mos.attrs = dict(cube.attrs)
            mos = mos.rio.write_crs(cube.rio.crs)
            return write_netcdf(mos, out, basename)
        files = []
        for label, vrt in zip(labels, vrts):
            name = basename if label == "all" else f"{basename}_{label}"
            if self.mosaic == "vrt":
                target = write_vrt([self.tiles_dir / label / f"{t.id}.tif" for t in tiles], shape, cube,
                                   out / f"{name}.vrt")
                add_statistics(target)  # a value range for viewers (GDAL keeps it in the VRT)
                files.append(target)
            else:
                files.append(vrt_to_cog(vrt, out / f"{name}.tif"))
        return files


class _ZarrSink:
    """Tiles written into one Zarr store (``.part`` until every tile is in); checksums of the values."""

    def __init__(self, cube: xr.DataArray, manifest: Manifest, out: Path, basename: str):
        import zarr

        self.cube, self.manifest = cube, manifest
        self.final = out / f"{basename}.zarr"
        self.path = part_path(self.final)
        self.names = [str(b) for b in cube.bands.values]
        self.has_t = "t" in cube.coords
        if not manifest.done or not self.path.exists():
            if self.path.exists():
                shutil.rmtree(self.path)
            ds = _as_dataset(cube if self.has_t else cube.isel(t=0, drop=True))
            ds.to_zarr(self.path, mode="w", compute=False, consolidated=False)
        self.group = zarr.open_group(str(self.path), mode="r+")

    def _region(self, tile: WorkTile) -> tuple:
        return (slice(None), slice(tile.y0, tile.y1), slice(tile.x0, tile.x1)) if self.has_t else \
            (slice(tile.y0, tile.y1), slice(tile.x0, tile.x1))

    def _digest(self, values: np.ndarray) -> str:
        return hashlib.sha256(np.ascontiguousarray(values.astype(self.cube.dtype, copy=False)).tobytes()).hexdigest()

    def verified(self, tile: WorkTile) -> bool:
        checks = self.manifest.done.get(tile.id)
        if not checks:
            return False
        values = np.stack([np.asarray(self.group[n][self._region(tile)]) for n in self.names],
                          axis=1 if self.has_t else 0)
        if not self.has_t:
            values = values[None]
        return checks.get("values") == self._digest(values)

    def write(self, tile: WorkTile, values: np.ndarray) -> None:
        for b, name in enumerate(self.names):
            self.group[name][self._region(tile)] = values[:, b] if self.has_t else values[0, b]
        self.manifest.add(tile, {"values": self._digest(values)})

    def finish(self, tiles: list[WorkTile]) -> list[Path]:
        return [publish(self.path, self.final, durable=True)]


def run_save(save, out: Path, basename: str, *, client: Any, tile_size: int, mosaic: str,
             signature_of: Callable, progress_factory: Callable,
             on_tile_done: Callable[[WorkTile, int], None] | None = None, window: int = 0) -> RunResult:
    """Compute and write the work tiles of ``save`` not yet verified in the manifest, then publish.

    Memory is bounded by the work tile and the tiles in flight, not by the area: at most ``window`` tiles
    (default two per worker) are on the cluster at once and each result is released as soon as it is written.

    ``on_tile_done(tile, written)`` is called after each tile is written and recorded (``written``: tiles
    written by this call so far), e.g. for progress reporting or to stop a run in tests.
    """
    if save.format == "JSON":
        return RunResult(files=write_json(save.data, out, basename))
    if save.format == "GeoJSON":  # a vector cube: one small file, no tiles
        return RunResult(files=write_geojson(save.data, out, basename))
    if save.format == "MLModel":  # save_ml_model: a small file and its STAC item, no tiles
        return RunResult(files=write_ml_model(save.data, out, basename))
    cube = normalise_cube(save.data)
    tiles = plan_tiles(cube, tile_size)
    state = out / ".tiles" / basename
    state.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(state / "manifest.jsonl", signature_of(cube, save.format))
    sink: TileSink = (_ZarrSink(cube, manifest, out, basename) if save.format == "Zarr"
                      else _GtiffSink(cube, manifest, state, out, basename, save.format, mosaic))
    todo = [t for t in tiles if not sink.verified(t)]
    edge = max((max(t.y1 - t.y0, t.x1 - t.x0) for t in tiles), default=0)  # tiles snap to the dask chunks
    logger.info("%s: %d work tile%s of up to %d px, %d already done", basename, len(tiles),
                "" if len(tiles) == 1 else "s", edge, len(tiles) - len(todo))
    progress = progress_factory(len(tiles), len(tiles) - len(todo))
    result = RunResult()
    written = 0
    try:
        for tile, values in compute_tiles(cube, todo, client, window):
            if isinstance(values, BaseException):
                logger.error("tile %s failed: %s", tile.id, describe(values))
                result.failed.append(tile.id)
                result.errors.append(values)
                continue
            sink.write(tile, values)
            progress.update(tile.pixels)
            written += 1
            if on_tile_done is not None:
                on_tile_done(tile, written)
    finally:
        progress.close()
    if result.failed:
        return result
    result.files = sink.finish(tiles)
    _quicklook(result.files, cube, out, basename, state)
    build_stac(result.files, out, {f: cube for f in result.files})
    return result


def _quicklook(files: list[Path], cube: xr.DataArray, out: Path, basename: str, state: Path) -> None:
    from terramind_openeo.processes.quicklook import write_quicklook

    source = next((f for f in files if f.suffix in (".tif", ".vrt")), None)
    if source is None:
        vrts = sorted(state.glob("*.vrt"))
        source = vrts[0] if vrts else None
    if source is None:  # Zarr: a decimated first date through a small GeoTIFF
        step = max(1, max(cube.sizes["y"], cube.sizes["x"]) // 1024)
        small = cube.isel(t=0, y=slice(None, None, step), x=slice(None, None, step))
        from terramind_openeo.processes.writers import write_cog

        source = write_cog(small, state / "quicklook_source.tif")
    try:
        write_quicklook(source, out / f"{basename}_quicklook.png")
    except Exception as exc:  # noqa: BLE001 - a quicklook never fails a run
        logger.warning("quicklook failed: %s", exc)
