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
    print(f"\nwrote {path.relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path}")
