#!/usr/bin/env python3
"""Time every notebook of the book, each in a fresh kernel, on two CPU threads.

The notebooks are taken from ``_toc.yml`` in reading order. Each is executed from top to
bottom with nbclient, ``--repeat`` times, in a kernel started for that run (kernel start-up
is part of the time, as it is for a reader). PyTorch is held to two threads and, where the
operating system allows it, to two cores, which is what a modest laptop or a free Colab
runtime offers.

Prints a markdown table of the median seconds per notebook and the total, flags every
notebook slower than ``--flag-seconds`` (90 s), and writes the figures, the slowest cells of
each notebook and a description of the machine to ``data/benchmarks/notebook_times.json``.

Usage::

    .venv/bin/python benchmarks/notebook_times.py
    .venv/bin/python benchmarks/notebook_times.py --repeat 3
    .venv/bin/python benchmarks/notebook_times.py --only 01_clip   # substring or glob

Exit status 1 if a notebook fails to run.
"""
from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import os
import platform
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

from _report import ROOT, write_report  # noqa: E402  (benchmarks/ is on sys.path when a script runs)
DEFAULT_OUTPUT = ROOT / "data" / "benchmarks" / "notebook_times.json"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def toc_notebooks(root: Path = ROOT) -> list[Path]:
    """The notebooks listed in ``_toc.yml``, in reading order."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    entries: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            for key in ("root", "file"):
                if key in node:
                    entries.append(str(node[key]))
            for value in node.values():
                if isinstance(value, (dict, list)):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    notebooks = []
    for entry in entries:
        path = root / entry
        if path.suffix != ".ipynb":
            path = path.with_name(path.name + ".ipynb")
        if path.is_file():
            notebooks.append(path)
    return notebooks


def matches(path: Path, pattern: str | None) -> bool:
    if not pattern:
        return True
    rel = str(path.relative_to(ROOT))
    return pattern in rel or fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(path.name, pattern)


def limit_cpu(threads: int) -> str:
    """Limit this process and every kernel it starts to ``threads`` threads and cores."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    if hasattr(os, "sched_getaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) > threads:
            os.sched_setaffinity(0, set(cores[:threads]))  # inherited by the kernels
        return f"{min(len(cores), threads)} cores ({', '.join(map(str, sorted(os.sched_getaffinity(0))))})"
    return f"{os.cpu_count()} cores (affinity not settable here)"


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    parse = dt.datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def run_notebook(path: Path, cell_timeout: int) -> tuple[float, list[dict]]:
    """Execute ``path`` in a fresh kernel; return wall seconds and per-cell timings."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=cell_timeout,
        kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=True,
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    cells = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        timing = cell.metadata.get("execution", {})
        took = _seconds(timing.get("iopub.execute_input"), timing.get("shell.execute_reply"))
        first_line = next((line for line in cell.source.splitlines() if line.strip()), "")
        cells.append({"cell": index, "seconds": took, "first_line": first_line[:80]})
    return seconds, cells


def machine_description(cpu: str, threads: int) -> dict:
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": version("torch"),
        "clip-tutorial": version("clip-tutorial"),
        "cpu_count": os.cpu_count(),
        "cpu_limit": cpu,
        "threads": threads,
    }


def markdown_table(rows: list[dict], total: float, flag_seconds: float) -> str:
    lines = [
        "| Notebook | Median (s) | Runs (s) | |",
        "| --- | ---: | --- | --- |",
    ]
    for row in rows:
        if row["error"]:
            lines.append(f"| `{row['notebook']}` | — | — | FAILED |")
            continue
        runs = ", ".join(f"{s:.1f}" for s in row["runs_s"])
        flag = f"over {flag_seconds:g} s" if row["flagged"] else ""
        lines.append(f"| `{row['notebook']}` | {row['median_s']:.1f} | {runs} | {flag} |")
    lines.append(f"| **Total** | **{total:.1f}** | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per notebook (default 1)")
    parser.add_argument("--only", metavar="PATTERN", help="only notebooks whose path contains or matches PATTERN")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads and cores (default 2)")
    parser.add_argument("--flag-seconds", type=float, default=90.0, help="flag notebooks slower than this")
    parser.add_argument("--cell-timeout", type=int, default=600, help="seconds allowed per cell")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the JSON")
    parser.add_argument("--no-write", action="store_true", help="print the table, write no JSON")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    notebooks = [p for p in toc_notebooks() if matches(p, args.only)]
    if not notebooks:
        print(f"no notebook in _toc.yml matches {args.only!r}", file=sys.stderr)
        return 2
    cpu = limit_cpu(args.threads)
    print(f"Timing {len(notebooks)} notebook(s), {args.repeat} run(s) each, {args.threads} threads, {cpu}",
          file=sys.stderr)

    rows = []
    failed = False
    for path in notebooks:
        rel = str(path.relative_to(ROOT))
        runs, cells, error = [], [], None
        for run in range(1, args.repeat + 1):
            try:
                seconds, cells = run_notebook(path, args.cell_timeout)
            except Exception as exc:  # noqa: BLE001 - report and go on with the next notebook
                error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
                print(f"  {rel}: FAILED ({error})", file=sys.stderr)
                failed = True
                break
            runs.append(seconds)
            print(f"  {rel}: run {run}/{args.repeat} {seconds:.1f} s", file=sys.stderr)
        median = statistics.median(runs) if runs and not error else None
        slowest = sorted((c for c in cells if c["seconds"] is not None), key=lambda c: -c["seconds"])[:3]
        rows.append({
            "notebook": rel,
            "runs_s": [round(s, 2) for s in runs],
            "median_s": round(median, 2) if median is not None else None,
            "flagged": median is not None and median > args.flag_seconds,
            "slowest_cells": [{**c, "seconds": round(c["seconds"], 2)} for c in slowest],
            "error": error,
        })

    total = sum(row["median_s"] for row in rows if row["median_s"] is not None)
    table = markdown_table(rows, total, args.flag_seconds)
    print(table)
    flagged = [row["notebook"] for row in rows if row["flagged"]]
    if flagged:
        print(f"\nSlower than {args.flag_seconds:g} s: {', '.join(flagged)}")

    if not args.no_write:
        result = {
            "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            "only": args.only,
            "repeat": args.repeat,
            "flag_seconds": args.flag_seconds,
            "machine": machine_description(cpu, args.threads),
            "notebooks": rows,
            "total_median_s": round(total, 2),
            "flagged": flagged,
            "markdown": table,
        }
        write_report(result, args.output)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
