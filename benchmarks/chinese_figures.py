#!/usr/bin/env python3
"""What drawing every figure a second time, in Chinese, costs the book build (``_ext/zh_figures.py``).

Read from the last build (``make book``), so both figures come from the same run: each Chinese
drawing's PNG records in its report how long it took (translation, the two extra drawings that
find overlapping texts, and the PNG itself), and ``_build/book.log`` records how long each
notebook took to execute, Chinese drawings included. The script prints, per chapter and in all,
the number of figures, the seconds spent on their Chinese drawings and that time as a share of
the notebooks' execution time, with the median and the slowest drawing.

Usage::

    make book
    .venv/bin/python benchmarks/chinese_figures.py [--build _build] [--no-write]

Writes data/benchmarks/chinese_figures.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import re
import statistics
import sys
from pathlib import Path

from _report import ROOT, machine_info, print_table, write_report  # noqa: E402  (benchmarks/ is on sys.path)

DEFAULT_OUTPUT = ROOT / "data" / "benchmarks" / "chinese_figures.json"
EXECUTED = re.compile(r"^(\S+\.ipynb): Executed notebook in ([\d.]+) seconds", re.MULTILINE)


def _zh_figures():
    spec = importlib.util.spec_from_file_location("_zh_figures", ROOT / "_ext" / "zh_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def drawings(build: Path) -> dict[str, list[float]]:
    """Seconds of each Chinese drawing, per notebook (relative path), from the executed notebooks."""
    import base64

    import nbformat

    figures = _zh_figures()
    found: dict[str, list[float]] = {}
    for path in sorted((build / "jupyter_execute").rglob("*.ipynb")):
        seconds = []
        for cell in nbformat.read(path, as_version=4).cells:
            for output in cell.get("outputs", []):
                if output.get("metadata", {}).get(figures.EDITION_KEY) != "zh":
                    continue
                png = base64.b64decode(output["data"]["image/png"])
                chunks = figures.text_chunks(png)
                report = json.loads(chunks[figures.REPORT_KEY])
                if "seconds" not in report:
                    raise SystemExit(f"{path}: a Chinese drawing without its time; run `make book-fresh` first")
                seconds.append(float(report["seconds"]))
        found[path.relative_to(build / "jupyter_execute").as_posix()] = seconds
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, default=ROOT / "_build",
                        help="the book's build folder (default: this checkout's _build)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    log = (args.build / "book.log").read_text(encoding="utf-8")
    book = args.build.resolve().parent  # the notebooks' paths in the log are absolute
    executed = {Path(name).resolve().relative_to(book).as_posix(): float(s) for name, s in EXECUTED.findall(log)}
    if not executed:
        print(f"{args.build / 'book.log'} records no executed notebook: run `make book-fresh` first", file=sys.stderr)
        return 1
    per_notebook = drawings(args.build)
    chapters: dict[str, dict[str, float]] = {}
    every: list[float] = []
    for notebook, seconds in executed.items():
        chapter = notebook.split("/")[1]
        drawn = per_notebook.get(notebook, [])
        every += drawn
        row = chapters.setdefault(chapter, {"figures": 0, "drawing_s": 0.0, "executing_s": 0.0})
        row["figures"] += len(drawn)
        row["drawing_s"] += sum(drawn)
        row["executing_s"] += seconds
    total = {"figures": len(every), "drawing_s": sum(every), "executing_s": sum(executed.values()),
             "median_drawing_s": statistics.median(every) if every else None, "slowest_drawing_s": max(every, default=None)}
    rows = [[chapter, str(int(row["figures"])), f"{row['drawing_s']:.1f}", f"{row['executing_s']:.0f}",
             f"{100 * row['drawing_s'] / row['executing_s']:.1f}%"] for chapter, row in sorted(chapters.items())]
    rows.append(["all", str(total["figures"]), f"{total['drawing_s']:.1f}", f"{total['executing_s']:.0f}",
                 f"{100 * total['drawing_s'] / total['executing_s']:.1f}%"])
    print_table(["chapter", "figures", "Chinese drawings (s)", "notebooks executing (s)", "share"], rows)
    if every:
        print(f"\nmedian drawing {total['median_drawing_s']:.2f} s, slowest {total['slowest_drawing_s']:.2f} s")
    if not args.no_write:
        write_report({"machine": machine_info(), "chapters": chapters, "total": total}, DEFAULT_OUTPUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
