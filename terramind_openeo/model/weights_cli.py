"""``terramind-openeo weights download NAME... [--to DIR]`` and ``weights list``: the official checkpoints
fetched once on a machine with internet, into a Hugging Face cache that can be copied to one without."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from terramind_openeo.model.config import MODEL_NAMES
from terramind_openeo.model.errors import WeightsSourceError
from terramind_openeo.model.hub import HUB_NAMES, cached, fetch_all, hub_file

NAMES_HELP = (f"models ({', '.join(MODEL_NAMES)}) and tokenizers ({', '.join(HUB_NAMES[len(MODEL_NAMES):])}); the main "
              "job (process_graphs/s2_to_lulc.json) needs terramind_v1_base and LULC")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="terramind-openeo weights",
        description="The official TerraMind checkpoints in the Hugging Face cache: fetch them once where there is "
                    "internet, then copy the cache to machines without.")
    sub = parser.add_subparsers(dest="action", required=True)
    down = sub.add_parser("download", help="download checkpoints into the cache (or into DIR)",
                          description="Download checkpoints. " + NAMES_HELP + ".")
    down.add_argument("names", nargs="+", metavar="NAME", help=NAMES_HELP)
    down.add_argument("--to", metavar="DIR", default=None,
                      help="a Hugging Face cache folder to fill (default: the cache, HF_HUB_CACHE or "
                           "~/.cache/huggingface/hub); on the other machine set HF_HUB_CACHE=DIR")
    down.add_argument("--timeout", type=float, default=None,
                      help="seconds the hub may take to answer (default: the hub_timeout_s setting, 10)")
    show = sub.add_parser("list", help="the names and whether each is in the cache (or in DIR)")
    show.add_argument("--in", dest="cache_dir", metavar="DIR", default=None, help="a cache folder (default: the cache)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.action == "list":
            for name in HUB_NAMES:
                path = cached(hub_file(name), args.cache_dir)
                print(f"{name:20s} {path if path else '-'}")
            return 0
        files = [hub_file(n) for n in args.names]
        cache_dir = Path(args.to).expanduser() if args.to else None
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
        paths = fetch_all(files, cache_dir, args.timeout)
    except WeightsSourceError as exc:
        print(f"terramind-openeo weights: {exc}", file=sys.stderr)
        return 1
    for file, path in zip(files, paths):
        print(f"{file.name}: {path}")
    if cache_dir is not None:
        print(f"Copy {cache_dir} to the machine without internet and set HF_HUB_CACHE={cache_dir} there "
              "(or copy its contents into that machine's ~/.cache/huggingface/hub).")
    return 0
