#!/usr/bin/env python3
"""How many images per second a CLIP image tower embeds, against Hugging Face's CLIPModel with the same weights.

The figure is the throughput of ``clip_tutorial.encode_images``, the function that builds a search
index (Chapter 5.2): batches through the image tower without gradients, L2-normalised features, copied
back to the CPU. The reference, timed in the same run, is ``transformers.CLIPModel.get_image_features``
on a model converted from ours with ``clip_tutorial.weights.hf.to_hf`` (so both compute the same
function; the features are checked to agree), followed by the same normalisation.

Models: a shipped model by name (default ``ch3-best``, the one Chapter 5 uses: 32 px images, a
2-layer ViT of width 64) and, with ``--vit-b32``, ViT-B/32's architecture at 224 px with random
weights (the real CLIP's cost; nothing is downloaded). Devices: the CPU, plus CUDA when available
(``--devices``). Each repeat times ours and the reference on the same ``--count`` images, the order
flipping every repeat; the first repeat warms up and is dropped; figures are medians.

Usage::

    python benchmarks/embedding_throughput.py [--models ch3-best] [--vit-b32] [--batch-sizes 64 256 1024]
        [--count 8192] [--repeat 5] [--threads 2] [--devices cpu cuda] [--no-write]

Writes data/benchmarks/embedding_throughput.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from _report import ROOT, machine_info, print_table, write_report  # noqa: E402  (benchmarks/ is on sys.path when a script runs)

VIT_B32_COUNT = 64  # images per timed run for ViT-B/32 on the CPU; a 224 px ViT-B/32 is ~1000x the tiny model's cost


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reference(hf_model, images, batch_size: int, device):
    """The reference pipeline: HF's image features per batch, normalised, back on the CPU."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            features = hf_model.get_image_features(pixel_values=images[start: start + batch_size].to(device))
            if not isinstance(features, torch.Tensor):  # some transformers versions return an output object
                features = features.pooler_output
            out.append(torch.nn.functional.normalize(features, dim=-1).float().cpu())
    return torch.cat(out)


def _measure(label: str, model, images, batch_sizes: list[int], repeat: int, device) -> list[dict]:

    from clip_tutorial.weights.hf import to_hf
    from clip_tutorial.evaluation.zeroshot import encode_images

    model = model.to(device).eval()
    hf_model = to_hf(model.cpu()).to(device).eval()
    model = model.to(device)
    results = []
    for batch_size in batch_sizes:
        ours_features = encode_images(model, images, batch_size=batch_size)
        gap = (ours_features - _reference(hf_model, images, batch_size, device)).abs().max().item()
        times: dict[str, list[float]] = {"ours": [], "hf": []}
        runs = {"ours": lambda: encode_images(model, images, batch_size=batch_size),
                "hf": lambda: _reference(hf_model, images, batch_size, device)}
        for r in range(repeat + 1):
            for key in (("ours", "hf") if r % 2 == 0 else ("hf", "ours")):
                _synchronize(device)
                start = time.perf_counter()
                runs[key]()
                _synchronize(device)
                if r:
                    times[key].append(time.perf_counter() - start)
        ours_rate = images.shape[0] / statistics.median(times["ours"])
        hf_rate = images.shape[0] / statistics.median(times["hf"])
        results.append({"model": label, "device": str(device), "batch_size": batch_size, "images": images.shape[0],
                        "image_resolution": images.shape[-1], "ours_images_per_s": ours_rate,
                        "hf_images_per_s": hf_rate, "ours_over_hf": ours_rate / hf_rate,
                        "max_abs_feature_gap": gap, "times_s": times})
        print(f"  {label} on {device}, batch {batch_size}: {ours_rate:,.0f} images/s (HF {hf_rate:,.0f}); "
              f"feature gap {gap:.1e}", file=sys.stderr, flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=["ch3-best"], help="shipped model names")
    parser.add_argument("--vit-b32", action="store_true", help="also time ViT-B/32 (random weights, 224 px)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--count", type=int, default=8192, help="images per timed run (shipped models)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    parser.add_argument("--output", type=Path, default=ROOT / "data" / "benchmarks" / "embedding_throughput.json")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    for name, value in (("--count", args.count), ("--repeat", args.repeat), ("--threads", args.threads)):
        if value < 1:
            parser.error(f"{name}: expected at least 1, got {value}")
    if min(args.batch_sizes) < 1:
        parser.error(f"--batch-sizes: expected positive integers, got {args.batch_sizes}")

    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = str(args.threads)
    sys.path.insert(0, str(ROOT))
    import torch
    import transformers

    import clip_tutorial
    from clip_tutorial.model import CLIP, get_config

    torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    results: list[dict] = []
    for device in map(torch.device, devices):
        for name in args.models:
            trained = clip_tutorial.load_shipped(name)
            size = trained.model.config.image_resolution
            images = clip_tutorial.ShapesWorld(args.count, split="all", seed=100, image_size=size).tensors()
            results += _measure(name, trained.model, images, args.batch_sizes, args.repeat, device)
        if args.vit_b32:
            torch.manual_seed(0)
            model = CLIP(get_config("ViT-B/32"))
            count = VIT_B32_COUNT if device.type == "cpu" else 1024
            images = torch.randn(count, 3, 224, 224, generator=torch.Generator().manual_seed(1))
            sizes = [b for b in args.batch_sizes if b <= count] or [count]
            results += _measure("ViT-B/32 (random weights)", model, images, sizes, args.repeat, device)

    print_table(["model", "device", "batch", "ours (images/s)", "HF (images/s)", "ours ÷ HF", "feature gap"],
                [[r["model"], r["device"], str(r["batch_size"]), f"{r['ours_images_per_s']:,.0f}",
                  f"{r['hf_images_per_s']:,.0f}", f"{r['ours_over_hf']:.2f}", f"{r['max_abs_feature_gap']:.1e}"]
                 for r in results])
    report = {"threads": args.threads, "repeat": args.repeat, "results": results,
              "machine": machine_info(torch=torch.__version__, transformers=transformers.__version__,
                                      cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)}
    if not args.no_write:
        write_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
