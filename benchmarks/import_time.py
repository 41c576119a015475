#!/usr/bin/env python3
"""What ``import clip_tutorial`` costs on top of PyTorch, now and before the package became lazy layers.

Every figure comes from a fresh ``python -c`` process, as in a new notebook kernel, that imports torch
first and then times only what follows it, so PyTorch's own import (the same for every variant) is left
out: the time of ``import torch; import clip_tutorial`` minus that of ``import torch``. Three statements
are timed:

* **import**: ``import clip_tutorial``;
* **story names**: ``from clip_tutorial import CLIP, ShapesWorld, clip_loss, train_clip``, the names of
  Chapters 1 to 3, which the lazy root imports on first use;

each for two trees of the package:

* **now**: this checkout;
* **before**: the package at ``--before`` (default ``c0c574b``, the last commit before the layers, whose
  root imported every module eagerly), extracted with ``git archive`` into a temporary folder that is put
  first on ``PYTHONPATH``.

The variants run in turn, ``--repeats`` rounds after one warm-up round (which also writes the bytecode
caches); the table gives medians. Each process also reports which heavy libraries the statement left in
``sys.modules`` and how many modules it added.

Usage::

    .venv/bin/python benchmarks/import_time.py [--repeats 11] [--before c0c574b] [--no-write]

Writes data/benchmarks/import_time.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from _report import ROOT, machine_info, print_table, write_report  # noqa: E402  (benchmarks/ is on sys.path when a script runs)

HEAVY = ("matplotlib", "sklearn", "scipy", "ipywidgets", "IPython", "transformers", "pandas", "PIL", "safetensors")
STATEMENTS = {
    "import": "import clip_tutorial",
    "story names": "from clip_tutorial import CLIP, ShapesWorld, clip_loss, train_clip",
}
_CHILD = """
import json, sys, time
started = time.perf_counter()
import torch
torch_done = time.perf_counter()
modules_before = set(sys.modules)
{statement}
done = time.perf_counter()
import clip_tutorial
added = set(sys.modules) - modules_before
print(json.dumps({{"torch": torch_done - started, "package": done - torch_done, "file": clip_tutorial.__file__,
                  "modules_added": len(added), "heavy": sorted(m for m in {heavy!r} if m in added)}}))
"""


def extract(commit: str, into: Path) -> Path:
    """The ``clip_tutorial`` folder of ``commit``, written under ``into``; returns ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit, "clip_tutorial"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12 and later
            tar.extractall(into, filter="data")
        else:
            tar.extractall(into)
    return into


def measure(tree: Path, statement: str, threads: int) -> dict:
    """One fresh process on ``tree``: seconds for torch and for ``statement`` after it, and what it loaded."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    code = _CHILD.format(statement=statement, heavy=HEAVY)
    result = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, check=True, capture_output=True,
                            text=True)
    run = json.loads(result.stdout.strip().splitlines()[-1])
    if not Path(run["file"]).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"imported {run['file']}, not the package under {tree}")
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--before", default="c0c574b", help="the commit to compare with (default c0c574b)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "data" / "benchmarks" / "import_time.json")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    with tempfile.TemporaryDirectory(prefix="clip_tutorial_before_") as scratch:
        trees = {"before": extract(args.before, Path(scratch)), "now": ROOT}
        variants = [(tree, what) for tree in trees for what in STATEMENTS]
        runs: dict[tuple[str, str], list[dict]] = {v: [] for v in variants}
        for round_ in range(args.repeats + 1):  # round 0 warms up and is not counted
            for tree, what in variants:
                run = measure(trees[tree], STATEMENTS[what], args.threads)
                if round_:
                    runs[tree, what].append(run)
            print(f"round {round_}/{args.repeats}" + (" (warm-up)" if not round_ else ""), flush=True)

    results = []
    for (tree, what), samples in runs.items():
        seconds = [r["package"] for r in samples]
        results.append({
            "tree": tree, "commit": args.before if tree == "before" else "working tree",
            "statement": STATEMENTS[what], "label": what, "median_ms": 1000 * statistics.median(seconds),
            "min_ms": 1000 * min(seconds), "max_ms": 1000 * max(seconds),
            "torch_median_ms": 1000 * statistics.median(r["torch"] for r in samples),
            "modules_added": samples[-1]["modules_added"], "heavy_modules": samples[-1]["heavy"],
            "runs_ms": [round(1000 * s, 2) for s in seconds],
        })
    by = {(r["tree"], r["label"]): r for r in results}
    ratios = {what: by["before", what]["median_ms"] / by["now", what]["median_ms"] for what in STATEMENTS}

    print_table(["tree", "statement (after `import torch`)", "median (ms)", "min–max (ms)", "modules added",
                 "heavy modules loaded"],
                [[f"{r['tree']} ({r['commit']})", f"`{r['statement']}`", f"{r['median_ms']:.0f}",
                  f"{r['min_ms']:.0f}–{r['max_ms']:.0f}", str(r["modules_added"]),
                  ", ".join(r["heavy_modules"]) or "none"] for r in results])
    print()
    for what, ratio in ratios.items():
        print(f"{what}: before / now = {ratio:.1f}x")
    print(f"import torch alone (median over all processes): "
          f"{statistics.median(r['torch_median_ms'] for r in results):.0f} ms")

    report = {"repeats": args.repeats, "threads": args.threads, "before": args.before, "heavy": list(HEAVY),
              "results": results, "ratio_before_over_now": ratios,
              "machine": machine_info(torch=_torch_version())}
    if not args.no_write:
        write_report(report, args.output)
    return 0


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    sys.exit(main())
