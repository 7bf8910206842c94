"""``terramind-openeo encode``: run TerraMind on GeoTIFF tiles and print (optionally save) the embeddings."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from terramind_openeo.model.config import MODEL_NAMES, RAW_MODALITIES
from terramind_openeo.model.errors import TerraMindError
from terramind_openeo.model.factory import load_terramind
from terramind_openeo.model.standardization import standardize

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="terramind-openeo encode",
        description="Encode co-registered GeoTIFF tiles (one per modality, bands in TerraMind's order) with "
                    "TerraMind; print the embeddings' shape and statistics, optionally save them.",
        epilog="example: terramind-openeo encode S2L2A/tile.tif S1RTC/tile.tif --modality S2L2A --modality S1RTC "
               "--weights hub")
    parser.add_argument("files", nargs="+", type=Path, help="GeoTIFF per modality ([C, H, W], H and W multiples "
                        "of 16)")
    parser.add_argument("--modality", action="append", choices=sorted(RAW_MODALITIES), default=None,
                        help="modality of each file, in order (repeat it); default: the file's folder name")
    parser.add_argument("--model", default="terramind_v1_tiny", choices=MODEL_NAMES)
    parser.add_argument("--weights", default="hub", help="hub (default), random (tests only) or a checkpoint path")
    parser.add_argument("--layer", type=int, default=-1, help="encoder layer (default -1: the last, normed)")
    parser.add_argument("--merge", default="mean", choices=["mean", "max", "concat", "dict", "none"],
                        help="how modalities' tokens are merged (default mean)")
    parser.add_argument("--s2-offset", type=float, default=0.0,
                        help="radiometric offset in the Sentinel-2 digital numbers (1000 for processing baseline "
                             ">= 04.00 data that carries it; default 0)")
    parser.add_argument("--device", default=None, help="torch device (default cpu)")
    parser.add_argument("--output", "-o", type=Path, default=None,
                        help="save the embeddings as .npy (.npz for --merge dict)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --weights random")
    return parser


def read_tile(path: Path) -> np.ndarray:
    """A GeoTIFF as float32 ``[C, H, W]``; nodata pixels become NaN (and are refused by the model)."""
    import rasterio

    with rasterio.open(path) as src:
        data = src.read(masked=True)
    return np.ma.filled(data.astype(np.float32), np.nan)


def _modalities(files: list[Path], given: list[str] | None) -> list[str]:
    if given is None:
        names = [f.resolve().parent.name for f in files]
        unknown = [str(f) for f, n in zip(files, names) if n not in RAW_MODALITIES]
        if unknown:
            raise TerraMindError(f"cannot tell the modality of {', '.join(unknown)} from its folder; pass "
                                 f"--modality ({', '.join(RAW_MODALITIES)}) once per file")
        return names
    if len(given) != len(files):
        raise TerraMindError(f"{len(files)} file(s) but {len(given)} --modality value(s); give one per file")
    if len(set(given)) != len(given):
        raise TerraMindError(f"each modality may appear once, got {given}")
    return given


def _describe(name: str, array: np.ndarray) -> str:
    return (f"{name}: shape {list(array.shape)} mean {array.mean():.6g} std {array.std():.6g} "
            f"min {array.min():.6g} max {array.max():.6g}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        modalities = _modalities(args.files, args.modality)
        inputs = {}
        for modality, path in zip(modalities, args.files):
            if not path.is_file():
                raise TerraMindError(f"file {str(path)!r} does not exist")
            tile = read_tile(path)
            inputs[modality] = torch.from_numpy(standardize(modality, tile, s2_offset=args.s2_offset))[None]
            print(f"input {modality}: {path} {list(tile.shape)}")
        model = load_terramind(args.model, weights=args.weights, device=args.device, seed=args.seed)
        print(f"model {model.name} (weights: {model.weights}), layer {args.layer}, merge {args.merge}")
        merge = None if args.merge == "none" else args.merge
        out = model.encode(inputs, layers=args.layer, merge=merge)
        arrays = ({k: v[0].float().cpu().numpy() for k, v in out.items()} if isinstance(out, dict)
                  else {"embeddings": out[0].float().cpu().numpy()})
        for name, array in arrays.items():
            print(_describe(name, array))
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(out, dict):
                np.savez(args.output, **arrays)
            else:
                np.save(args.output, arrays["embeddings"])
            print(f"saved {args.output}")
    except (TerraMindError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # rasterio errors and the like: one line, not a trace
        if type(exc).__module__.startswith("rasterio"):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
