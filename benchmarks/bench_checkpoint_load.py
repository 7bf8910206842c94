"""Benchmark: peak memory of loading a fine-tuned checkpoint, the file mapped (``read_checkpoint``, what the
package does) against read whole (``torch.load`` without ``mmap``, what it did before), side by side.

Two checkpoints, written in terratorch's Lightning layout with seeded random weights:

- ``tim``: a tiny TiM fine-tune (``terramind_v1_tiny_tim`` thinking in LULC) holding its LULC tokenizer, as
  terratorch saves a TiM fine-tune (~760 MiB, nearly all of it the tokenizer, which is checked by shape and
  never loaded);
- ``base``: IBM/terramind's sen1floods11 model (base backbone, UNet decoder; ~395 MiB), as ``bench_predict``.

Each load runs in a fresh process; reported: its peak RSS (sampled every 20 ms by ``bench_predict``'s
``_measure``; not ``ru_maxrss``, which a child inherits from the parent that forked it) and its RSS once the
model is loaded, medians of ``--repeat`` interleaved runs.

    python benchmarks/bench_checkpoint_load.py            # both checkpoints, 3 runs per mode
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

TIM_ARGS = {"backbone": "terramind_v1_tiny_tim", "backbone_pretrained": True,
            "backbone_modalities": ["S2L1C", "S1GRD"], "backbone_tim_modalities": ["LULC"],
            "backbone_merge_method": "mean",
            "necks": [{"name": "SelectIndices", "indices": [2, 5, 8, 11]},
                      {"name": "ReshapeTokensToImage", "remove_cls_token": False},
                      {"name": "LearnedInterpolateToPyramidal"}],
            "decoder": "UNetDecoder", "decoder_channels": [32, 16, 16, 8], "num_classes": 2}


def write_tim(folder: Path) -> tuple[Path, Path]:
    import torch

    from terramind_openeo.model.task import load_task_model
    from terramind_openeo.model.tokenizers import build_tokenizer

    config = {"task": "segmentation", "model_args": TIM_ARGS, "class_names": ["Others", "Flood"]}
    cfg = folder / "tim.json"
    cfg.write_text(json.dumps(config))
    model = load_task_model(None, config, weights="random", seed=0)
    torch.manual_seed(0)
    tokenizer = build_tokenizer("LULC")
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state.update({f"model.encoder.tokenizer.tok_lulc@224.{k}": v for k, v in tokenizer.state_dict().items()})
    ckpt = folder / "tim.ckpt"
    torch.save({"epoch": 0, "state_dict": state}, ckpt)
    return ckpt, cfg


def load_main(mode: str, ckpt: str, cfg: str, report: str) -> None:
    """In the subprocess: load once, write the RSS with the model loaded (MiB) to ``report``."""
    import psutil
    import torch

    from terramind_openeo.model.task import load_task_model

    if mode == "mapped":
        model = load_task_model(Path(ckpt), Path(cfg))
    else:
        model = load_task_model(torch.load(ckpt, map_location="cpu", weights_only=True), Path(cfg))
    Path(report).write_text(json.dumps({"after_mib": psutil.Process().memory_info().rss / 2**20}))
    del model


def measure(mode: str, ckpt: Path, cfg: Path) -> dict:
    from bench_predict import _measure

    report = ckpt.with_suffix(".report.json")
    got = _measure([sys.executable, __file__, "_load", mode, str(ckpt), str(cfg), str(report)])
    return {"peak_mib": got["peak_rss_mib"], **json.loads(report.read_text())}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_load":
        load_main(*argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--checkpoints", nargs="+", default=["tim", "base"], choices=["tim", "base"])
    args = parser.parse_args(argv)
    import bench_predict

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp:
        folder = Path(tmp)
        for name in args.checkpoints:
            ckpt, cfg = write_tim(folder) if name == "tim" else bench_predict.write_checkpoint(folder)
            runs: dict[str, list[dict]] = {"read whole": [], "mapped": []}
            for _ in range(args.repeat):  # interleaved
                for mode in runs:
                    runs[mode].append(measure("whole" if mode == "read whole" else "mapped", ckpt, cfg))
            for mode, got in runs.items():
                row = {"checkpoint": name, "file_mib": ckpt.stat().st_size / 2**20, "mode": mode,
                       "peak_mib": statistics.median(r["peak_mib"] for r in got),
                       "after_mib": statistics.median(r["after_mib"] for r in got), "runs": len(got)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\ncheckpoint  file MiB  mode        peak RSS MiB  RSS after MiB")
    for r in rows:
        print(f"{r['checkpoint']:>10}  {r['file_mib']:>8.0f}  {r['mode']:<10}  {r['peak_mib']:>12.0f}  "
              f"{r['after_mib']:>13.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
