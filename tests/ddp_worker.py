"""Worker for ``tests/test_distributed.py``: launched by torchrun on 2 processes with gloo on the CPU.

Usage: ``torchrun --nproc_per_node=2 --standalone tests/ddp_worker.py INPUTS.pt OUT_DIR``.
Each process takes its half of the batch saved in ``INPUTS.pt``, trains one step's worth of
backward through the real ``DistributedDataParallel`` and writes what it measured to
``OUT_DIR/rank{r}.pt`` (tensors only, loadable with ``weights_only=True``).
"""
from __future__ import annotations

import os
import sys

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from clip_tutorial.objectives.distributed import (all_reduce_mean, cleanup, distributed_clip_loss, gather_features,
                                       setup_distributed)
from clip_tutorial.model import CLIP

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import make_tiny_clip  # noqa: E402


class Features(nn.Module):
    """What DDP wraps: a CLIP that returns its normalised features and its logit scale."""

    def __init__(self, clip: CLIP) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (self.clip.encode_image(images, normalize=True), self.clip.encode_text(tokens, normalize=True),
                self.clip.logit_scale_value())


def main(inputs_path: str, out_dir: str) -> None:
    rank, world, device = setup_distributed("gloo")
    inputs = torch.load(inputs_path, weights_only=True)
    images, tokens = inputs["images"], inputs["tokens"]
    local = images.shape[0] // world
    mine = slice(rank * local, (rank + 1) * local)
    results: dict[str, torch.Tensor] = {}
    for local_loss in (False, True):
        clip, _ = make_tiny_clip(context_length=tokens.shape[1])
        clip.load_state_dict(inputs["state_dict"])
        model = DistributedDataParallel(Features(clip))
        image_features, text_features, scale = model(images[mine], tokens[mine])
        loss = distributed_clip_loss(image_features, text_features, scale, local_loss=local_loss)
        # DDP all-reduces the parameter gradients during backward and AVERAGES them (sum / 2). Averaging,
        # not summing, is right because the gather's backward already sums over processes: each process
        # receives 2 * dL/d(its own features) (both processes' losses reach its features; with
        # local_loss the two local losses add up to 2 * L). Halving the sum over the two processes
        # leaves exactly dL/dparameters. The logit scale skips the gather: each process holds dL/dscale
        # (local_loss=False) or the gradient of its local loss, and the mean of those is dL/dscale too.
        loss.backward()
        tag = f"local_loss={local_loss}"
        results[f"{tag}/loss"] = loss.detach()
        results[f"{tag}/mean_loss"] = all_reduce_mean(loss)
        for name, parameter in clip.named_parameters():
            results[f"{tag}/grad/{name}"] = parameter.grad.detach().clone()
        with torch.no_grad():
            all_images, all_texts = gather_features(image_features, text_features)
        results[f"{tag}/all_image_features"] = all_images
        results[f"{tag}/all_text_features"] = all_texts
    # Uneven local batches must fail loudly on every process, not hang.
    uneven = torch.randn(local - rank, 4)
    try:
        gather_features(uneven, uneven)
        results["uneven_raised"] = torch.tensor(False)
    except ValueError:
        results["uneven_raised"] = torch.tensor(True)
    results["world_size"] = torch.tensor(world)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    cleanup()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
