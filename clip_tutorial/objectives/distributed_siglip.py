"""SigLIP's sigmoid loss when the batch is split across several processes: a ring, no all-gather.

Explained in Chapter 7.1. CLIP's softmax normalises each row over *every* text of the global batch,
so each process must first gather all the features (Chapter 3.4,
:func:`~clip_tutorial.objectives.distributed.distributed_clip_loss`). SigLIP's loss is a plain sum of
one term per image-text pair, so the sum can be taken block by block. With ``W`` processes of ``B``
pairs each (``N = W * B``), process ``r``:

1. scores its ``B`` images against its own ``B`` texts (the block that holds the positives);
2. passes its current text chunk to its right neighbour ``r + 1`` and receives one from its left
   neighbour ``r - 1`` (all indices modulo ``W``), scores its images against that chunk (all
   negatives), and repeats ``W - 1`` times, until it has seen every process's texts.

In the forward pass no process holds more than one ``B x B`` block of logits or one foreign text
chunk at a time, instead of the ``N x N`` matrix (or its ``B x N`` rows) and every process's
features. Autograd, however, keeps what each block needs for the backward pass, so with gradients
the memory a process holds still grows with ``W`` blocks, as CLIP's ``B x N`` rows do (Chapter 7.1
measures it); reaching the paper's saving would need each block's gradient computed as it is
visited. The exchange is
differentiable: its backward pass sends each gradient back the way the chunk came, so each text
feature receives the gradient of every process's terms that used it. This is the "chunked"
implementation of Zhai et al. (2023) and of open_clip's ``SigLipLoss``.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from clip_tutorial.core.checks import check_number, describe

from .distributed import check_features, rank_and_world
from .loss import siglip_loss

__all__ = ["distributed_siglip_loss"]


def _as_scalar(name: str, value: torch.Tensor | float) -> torch.Tensor | float:
    """``value`` as a 0-d tensor (kept differentiable) or a checked Python number."""
    if not isinstance(value, torch.Tensor):
        return check_number(name, value)
    if value.numel() != 1:
        raise ValueError(f"{name}: expected a number or a one-element tensor, got {describe(value)}")
    return value.reshape(())


def _block_sum(images: torch.Tensor, texts: torch.Tensor, scale: torch.Tensor | float,
               bias: torch.Tensor | float, positives: bool) -> torch.Tensor:
    """``-sum log sigmoid(label * (scale * images @ texts.T + bias))`` over one ``B x B`` block."""
    logits = scale * images @ texts.t() + bias
    if positives:  # this process's own texts, matching pairs on the diagonal: the one-process loss, summed
        return siglip_loss(logits) * logits.shape[0]
    return -F.logsigmoid(-logits).sum()  # another process's texts: every pair is a negative


def _send_right(tensor: torch.Tensor) -> torch.Tensor:
    """Send ``tensor`` to rank ``r + 1`` and return what rank ``r - 1`` sent (modulo the world size)."""
    rank, world = rank_and_world()
    received = torch.empty_like(tensor)
    ops = [dist.P2POp(dist.isend, tensor.contiguous(), (rank + 1) % world),
           dist.P2POp(dist.irecv, received, (rank - 1) % world)]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    return received


def _send_left(tensor: torch.Tensor) -> torch.Tensor:
    """Send ``tensor`` to rank ``r - 1`` and return what rank ``r + 1`` sent (the ring run backwards)."""
    rank, world = rank_and_world()
    received = torch.empty_like(tensor)
    ops = [dist.P2POp(dist.isend, tensor.contiguous(), (rank - 1) % world),
           dist.P2POp(dist.irecv, received, (rank + 1) % world)]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    return received


class _RingShift(torch.autograd.Function):
    """One step of the ring, differentiable: forward passes to the right, backward returns gradients left.

    Rank ``r``'s output is rank ``r - 1``'s input, so the gradient with respect to rank ``r``'s
    input is the output gradient held by rank ``r + 1``: the backward pass is the same shift reversed.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: torch.Tensor) -> torch.Tensor:
        return _send_right(tensor)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        return _send_left(grad)


def distributed_siglip_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                            logit_scale: torch.Tensor | float, logit_bias: torch.Tensor | float) -> torch.Tensor:
    """SigLIP's loss of this process's images against the *global* batch's texts, chunk by chunk.

    Explained in Chapter 7.1 (the module docstring describes the ring). The returned value is
    ``S_r / B``: the sum ``S_r`` of the terms of this process's ``B`` images against all ``N`` texts,
    divided by the local batch, as open_clip does. The mean over processes is then
    ``sum_r S_r / (W B) = S / N``, exactly :func:`~clip_tutorial.objectives.loss.siglip_loss` of the
    whole batch, and so are the parameter gradients once
    :func:`~clip_tutorial.objectives.distributed.average_gradients` has averaged them: the ring's
    backward pass gives each feature the sum over processes, ``W`` times its share of ``dL``, and
    the average divides by ``W`` (the same bookkeeping as CLIP's ``local_loss=True``). The scale and
    bias gradients do not travel; each process holds its share, and the average is again exact.

    Args:
        image_features: (local_batch, embed_dim) L2-normalised image features of this process.
        text_features: (local_batch, embed_dim) L2-normalised text features, row ``i`` matching image ``i``.
        logit_scale: the multiplier ``t`` (``CLIP.logit_scale_value()``), a number or a one-element
            tensor (keep it a tensor to train it).
        logit_bias: the bias ``b`` (``CLIP.logit_bias``), likewise.

    Returns:
        A scalar tensor. Without a process group (or with one process) it equals
        ``siglip_loss(logit_scale * image_features @ text_features.T + logit_bias)``.
    """
    check_features(image_features, text_features)
    scale, bias = _as_scalar("logit_scale", logit_scale), _as_scalar("logit_bias", logit_bias)
    _, world = rank_and_world()
    if world > 1:  # the same local batch everywhere, else the ring would deadlock: check it first
        local = torch.tensor([image_features.shape[0]], device=image_features.device)
        sizes = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(sizes, local)
        if len({int(s) for s in sizes}) != 1:
            raise ValueError(f"image_features: expected the same local batch on every process, got sizes "
                             f"{[int(s) for s in sizes]}")
    total = _block_sum(image_features, text_features, scale, bias, positives=True)
    texts = text_features
    for _ in range(world - 1):  # W - 1 shifts: the chunks of ranks r - 1, r - 2, ..., r + 1 in turn
        texts = _RingShift.apply(texts)
        total = total + _block_sum(image_features, texts, scale, bias, positives=False)
    return total / image_features.shape[0]
