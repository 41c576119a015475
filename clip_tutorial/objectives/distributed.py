"""CLIP's contrastive loss when the batch is split across several processes.

Explained in Chapter 3.4. Each process (one per GPU, or per CPU worker with the ``gloo`` backend)
encodes only its share of the batch, but the contrastive loss needs every image scored against
every caption. The processes therefore exchange their *features* (a few hundred numbers per pair,
far less than the images), and the exchange must let gradients flow back to the process that
produced each feature. With that, and with DDP averaging the parameter gradients, training on
``W`` processes of ``B`` pairs each computes exactly the loss and gradients of one process on
``W * B`` pairs.

:func:`clip_tutorial.train.train_clip` uses the three helpers at the end of the module
(:func:`broadcast_parameters`, :func:`shard_batch`, :func:`average_gradients`) to run unchanged
under ``torchrun``; they do by hand, in a few lines each, what ``DistributedDataParallel`` does.

Launch a script that uses this module with ``torchrun --nproc_per_node=W script.py``.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from clip_tutorial.core.checks import (check_choice, check_int, check_number, check_positive_int, check_tensor,
                                       check_type, describe)

from .loss import clip_loss

__all__ = ["is_distributed", "rank_and_world", "setup_distributed", "cleanup", "all_reduce_mean", "check_features",
           "gather_features", "distributed_clip_loss", "broadcast_parameters", "average_gradients", "shard_batch",
           "barrier"]

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_BACKENDS = ("gloo", "nccl")


def is_distributed() -> bool:
    """``True`` when ``torch.distributed`` is available and a process group has been initialised."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes; ``(0, 1)`` when not distributed."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}: expected an integer, got {value!r}") from None


def setup_distributed(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment.

    ``torchrun`` starts one copy of the script per process and tells each one who it is through
    the variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.
    When a process group already exists it is left as it is and described.

    Args:
        backend: ``"gloo"`` (CPU tensors) or ``"nccl"`` (CUDA tensors, one GPU per process);
            when omitted, ``"nccl"`` if CUDA is available and ``"gloo"`` otherwise.

    Returns:
        ``(rank, world_size, device)``, where ``device`` is ``cuda:LOCAL_RANK`` for ``nccl`` (made
        the current CUDA device) and the CPU for ``gloo``.

    Raises:
        RuntimeError: if ``torch.distributed`` is unavailable or a torchrun variable is missing.
        ValueError: if ``backend`` is unknown or ``nccl`` is asked for without CUDA.
    """
    if backend is not None:
        check_choice("backend", backend, _BACKENDS, expected=f"one of {list(_BACKENDS)} or None")
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this build of PyTorch")
    if is_distributed():  # already joined: report the existing group
        on_gpu = dist.get_backend() == "nccl"
        device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
        return dist.get_rank(), dist.get_world_size(), device
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("backend: 'nccl' needs CUDA GPUs, but torch.cuda.is_available() is False; use 'gloo'")
    missing = [name for name in _TORCHRUN_VARS if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"setup_distributed: environment variables {missing} are not set; launch the script with "
            "'torchrun --nproc_per_node=N script.py' (or 'python -m torch.distributed.run ...'), which sets them"
        )
    rank, world, local_rank = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    if not 0 <= rank < world:
        raise ValueError(f"environment variables RANK, WORLD_SIZE: expected 0 <= RANK < WORLD_SIZE, got {rank}, {world}")
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    return dist.get_rank(), dist.get_world_size(), device


def cleanup() -> None:
    """Leave and destroy the process group; does nothing when there is none."""
    if is_distributed():
        dist.destroy_process_group()


@torch.no_grad()
def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over all processes (a detached copy; ``value`` itself when not distributed).

    Useful for logging: with ``local_loss=True`` each process's loss covers only its own rows, and
    the mean over processes is the loss of the whole batch.
    """
    check_type("value", value, torch.Tensor)
    if not is_distributed() or dist.get_world_size() == 1:
        return value.detach()
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / dist.get_world_size()


def check_features(image_features: object, text_features: object) -> None:
    """Raise unless both are non-empty float (batch, embed_dim) matrices of the same shape (one text per image)."""
    for name, value in (("image_features", image_features), ("text_features", text_features)):
        check_tensor(name, value, ndim=2, floating=True, nonempty=True,
                     what="a floating-point (batch, embed_dim) matrix")
    if image_features.shape != text_features.shape:
        raise ValueError(
            "image_features, text_features: expected the same (batch, embed_dim) shape, one text per image, "
            f"got {tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )


def gather_features(image_features: torch.Tensor, text_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate every process's features, in rank order, keeping the gradient path back.

    The forward pass is a plain ``all_gather``; its backward pass (``_GatherWithGradient`` below)
    sends each process the gradient that *every* process computed for its slice, summed. That
    sum is what makes the split batch train like the whole batch: the features of process ``r``
    appear as negatives in the other processes' losses, and those losses push on them too.

    Every process must hold the same number of pairs (checked: a mismatch raises the same
    ``ValueError`` on all of them rather than hanging).

    Args:
        image_features: (local_batch, embed_dim) this process's image features.
        text_features: (local_batch, embed_dim) this process's text features.

    Returns:
        ``(all_image_features, all_text_features)``, each (world_size * local_batch, embed_dim);
        the inputs themselves when no process group is initialised or it has one process.
    """
    check_features(image_features, text_features)
    if not is_distributed() or dist.get_world_size() == 1:
        return image_features, text_features
    world = dist.get_world_size()
    local = torch.tensor([image_features.shape[0]], device=image_features.device)
    sizes = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(sizes, local)
    sizes_list = [int(s) for s in sizes]
    if len(set(sizes_list)) != 1:
        raise ValueError(f"image_features: expected the same local batch on every process, got sizes {sizes_list} "
                         "(drop the last incomplete batch, e.g. DataLoader(drop_last=True))")
    return _GatherWithGradient.apply(image_features), _GatherWithGradient.apply(text_features)


class _GatherWithGradient(torch.autograd.Function):
    """``all_gather`` along the batch dimension, differentiable: the backward pass sums over processes.

    Each process's output is the concatenation of every process's input, so the gradient of the
    sum of all processes' losses with respect to *my* input is the sum, over processes, of *my*
    rows of their output gradients: one ``all_reduce`` of the output gradient, then my slice.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: torch.Tensor) -> torch.Tensor:
        pieces = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(pieces, tensor.contiguous())
        return torch.cat(pieces, dim=0)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return shard_batch(total)


def distributed_clip_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                          logit_scale: torch.Tensor | float, local_loss: bool = False) -> torch.Tensor:
    """CLIP's symmetric loss over the *global* batch, computed from this process's share.

    Explained in Chapter 3.4. With ``W`` processes of ``B`` pairs the global batch has
    ``N = W * B`` pairs, and there are two ways to split the work:

    * ``local_loss=False``: every process builds the whole ``N x N`` logit matrix from the
      gathered features and computes the ordinary :func:`~clip_tutorial.objectives.loss.clip_loss`. Simple,
      and the returned loss is the global loss on every process, but each process stores and
      multiplies the full matrix: ``N^2`` memory and ``N^2 d`` work, the same on each of them.
    * ``local_loss=True``: each process keeps only its own ``B`` rows, its images against all
      ``N`` texts and its texts against all ``N`` images: two ``B x N`` blocks, ``2 N^2 / W``
      logits instead of ``N^2``, so ``W / 2`` times less memory and work. The right answer for local pair ``i`` sits in column ``rank * B + i``.
      The returned loss is this process's share; the global loss is the mean over processes
      (:func:`all_reduce_mean`).

    The parameter gradients agree with one process on all ``N`` pairs in both modes, after DDP
    averages them. Call ``L`` the global loss. The gather's backward sums what all processes
    computed for each feature, so process ``r`` receives ``W`` times ``dL/d(its features)``: in
    the first mode because each of the ``W`` processes computes ``L`` itself, in the second
    because the ``W`` local losses add up to ``W * L``. DDP's averaging divides by ``W`` and adds
    the processes' shares, which gives ``dL/dparameters``. The temperature's gradient does not
    pass through the gather: each process holds ``dL/dlogit_scale`` (first mode) or its share of
    it (second mode), and the average is again exactly ``dL/dlogit_scale``.

    Args:
        image_features: (local_batch, embed_dim) L2-normalised image features of this process.
        text_features: (local_batch, embed_dim) L2-normalised text features, row ``i`` matching image ``i``.
        logit_scale: the multiplier ``1 / temperature`` (``CLIP.logit_scale_value()``), a
            Python number or a one-element tensor (keep it a tensor to train the temperature).
        local_loss: compute only this process's rows (see above).

    Returns:
        A scalar tensor. Without a process group (or with one process) it equals
        ``clip_loss(logit_scale * image_features @ text_features.T)``.
    """
    check_features(image_features, text_features)
    check_type("local_loss", local_loss, bool)
    if not isinstance(logit_scale, torch.Tensor):
        check_number("logit_scale", logit_scale)
    elif logit_scale.numel() != 1:
        raise ValueError(f"logit_scale: expected a number or a one-element tensor, got {describe(logit_scale)}")
    else:
        logit_scale = logit_scale.reshape(())
    rank, _ = rank_and_world()
    all_images, all_texts = gather_features(image_features, text_features)
    if not local_loss or all_images is image_features:
        return clip_loss(logit_scale * all_images @ all_texts.t())
    logits_per_image = logit_scale * image_features @ all_texts.t()  # (B, N): my images, every text
    logits_per_text = logit_scale * text_features @ all_images.t()  # (B, N): my texts, every image
    batch = image_features.shape[0]
    labels = torch.arange(batch, device=image_features.device) + rank * batch
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


@torch.no_grad()
def broadcast_parameters(model: nn.Module, src: int = 0) -> None:
    """Copy process ``src``'s parameters and buffers into every process's ``model``, in place.

    Explained in Chapter 3.4. Each process builds its own model, whose random initial weights
    differ unless every process seeded identically; afterwards all start from the same point.
    Does nothing without a process group. Raises ``TypeError`` if ``model`` is not an
    ``nn.Module`` and ``ValueError`` if ``src`` is not a rank of the group.
    """
    check_type("model", model, nn.Module, expected="a torch.nn.Module")
    _, world = rank_and_world()
    check_int("src", src, 0, world - 1, expected=f"a rank in [0, {world})")
    if world == 1:
        return
    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, src=src)


@torch.no_grad()
def average_gradients(model: nn.Module) -> None:
    """Replace every parameter's gradient by its mean over all processes, in place.

    Explained in Chapter 3.4. Call it between ``loss.backward()`` and ``optimizer.step()``: the
    processes then hold identical gradients, take identical steps and keep identical weights.
    With :func:`distributed_clip_loss` the *mean* (not the sum) is the whole batch's gradient
    (its docstring shows why). The gradients travel as one flat buffer, one ``all_reduce`` per
    step rather than one per tensor, as DDP's buckets do. A missing gradient counts as zeros.
    Does nothing without a process group; raises ``TypeError`` if ``model`` is not an ``nn.Module``.
    """
    check_type("model", model, nn.Module, expected="a torch.nn.Module")
    _, world = rank_and_world()
    params = [p for p in model.parameters() if p.requires_grad]
    if world == 1 or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world
    offset = 0
    for param, grad in zip(params, grads):
        param.grad = grad.copy_(flat[offset: offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def shard_batch(batch: torch.Tensor, rank: int | None = None, world_size: int | None = None) -> torch.Tensor:
    """This process's contiguous share of a global batch: rows ``rank * B / W`` to ``(rank + 1) * B / W``.

    Explained in Chapter 3.4. Every process draws the same global batch (the same seeded order);
    each keeps its own slice, so together they cover the batch exactly once, in rank order, the
    order in which :func:`gather_features` reassembles the features.

    Args:
        batch: any tensor whose first dimension is the global batch (indices, images, crop boxes).
        rank: the share to take; this process's rank when omitted.
        world_size: the number of shares; the group's size when omitted.

    Returns:
        A view of ``batch[rank * B / W : (rank + 1) * B / W]``; ``batch`` itself when ``world_size`` is 1.

    Raises:
        TypeError: if ``batch`` is not a tensor.
        ValueError: if ``W`` does not divide the batch, or ``rank`` is not in ``[0, W)``.
    """
    check_type("batch", batch, torch.Tensor, expected="a tensor with a batch dimension")
    if batch.ndim == 0:
        raise ValueError("batch: expected a tensor with a batch dimension, got a 0-d tensor")
    own_rank, own_world = rank_and_world()
    world_size = check_positive_int("world_size", own_world if world_size is None else world_size)
    rank = check_int("rank", own_rank if rank is None else rank, 0, world_size - 1,
                     expected=f"an int in [0, {world_size})")
    if batch.shape[0] % world_size:
        raise ValueError(f"batch: expected a batch divisible by world_size={world_size}, got {batch.shape[0]} rows")
    if world_size == 1:
        return batch
    share = batch.shape[0] // world_size
    return batch[rank * share: (rank + 1) * share]


def barrier() -> None:
    """Wait until every process has reached this call; does nothing without a process group.

    Explained in Chapter 3.4: after rank 0 writes a file that the others will read (a training
    state), nobody reads it too early.
    """
    if is_distributed() and dist.get_world_size() > 1:
        dist.barrier()
