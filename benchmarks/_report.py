"""What every benchmark script does with its figures: write them as JSON and say where."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def write_report(report: dict[str, Any], path: Path) -> None:
    """Write ``report`` to ``path`` as indented UTF-8 JSON (folders created) and print the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path}")


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Print a Markdown table (after a blank line), ready to paste into the README."""
    print()
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def machine_info(**versions: str) -> dict[str, Any]:
    """The machine and software a benchmark ran on: processor, CPU count, Python and the given versions."""
    import os
    import platform
    import sys

    return {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(), **versions,
            "python": sys.version.split()[0]}
