#!/usr/bin/env python3
"""Train a grid of the book's recipes over several seeds and record their zero-shot accuracy.

Two grids of Chapter 7 are too long to train in a notebook, so the pages read their figures from
the files this script writes:

* ``siglip``: CLIP's softmax loss against SigLIP's sigmoid loss at batch sizes 16 to 1,024, every run
  seeing ch1-demo's number of pairs (recipes ``ch7-clip-b*`` and ``ch7-siglip-b*``), with the peak memory
  of one loss evaluation (forward and backward) at that batch size;
* ``align``: caption noise 0-60% against the number of training pairs (recipes ``ch7-align-*``).

Each run is ``train_recipe(name, seed=s)``, the same as
``python -m clip_tutorial.train --recipe NAME --seed S``, evaluated with the book's protocol. Rows are
appended to the report as they finish, and runs already in it are skipped, so an interrupted grid resumes.

Usage::

    .venv/bin/python benchmarks/recipe_grid.py siglip --seeds 0 1 2 --threads 1
    .venv/bin/python benchmarks/recipe_grid.py align --seeds 0 1 --threads 1

Writes ``clip_tutorial/weights/grids/siglip_batch.json`` or ``.../align_noise.json``: the results ship with the
package (read by :func:`clip_tutorial.train.shipped.shipped_grid`), so the pages find them after a plain install.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

from _report import ROOT, machine_info, write_report  # noqa: E402  (benchmarks/ is on sys.path when a script runs)

GRIDS = {"siglip": "siglip_batch.json", "align": "align_noise.json"}


def grid_recipes(grid: str) -> list[str]:
    """The recipe names of one grid, in the order they are trained."""
    from clip_tutorial.train.recipes import ALIGN_DATA, ALIGN_NOISE, SWEEP_BATCHES

    if grid == "siglip":
        return [f"ch7-{loss}-b{b}" for b in SWEEP_BATCHES for loss in ("clip", "siglip")]
    return [f"ch7-align-n{noise}-d{n // 1000}k" for n in ALIGN_DATA for noise in ALIGN_NOISE]


def loss_peak_bytes(batch: int, loss: str, dim: int = 64) -> int:
    """Peak bytes allocated while one loss is evaluated and differentiated on ``batch`` pairs of features.

    Measured with PyTorch's profiler on CPU: the running sum of every allocation and release, in time order,
    each counted once (``self_cpu_memory_usage``; the inclusive figure would count an operator's allocations
    again in every operator that calls it).
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    from clip_tutorial.objectives.loss import clip_loss, siglip_loss

    gen = torch.Generator().manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(batch, dim, generator=gen), dim=-1).requires_grad_(True)
    text = torch.nn.functional.normalize(torch.randn(batch, dim, generator=gen), dim=-1).requires_grad_(True)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        logits = 10 * image @ text.t()
        value = siglip_loss(logits - 10) if loss == "siglip" else clip_loss(logits)
        value.backward()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    current = peak = 0
    for event in events:
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def run_one(name: str, seed: int) -> dict:
    """Train recipe ``name`` with ``seed`` and return its row of the report."""
    from clip_tutorial.train.recipes import get_recipe, train_recipe

    recipe = get_recipe(name)
    started = time.perf_counter()
    trained = train_recipe(name, device="cpu", progress=False, seed=seed)
    bias = trained.model.logit_bias
    row = {"recipe": name, "seed": seed, "loss": recipe.train.loss, "batch_size": recipe.train.batch_size,
           "steps": recipe.train.steps, "n_train": recipe.n_train, "caption_noise": recipe.caption_noise,
           "heldout_acc": trained.metrics["heldout_acc"], "all_acc": trained.metrics["all_acc"],
           "train_seconds": trained.metrics["train_seconds"], "wall_seconds": time.perf_counter() - started,
           "final_loss": trained.history.loss[-1], "final_temperature": trained.history.temperature[-1],
           "final_bias": float(bias) if bias is not None else None}
    if name.startswith(("ch7-clip-", "ch7-siglip-")):
        row["loss_peak_bytes"] = loss_peak_bytes(recipe.train.batch_size, recipe.train.loss)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", choices=sorted(GRIDS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="PyTorch CPU threads per run (default 1)")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--memory-only", action="store_true",
                        help="re-measure the loss memory of the rows already in the report, without training")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    path = args.output or ROOT / "clip_tutorial" / "weights" / "grids" / GRIDS[args.grid]
    report = json.loads(path.read_text()) if path.is_file() else {"grid": args.grid, "rows": []}
    report.update(command=f"python benchmarks/recipe_grid.py {args.grid} --threads {args.threads}",
                  machine=machine_info(torch=torch.__version__), threads=args.threads)
    if args.memory_only:  # measure the loss's memory again for every row, train nothing
        for row in report["rows"]:
            if "loss_peak_bytes" in row:
                row["loss_peak_bytes"] = loss_peak_bytes(row["batch_size"], row["loss"])
        write_report(report, path)
        return
    done = {(r["recipe"], r["seed"]) for r in report["rows"]}
    for seed in args.seeds:
        for name in grid_recipes(args.grid):
            if (name, seed) in done:
                continue
            row = run_one(name, seed)
            row["date"] = dt.date.today().isoformat()
            print(json.dumps(row), flush=True)
            report["rows"].append(row)
            write_report(report, path)


if __name__ == "__main__":
    main()
