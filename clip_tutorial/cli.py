"""The command line that trains a recipe: ``python -m clip_tutorial.train --recipe ch1-demo``.

It trains one of :data:`clip_tutorial.train.recipes.RECIPES`, optionally saving the training state every
few steps so that ``--resume`` can continue an interrupted run, measures the zero-shot accuracy,
and writes ``<out>/model.safetensors`` with its description ``<out>/model.json``, whose
``metadata`` is the model card: the recipe, the training configuration, the data seed, the
measured metrics and the versions that produced it (the SHA-256 of the weights sits beside it).

Launched by ``torchrun`` (``torchrun --nproc_per_node=2 --standalone -m clip_tutorial.train ...``)
it trains on that many processes: each builds the same data, joins the process group
(:func:`clip_tutorial.objectives.distributed.setup_distributed`, ``gloo`` on the CPU, ``nccl`` on GPUs) and
runs :func:`clip_tutorial.train.train_clip`, which splits every batch between them; only rank 0
shows progress, prints and writes files, and the model card records the number of processes.

Explained in Chapter 3.2 (and Chapter 3.4 for ``torchrun``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser"]

_STATES = "checkpoints"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m clip_tutorial.train``."""
    parser = argparse.ArgumentParser(
        prog="python -m clip_tutorial.train",
        description="Train one of the book's CLIP recipes on ShapesWorld and save it as a safetensors checkpoint "
                    "with a model card.",
        epilog="Under torchrun (e.g. 'torchrun --nproc_per_node=2 --standalone -m clip_tutorial.train --recipe "
               "ch1-demo') every batch is split between the processes (gloo on the CPU, nccl on GPUs); the batch "
               "size must be divisible by their number, and only rank 0 writes files.",
    )
    parser.add_argument("--recipe", metavar="NAME", help="the recipe to train (see --list)")
    parser.add_argument("--list", action="store_true", help="list the recipes and exit")
    parser.add_argument("--out", metavar="DIR", type=Path,
                        help="output folder (default: runs/NAME); receives model.safetensors and model.json")
    parser.add_argument("--steps", metavar="N", type=_positive_int, help="override the recipe's number of steps")
    parser.add_argument("--n-train", metavar="N", type=_positive_int,
                        help="override the recipe's number of training pairs (for short runs)")
    parser.add_argument("--seed", metavar="S", type=_seed, help="override the data seed and the training seed")
    parser.add_argument("--device", metavar="D", choices=("cpu", "cuda", "mps"),
                        help="cpu, cuda or mps (default: the best available)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="override the recipe's precision")
    parser.add_argument("--checkpoint-every", metavar="N", type=_positive_int,
                        help=f"save the training state to DIR/{_STATES}/ every N steps")
    parser.add_argument("--resume", action="store_true",
                        help=f"continue from the latest training state in DIR/{_STATES}/")
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    return parser


class _UsageError(Exception):
    """A mistake in the command line, reported with exit code 2."""


def _writable_folder(out: Path) -> Path:
    """Create ``out`` if needed and prove it can be written to, before any time is spent training."""
    if out.exists() and not out.is_dir():
        raise _UsageError(f"--out: expected a folder, got the existing file '{out}'")
    probe = out / f".write-test-{os.getpid()}"  # one per process: torchrun's processes probe at once
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise _UsageError(f"--out: cannot write to the folder '{out}' ({err.strerror or err}); "
                          "expected a writable folder") from err
    return out


def _model_card(trained: Any, args: argparse.Namespace, device: Any, argv: Sequence[str],
                world_size: int) -> dict[str, Any]:
    import torch

    from clip_tutorial.core import __version__

    recipe, history = trained.recipe, trained.history
    return {
        "recipe": recipe.name,
        "description": recipe.description,
        "recipe_settings": asdict(recipe),
        "train_config": asdict(recipe.train),
        "data_seed": recipe.data_seed,
        "train_seed": recipe.train.seed,
        "steps": recipe.train.steps,
        "metrics": trained.metrics,
        "final_loss": history.loss[-1] if history.loss else None,
        "device": str(device),
        "world_size": world_size,
        "resumed": bool(args.resume),
        "command": (f"torchrun --nproc_per_node={world_size} -m" if world_size > 1 else "python -m")
                   + " clip_tutorial.train " + " ".join(argv),
        "versions": {"clip_tutorial": __version__, "torch": torch.__version__},
        "torch_threads": torch.get_num_threads(),
    }


def _run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from clip_tutorial.weights.checkpoints import save_checkpoint
    from clip_tutorial.core.device import get_device
    from clip_tutorial.objectives.distributed import cleanup, setup_distributed
    from clip_tutorial.train.recipes import RECIPES, train_recipe
    from clip_tutorial.train.state import latest_training_state

    if args.list:
        for name, recipe in RECIPES.items():
            print(f"{name:16s} {recipe.train.steps:6d} steps  {recipe.description}")
        return 0
    if args.recipe is None:
        raise _UsageError(f"--recipe: expected a recipe name, one of {', '.join(sorted(RECIPES))} (or --list)")
    if args.recipe not in RECIPES:
        raise _UsageError(f"--recipe: unknown recipe {args.recipe!r}; expected one of {', '.join(sorted(RECIPES))}")
    recipe = RECIPES[args.recipe]
    if args.steps is not None:
        recipe = replace(recipe, train=replace(recipe.train, steps=args.steps,
                                               warmup_steps=min(recipe.train.warmup_steps, args.steps)))
    if args.precision is not None:
        recipe = replace(recipe, train=replace(recipe.train, precision=args.precision))
    if args.n_train is not None:
        recipe = replace(recipe, n_train=args.n_train)
    try:
        device = get_device(args.device)
    except ValueError as err:
        raise _UsageError(f"--device: {err}") from err
    world = _torchrun_world_size()
    if world > 1 and device.type not in ("cpu", "cuda"):
        raise _UsageError(f"--device: training on {world} processes needs 'cpu' (gloo) or 'cuda' (nccl), got {device}")
    out = _writable_folder(args.out if args.out is not None else Path("runs") / recipe.name)
    states = out / _STATES
    resume_from = None
    if args.resume:
        resume_from = latest_training_state(states)
        if resume_from is None:
            raise _UsageError(f"--resume: expected a training state in '{states}', found none "
                              "(train with --checkpoint-every N first)")
    rank = 0
    try:
        if world > 1:  # launched by torchrun: join the others (every rank builds the same data below)
            rank, world, device = setup_distributed("nccl" if device.type == "cuda" else "gloo")
        trained = train_recipe(recipe, device=device, progress=not args.no_progress and rank == 0, seed=args.seed,
                               checkpoint_every=args.checkpoint_every,
                               checkpoint_dir=states if args.checkpoint_every else None, resume_from=resume_from)
    except FloatingPointError as err:
        print(f"error: training stopped: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # e.g. resuming a state saved with other settings
        raise _UsageError(str(err)) from err
    finally:
        cleanup()
    if rank != 0:  # the processes end with identical models: rank 0 saves the one copy
        return 0
    card = _model_card(trained, args, device, argv, world)
    weights = save_checkpoint(trained.model, out / "model", tokenizer=trained.tokenizer, metadata=card)
    (out / "history.json").write_text(json.dumps(trained.history.to_dict()) + "\n", encoding="utf-8")
    metrics = ", ".join(f"{k}={v:.3f}" for k, v in trained.metrics.items() if k.endswith("_acc"))
    print(f"saved {weights} ({metrics})" + (f" [trained on {world} processes]" if world > 1 else ""))
    return 0


def _torchrun_world_size() -> int:
    """The number of processes torchrun started (its ``WORLD_SIZE`` variable), 1 without torchrun."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        return max(1, int(value))
    except ValueError:
        raise _UsageError(f"environment variable WORLD_SIZE: expected an integer, got {value!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (``sys.argv[1:]`` when omitted) and return the exit code.

    Exit codes: 0 on success (and for ``--help`` and ``--list``), 1 when training diverges, 2 for
    a mistake in the command line (unknown recipe, unusable folder, nothing to resume); errors are
    printed as one ``error:`` line, without a traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or argparse's own usage errors (already printed)
        return int(exit_.code or 0)
    try:
        return _run(args, argv)
    except _UsageError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
