"""Few-shot land-cover maps end to end, and their agreement with the land-cover rasters of the sample tiles.

Starts ``terramind-openeo serve`` (a subprocess, the real CLI), and for each TerraMesh sample site and each
number of labels per class: samples labelled points from the site's LULC raster, then through the real
``openeo`` client runs ``terramind_embed`` -> ``aggregate_spatial`` -> ``fit_class_random_forest`` ->
``save_ml_model`` as one batch job and ``load_ml_model`` (by that job's id) -> ``predict_random_forest`` ->
GTiff as a second, downloads the map and compares it with the LULC raster; next to it, a forest trained on
the raw Sentinel-2 bands at the same points. Once per site it also runs ``process_graphs/few_shot_lulc.json``
synchronously through the client and through ``terramind-openeo run`` and checks that the three maps agree;
and for each row it fits scikit-learn directly on the tile's raw pixels at the same points, whose agreement
must equal the back-end's raw-S2 figure. First it measures the int8 round trip of each site's embeddings
(``quantize="int8"`` as written, read back as the processes read it).

With random weights (the default; no checkpoint is reachable offline) the embedding maps are a pipeline
check, not a quality claim: the numbers say the plumbing works, not how good TerraMind is.

    python benchmarks/fewshot_agreement.py --model terramind_v1_tiny --weights random --labels 5 20 100
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from pyproj import Transformer

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TERRAMIND_OPENEO_SHARED_DATA", REPO.parent / "shared" / "data"))
SITES = ("282D_485L_3_3", "38D_378R_2_3", "637U_59R_1_3")
S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
NAMES = ["No data", "Water", "Trees", "Flooded vegetation", "Crops", "Built area", "Bare ground", "Snow/ice",
         "Clouds", "Rangeland"]


def site_raster(site: str):
    with rasterio.open(SHARED / "terramind-examples" / "LULC" / f"{site}.tif") as src:
        return src.read(1), src.transform, src.crs, src.bounds


def sample_labels(lulc, transform, crs, per_class: int, seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """``per_class`` points per land-cover class (all its pixels if fewer), at pixel centres, in lon/lat;
    also the mask of the picked pixels and their (row, col) in the order of the features."""
    to_lonlat = Transformer.from_crs(crs, 4326, always_xy=True)
    rng = np.random.default_rng(seed)
    features, picked, positions = [], np.zeros(lulc.shape, dtype=bool), []
    for value in np.unique(lulc):
        if value == 0:
            continue
        rows, cols = np.nonzero(lulc == value)
        for i in rng.choice(rows.size, min(per_class, rows.size), replace=False):
            lon, lat = to_lonlat.transform(*(transform @ (cols[i] + 0.5, rows[i] + 0.5)))
            features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
                             "properties": {"target": NAMES[value]}})
            picked[rows[i], cols[i]] = True
            positions.append((rows[i], cols[i]))
    return {"type": "FeatureCollection", "features": features}, picked, np.array(positions)


def agreement(path: Path, lulc: np.ndarray, labels: dict, picked: np.ndarray) -> dict:
    classes = sorted({f["properties"]["target"] for f in labels["features"]})
    codes = np.array([NAMES.index(c) for c in classes] + [255])
    with rasterio.open(path) as src:
        values = src.read(1)
    if values.shape != lulc.shape:
        raise SystemExit(f"{path}: map {values.shape} vs LULC {lulc.shape}")
    mapped = codes[np.where(values == 255, len(classes), values)]
    return {"all": float((mapped == lulc).mean()), "unlabelled": float((mapped == lulc)[~picked].mean())}


def direct_raw_forest(site: str, lulc: np.ndarray, labels: dict, picked: np.ndarray, positions: np.ndarray,
                      trees: int) -> dict:
    """The raw-S2 forest without the back-end: scikit-learn called directly on the tile's pixels at the same
    points in the same order (same parameters and seed as ``fit_class_random_forest``), predicted over the
    whole tile; its agreement must equal the back-end's (a check of the plumbing, not of the model)."""
    from sklearn.ensemble import RandomForestClassifier

    with rasterio.open(SHARED / "terramind-examples" / "S2L2A" / f"{site}.tif") as src:
        s2 = src.read().astype(np.float32)
    classes = sorted({f["properties"]["target"] for f in labels["features"]})
    y = np.array([classes.index(f["properties"]["target"]) for f in labels["features"]])
    forest = RandomForestClassifier(n_estimators=trees, max_features="sqrt", random_state=0)
    forest.fit(s2[:, positions[:, 0], positions[:, 1]].T, y)
    mapped = np.array([NAMES.index(c) for c in classes])[forest.predict(s2.reshape(len(s2), -1).T)]
    agree = mapped.reshape(lulc.shape) == lulc
    return {"all": float(agree.mean()), "unlabelled": float(agree[~picked].mean())}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, port: int) -> subprocess.Popen:
    from terramind_openeo.backend.auth import hash_password

    env = dict(os.environ, TERRAMIND_OPENEO_BASIC_USERS=json.dumps({"mapper": hash_password("mapper-pw")}))
    proc = subprocess.Popen([sys.executable, "-m", "terramind_openeo.cli", "serve", "--port", str(port), "--data-dir",
                             str(data_dir), "--dask", "threads"], env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("terramind-openeo serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="terramind_v1_tiny")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--labels", type=int, nargs="+", default=[5, 20, 100], help="labels per class")
    parser.add_argument("--sites", nargs="+", default=list(SITES))
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--resolution", default="pixel", choices=("pixel", "patch"))
    parser.add_argument("--out", type=Path, default=None, help="keep maps and results here")
    parser.add_argument("--quantization-only", action="store_true",
                        help="only the int8 round trip of each site's embeddings (in process, no server)")
    args = parser.parse_args()
    context = {"model": args.model, "weights": args.weights, "resolution": args.resolution}
    for site in args.sites:
        print(json.dumps(quantization_error(site, context)), flush=True)
    if args.quantization_only:
        return
    import openeo

    out = args.out or Path(tempfile.mkdtemp(prefix="fewshot-"))
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = start_server(out / "server", port)
    results = []
    try:
        con = openeo.connect(f"http://127.0.0.1:{port}").authenticate_basic("mapper", "mapper-pw")
        for site in args.sites:
            lulc, transform, crs, b = site_raster(site)
            extent = {"west": b.left, "east": b.right, "south": b.bottom, "north": b.top, "crs": crs.to_epsg()}
            s2 = con.load_collection("TERRAMIND_S2L2A", spatial_extent=extent, bands=S2)
            emb = s2.process("terramind_embed", data=s2, **context)
            for n in args.labels:
                tag = f"{site}_{n}"
                labels, picked, positions = sample_labels(lulc, transform, crs, n, seed=n)
                t0 = time.perf_counter()
                model = emb.aggregate_spatial(geometries=labels, reducer="mean").fit_class_random_forest(
                    target=labels, max_variables="sqrt", num_trees=args.trees, seed=0)
                fit_job = model.save_ml_model().create_job(title=f"fit {tag}")
                fit_job.start_and_wait(max_poll_interval=2)
                predicted = emb.predict_random_forest(model=con.load_ml_model(fit_job.job_id), dimension="bands")
                map_job = predicted.save_result("GTiff").create_job(title=f"map {tag}")
                map_job.start_and_wait(max_poll_interval=2)
                files = map_job.get_results().download_files(out / tag)
                tif = next(f for f in files if f.suffix == ".tif")
                seconds = time.perf_counter() - t0
                raw = s2.aggregate_spatial(geometries=labels, reducer="mean").fit_class_random_forest(
                    target=labels, max_variables="sqrt", num_trees=args.trees, seed=0)
                raw_tif = out / f"{tag}_raw_s2.tif"
                s2.predict_random_forest(model=raw, dimension="bands").download(raw_tif, format="GTiff")
                row = {"site": site, "labels_per_class": n, "points": len(labels["features"]),
                       "embeddings": agreement(tif, lulc, labels, picked),
                       "raw_s2": agreement(raw_tif, lulc, labels, picked),
                       "raw_s2_direct_sklearn": direct_raw_forest(site, lulc, labels, picked, positions, args.trees),
                       "two_jobs_seconds": round(seconds, 1)}
                if n == args.labels[0]:
                    row["same_map_via_graph_and_run"] = same_map_three_ways(con, tif, labels, extent, context, out, tag)
                results.append(row)
                print(json.dumps(row), flush=True)
    finally:
        server.terminate()
        server.wait(30)
    (out / "agreement.json").write_text(json.dumps(results, indent=1))
    print_table(results, args)


def same_map_three_ways(con, tif: Path, labels: dict, extent: dict, context: dict, out: Path, tag: str) -> bool:
    """process_graphs/few_shot_lulc.json synchronously through the client and through ``terramind-openeo run``:
    both maps must equal the two-job map."""
    params = {"spatial_extent": extent, "labels": labels, **context}
    sync = out / f"{tag}_graph_sync.tif"
    con.datacube_from_json(str(REPO / "process_graphs" / "few_shot_lulc.json"), parameters=params).download(sync)
    run_dir = out / f"{tag}_run"
    cmd = [sys.executable, "-m", "terramind_openeo.cli", "run", str(REPO / "process_graphs" / "few_shot_lulc.json"),
           "--output", str(run_dir), "--scheduler", "threads", "--no-progress"]
    for key, value in params.items():
        cmd += ["--param", f"{key}={json.dumps(value)}"]
    subprocess.run(cmd, check=True)
    maps = []
    for path in (tif, sync, next(run_dir.glob("*.tif"))):
        with rasterio.open(path) as src:
            maps.append(src.read(1))
    return bool(all(np.array_equal(maps[0], m) for m in maps[1:]))


def quantization_error(site: str, context: dict) -> dict:
    """Round trip of int8 embeddings on a whole tile, in process: the float embeddings next to what
    ``quantize="int8"`` writes, read back as the processes read it (``processes/quantized.py``)."""
    import rioxarray  # noqa: F401 - registers .rio
    import xarray as xr

    from terramind_openeo.inference import embed_cube
    from terramind_openeo.processes.quantized import dequantized, is_quantized

    with rasterio.open(SHARED / "terramind-examples" / "S2L2A" / f"{site}.tif") as src:
        values, t, crs = src.read().astype(np.float32), src.transform, src.crs
    n = values.shape[1]
    cube = xr.DataArray(values, dims=("bands", "y", "x"), coords={
        "bands": S2, "y": t.f + t.e * (np.arange(n) + 0.5), "x": t.c + t.a * (np.arange(n) + 0.5)}).rio.write_crs(crs)
    floats = embed_cube(cube, context)
    written = embed_cube(cube, {**context, "quantize": "int8"})
    if not is_quantized(written):
        raise SystemExit(f"{site}: quantize='int8' gave {written.dtype} bands {list(written.bands.values)[-2:]}")
    emb = floats.values.reshape(floats.sizes["bands"], -1).astype(np.float64)  # [D, pixels]
    back = dequantized(written).transpose(*floats.dims).values.reshape(emb.shape).astype(np.float64)
    peak = np.abs(emb).max(axis=0)
    err = np.abs(back - emb)
    cos = (back * emb).sum(0) / np.linalg.norm(back, axis=0) / np.linalg.norm(emb, axis=0)
    return {"site": site, "resolution": context["resolution"], "dims": int(emb.shape[0]),
            "pixels": int(emb.shape[1]), "max_error_over_pixel_peak": float((err.max(axis=0) / peak).max()),
            "mean_error_over_pixel_peak": float((err / peak).mean()), "bound": 2 ** (1 / 8) / 254,
            "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
            "bytes_float32": int(floats.values.nbytes), "bytes_int8": int(written.values.nbytes)}


def print_table(results: list[dict], args) -> None:
    print(f"\nagreement with the LULC raster ({args.model}, weights={args.weights}, {args.trees} trees, "
          f"{args.resolution} resolution; all pixels / pixels not used as labels)")
    print(f"{'site':16} {'labels/class':>12} {'embeddings':>20} {'raw S2 bands':>20} {'raw S2, sklearn direct':>24}")
    for r in results:
        e, s, d = r["embeddings"], r["raw_s2"], r["raw_s2_direct_sklearn"]
        print(f"{r['site']:16} {r['labels_per_class']:>12} {e['all']:>9.3f} / {e['unlabelled']:.3f} "
              f"{s['all']:>9.3f} / {s['unlabelled']:.3f} {d['all']:>13.3f} / {d['unlabelled']:.3f}")


if __name__ == "__main__":
    main()
