"""Benchmark: a fine-tuned model over a large scene, ours (``terramind-openeo run process_graphs/flood_map.json``:
tiled, streamed, written tile by tile) against terratorch's ``tiled_inference`` (the whole scene in memory, as
``terratorch predict`` and IBM/ImpactMesh's ``run_inference.py`` use it) on the same checkpoint.

The checkpoint: IBM/terramind's ``terramind_v1_base_sen1floods11.yaml`` model (base backbone on S2L1C + S1GRD,
SelectIndices > ReshapeTokensToImage > LearnedInterpolateToPyramidal, UNet decoder [512, 256, 128, 64], 2 classes)
with seeded random weights, written as terratorch's Lightning task writes it. The scene: the real TerraMesh
sample tiles (S2L1C 13 bands, S1 VV/VH dB; ``../shared/data/terramind-examples``) in a checkerboard, cropped to
``size`` x ``size`` px, written as two GeoTIFFs. Both sides: 224 px tiles, 32 px overlap (terratorch: crop 224,
stride 192, delta 0, its blend), batch 8, float32, the arg-max classes as the result, one process (ours with
``--scheduler threads``). Each side runs in its own subprocess; reported: wall time, pixels/s, their ratio
(ours / terratorch, goal >= 1), and each process's peak RSS (sampled every 20 ms; goal: ours flat with area and at
most a quarter of terratorch's at 4096 px), and the share of pixels where both give the same class. Ours runs once per
tile anchor (``--anchors``): ``crs`` (the processes' default: the tile grid anchored at the CRS origin, so one
more row and column of tiles on a scene that is not aligned to it) and ``cube`` (anchored at the scene's first
pixel, as terratorch's tiles are; its last row and column of tiles reach past the scene edge, padded, where
terratorch shifts them back inside).

terratorch is loaded through ``tests/terratorch_task_ref.py`` (needs ``pip install --no-deps 'terratorch==1.2.*'
'segmentation-models-pytorch==0.5.*'``).

    python benchmarks/bench_predict.py --sizes 2048 4096      # the real measurement (quiet machine; --repeat N: medians)
    python benchmarks/bench_predict.py --sizes 448            # a quick check that everything runs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TERRAMIND_OPENEO_SHARED_DATA", REPO.parent / "shared" / "data"))
S2L1C = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
MODEL_ARGS = {"backbone": "terramind_v1_base", "backbone_modalities": ["S2L1C", "S1GRD"],
              "backbone_merge_method": "mean",
              "necks": [{"name": "SelectIndices", "indices": [2, 5, 8, 11]},
                        {"name": "ReshapeTokensToImage", "remove_cls_token": False},
                        {"name": "LearnedInterpolateToPyramidal"}],
              "decoder": "UNetDecoder", "decoder_channels": [512, 256, 128, 64], "head_dropout": 0.1, "num_classes": 2}
MEANS = {"S2L1C": [2357.089, 2137.385, 2018.788, 2082.986, 2295.651, 2854.537, 3122.849, 3040.560, 3306.481,
                   1473.847, 506.070, 2472.825, 1838.929], "S1GRD": [-12.599, -20.293]}
STDS = {"S2L1C": [1624.683, 1675.806, 1557.708, 1833.702, 1823.738, 1733.977, 1732.131, 1679.732, 1727.26,
                  1024.687, 442.165, 1331.411, 1160.419], "S1GRD": [5.195, 5.890]}
TILE, OVERLAP, BATCH = 224, 32, 8
DATE = "2021-07-23"


def write_scene(size: int, folder: Path) -> dict[str, Path]:
    """The checkerboard scene as ``S2L1C/scene.tif`` (int16) and ``S1/scene.tif`` (float32), EPSG:32722."""
    import rasterio
    from rasterio.transform import from_origin

    paths = {}
    for name, folder_name, dtype in (("S2L1C", "S2L1C", "int16"), ("S1", "S1RTC", "float32")):
        tiles = []
        for p in sorted((DATA / "terramind-examples" / folder_name).glob("*.tif")):
            with rasterio.open(p) as src:
                tiles.append(src.read().astype(dtype))
        path = folder / name / "scene.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        profile = {"driver": "GTiff", "count": tiles[0].shape[0], "height": size, "width": size, "dtype": dtype,
                   "crs": "EPSG:32722", "transform": from_origin(700000.0, 7200000.0, 10.0, 10.0), "tiled": True,
                   "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
        with rasterio.open(path, "w", **profile) as dst:
            n = -(-size // 224)
            for i in range(n):  # one row of sample tiles at a time: the scene is never in memory
                row = np.concatenate([tiles[(i + j) % len(tiles)] for j in range(n)], axis=2)[:, :, :size]
                rows = min(224, size - i * 224)
                dst.write(row[:, :rows], window=((i * 224, i * 224 + rows), (0, size)))
        paths[name] = path
    return paths


def write_checkpoint(folder: Path) -> tuple[Path, Path]:
    """Random base + UNet weights as a Lightning ``.ckpt`` and its config (JSON form)."""
    import torch

    from terramind_openeo.model.task import load_task_model

    config = {"task": "segmentation", "model_args": MODEL_ARGS, "class_names": ["Others", "Flood"],
              "means": MEANS, "stds": STDS}
    cfg = folder / "flood.json"
    cfg.write_text(json.dumps(config))
    model = load_task_model(None, cfg, weights="random", seed=0)
    ckpt = folder / "flood.ckpt"
    torch.save({"epoch": 0, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    return ckpt, cfg


def run_ours(scene: dict[str, Path], ckpt: Path, cfg: Path, out: Path, size: int, anchor: str = "crs") -> dict:
    """``terramind-openeo run`` in a subprocess (threads, one process), results in ``out/ours-<anchor>``."""
    catalog = {"collections": [
        {"id": "SCENE_S2L1C", "type": "geotiff", "path": str(scene["S2L1C"]), "datetimes": {"scene": DATE},
         "bands": S2L1C},
        {"id": "SCENE_S1", "type": "geotiff", "path": str(scene["S1"]), "datetimes": {"scene": DATE},
         "bands": ["VV", "VH"]}]}
    shutil.rmtree(out / f"ours-{anchor}", ignore_errors=True)  # a repeat writes afresh
    catalog_path = out / "catalog.json"
    catalog_path.write_text(json.dumps(catalog))
    args = [sys.executable, "-m", "terramind_openeo.cli", "run", str(REPO / "process_graphs" / "flood_map.json"),
            "--output", str(out / f"ours-{anchor}"), "--catalog", str(catalog_path), "--scheduler", "threads", "--no-progress",
            "--param", f"checkpoint={ckpt}", "--param", f"config={cfg}", "--param", "s2_collection=SCENE_S2L1C",
            "--param", "s1_collection=SCENE_S1", "--param", "spatial_extent=null", "--param", f"tile_size={TILE}",
            "--param", f"tile_anchor={anchor}"]
    return _measure(args)


def run_terratorch(scene: dict[str, Path], ckpt: Path, out: Path) -> dict:
    args = [sys.executable, __file__, "_terratorch", str(scene["S2L1C"]), str(scene["S1"]), str(ckpt),
            str(out / "terratorch.npy")]
    return _measure(args)


def _measure(args: list[str]) -> dict:
    """Run ``args``; wall time and the peak resident set of the process (with any children it starts),
    sampled every 20 ms."""
    import psutil

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"),
                                                        os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
        except psutil.Error:
            rss = 0
        peak = max(peak, rss)
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    _, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{args[2:4]} failed:\n{err[-3000:]}")
    return {"seconds": seconds, "peak_rss_mib": peak / 2**20}


def terratorch_main(s2_path: str, s1_path: str, ckpt: str, out: str) -> None:
    """In the subprocess: the scene in memory, terratorch's model from the checkpoint, its tiled inference."""
    import rasterio
    import terratorch_task_ref
    import torch

    torch.set_grad_enabled(False)
    ns = terratorch_task_ref.load()
    model = terratorch_task_ref.build("segmentation", MODEL_ARGS)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    # nn.Module's own: smp's SegmentationModel.load_state_dict (a base of terratorch's model) imports its encoders
    torch.nn.Module.load_state_dict(model, {k.removeprefix("model."): v for k, v in state.items()}, strict=True)
    inputs = {}
    for name, path in (("S2L1C", s2_path), ("S1GRD", s1_path)):
        with rasterio.open(path) as src:
            x = torch.from_numpy(src.read().astype(np.float32))[None]
        mean = torch.tensor(MEANS[name]).view(1, -1, 1, 1)
        std = torch.tensor(STDS[name]).view(1, -1, 1, 1)
        inputs[name] = (x - mean) / std
    logits = ns.tiled_inference(lambda batch: model(batch).output, inputs, crop=TILE, stride=TILE - OVERLAP,
                                delta=0, padding=False, batch_size=BATCH)
    np.save(out, logits[0].argmax(dim=0).numpy().astype(np.uint8))


def _median_run(runs: list[dict]) -> dict:
    """Median wall time and median peak RSS of repeated runs."""
    import statistics

    return {"seconds": statistics.median(r["seconds"] for r in runs),
            "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_terratorch":
        terratorch_main(*argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--skip-terratorch", action="store_true", help="time ours only")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side and size (medians reported)")
    parser.add_argument("--anchors", nargs="+", default=["crs", "cube"], choices=["crs", "cube"],
                        help="our tile anchors to time: 'crs' (the default of the processes: the tile grid anchored "
                             "at the CRS origin) and/or 'cube' (at the scene's first pixel, as terratorch's tiles)")
    args = parser.parse_args(argv)
    import rasterio

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        tmp = Path(tmp)
        ckpt, cfg = write_checkpoint(tmp)
        for size in args.sizes:
            work = tmp / str(size)
            work.mkdir()
            scene = write_scene(size, work)
            ours_runs: dict[str, list[dict]] = {a: [] for a in args.anchors}
            their_runs: list[dict] = []
            for _ in range(args.repeat):  # interleaved: a change in load hits both sides alike
                for anchor in args.anchors:
                    ours_runs[anchor].append(run_ours(scene, ckpt, cfg, work, size, anchor))
                if not args.skip_terratorch:
                    their_runs.append(run_terratorch(scene, ckpt, work))
            theirs = _median_run(their_runs) if not args.skip_terratorch else None
            for anchor in args.anchors:
                ours = _median_run(ours_runs[anchor])
                row = {"size": size, "anchor": anchor, "runs": args.repeat, "ours_s": ours["seconds"],
                       "ours_px_s": size * size / ours["seconds"], "ours_rss_mib": ours["peak_rss_mib"]}
                if theirs is not None:
                    row.update(terratorch_s=theirs["seconds"], terratorch_px_s=size * size / theirs["seconds"],
                               terratorch_rss_mib=theirs["peak_rss_mib"],
                               throughput_ratio=theirs["seconds"] / ours["seconds"],
                               rss_ratio=ours["peak_rss_mib"] / theirs["peak_rss_mib"])
                    with rasterio.open(next((work / f"ours-{anchor}").glob("*.tif"))) as src:
                        mine = src.read(1)
                    other = np.load(work / "terratorch.npy")
                    row["class_agreement"] = float((mine == other).mean())
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n size  anchor    ours px/s   terratorch px/s   ratio   ours RSS MiB   terratorch RSS MiB   RSS ratio   agree")
    for r in rows:
        print(f"{r['size']:>5}  {r['anchor']:>6}  {r['ours_px_s']:>10.0f}  {r.get('terratorch_px_s', float('nan')):>16.0f}  "
              f"{r.get('throughput_ratio', float('nan')):>6.2f}  {r['ours_rss_mib']:>13.0f}  "
              f"{r.get('terratorch_rss_mib', float('nan')):>19.0f}  {r.get('rss_ratio', float('nan')):>10.2f}  "
              f"{r.get('class_agreement', float('nan')):>6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
