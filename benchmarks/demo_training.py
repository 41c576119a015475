#!/usr/bin/env python3
"""Time-to-accuracy of the book's 60-second demo (recipe "ch1-demo") on two CPU threads.

For each seed, ShapesWorld data is generated and a fresh tiny CLIP is trained from scratch with
the recipe, then evaluated zero-shot with the book's protocol: prompts "a photo of a {colour}
{shape}", N-way among the 16 held-out colour-shape combinations (on images of those
combinations), and 64-way among all combinations. The figures reported are medians over seeds.

Usage::

    python benchmarks/demo_training.py [--seeds 0 1 2] [--threads 2] [--recipe ch1-demo] [--eval-every 50]

With ``--eval-every K`` (the default is 50) the model is also evaluated every K steps on 500 fresh
held-out images, outside the timed training; the report then gives, per seed, the training time
at which held-out accuracy first reached 95% and 98%, and the median of those over seeds.

Writes data/benchmarks/demo_training.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from pathlib import Path

from _report import ROOT, write_report  # noqa: E402  (benchmarks/ is on sys.path when a script runs)


def _seconds(value: float | None) -> str:
    return "not reached" if value is None or value == float("inf") else f"{value:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="ch1-demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "data" / "benchmarks" / "demo_training.json")
    parser.add_argument("--eval-every", type=int, default=50,
                        help="evaluate every this many steps to time the way to 95%% and 98%% (0: off)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from clip_tutorial.train.recipes import get_recipe, train_recipe

    recipe = get_recipe(args.recipe)
    runs = []
    for seed in args.seeds:
        trained = train_recipe(recipe, device="cpu", progress=False, seed=seed, eval_every=args.eval_every or None)
        m = trained.metrics
        curve = [{"step": e["step"], "seconds": e["seconds"], "heldout_acc": e["heldout_acc"],
                  "all_acc": e["all_acc"]} for e in trained.history.evals]
        reached = {f"seconds_to_{int(100 * t)}": next((e["seconds"] for e in curve if e["heldout_acc"] >= t), None)
                   for t in (0.95, 0.98)}
        pairs_per_second = recipe.train.steps * recipe.train.batch_size / m["train_seconds"]
        runs.append({"seed": seed, **m, "total_seconds": m["data_seconds"] + m["train_seconds"],
                     "pairs_per_second": pairs_per_second, **reached, "curve": curve})
        print(f"seed {seed}: data {m['data_seconds']:.1f} s, training {m['train_seconds']:.1f} s, "
              f"held-out {m['heldout_acc']:.1%}, all-64 {m['all_acc']:.1%}, {pairs_per_second:.0f} pairs/s, "
              f"95% held-out at {_seconds(reached['seconds_to_95'])}, 98% at {_seconds(reached['seconds_to_98'])}",
              flush=True)

    keys = ("data_seconds", "train_seconds", "total_seconds", "heldout_acc", "all_acc", "pairs_per_second")
    median = {k: statistics.median(r[k] for r in runs) for k in keys}
    for k in ("seconds_to_95", "seconds_to_98"):  # a run that never got there counts as infinitely slow
        median[k] = statistics.median(r[k] if r[k] is not None else float("inf") for r in runs)
    report = {
        "recipe": recipe.name, "threads": args.threads, "seeds": args.seeds, "runs": runs, "median": median,
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "python": sys.version.split()[0]},
    }
    print()
    print("| seed | data (s) | training (s) | held-out 16-way | all 64-way | pairs/s | 95% at (s) | 98% at (s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in runs + [{"seed": "median", **median}]:
        print(f"| {r['seed']} | {r['data_seconds']:.1f} | {r['train_seconds']:.1f} | {r['heldout_acc']:.1%} "
              f"| {r['all_acc']:.1%} | {r['pairs_per_second']:.0f} | {_seconds(r['seconds_to_95'])} "
              f"| {_seconds(r['seconds_to_98'])} |")
    if not args.no_write:
        write_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
