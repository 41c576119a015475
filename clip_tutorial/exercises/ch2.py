"""Checks for the exercises of Chapter 2: patches, image tokens, the causal mask, the loss gradient, pooling.

Each ``check_<name>(fn)`` of an "implement" exercise runs your ``fn`` on fresh random inputs of
several shapes, compares it with the package's reference, prints ✅ or ❌ with an explanation,
and returns a :class:`~clip_tutorial.exercises.CheckResult` that is truthy when you passed. The
"predict" and "diagnose" checks (:func:`check_vit_b32_tokens`, :func:`check_reversed_mask`) take
your number or letter, run the experiment themselves and compare. :data:`EXERCISES` lists them all
in the book's order.

Explained in Chapter 2 (section "Summary and exercises").
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from clip_tutorial.core.checks import check_tensor
from clip_tutorial.objectives.loss import clip_loss_gradient
from clip_tutorial.model.transformer import causal_mask
from clip_tutorial.model import CLIP, CLIPConfig, VisionTransformer, get_config
from .core import CheckResult, Hint, report, run_check
from .predict import check_choice, check_estimate
from .registry import Exercise

__all__ = ["EXERCISES", "check_patchify", "check_vit_b32_tokens", "check_causal_mask", "check_reversed_mask",
           "check_loss_gradient", "check_eot_pooling", "reference_patchify", "reference_causal_mask",
           "reference_eot_pooling", "reversed_causal_mask"]


def reference_patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut ``images`` (B, C, H, W) into (B, patches, C * p * p) rows, as the ViT's ``conv1`` sees them.

    Patches go row by row over the image (left to right, then top to bottom), the order of
    ``conv1(images).flatten(2)``; each patch is flattened channel first, then row, then column,
    the order of ``conv1.weight.flatten(1)``. So ``patchify(x, p) @ conv1.weight.flatten(1).T``
    equals ``conv1(x).flatten(2).transpose(1, 2)``. Explained in Chapter 2.1.

    Raises:
        ValueError: if ``images`` is not 4-D or its sides are not multiples of ``patch_size``.
        TypeError: if ``images`` is not a tensor or ``patch_size`` is not a positive int.
    """
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise TypeError(f"patch_size: expected a positive int, got {patch_size!r}")
    check_tensor("images", images, ndim=4, what="a tensor of shape (batch, channels, height, width)")
    if images.shape[2] % patch_size or images.shape[3] % patch_size:
        raise ValueError(f"images: expected height and width divisible by patch_size={patch_size}, "
                         f"got {tuple(images.shape[2:])}")
    return F.unfold(images, kernel_size=patch_size, stride=patch_size).transpose(1, 2)


def reference_causal_mask(n: int) -> torch.Tensor:
    """CLIP's (n, n) additive attention mask: 0 on and below the diagonal, ``-inf`` above it.

    The same as :func:`clip_tutorial.model.transformer.causal_mask`. Explained in Chapter 2.2.

    Raises:
        TypeError: if ``n`` is not a positive int.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TypeError(f"n: expected a positive int (the number of tokens), got {n!r}")
    return causal_mask(n)


def reference_eot_pooling(hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(B, D) rows of ``hidden`` (B, T, D) at each text's end-of-text token, the largest id in ``tokens`` (B, T).

    Explained in Chapter 2.2: CLIP's text feature is the transformer's output at the end-of-text
    token, which is the largest id of its vocabulary, so ``tokens.argmax(-1)`` finds it.

    Raises:
        TypeError: if ``hidden`` or ``tokens`` is not a tensor.
        ValueError: if the shapes do not fit together.
    """
    check_tensor("hidden", hidden, ndim=3, what="a (batch, tokens, width) tensor")
    check_tensor("tokens", tokens, shape=tuple(hidden.shape[:2]),
                 what=f"a tensor of shape {tuple(hidden.shape[:2])} (batch, tokens)")
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), tokens.argmax(dim=-1)]


def _grid(images: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, rows, cols, p, p): the patches of ``images``, still in the image's layout."""
    return images.unfold(2, p, p).unfold(3, p, p)


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], x.shape[1] * x.shape[2], -1)


_PATCH_HINTS = [
    Hint("Flatten each patch channel first: (channel, row, column), the order of conv1.weight.flatten(1), "
         "not with the channels last as in a (H, W, C) picture.",
         mistake=lambda x, p: _flat(_grid(x, p).permute(0, 2, 3, 4, 5, 1))),
    Hint("Your patches go column by column. The convolution's output is read row by row "
         "(conv1(x).flatten(2)): left to right along the top row of patches, then the next row down.",
         mistake=lambda x, p: _flat(_grid(x, p).permute(0, 3, 2, 1, 4, 5))),
    Hint("Inside a patch, the pixels go row by row (the weight's layout is channel, height, width); "
         "you swapped height and width.",
         mistake=lambda x, p: _flat(_grid(x, p).permute(0, 2, 3, 1, 5, 4))),
    Hint("A plain reshape does not cut squares: neighbouring values in memory run along an image row, "
         "across several patches. Use unfold (F.unfold or Tensor.unfold) or reshape to (B, C, H/p, p, W/p, p) "
         "and permute.", mistake=lambda x, p: x.reshape(x.shape[0], -1, x.shape[1] * p * p)),
    Hint("F.unfold returns (B, C*p*p, patches); transpose(1, 2) to get one row per patch.",
         detect=lambda got, expected, inputs: isinstance(got, torch.Tensor) and got.shape == expected.transpose(1, 2).shape
         and got.shape != expected.shape),
]


def check_patchify(fn: Callable[[torch.Tensor, int], torch.Tensor], *, trials: int = 6, seed: int | None = None,
                   verbose: bool = True) -> CheckResult:
    """Check ``fn(images, patch_size)``: (B, num_patches, 3 * p * p) patches in the ViT's order.

    Your patches times the flattened ``conv1`` weight must equal the patch embedding of
    :class:`~clip_tutorial.model.vision.VisionTransformer`; the reference is
    :func:`reference_patchify`. Explained in Chapter 2.1.

    Args:
        fn: your function; ``images`` is (B, 3, H, W) with H and W multiples of ``patch_size``.
        trials: number of random inputs to try.
        seed: seed of the inputs (a fresh one by default).
        verbose: print the feedback.

    Returns:
        A :class:`~clip_tutorial.exercises.CheckResult`, truthy when ``fn`` is correct.
    """
    table = [(2, 8, 8, 4), (1, 12, 12, 4), (3, 6, 9, 3), (2, 16, 16, 8), (1, 4, 4, 4), (2, 10, 6, 2)]

    def make(g: torch.Generator, trial: int) -> tuple:
        if trial < len(table):
            b, h, w, p = table[trial]
        else:
            p = int(torch.randint(2, 6, (), generator=g))
            b, h, w = (int(torch.randint(1, 4, (), generator=g)) * k for k in (1, p, p))
        return torch.randn(b, 3, h, w, generator=g), p

    return run_check(fn, reference_patchify, make, _PATCH_HINTS, "patchify", trials, seed, verbose)


_MASK_HINTS = [
    Hint("The diagonal must stay 0: a token may attend to itself. Mask only strictly above the diagonal "
         "(torch.triu(..., diagonal=1)).", mistake=lambda n: torch.full((n, n), -math.inf).triu(0)),
    Hint("You masked the past instead of the future: -inf goes above the diagonal (column j > row i), "
         "so that token i sees tokens 0..i.", mistake=lambda n: torch.full((n, n), -math.inf).tril(-1)),
    Hint("CLIP's mask is additive floats (0 where allowed, -inf where not), added to the attention scores "
         "before the softmax; a boolean mask is torch's other convention.",
         detect=lambda got, expected, inputs: isinstance(got, torch.Tensor) and got.dtype == torch.bool),
    Hint("A multiplicative 0/1 mask does not work before a softmax (exp(0) = 1 still gets weight). "
         "Use 0 where a token may look and float('-inf') where it may not.",
         detect=lambda got, expected, inputs: isinstance(got, torch.Tensor) and got.shape == expected.shape
         and bool(torch.isfinite(got).all()) and bool(((got == 0) | (got == 1)).all())),
    Hint("Use float('-inf') (or -math.inf), not a large finite negative number, to match CLIP exactly.",
         detect=lambda got, expected, inputs: isinstance(got, torch.Tensor) and got.shape == expected.shape
         and got.is_floating_point() and bool(torch.isfinite(got).all())
         and bool(((got < -1e3) == torch.isinf(expected)).all())),
]


def check_causal_mask(fn: Callable[[int], torch.Tensor], *, trials: int = 6, seed: int | None = None,
                      verbose: bool = True) -> CheckResult:
    """Check ``fn(n)``: CLIP's (n, n) additive causal mask, ``-inf`` above the diagonal and 0 elsewhere.

    The reference is :func:`clip_tutorial.model.transformer.causal_mask`. Explained in Chapter 2.2.

    Args:
        fn: your function of the number of tokens ``n``.
        trials: number of random inputs to try.
        seed: seed of the inputs (a fresh one by default).
        verbose: print the feedback.

    Returns:
        A :class:`~clip_tutorial.exercises.CheckResult`, truthy when ``fn`` is correct.
    """
    table = [4, 1, 7, 2, 77, 12]

    def make(g: torch.Generator, trial: int) -> tuple:
        return (table[trial] if trial < len(table) else int(torch.randint(1, 40, (), generator=g)),)

    result = run_check(fn, reference_causal_mask, make, _MASK_HINTS, "causal_mask", trials, seed, False, atol=0.0, rtol=0.0)
    if result.passed:  # the inputs are sizes, not tensors: name them in the feedback
        sizes = ", ".join(str(table[t]) for t in range(min(trials, len(table))))
        more = f" and {trials - len(table)} random sizes" if trials > len(table) else ""
        result = CheckResult(True, f"✅ causal_mask: passed! Your mask matches CLIP's for n = {sizes}{more}.", result.name)
    return report(result, verbose)


def _rows(x: torch.Tensor) -> torch.Tensor:
    return (x.softmax(dim=1) - torch.eye(len(x), dtype=x.dtype)) / len(x)


def _cols(x: torch.Tensor) -> torch.Tensor:
    return (x.softmax(dim=0) - torch.eye(len(x), dtype=x.dtype)) / len(x)


_GRADIENT_HINTS = [
    Hint("Divide by the batch size N: each direction's loss is a mean over N examples, so its gradient is "
         "(softmax - I) / N.", mistake=lambda x: (_rows(x) + _cols(x)) * len(x) / 2),
    Hint("Divide by the batch size N: each direction's loss is a mean over N examples, so its gradient is "
         "(softmax - I) / N.", mistake=lambda x: (_rows(x) + _cols(x)) * len(x)),
    Hint("The loss averages the two directions, so add their gradients and divide by 2.",
         mistake=lambda x: _rows(x) + _cols(x)),
    Hint("You have only one direction. The text-to-image loss is a softmax over each column "
         "(softmax(dim=0)); its gradient adds to the image-to-text one.", mistake=lambda x: _rows(x) / 2),
    Hint("You have only one direction. The text-to-image loss is a softmax over each column "
         "(softmax(dim=0)); its gradient adds to the image-to-text one.", mistake=lambda x: _cols(x) / 2),
    Hint("You have only one direction. The text-to-image loss is a softmax over each column "
         "(softmax(dim=0)); its gradient adds to the image-to-text one.", mistake=lambda x: _rows(x)),
    Hint("The sign is flipped: the gradient is softmax minus the one-hot target (the loss falls when the "
         "matching logit rises, so its gradient there is negative).", mistake=lambda x: -(_rows(x) + _cols(x)) / 2),
    Hint("The text-to-image direction is a softmax over logits_per_image.T; its gradient with respect to "
         "logits_per_image is that result transposed back (.T).", mistake=lambda x: (_rows(x) + _rows(x.T)) / 2),
    Hint("Use the softmax probabilities, not log-probabilities.",
         mistake=lambda x: (x.log_softmax(1) + x.log_softmax(0) - 2 * torch.eye(len(x), dtype=x.dtype)) / (2 * len(x))),
]


def check_loss_gradient(fn: Callable[[torch.Tensor], torch.Tensor], *, trials: int = 6, seed: int | None = None,
                        verbose: bool = True) -> CheckResult:
    """Check ``fn(logits_per_image)``: the gradient of CLIP's loss with respect to the logits, in closed form.

    The reference is :func:`clip_tutorial.objectives.loss.clip_loss_gradient`, which equals autograd's
    gradient of :func:`clip_tutorial.clip_loss`. Explained in Chapter 2.3.

    Args:
        fn: your function; ``logits_per_image`` is (N, N) with the matching pairs on the diagonal.
        trials: number of random inputs to try.
        seed: seed of the inputs (a fresh one by default).
        verbose: print the feedback.

    Returns:
        A :class:`~clip_tutorial.exercises.CheckResult`, truthy when ``fn`` is correct.
    """
    table = [6, 4, 1, 9, 2, 16]

    def make(g: torch.Generator, trial: int) -> tuple:
        n = table[trial] if trial < len(table) else int(torch.randint(2, 20, (), generator=g))
        return (3.0 * torch.randn(n, n, generator=g) + 4.0 * torch.eye(n),)

    def reference(logits_per_image: torch.Tensor) -> torch.Tensor:
        return clip_loss_gradient(logits_per_image)

    return run_check(fn, reference, make, _GRADIENT_HINTS, "loss_gradient", trials, seed, verbose, atol=1e-6)


_EOT_HINTS = [
    Hint("The last position is usually padding, not the end of the text: find the end-of-text token, "
         "the largest id in each row, with tokens.argmax(dim=-1).", mistake=lambda h, t: h[:, -1]),
    Hint("CLIP's text tower has no class token at position 0; it reads the end-of-text token "
         "(tokens.argmax(dim=-1)), the only position that has seen the whole caption through the causal mask.",
         mistake=lambda h, t: h[:, 0]),
    Hint("CLIP does not average over the tokens; it reads one position per text, the end-of-text token.",
         mistake=lambda h, t: h.mean(dim=1)),
    Hint("hidden[:, index] picks every index for every row; pair each row with its own index: "
         "hidden[torch.arange(B), index].", detect=lambda got, expected, inputs: isinstance(got, torch.Tensor)
         and got.ndim == 3),
]


def check_eot_pooling(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, trials: int = 6,
                      seed: int | None = None, verbose: bool = True) -> CheckResult:
    """Check ``fn(hidden, tokens)``: the (B, D) rows of ``hidden`` at each text's end-of-text token.

    ``tokens`` (B, T) are padded token ids whose end-of-text token has the largest id, as in
    CLIP's vocabulary; the reference is :func:`reference_eot_pooling`. Explained in Chapter 2.2.

    Args:
        fn: your function; ``hidden`` is the transformer's output (B, T, D).
        trials: number of random inputs to try.
        seed: seed of the inputs (a fresh one by default).
        verbose: print the feedback.

    Returns:
        A :class:`~clip_tutorial.exercises.CheckResult`, truthy when ``fn`` is correct.
    """
    table = [(4, 8, 6), (1, 5, 4), (3, 12, 8), (5, 3, 2), (2, 16, 4), (6, 7, 3)]
    vocab = 50

    def make(g: torch.Generator, trial: int) -> tuple:
        if trial < len(table):
            b, t, d = table[trial]
        else:
            b, t, d = (int(torch.randint(1, 10, (), generator=g)) + 1 for _ in range(3))
        tokens = torch.zeros(b, t, dtype=torch.long)
        for row in range(b):  # start token, some words, end token, padding; lengths vary
            end = 1 + int(torch.randint(0, t - 1, (), generator=g)) if t > 1 else 0
            tokens[row, :end] = torch.randint(1, vocab - 2, (end,), generator=g)
            tokens[row, 0] = vocab - 2
            tokens[row, end] = vocab - 1
        return torch.randn(b, t, d, generator=g), tokens

    return run_check(fn, reference_eot_pooling, make, _EOT_HINTS, "eot_pooling", trials, seed, verbose)



# -- predict: how many tokens does ViT-B/32 read? ------------------------------------------------

def _measure_vit_b32_tokens() -> float:
    """Build ViT-B/32's image tower on the meta device and count the tokens its transformer receives."""
    config = get_config("ViT-B/32")
    with torch.device("meta"):
        visual = VisionTransformer(config.image_resolution, config.vision_patch_size, config.vision_width,
                                   config.vision_layers, config.num_vision_heads, config.embed_dim)
        sequence = visual.tokens(torch.empty(1, 3, config.image_resolution, config.image_resolution))
    return float(sequence.shape[1])


def check_vit_b32_tokens(prediction: object, *, verbose: bool = True) -> CheckResult:
    """Check your prediction of the number of tokens ViT-B/32's transformer reads for one image.

    The experiment builds the released ViT-B/32's image tower on the ``meta`` device (shapes only,
    nothing allocated), feeds it one 224 x 224 image and counts the rows of the sequence that goes
    into the first block. Explained in Chapter 2.1.

    Args:
        prediction: your number (``None`` before you have written one).
        verbose: print the feedback.

    Returns:
        A :class:`~clip_tutorial.exercises.CheckResult`, truthy when the prediction is exact.
    """
    return check_estimate(
        prediction, _measure_vit_b32_tokens, name="vit_b32_tokens", tolerance=0.5, unit=" tokens",
        explanation="A 224-pixel side cut into 32-pixel patches gives 224 / 32 = 7 patches per side,\n"
                    "so 7 x 7 = 49 patch tokens; the class token is prepended, and the transformer\n"
                    "reads 49 + 1 of them.",
        verbose=verbose)


# -- diagnose: a causal mask the wrong way round ---------------------------------------------------

def reversed_causal_mask(n: int) -> torch.Tensor:
    """A broken causal mask, for the exercise: ``-inf`` *below* the diagonal instead of above it.

    Row ``i`` (the query) may then look at keys ``j >= i``: itself and the tokens after it.
    Explained in Chapter 2.5.
    """
    return torch.full((n, n), -math.inf).tril(diagonal=-1)


REVERSED_MASK_CHOICES = {
    "a": "The text features become NaN: some query has no key left to attend to",
    "b": "Each position sees only itself and the positions after it, so the end-of-text position never sees "
         "the words: two captions of the same length get the same feature",
    "c": "Nothing changes: the end-of-text token still attends to every token, so the features are unchanged",
}


def _measure_reversed_mask() -> str:
    """Run a small random CLIP's text tower with the right mask and with the reversed one."""
    generator = torch.Generator().manual_seed(0)
    config = CLIPConfig(embed_dim=16, image_resolution=32, vision_layers=1, vision_width=32, vision_patch_size=16,
                        context_length=10, vocab_size=50, transformer_width=32, transformer_heads=2,
                        transformer_layers=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIP(config).eval()
    # two captions of the same length with different words: start token 48, four words, end token 49, padding
    words = torch.randint(1, 48, (2, 4), generator=generator)
    tokens = torch.zeros(2, 10, dtype=torch.long)
    tokens[:, 0], tokens[:, 1:5], tokens[:, 5] = 48, words, 49
    with torch.no_grad():
        mended = model.encode_text(tokens)
        model.attn_mask = reversed_causal_mask(config.context_length)
        broken = model.encode_text(tokens)
    if torch.isnan(broken).any():
        return "a"
    if torch.allclose(broken, mended, atol=1e-6):
        return "c"
    if torch.allclose(broken[0], broken[1], atol=1e-6) and not torch.allclose(mended[0], mended[1], atol=1e-3):
        return "b"
    raise RuntimeError("reversed_mask: the experiment matched none of the choices")


def check_reversed_mask(answer: object, *, verbose: bool = True) -> CheckResult:
    """Check your diagnosis of a text tower whose causal mask is built the wrong way round.

    The experiment puts :func:`reversed_causal_mask` into a small random CLIP in place of the right
    mask, encodes two captions of the same length with different words, and compares the features
    with those of the mended model. Explained in Chapter 2.5.

    Args:
        answer: the letter of your diagnosis, ``"a"``, ``"b"`` or ``"c"`` (``None`` before you choose).
        verbose: print the feedback.

    Returns:
        A :class:`~clip_tutorial.exercises.CheckResult`, truthy when the diagnosis is the measured one.
    """
    return check_choice(
        answer, _measure_reversed_mask, REVERSED_MASK_CHOICES, name="reversed_mask",
        explanation="With -inf below the diagonal, query i may attend to keys j >= i. No row is empty\n"
                    "(the diagonal stays 0), so nothing becomes NaN, but information now flows backwards.\n"
                    "The end-of-text position sees itself and the padding after it; in the next block\n"
                    "those positions have seen only what follows them too. So the feature depends on\n"
                    "where the end-of-text token sits, not on the words before it: the broken model\n"
                    "gave both captions the same vector.",
        verbose=verbose)


#: The exercises of Chapter 2, in the book's order (section "Summary and exercises").
EXERCISES = (
    Exercise("ch2.patchify", "implement", check_patchify, "Cut an image into patches"),
    Exercise("ch2.vit_b32_tokens", "predict", check_vit_b32_tokens, "Predict: how many tokens does ViT-B/32 read?"),
    Exercise("ch2.causal_mask", "implement", check_causal_mask, "The causal mask"),
    Exercise("ch2.reversed_mask", "diagnose", check_reversed_mask, "Break it and explain: a mask the wrong way round"),
    Exercise("ch2.loss_gradient", "implement", check_loss_gradient, "The gradient of the loss"),
    Exercise("ch2.eot_pooling", "implement", check_eot_pooling, "Pooling at the end-of-text token"),
)
