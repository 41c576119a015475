"""FILIP's token-wise late interaction: match every token with its best partner, then average.

Explained in Chapter 7.3. CLIP compares one vector per image with one vector per text. FILIP (Yao et
al., 2022) keeps the towers but compares their *tokens*: each image token finds its most similar text
token, and the image-to-text similarity is the mean of those best matches over the image's tokens; each
text token finds its most similar image token, and the text-to-image similarity is the mean over the
text's real (non-padding) tokens. The two directions feed CLIP's two cross-entropies.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch

from clip_tutorial.core.checks import check_choice, check_positive_int, check_tensor
from clip_tutorial.data import normalize_images
from clip_tutorial.model import CLIP
from clip_tutorial.model.clip import check_clip

from .loss import clip_loss

__all__ = ["DIRECTIONS", "filip_similarity", "filip_logits", "filip_loss", "filip_scores", "filip_candidate_scores",
           "filip_zero_shot_predict"]

#: Which similarity :func:`filip_scores` returns: image-to-text, text-to-image, or their mean.
DIRECTIONS = ("image", "text", "mean")


def _check_mask(name: str, mask: torch.Tensor | None, rows: int, length: int, device: torch.device) -> torch.Tensor:
    """``mask`` as a bool (rows, length) tensor on ``device``, all ``True`` when ``None``; no row may be empty."""
    if mask is None:
        return torch.ones(rows, length, dtype=torch.bool, device=device)
    check_tensor(name, mask, shape=(rows, length), dtype=torch.bool,
                 what=f"a bool ({rows}, {length}) tensor, True at the real tokens")
    empty = (~mask.any(dim=1)).nonzero().flatten()
    if len(empty):
        raise ValueError(f"{name}: expected at least one True per row, got rows without any "
                         f"(first: {int(empty[0])}); a text or image with no tokens has no similarity")
    return mask.to(device)


def filip_similarity(image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor,
                     image_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """FILIP's two token-wise similarities of every image with every text.

    Explained in Chapter 7.3. With ``s[i, j, p, l]`` the dot product of token ``p`` of image ``i``
    and token ``l`` of text ``j`` (cosine similarity for unit tokens, e.g. from
    ``encode_image_tokens(..., normalize=True)``):

    - image-to-text: ``mean over real p of (max over real l of s[i, j, p, l])``;
    - text-to-image: ``mean over real l of (max over real p of s[i, j, p, l])``.

    Masked tokens (padding) are never chosen as a best match and never counted in a mean.

    Args:
        image_tokens: (N_img, P, D) floating-point image tokens.
        text_tokens: (N_txt, L, D) text tokens, same dtype and D.
        text_mask: (N_txt, L) bool, ``True`` at real tokens; each row needs at least one.
        image_mask: (N_img, P) bool, likewise; ``None`` (the default) counts every image token.

    Returns:
        ``(image_to_text, text_to_image)``, both (N_img, N_txt), row ``i`` column ``j`` for image
        ``i`` and text ``j``.

    Raises:
        TypeError: for non-tensors, integer tokens, tokens of two dtypes, or masks that are not bool.
        ValueError: for wrong shapes, or a mask row without any ``True``.
    """
    check_tensor("image_tokens", image_tokens, ndim=3, floating=True, nonempty=True,
                 what="a non-empty floating-point (N_img, P, D) tensor")
    n_img, n_patch, dim = image_tokens.shape
    check_tensor("text_tokens", text_tokens, shape=(None, None, dim), floating=True, nonempty=True,
                 what=f"a non-empty floating-point (N_txt, L, D={dim}) tensor")
    if text_tokens.dtype != image_tokens.dtype:
        raise TypeError(f"text_tokens: expected the dtype of image_tokens ({image_tokens.dtype}), "
                        f"got {text_tokens.dtype}")
    n_txt, length, _ = text_tokens.shape
    text_mask = _check_mask("text_mask", text_mask, n_txt, length, text_tokens.device)
    image_mask = _check_mask("image_mask", image_mask, n_img, n_patch, image_tokens.device)
    # Positions masked in every row (the start token, the padding after the longest text) cost time only.
    text_tokens, text_mask = _drop_unused(text_tokens, text_mask)
    image_tokens, image_mask = _drop_unused(image_tokens, image_mask)
    n_patch, length = image_tokens.shape[1], text_tokens.shape[1]
    # One matrix product for every pair of tokens: sim[i, p, j, l] = <image i token p, text j token l>.
    sim = (image_tokens.reshape(-1, dim) @ text_tokens.reshape(-1, dim).t()).view(n_img, n_patch, n_txt, length)
    floor = torch.finfo(sim.dtype).min
    best_text = _masked(sim, ~text_mask[None, None], floor).max(dim=3).values  # (N_img, P, N_txt)
    best_image = _masked(sim, ~image_mask[:, :, None, None], floor).max(dim=1).values  # (N_img, N_txt, L)
    image_weight = image_mask.to(sim.dtype) / image_mask.sum(dim=1, keepdim=True)  # (N_img, P)
    text_weight = text_mask.to(sim.dtype) / text_mask.sum(dim=1, keepdim=True)  # (N_txt, L)
    image_to_text = (best_text * image_weight[:, :, None]).sum(dim=1)
    text_to_image = (best_image * text_weight[None, :, :]).sum(dim=2)
    return image_to_text, text_to_image


def _drop_unused(tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``tokens`` and ``mask`` without the positions that no row uses (an exact saving of time and memory)."""
    used = mask.any(dim=0)
    if bool(used.all()):
        return tokens, mask
    return tokens[:, used], mask[:, used]


def _masked(sim: torch.Tensor, drop: torch.Tensor, floor: float) -> torch.Tensor:
    """``sim`` with ``floor`` where ``drop`` (broadcast) is True, so that a max never picks those tokens."""
    return sim.masked_fill(drop, floor) if bool(drop.any()) else sim


def filip_logits(image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor,
                 logit_scale: torch.Tensor | float, image_mask: torch.Tensor | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits_per_image, logits_per_text)`` for FILIP's loss: each direction's similarity, scaled.

    Explained in Chapter 7.3. Unlike CLIP's, the two are not transposes of each other: images
    classify texts with the image-to-text similarity, texts classify images with the text-to-image one.

    Args:
        image_tokens, text_tokens, text_mask, image_mask: as for :func:`filip_similarity`.
        logit_scale: the multiplier ``exp(logit_scale)``, as :meth:`CLIP.logit_scale_value` returns it.

    Returns:
        (N_img, N_txt) and (N_txt, N_img) scaled similarities.
    """
    image_to_text, text_to_image = filip_similarity(image_tokens, text_tokens, text_mask, image_mask)
    return logit_scale * image_to_text, logit_scale * text_to_image.t()


def filip_loss(image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor,
               logit_scale: torch.Tensor | float, image_mask: torch.Tensor | None = None) -> torch.Tensor:
    """FILIP's contrastive loss: CLIP's symmetric cross-entropy on :func:`filip_logits`.

    Explained in Chapter 7.3. Image ``i`` matches text ``i``; the image-to-text cross-entropy runs
    over the rows of the scaled image-to-text similarity, the text-to-image one over the rows of the
    scaled text-to-image similarity, and the loss is their mean (:func:`~.loss.clip_loss`).
    """
    return clip_loss(*filip_logits(image_tokens, text_tokens, text_mask, logit_scale, image_mask))


def _check_images_and_direction(model: CLIP, images: torch.Tensor, direction: str, batch_size: int) -> int:
    """Check the arguments that :func:`filip_scores` and :func:`filip_candidate_scores` share; the batch size."""
    check_clip("model", model)
    check_tensor("images", images, shape=(None, 3, None, None), nonempty=True, what="a tensor (N, 3, H, W)")
    check_choice("direction", direction, DIRECTIONS)
    return check_positive_int("batch_size", batch_size)


def _image_batches(model: CLIP, images: torch.Tensor, batch_size: int) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, unit image tokens)`` for each batch of ``images``, normalising uint8 pixels first."""
    device = next(model.parameters()).device
    for start in range(0, images.shape[0], batch_size):
        batch = images[start: start + batch_size]
        batch = normalize_images(batch) if batch.dtype == torch.uint8 else batch
        yield start, model.encode_image_tokens(batch.to(device), normalize=True)


def _direction(image_to_text: torch.Tensor, text_to_image: torch.Tensor, direction: str) -> torch.Tensor:
    """The similarity that ``direction`` names (see :data:`DIRECTIONS`), as float32 on the CPU."""
    chosen = {"image": image_to_text, "text": text_to_image}.get(direction)
    return (chosen if chosen is not None else (image_to_text + text_to_image) / 2).float().cpu()


@torch.no_grad()
def filip_scores(model: CLIP, images: torch.Tensor, text: torch.Tensor, direction: str = "image",
                 batch_size: int = 256) -> torch.Tensor:
    """FILIP similarity (N_img, N_txt) of many images with a few token-id texts, in batches of images.

    Explained in Chapter 7.3. The texts' tokens are encoded once; the images a batch at a time.

    Args:
        model: a CLIP with a ViT image tower (put back in its training mode afterwards).
        images: uint8 pixels (normalised here) or normalised float pixels (N_img, 3, H, W).
        text: token ids (N_txt, context_length), e.g. ``tokenizer(prompts)``.
        direction: ``"image"`` (image-to-text, how an image picks its caption), ``"text"``
            (text-to-image) or ``"mean"`` of the two; see :data:`DIRECTIONS`.
        batch_size: images per batch.

    Returns:
        A float32 CPU tensor (N_img, N_txt).
    """
    batch_size = _check_images_and_direction(model, images, direction, batch_size)
    check_tensor("text", text, ndim=2, dtype=(torch.int64, torch.int32), nonempty=True,
                 what="integer token ids (N_txt, tokens), e.g. from a tokenizer")
    was_training = model.training
    model.eval()
    try:
        text_tokens, text_mask = model.encode_text_tokens(text.to(next(model.parameters()).device), normalize=True)
        out = [_direction(*filip_similarity(image_tokens, text_tokens, text_mask), direction)
               for _, image_tokens in _image_batches(model, images, batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def filip_candidate_scores(model: CLIP, images: torch.Tensor, candidates: torch.Tensor, direction: str = "image",
                           batch_size: int = 256) -> torch.Tensor:
    """FILIP similarity (N, C) of each image with its own ``C`` candidate texts, as a multiple-choice probe needs.

    Explained in Chapter 7.3. :func:`filip_scores` compares every image with every text; when each
    image has its own few candidates (a true caption and a false one, say), that wastes almost all of
    the work: this function compares image ``n`` with the ``C`` texts of row ``n`` only.

    Args:
        model, images, direction, batch_size: as for :func:`filip_scores`.
        candidates: token ids (N, C, context_length); row ``n`` holds image ``n``'s candidates.

    Returns:
        A float32 CPU tensor (N, C); ``out.argmax(dim=1)`` is each image's chosen candidate.

    Raises:
        ValueError: if ``candidates`` does not have one row per image.
    """
    batch_size = _check_images_and_direction(model, images, direction, batch_size)
    n = images.shape[0]
    check_tensor("candidates", candidates, shape=(n, None, None), dtype=(torch.int64, torch.int32), nonempty=True,
                 what=f"integer token ids (N={n}, C, tokens), one row of candidate texts per image")
    n_choices = candidates.shape[1]
    was_training = model.training
    model.eval()
    try:
        out = []
        for start, image_tokens in _image_batches(model, images, batch_size):
            rows = candidates[start: start + image_tokens.shape[0]].flatten(0, 1)
            text_tokens, text_mask = model.encode_text_tokens(rows.to(image_tokens.device), normalize=True)
            for i in range(image_tokens.shape[0]):
                texts = slice(i * n_choices, (i + 1) * n_choices)
                similarity = filip_similarity(image_tokens[i: i + 1], text_tokens[texts], text_mask[texts])
                out.append(_direction(*similarity, direction))
    finally:
        model.train(was_training)
    return torch.cat(out)


def filip_zero_shot_predict(model: CLIP, images: torch.Tensor, prompt_tokens: torch.Tensor,
                            direction: str = "image", batch_size: int = 256) -> torch.Tensor:
    """Zero-shot class of each image under FILIP similarity: the prompt it scores highest.

    Explained in Chapter 7.3. CLIP's zero-shot classifier keeps one pooled vector per class
    (:func:`~clip_tutorial.evaluation.zeroshot.build_zero_shot_classifier`); FILIP compares tokens,
    so each class keeps its prompt's tokens instead, and every image is scored against every prompt.

    Args:
        model, images, direction, batch_size: as for :func:`filip_scores`.
        prompt_tokens: (num_classes, context_length) token ids, one prompt per class, e.g.
            ``tokenizer([f"a photo of a {c}" for c in classes])``.

    Returns:
        LongTensor (N_img,) of class indices (ties go to the lowest index).
    """
    return filip_scores(model, images, prompt_tokens, direction, batch_size).argmax(dim=1)
