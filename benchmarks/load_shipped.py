#!/usr/bin/env python3
"""How fast the shipped tiny models load, each in a fresh Python process, as in a new notebook kernel.

For every checkpoint in ``clip_tutorial/weights/shipped/`` a fresh ``python -c`` process times two things:

* **load**: ``clip_tutorial.train.shipped.load_shipped(name)`` alone, the package already imported
  (reading the card, checking the SHA-256, building the model, loading the weights);
* **import + load**: ``import clip_tutorial`` (which imports torch) and then the same load, from
  the first line of the process on (the interpreter's own start-up excluded).

The figures are medians over ``--repeats`` fresh processes. The reference, measured beside them,
is what the shipped file saves: the training time recorded in the model card.

Usage::

    python benchmarks/load_shipped.py [--repeats 5] [--threads 2] [--no-write]

Writes data/benchmarks/load_shipped.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _report import ROOT, machine_info, print_table, write_report  # noqa: E402  (benchmarks/ is on sys.path when a script runs)

_CHILD = """
import json, sys, time
started = time.perf_counter()
import clip_tutorial
from clip_tutorial.train.shipped import load_shipped
imported = time.perf_counter()
trained = load_shipped(sys.argv[1])
done = time.perf_counter()
print(json.dumps({"load": done - imported, "import_and_load": done - started}))
"""


def _measure(name: str, threads: int) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    result = subprocess.run([sys.executable, "-c", _CHILD, name], cwd=ROOT, env=env, check=True,
                            capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _print_table(models: list[dict]) -> None:
    print_table(["model", "size (MB)", "load (ms)", "import + load (s)", "training in the card (s)", "load vs training"],
                [[m["name"], f"{m['bytes'] / 1e6:.2f}", f"{m['load_seconds'] * 1000:.0f}",
                  f"{m['import_and_load_seconds']:.2f}", f"{m['card_train_seconds']:.0f}",
                  f"{m['speedup_vs_training']:.0f}x faster"] for m in models])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "data" / "benchmarks" / "load_shipped.json")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    import torch

    from clip_tutorial.train.shipped import list_shipped, shipped_card, shipped_path

    models = []
    for name in list_shipped():
        runs = [_measure(name, args.threads) for _ in range(args.repeats)]
        card = shipped_card(name)
        load = statistics.median(r["load"] for r in runs)
        total = statistics.median(r["import_and_load"] for r in runs)
        train_seconds = card["metrics"]["train_seconds"]
        models.append({"name": name, "bytes": shipped_path(name).stat().st_size, "load_seconds": load,
                       "import_and_load_seconds": total, "card_train_seconds": train_seconds,
                       "speedup_vs_training": train_seconds / load, "runs": runs})
        print(f"{name}: load {load * 1000:.0f} ms, import + load {total:.2f} s (training took {train_seconds:.0f} s)",
              flush=True)

    report = {
        "repeats": args.repeats, "threads": args.threads, "models": models,
        "machine": machine_info(torch=torch.__version__),
    }
    _print_table(models)
    if not args.no_write:
        write_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
