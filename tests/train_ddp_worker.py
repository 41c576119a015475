"""Worker for ``tests/test_train_ddp.py``: launched by torchrun on 2 processes with gloo on the CPU.

Usage: ``torchrun --nproc_per_node=2 --standalone tests/train_ddp_worker.py INPUTS.pt OUT_DIR [CLI ARGS...]``.

Each process runs the book's own :func:`~clip_tutorial.train.train_clip` on the data saved in
``INPUTS.pt`` (the global batch size is in the file) and writes what it measured to
``OUT_DIR/rank{r}.pt`` (tensors only, loadable with ``weights_only=True``):

* ``{tag}/loss`` and ``{tag}/weights/{name}`` for a run without crops (``plain``) and one with
  crops (``crop``); each process starts from *different* random weights (seed ``100 + rank``), so
  the runs only match one process started from seed 100 if rank 0's weights are broadcast;
* ``resumed/...``: the cropped run continued from its training state after step 2 (saved by
  rank 0 alone) by models that start from other weights again;
* ``indivisible_raised``: a batch size that 2 does not divide raised a ``ValueError``;
* ``grad/{name}``: one backward pass on the first ``batch_size`` pairs, each process on its shard,
  after :func:`~clip_tutorial.objectives.distributed.average_gradients` (the gradient the optimiser sees).

Then, when CLI ARGS follow, the same processes run ``python -m clip_tutorial.train CLI ARGS`` as
``-m`` would (``runpy``), which saves a torchrun launch, and record its exit code in
``OUT_DIR/cli_rank{r}.txt``.
"""
from __future__ import annotations

import os
import runpy
import sys

import torch

from clip_tutorial.objectives.distributed import (average_gradients, broadcast_parameters, cleanup, distributed_clip_loss,
                                       setup_distributed, shard_batch)
from clip_tutorial.train import TrainConfig, train_clip

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import make_tiny_clip  # noqa: E402


def _record(results: dict[str, torch.Tensor], tag: str, model: torch.nn.Module, losses: list[float]) -> None:
    results[f"{tag}/loss"] = torch.tensor(losses, dtype=torch.float64)
    for name, value in model.state_dict().items():
        results[f"{tag}/weights/{name}"] = value.detach().clone()


def main(inputs_path: str, out_dir: str, cli_args: list[str]) -> None:
    rank, world, _ = setup_distributed("gloo")
    inputs = torch.load(inputs_path, weights_only=True)
    images, tokens, config = inputs["images"], inputs["tokens"], TrainConfig(**inputs["config"])
    states = os.path.join(out_dir, "states")
    results: dict[str, torch.Tensor] = {"world_size": torch.tensor(world)}
    model, _ = make_tiny_clip(context_length=tokens.shape[1], seed=100 + rank)
    broadcast_parameters(model)
    mine = shard_batch(torch.arange(config.batch_size))
    loss = distributed_clip_loss(model.encode_image(images[mine], normalize=True),
                                 model.encode_text(tokens[mine], normalize=True), model.logit_scale_value(),
                                 local_loss=True)
    loss.backward()
    average_gradients(model)
    results.update({f"grad/{name}": p.grad.clone() for name, p in model.named_parameters()})
    for tag, crop_scale in (("plain", None), ("crop", tuple(inputs["crop_scale"]))):
        model, _ = make_tiny_clip(context_length=tokens.shape[1], seed=100 + rank)
        run_config = TrainConfig(**{**inputs["config"], "crop_scale": crop_scale})
        saving = {"checkpoint_every": 2, "checkpoint_dir": states} if crop_scale else {}
        history = train_clip(model, images, tokens, run_config, progress=False, **saving)
        _record(results, tag, model, history.loss)
    resumed, _ = make_tiny_clip(context_length=tokens.shape[1], seed=7 + rank)
    history = train_clip(resumed, images, tokens, run_config, progress=False,
                         resume_from=os.path.join(states, "step-000002"))
    _record(results, "resumed", resumed, history.loss)
    try:
        train_clip(resumed, images, tokens, TrainConfig(**{**inputs["config"], "batch_size": 2 * world + 1}),
                   progress=False)
        results["indivisible_raised"] = torch.tensor(False)
    except ValueError as err:
        results["indivisible_raised"] = torch.tensor("multiple of the number of processes (2)" in str(err))
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    if cli_args:  # the command line in the same group: setup_distributed() finds it, main() cleans it up
        sys.argv = ["clip_tutorial.train", *cli_args]
        try:
            runpy.run_module("clip_tutorial.train", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        with open(os.path.join(out_dir, f"cli_rank{rank}.txt"), "w", encoding="utf-8") as file:
            file.write(str(code))
    cleanup()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
