"""Noisy captions, as in web alt-text: a fraction of the pairs get the caption of another pair.

Explained in Chapter 7.2. ALIGN (Jia et al., 2021) trained on 1.8 billion image-alt-text pairs with
only light filtering and argued that scale makes up for the noise. To measure that on ShapesWorld,
:func:`corrupt_captions` replaces a chosen fraction of the training captions by wrong ones: each
picked pair receives the caption of another, randomly chosen pair whose caption differs, so the
wrong captions are ordinary captions of the data set (the same words, the same distribution),
just attached to the wrong image.
"""
from __future__ import annotations

import torch

from clip_tutorial.core.checks import check_int, check_number, check_sequence

__all__ = ["corrupt_captions"]


def corrupt_captions(captions: list[str], fraction: float, seed: int = 0) -> tuple[list[str], torch.Tensor]:
    """Replace ``fraction`` of ``captions`` by the caption of another pair whose caption differs.

    Explained in Chapter 7.2. ``round(fraction * len(captions))`` positions are drawn without
    replacement; each gets the (original) caption of a pair drawn at random among those whose
    caption is a different text, so every replaced caption is wrong for its image. The result is
    deterministic given ``seed``.

    Args:
        captions: the training captions, one str per pair.
        fraction: the share of pairs to corrupt, in ``[0, 1]``.
        seed: seeds the choice of pairs and of their wrong captions.

    Returns:
        ``(new_captions, replaced_mask)``: a new list (``captions`` itself is not changed) and a
        bool tensor that is ``True`` at the replaced positions.

    Raises:
        ValueError: if ``fraction`` is outside ``[0, 1]``, or pairs must be corrupted but all
            captions are the same text (there is no wrong caption to give).
        TypeError: if ``captions`` is not a sequence of str or ``seed`` not an int.
    """
    captions = list(check_sequence("captions", captions, str, nonempty=True))
    fraction = check_number("fraction", fraction, 0, 1)
    seed = check_int("seed", seed)
    n = len(captions)
    count = round(fraction * n)
    replaced = torch.zeros(n, dtype=torch.bool)
    if count == 0:
        return captions, replaced
    if len(set(captions)) < 2:
        raise ValueError(f"captions: expected at least two different captions to swap between, got only "
                         f"{captions[0]!r}")
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(n, generator=generator)[:count]
    replaced[chosen] = True
    noisy = list(captions)
    for i in chosen.tolist():
        while True:  # rejection sampling: a caption equal to pair i's would not be noise
            j = int(torch.randint(n - 1, (1,), generator=generator))
            j += j >= i  # any pair but i itself
            if captions[j] != captions[i]:
                break
        noisy[i] = captions[j]
    return noisy, replaced
