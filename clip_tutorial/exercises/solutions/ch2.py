"""Solutions of the exercises of Chapter 2, one function per exercise, named after it.

Read one with ``clip_tutorial.exercises.show_solution("ch2.<name>")``. Explained in Chapter 2.
"""
from __future__ import annotations

import torch


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, num_patches, 3 * patch_size**2), in the order of the ViT's patch convolution.

    Split H and W into (grid, patch), bring the two grid axes forward (patches row by row), and
    flatten each patch channel first, then row, then column: the layout of ``conv1.weight``.
    ``F.unfold(images, patch_size, stride=patch_size).transpose(1, 2)`` is a one-line answer too.
    """
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p)  # (B, C, rows, p, cols, p)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, rows, cols, C, p, p)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def vit_b32_tokens() -> int:
    """How many tokens ViT-B/32's transformer reads for one image.

    ViT-B/32 reads 224 x 224 images in 32 x 32 patches. Each side holds 224 / 32 = 7 patches, so
    the image becomes a 7 x 7 grid of 49 patch tokens. The class token is prepended before the
    first block, so the sequence has one more row.
    """
    resolution, patch = 224, 32
    grid = resolution // patch
    return grid * grid + 1


def causal_mask(n: int) -> torch.Tensor:
    """(n, n) additive mask: 0 on and below the diagonal, -inf above it.

    Row i is the query and column j the key; token i may look at keys j <= i. Fill with -inf,
    then keep it only strictly above the diagonal (key j > query i).
    """
    return torch.full((n, n), float("-inf")).triu(diagonal=1)


def reversed_mask() -> str:
    """The diagnosis of a causal mask built with ``tril(diagonal=-1)`` instead of ``triu(diagonal=1)``.

    The broken mask puts -inf below the diagonal, so query i may attend to the keys j >= i: itself
    and everything after it. The diagonal stays 0, so no row of the softmax is empty and nothing
    becomes NaN (that rules out "a"). The end-of-text position is near the end of the sequence:
    it sees itself and the padding after it, never the words before it. In the next block the same
    holds again, since those positions only saw what follows them. So the text feature depends on
    the end-of-text token and its position, that is on the caption's length, and not on its words:
    two captions of the same length get the same vector. Something did change (that rules out "c").
    """
    return "b"


def loss_gradient(logits_per_image: torch.Tensor) -> torch.Tensor:
    """dL/dlogits of CLIP's loss, in closed form: (P + Q - 2I) / 2N.

    Rows: the softmax over each row minus the one-hot target, divided by N (the image-to-text
    loss is a mean over N rows). Columns: the same over each column. The loss averages the two
    directions, so the gradient averages them too.
    """
    n = logits_per_image.shape[0]
    eye = torch.eye(n, dtype=logits_per_image.dtype, device=logits_per_image.device)
    image_to_text = (logits_per_image.softmax(dim=1) - eye) / n
    text_to_image = (logits_per_image.softmax(dim=0) - eye) / n
    return (image_to_text + text_to_image) / 2


def eot_pooling(hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(B, T, D) transformer output, (B, T) token ids -> (B, D) vectors at each end-of-text token.

    The end-of-text token has the largest id, so ``tokens.argmax(dim=-1)`` finds it in each row;
    pair row b with its own position (``hidden[:, positions]`` would take every position for
    every row).
    """
    positions = tokens.argmax(dim=-1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), positions]
