#!/usr/bin/env python3
"""Time-to-accuracy of the book's 60-second demo (recipe "ch1-demo") on two CPU threads.

For each seed, ShapesWorld data is generated and a fresh tiny CLIP is trained from scratch with
the recipe, then evaluated zero-shot with the book's protocol: prompts "a photo of a {colour}
{shape}", N-way among the 16 held-out colour-shape combinations (on images of those
combinations), and 64-way among all combinations. The figures reported are medians over seeds.

Usage::

    python benchmarks/demo_training.py [--seeds 0 1 2] [--threads 2] [--recipe ch1-demo] [--eval-every 50]
    python benchmarks/demo_training.py --recipe ch1-demo ch7-lit --vary train --merge \
        --output clip_tutorial/weights/grids/lit_time_to_accuracy.json

With ``--eval-every K`` (the default is 50) the model is also evaluated every K steps on 500 fresh
held-out images, outside the timed training; the report then gives, per seed, the training time
at which held-out accuracy first reached 95% and 98%, and the median of those over seeds.

By default a seed replaces both the data seed and the training seed of the recipe (new data, a new
held-out split, a new initialisation and batch order). With ``--vary train`` only the training seed
changes and the data stay the recipe's: Chapter 7.4's LiT recipes need that, because the image tower
they start from was trained on the data (and held-out split) of data seed 0.

Writes data/benchmarks/demo_training.json (or ``--output``) and prints a markdown table. Given several
recipes, or ``--merge``, the file holds one report per recipe under ``"recipes"``, rewritten after each
recipe; ``--merge`` keeps the runs already in the file (measured with the same threads, ``--vary`` and
``--eval-every``) and replaces those of a recipe and seed measured again, so that recipes and seeds can be
added one invocation at a time (each recipe's median is then over all its runs).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

from _report import ROOT, write_report  # noqa: E402  (benchmarks/ is on sys.path when a script runs)

#: What a report of several recipes was measured with; --merge only combines runs that agree on these.
SETTINGS = ("threads", "vary", "eval_every")


def _seconds(value: float | None) -> str:
    return "not reached" if value is None or value == float("inf") else f"{value:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", nargs="+", default=["ch1-demo"], help="one or more recipe names")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "data" / "benchmarks" / "demo_training.json")
    parser.add_argument("--eval-every", type=int, default=50,
                        help="evaluate every this many steps to time the way to 95%% and 98%% (0: off)")
    parser.add_argument("--vary", choices=("all", "train"), default="all",
                        help="what a seed changes: data and training (all), or only the training seed (train)")
    parser.add_argument("--merge", action="store_true",
                        help="add these recipes to the reports already in --output instead of overwriting it")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    args.output = args.output.resolve()  # a path relative to the working folder, reported relative to the repository

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    machine = {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
               "torch": torch.__version__, "python": sys.version.split()[0]}
    several = args.merge or len(args.recipe) > 1
    settings = {k: getattr(args, k) for k in SETTINGS}
    reports = _earlier_reports(args.output, settings) if args.merge else {}
    for name in args.recipe:
        earlier = [r for r in reports.get(name, {}).get("runs", []) if r["seed"] not in args.seeds]
        report = _measure(name, args, earlier)
        if not several:
            if not args.no_write:
                write_report({**report, "machine": machine}, args.output)
            return 0
        reports[name] = report
        if not args.no_write:  # after each recipe, so that an interrupted run keeps what it measured
            write_report({**settings, "recipes": reports, "machine": machine}, args.output)
    return 0


def _earlier_reports(path: Path, settings: dict) -> dict:
    """The per-recipe reports already in ``path``; it must have been measured with the same settings."""
    if not path.is_file():
        return {}
    earlier = json.loads(path.read_text(encoding="utf-8"))
    if "recipes" not in earlier or any(earlier.get(k) != v for k, v in settings.items()):
        raise SystemExit(f"--merge: {path} was not written with {settings}; measure again without --merge")
    return earlier["recipes"]


def _measure(name: str, args: argparse.Namespace, earlier: list[dict]) -> dict:
    """Train recipe ``name`` once per seed, print a table and return its report (without the machine).

    ``earlier``: runs of this recipe measured before (other seeds), kept in the report and its median.
    """
    from dataclasses import replace

    from clip_tutorial.train.recipes import get_recipe, train_recipe

    recipe = get_recipe(name)
    runs = []
    for seed in args.seeds:
        if args.vary == "train":  # only the initialisation and the batch order change; the data stay
            trained = train_recipe(replace(recipe, train=replace(recipe.train, seed=seed)), device="cpu",
                                   progress=False, eval_every=args.eval_every or None)
        else:
            trained = train_recipe(recipe, device="cpu", progress=False, seed=seed,
                                   eval_every=args.eval_every or None)
        m = trained.metrics
        curve = [{"step": e["step"], "seconds": e["seconds"], "heldout_acc": e["heldout_acc"],
                  "all_acc": e["all_acc"]} for e in trained.history.evals]
        reached = {f"seconds_to_{int(100 * t)}": next((e["seconds"] for e in curve if e["heldout_acc"] >= t), None)
                   for t in (0.95, 0.98)}
        pairs_per_second = recipe.train.steps * recipe.train.batch_size / m["train_seconds"]
        total = m["data_seconds"] + m.get("tower_seconds", 0.0) + m["train_seconds"]
        runs.append({"seed": seed, **m, "total_seconds": total,
                     "pairs_per_second": pairs_per_second, **reached, "curve": curve})
        tower = f"image tower {m['tower_seconds']:.1f} s, " if "tower_seconds" in m else ""
        print(f"{recipe.name} seed {seed}: data {m['data_seconds']:.1f} s, {tower}training {m['train_seconds']:.1f} s, "
              f"held-out {m['heldout_acc']:.1%}, all-64 {m['all_acc']:.1%}, {pairs_per_second:.0f} pairs/s, "
              f"95% held-out at {_seconds(reached['seconds_to_95'])}, 98% at {_seconds(reached['seconds_to_98'])}",
              flush=True)

    runs = sorted(earlier + runs, key=lambda r: r["seed"])
    keys = ("data_seconds", "train_seconds", "total_seconds", "heldout_acc", "all_acc", "pairs_per_second")
    keys += ("tower_seconds",) if all("tower_seconds" in r for r in runs) else ()
    median = {k: statistics.median(r[k] for r in runs) for k in keys}
    for k in ("seconds_to_95", "seconds_to_98"):  # a run that never got there counts as infinitely slow
        median[k] = statistics.median(r[k] if r[k] is not None else float("inf") for r in runs)
    report = {"recipe": recipe.name, "threads": args.threads, "seeds": [r["seed"] for r in runs], "runs": runs,
              "median": median}
    print()
    print("| seed | data (s) | training (s) | held-out 16-way | all 64-way | pairs/s | 95% at (s) | 98% at (s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in runs + [{"seed": "median", **median}]:
        print(f"| {r['seed']} | {r['data_seconds']:.1f} | {r['train_seconds']:.1f} | {r['heldout_acc']:.1%} "
              f"| {r['all_acc']:.1%} | {r['pairs_per_second']:.0f} | {_seconds(r['seconds_to_95'])} "
              f"| {_seconds(r['seconds_to_98'])} |")
    return report


if __name__ == "__main__":
    sys.exit(main())
