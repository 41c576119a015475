#!/usr/bin/env python3
"""Speed of clip_tutorial's CLIP against transformers.CLIPModel with the same weights, on the CPU.

For each configuration, our model is built with random weights and converted with
``clip_tutorial.weights.hf.to_hf``, so both compute the same function. Two things are timed:

* one training step: forward on a batch of image-text pairs, CLIP's contrastive loss
  (``clip_tutorial.objectives.loss.clip_loss`` on each model's logits), backward, AdamW step;
* inference throughput under ``torch.inference_mode``: images/s (image tower) and texts/s
  (text tower, full context).

Ours and theirs alternate within every repeat (the order flips each repeat), so load from other
processes hits both alike; the figures are medians over repeats and the ratio ours / theirs
(below 1 means ours is faster).

Usage::

    python benchmarks/model_vs_hf.py [--repeat 7] [--threads 2] [--configs small ViT-B/32] [--no-write]

Writes data/benchmarks/model_vs_hf.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from _report import ROOT, write_report  # noqa: E402  (benchmarks/ is on sys.path when a script runs)
# Training batch and inference batch per configuration name.
BATCHES = {"small": (32, 128), "ViT-B/32": (8, 16)}


def _config(name: str):
    from clip_tutorial.model import CLIPConfig, get_config

    if name == "small":  # about the size of the book's tiny models, with the official vocabulary size
        return CLIPConfig(embed_dim=128, image_resolution=64, vision_layers=4, vision_width=128, vision_patch_size=8,
                          vision_heads=4, context_length=32, vocab_size=49408, transformer_width=128,
                          transformer_heads=4, transformer_layers=4)
    return get_config(name)


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_config(name: str, repeat: int) -> dict:
    import torch

    from clip_tutorial.weights.hf import to_hf
    from clip_tutorial.objectives.loss import clip_loss
    from clip_tutorial.model import CLIP

    config = _config(name)
    train_batch, infer_batch = BATCHES.get(name, (8, 32))
    torch.manual_seed(0)
    ours = CLIP(config)
    theirs = to_hf(ours)
    models = {"ours": ours, "theirs": theirs}
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-5) for k, m in models.items()}
    g = torch.Generator().manual_seed(1)

    def batch(n: int):
        images = torch.randn(n, 3, config.image_resolution, config.image_resolution, generator=g)
        text = torch.randint(1, config.vocab_size - 1, (n, config.context_length), generator=g)
        text[:, -1] = config.vocab_size - 1  # the end token, last: full-length texts
        return images, text

    def logits(key, images, text):
        if key == "ours":
            return models[key](images, text).logits_per_image
        return models[key](input_ids=text, pixel_values=images).logits_per_image

    def train_step(key, images, text):
        models[key].train()
        loss = clip_loss(logits(key, images, text))
        loss.backward()
        optimizers[key].step()
        optimizers[key].zero_grad(set_to_none=True)

    def encode(key, kind, images, text):
        model = models[key].eval()
        with torch.inference_mode():
            if key == "ours":
                return model.encode_image(images) if kind == "image" else model.encode_text(text)
            if kind == "image":
                return model.get_image_features(pixel_values=images)
            return model.get_text_features(input_ids=text)

    train_data, infer_data = batch(train_batch), batch(infer_batch)
    times: dict[str, dict[str, list[float]]] = {k: {"train_step_s": [], "image_s": [], "text_s": []} for k in models}
    for r in range(repeat + 1):  # the first round warms up and is dropped
        order = ["ours", "theirs"] if r % 2 == 0 else ["theirs", "ours"]
        for key in order:
            t_train = _time(lambda: train_step(key, *train_data))
            t_image = _time(lambda: encode(key, "image", *infer_data))
            t_text = _time(lambda: encode(key, "text", *infer_data))
            if r:
                times[key]["train_step_s"].append(t_train)
                times[key]["image_s"].append(t_image)
                times[key]["text_s"].append(t_text)
        print(f"  {name}: round {r}/{repeat} done", file=sys.stderr, flush=True)

    result = {"config": config.to_dict(), "train_batch": train_batch, "infer_batch": infer_batch, "times": times}
    for key in models:
        t = times[key]
        result[key] = {
            "train_step_s": statistics.median(t["train_step_s"]),
            "images_per_s": infer_batch / statistics.median(t["image_s"]),
            "texts_per_s": infer_batch / statistics.median(t["text_s"]),
        }
    # ours / theirs for times; theirs / ours for throughputs: below 1 always means ours is faster.
    result["ratio"] = {
        "train_step": result["ours"]["train_step_s"] / result["theirs"]["train_step_s"],
        "image_inference": result["theirs"]["images_per_s"] / result["ours"]["images_per_s"],
        "text_inference": result["theirs"]["texts_per_s"] / result["ours"]["texts_per_s"],
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["small", "ViT-B/32"])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "data" / "benchmarks" / "model_vs_hf.json")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat: expected at least 1, got {args.repeat}")

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    results = {name: bench_config(name, args.repeat) for name in args.configs}

    print("\n| config | measure | clip_tutorial | transformers | ratio (time ours / theirs) |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        o, t, q = r["ours"], r["theirs"], r["ratio"]
        print(f"| {name} | train step, batch {r['train_batch']} (s) | {o['train_step_s']:.3f} | "
              f"{t['train_step_s']:.3f} | {q['train_step']:.2f} |")
        print(f"| {name} | images/s, batch {r['infer_batch']} | {o['images_per_s']:.1f} | "
              f"{t['images_per_s']:.1f} | {q['image_inference']:.2f} |")
        print(f"| {name} | texts/s, batch {r['infer_batch']} | {o['texts_per_s']:.1f} | "
              f"{t['texts_per_s']:.1f} | {q['text_inference']:.2f} |")

    report = {
        "threads": args.threads, "repeat": args.repeat, "results": results,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "command": "python benchmarks/model_vs_hf.py " + " ".join(sys.argv[1:]),
    }
    if not args.no_write:
        write_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
