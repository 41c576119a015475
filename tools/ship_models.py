#!/usr/bin/env python3
"""Regenerate the pretrained tiny models that ship inside the package (``clip_tutorial/weights/shipped/``).

Each model is trained from scratch by the same command a reader would type::

    python -m clip_tutorial.train --recipe NAME --out TMP --no-progress

which writes ``TMP/model.safetensors`` and ``TMP/model.json`` (the model card: recipe, settings, data
seed, metrics, command, versions, and the weights' SHA-256). The two files are checked (the SHA-256
matches, the card names the recipe) and copied to ``clip_tutorial/weights/shipped/NAME.safetensors`` and
``NAME.json``. Training runs with ``--threads`` CPU threads (default 2, the book's reference
machine), recorded in the card under ``"shipped"``.

Usage::

    python tools/ship_models.py                      # every shipped model
    python tools/ship_models.py ch3-best --threads 2 # only some

Then run ``pytest tests/test_shipped.py``, which re-evaluates every shipped checkpoint against its card.

The generators of Chapter 7 (``GENERATORS``) ship the same way, trained by
``python -m clip_tutorial.generate --recipe NAME`` and copied into ``clip_tutorial/weights/generators/``;
``pytest tests/test_generate_recipes.py`` re-evaluates them against their cards.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "clip_tutorial" / "weights" / "shipped"
#: The recipes whose trained models ship with the package.
SHIPPED = ("ch1-demo", "ch1-scenes", "ch3-best", "ch6-one-style", "ch6-many-styles", "ch6-bias-50",
           "ch6-bias-90", "ch6-bias-99", "ch6-typo", "ch6-typo-control",
           "ch6-negclip", "ch7-siglip-b256", "ch7-filip", "ch7-filip-scenes", "ch7-lit", "ch7-lit-supervised")
MAX_BYTES = 2_500_000  # a shipped checkpoint must stay small enough to live in the git repository
#: The generator recipes (Chapters 7.5 and 7.6) whose models ship in clip_tutorial/weights/generators/,
#: trained by ``python -m clip_tutorial.generate``; the judge first, since it measures the others.
GENERATORS = ("ch7-judge", "ch7-decoder", "ch7-sd-pooled", "ch7-sd-tokens")


def ship(name: str, threads: int, module: str = "clip_tutorial.train", folder: Path = WEIGHTS) -> dict:
    """Train recipe ``name`` with the command line ``python -m module`` and copy its checkpoint into ``folder``."""
    sys.path.insert(0, str(ROOT))
    from clip_tutorial.core.storage import sha256_file

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory(prefix=f"ship-{name}-") as tmp:
        command = [sys.executable, "-m", module, "--recipe", name, "--out", tmp, "--no-progress"]
        print("$", " ".join(command[1:]), flush=True)
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, env=env, check=True)
        seconds = time.perf_counter() - started
        weights, card_path = Path(tmp) / "model.safetensors", Path(tmp) / "model.json"
        description = json.loads(card_path.read_text(encoding="utf-8"))
        if description["sha256"] != sha256_file(weights):
            raise RuntimeError(f"{name}: the sha256 in {card_path} does not match {weights}")
        if description["metadata"].get("recipe") != name:
            raise RuntimeError(f"{name}: the card names recipe {description['metadata'].get('recipe')!r}")
        size = weights.stat().st_size
        if size > MAX_BYTES:
            raise RuntimeError(f"{name}: {size:,} bytes is too large to ship (limit {MAX_BYTES:,})")
        description["metadata"]["shipped"] = {"tool": "tools/ship_models.py", "torch_threads": threads}
        # The folder was temporary: the card records the command a reader types to train the model again.
        description["metadata"]["command"] = f"python -m {module} --recipe {name}"
        folder.mkdir(exist_ok=True)
        shutil.copyfile(weights, folder / f"{name}.safetensors")
        (folder / f"{name}.json").write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    metrics = description["metadata"]["metrics"]
    scores = (f"held-out {metrics['heldout_acc']:.2%}, all {metrics['all_acc']:.2%}" if "heldout_acc" in metrics
              else ", ".join(f"{k} {v}" for k, v in metrics.items() if k not in ("train_seconds", "final_loss")))
    print(f"{name}: {size / 1e6:.2f} MB, {scores}, training {metrics['train_seconds']:.0f} s ({seconds:.0f} s in all)",
          flush=True)
    return {"name": name, "bytes": size, **metrics}


def ship_generator(name: str, threads: int) -> dict:
    """Train generator recipe ``name`` with ``python -m clip_tutorial.generate`` and copy it into the package."""
    sys.path.insert(0, str(ROOT))
    from clip_tutorial.generate.shipped import GENERATORS_DIR

    return ship(name, threads, module="clip_tutorial.generate", folder=GENERATORS_DIR)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=list(SHIPPED) + list(GENERATORS),
                        help=f"recipes to ship (default: {' '.join(SHIPPED + GENERATORS)})")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for training (default 2)")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(SHIPPED) - set(GENERATORS))
    if unknown:
        parser.error(f"expected names among {', '.join(SHIPPED)}, got {', '.join(unknown)} (add new ones to SHIPPED)")
    for name in args.names:
        (ship_generator if name in GENERATORS else ship)(name, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
