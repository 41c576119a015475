"""``python -m clip_tutorial.generate --recipe NAME --out DIR``: train a generator recipe and write its card.

Explained in Chapter 7.5. Trains one of :data:`clip_tutorial.generate.recipes.GENERATOR_RECIPES`,
measures it (a denoiser with the ``ch7-judge`` judge: the shipped one, else trained first) and
writes ``DIR/model.safetensors`` with ``DIR/model.json``, whose ``metadata`` is the model card.
Exit codes: 0 on success, 2 for a mistake in the command line.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

JUDGE = "ch7-judge"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clip_tutorial.generate",
                                     description="Train one of the book's generator recipes (Chapter 7.5 and 7.6) "
                                                 "and save it as a safetensors file with a model card.")
    parser.add_argument("--recipe", metavar="NAME", help="the recipe to train (see --list)")
    parser.add_argument("--list", action="store_true", help="list the recipes and exit")
    parser.add_argument("--out", metavar="DIR", type=Path, help="output folder (default: runs/NAME)")
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (``sys.argv[1:]`` when omitted); returns the exit code (Chapter 7.5)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    from clip_tutorial.generate.recipes import GENERATOR_RECIPES

    if args.list:
        for name, recipe in GENERATOR_RECIPES.items():
            print(f"{name:14s} {recipe.steps:6d} steps  {recipe.description}")
        return 0
    if args.recipe not in GENERATOR_RECIPES:
        print(f"{parser.prog}: error: --recipe: expected one of {', '.join(GENERATOR_RECIPES)}, got {args.recipe!r}",
              file=sys.stderr)
        return 2
    import torch

    from clip_tutorial.core import __version__
    from clip_tutorial.generate.shipped import load_generator, save_generator
    from clip_tutorial.generate.trainer import train_generator

    recipe = GENERATOR_RECIPES[args.recipe]
    judge = None if recipe.kind == "judge" else load_generator(JUDGE, progress=not args.no_progress)
    trained = train_generator(recipe, judge=None if judge is None else judge.model, progress=not args.no_progress)
    card = {"recipe": recipe.name, "description": recipe.description, "metrics": trained.metrics,
            "judge": None if judge is None else {"recipe": JUDGE, "sha256": judge.card.get("sha256")},
            "command": f"python -m clip_tutorial.generate --recipe {recipe.name}",
            "versions": {"clip_tutorial": __version__, "torch": torch.__version__},
            "torch_threads": torch.get_num_threads()}
    out = args.out if args.out is not None else Path("runs") / recipe.name
    weights = save_generator(trained, out / "model", card)
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in trained.metrics.items()}
    print(f"saved {weights} {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
