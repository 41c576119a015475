"""Checks for the exercises of Chapter 7: SigLIP's sigmoid loss, FILIP's token matching, guided diffusion.

Three exercises ask for a function. Each ``check_<name>(fn)`` runs your ``fn`` on fresh random
inputs, compares it with the package's reference, prints ✅ or ❌ with an explanation, and returns
a :class:`~clip_tutorial.exercises.CheckResult` that is truthy when you passed. These checks take
the keyword arguments ``trials`` (number of random inputs), ``seed`` (of the inputs; a fresh one
by default) and ``verbose`` (print the feedback).

Three exercises ask for a prediction or a diagnosis instead: :func:`check_initial_sigmoid_loss`,
:func:`check_padded_mean` and :func:`check_strong_guidance` take your answer, run a small
experiment (well under a second on a CPU; no trained model is needed) and compare.

``EXERCISES`` lists all six in the book's order. Explained in Chapter 7 (section "Summary and exercises").
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from clip_tutorial.generate.diffusion import NoiseSchedule, ddim_sample, guided_eps, make_schedule, q_sample, \
    split_prediction
from clip_tutorial.objectives.filip import filip_similarity
from clip_tutorial.objectives.loss import clip_loss, siglip_loss
from .core import CheckResult, Hint, NotANumber, ask_first, ensure_callable, finish_check, one_thread, run_check
from .predict import check_choice, check_estimate
from .registry import Exercise

__all__ = ["EXERCISES", "check_sigmoid_loss", "check_initial_sigmoid_loss", "check_filip_similarity",
           "check_padded_mean", "check_guidance_step", "check_strong_guidance", "reference_sigmoid_loss",
           "reference_filip_similarity", "reference_guidance_step", "measure_initial_sigmoid_loss",
           "measure_padded_mean", "measure_strong_guidance", "broken_text_to_image", "INITIAL_BATCH", "INITIAL_DIM",
           "INITIAL_TOLERANCE", "PADDED_MEAN_CHOICES", "STRONG_GUIDANCE_CHOICES", "GUIDANCE_WEIGHT"]


class _BadResult(NotANumber):
    """The reader's function returned something of the wrong kind (the message says what)."""


def _check_letter(answer: Any, name: str, measure: Callable[[], str], choices: dict[str, str],
                  explain: Callable[[], str], verbose: bool) -> CheckResult:
    """:func:`check_choice` for one of this chapter's lettered answers; no experiment runs before an answer."""
    if answer is None:
        return ask_first(name, 'answer ("a", "b" or "c")', verbose)
    return check_choice(answer, measure, choices, name=name, explanation=explain(), verbose=verbose)


# -- Exercise 1: SigLIP's sigmoid loss ---------------------------------------------------------------

def reference_sigmoid_loss(image_features: torch.Tensor, text_features: torch.Tensor, t: torch.Tensor,
                           b: torch.Tensor) -> torch.Tensor:
    """SigLIP's loss of a batch: ``siglip_loss(t * cos + b)`` with the cosines of the normalised features.

    ``t`` is the temperature (the multiplier, 10 at SigLIP's initialisation) and ``b`` the bias
    (-10 there). Computed by :func:`clip_tutorial.objectives.loss.siglip_loss`. Explained in Chapter 7.1.
    """
    return siglip_loss(_siglip_logits(image_features, text_features, t, b))


def _siglip_logits(image_features: torch.Tensor, text_features: torch.Tensor, t: torch.Tensor,
                   b: torch.Tensor) -> torch.Tensor:
    """SigLIP's (N, N) logits ``t * cos + b`` of two feature matrices."""
    return t * (F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T) + b


def _sigmoid_mistake(labels: str = "signs", reduce: str = "batch", normalise: bool = True,
                     logits: Callable[..., torch.Tensor] | None = None) -> Callable[..., torch.Tensor]:
    """SigLIP's loss with one piece done wrong."""
    def loss(image_features: torch.Tensor, text_features: torch.Tensor, t: torch.Tensor,
             b: torch.Tensor) -> torch.Tensor:
        img, txt = (F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1)) if normalise \
            else (image_features, text_features)
        z = logits(img @ txt.T, t, b) if logits is not None else t * (img @ txt.T) + b
        eye = torch.eye(len(z), dtype=z.dtype)
        sign = {"signs": 2 * eye - 1, "eye": eye, "ones": torch.ones_like(z), "flipped": 1 - 2 * eye}[labels]
        terms = -F.logsigmoid(sign * z)
        return {"batch": terms.sum() / len(z), "pairs": terms.mean(), "sum": terms.sum()}[reduce]
    return loss


_SIGMOID_HINTS = [
    Hint("The labels are +1 on the diagonal and -1 everywhere else (2 * torch.eye(n) - 1): with 0 off the "
         "diagonal, every negative pair costs log 2 whatever its logit, and nothing pushes it down.",
         mistake=_sigmoid_mistake(labels="eye")),
    Hint("Only the diagonal pairs match: the labels are +1 on the diagonal and -1 elsewhere, not +1 everywhere.",
         mistake=_sigmoid_mistake(labels="ones")),
    Hint("The signs are the wrong way round: a matching pair (the diagonal) has the label +1.",
         mistake=_sigmoid_mistake(labels="flipped")),
    Hint("Sum the N^2 pair terms and divide by the batch size N, as the paper does; .mean() divides by N^2.",
         mistake=_sigmoid_mistake(reduce="pairs")),
    Hint("Divide the sum of the pair terms by the batch size N.", mistake=_sigmoid_mistake(reduce="sum")),
    Hint("That is CLIP's softmax loss. SigLIP makes each pair its own yes-or-no question: "
         "-log sigmoid(label * logit) for every pair, no softmax over rows or columns.",
         mistake=lambda i, x, t, b: clip_loss(_siglip_logits(i, x, t, b))),
    Hint("Normalise the features first (F.normalize(x, dim=-1)): the logits are t times the cosine, plus b.",
         mistake=_sigmoid_mistake(normalise=False)),
    Hint("The bias is added after the scaling: t * cos + b, not t * (cos + b).",
         mistake=_sigmoid_mistake(logits=lambda cos, t, b: t * (cos + b))),
    Hint("t is already the temperature (the multiplier): use t * cos, not exp(t) * cos.",
         mistake=_sigmoid_mistake(logits=lambda cos, t, b: t.exp() * cos + b)),
]


def _long_and_short(g: torch.Generator, n: int, d: int) -> torch.Tensor:
    """``n`` random rows of dimension ``d`` with lengths from 0.2 to 4, so that a missing normalisation shows."""
    return torch.randn(n, d, generator=g) * torch.empty(n, 1).uniform_(0.2, 4.0, generator=g)


def check_sigmoid_loss(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], *,
                       trials: int = 6, seed: int | None = None, verbose: bool = True) -> CheckResult:
    """Check ``fn(image_features, text_features, t, b)``: SigLIP's sigmoid loss of a batch, a scalar tensor.

    ``image_features`` and ``text_features`` are (N, D), not normalised, row ``i`` of each a matching
    pair; ``t`` (the temperature, a multiplier) and ``b`` (the bias) are 0-dim tensors, SigLIP's
    initial 10 and -10 among the trials, and a batch of one too. The result must stay differentiable.
    The reference is :func:`reference_sigmoid_loss`. Returns a :class:`~clip_tutorial.exercises.CheckResult`.
    Explained in Chapter 7.1.
    """
    ensure_callable(fn, "fn")
    table = [(6, 8, 10.0, -10.0), (5, 16, 3.0, 0.5), (8, 8, 15.0, -4.0), (1, 8, 10.0, -10.0), (3, 4, 1.0, 2.0),
             (12, 32, 20.0, -12.0)]

    def make(g: torch.Generator, trial: int) -> tuple:
        if trial < len(table):
            n, d, t, b = table[trial]
        else:
            n, d = int(torch.randint(1, 16, (), generator=g)), int(torch.randint(2, 33, (), generator=g))
            t, b = float(torch.empty(()).uniform_(1.0, 20.0, generator=g)), float(torch.randn((), generator=g) * 5)
        return _long_and_short(g, n, d), _long_and_short(g, n, d), torch.tensor(t), torch.tensor(b)

    result = run_check(fn, reference_sigmoid_loss, make, _SIGMOID_HINTS, "sigmoid_loss", trials, seed, False,
                       require_grad=True)
    return finish_check(result, verbose, f"Your loss matches clip_tutorial.objectives.loss.siglip_loss on {trials} "
                        "random batches (a batch of one and SigLIP's initial t = 10, b = -10 among them), and "
                        "training could backpropagate through it.")


# -- Exercise 2 (predict): the sigmoid loss at initialisation -----------------------------------------

#: The batch size of :func:`measure_initial_sigmoid_loss`.
INITIAL_BATCH = 1024
#: The dimension of its random unit features.
INITIAL_DIM = 64
#: How far (in nats) a prediction may be from the measurement.
INITIAL_TOLERANCE = 0.25
_INITIAL_T, _INITIAL_B = 10.0, -10.0
_INITIAL_DRAWS = 4


@functools.lru_cache(maxsize=1)
def _initial_facts(seed: int = 0) -> dict[str, float]:
    """The sigmoid loss of random unit features at SigLIP's initialisation, split into positives and negatives."""
    g = torch.Generator().manual_seed(seed)
    facts = {"loss": 0.0, "positives": 0.0, "negatives": 0.0, "no_bias": 0.0}
    with one_thread(), torch.no_grad():
        for _ in range(_INITIAL_DRAWS):
            img = F.normalize(torch.randn(INITIAL_BATCH, INITIAL_DIM, generator=g, dtype=torch.float64), dim=-1)
            txt = F.normalize(torch.randn(INITIAL_BATCH, INITIAL_DIM, generator=g, dtype=torch.float64), dim=-1)
            cosines = img @ txt.T
            logits = _INITIAL_T * cosines + _INITIAL_B
            positives = -F.logsigmoid(logits.diagonal()).sum() / INITIAL_BATCH
            facts["loss"] += float(siglip_loss(logits)) / _INITIAL_DRAWS
            facts["positives"] += float(positives) / _INITIAL_DRAWS
            facts["no_bias"] += float(siglip_loss(_INITIAL_T * cosines)) / _INITIAL_DRAWS
    facts["negatives"] = facts["loss"] - facts["positives"]
    return facts


def measure_initial_sigmoid_loss() -> float:
    """SigLIP's loss at initialisation (t = 10, b = -10) on random unit features, averaged over 4 batches.

    Each batch holds :data:`INITIAL_BATCH` image and text features, drawn independently and
    uniformly on the unit sphere of dimension :data:`INITIAL_DIM` (seeded, so the value is the same
    every time): what two untrained towers give, with no pair matching better than another. The
    loss is :func:`clip_tutorial.objectives.loss.siglip_loss`. Explained in Chapter 7.1.
    """
    return _initial_facts()["loss"]


def check_initial_sigmoid_loss(prediction: Any, *, verbose: bool = True) -> CheckResult:
    """Check your prediction of SigLIP's loss at initialisation for a batch of :data:`INITIAL_BATCH` pairs.

    The check runs :func:`measure_initial_sigmoid_loss` and accepts a prediction within
    :data:`INITIAL_TOLERANCE` nats of it. ``None`` (no prediction yet) prints a reminder and returns
    a falsy result. Explained in Chapter 7.1.

    Raises:
        TypeError: if ``prediction`` is not a number (or ``None``).
        ValueError: if ``prediction`` is not finite.
    """
    if prediction is None:
        return ask_first("initial_sigmoid_loss", "prediction", verbose)
    facts = _initial_facts()
    pairs = INITIAL_BATCH * (INITIAL_BATCH - 1)
    explanation = (
        f"Random unit vectors in {INITIAL_DIM} dimensions are nearly orthogonal (cosines of about "
        f"±{1 / math.sqrt(INITIAL_DIM):.3g}), so every logit t cos + b sits near b = {_INITIAL_B:g}: at the start the "
        f"model answers 'no match' for every pair. For the {pairs:,} negative pairs that is right: each costs about "
        f"e^{_INITIAL_B:g}, and together they add {facts['negatives']:.3f} nats to the loss (a sum over pairs "
        f"divided by the batch size). For the {INITIAL_BATCH:,} matching pairs it is wrong: each costs about "
        f"-b = {-_INITIAL_B:g}, and they add {facts['positives']:.3f} nats. So the loss starts near -b whatever the "
        f"batch size, where CLIP's softmax loss starts near ln N = {math.log(INITIAL_BATCH):.2f} and grows with N. "
        f"With b = 0 every logit would sit near 0, every pair would cost ln 2 or a little more, and the loss would "
        f"start at {facts['no_bias']:.0f}, nearly all of it from the negatives: the bias of {_INITIAL_B:g} is how "
        f"SigLIP copes with having far more negative pairs than positive ones.")
    return check_estimate(prediction, measure_initial_sigmoid_loss, name="initial_sigmoid_loss",
                          tolerance=INITIAL_TOLERANCE, explanation=explanation, unit=" nats", verbose=verbose)


# -- Exercise 3: FILIP's token-wise similarity ------------------------------------------------------

def reference_filip_similarity(image_tokens: torch.Tensor, text_tokens: torch.Tensor,
                               text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FILIP's ``(image_to_text, text_to_image)`` similarities, both (N_img, N_txt), every image token real.

    Computed by :func:`clip_tutorial.objectives.filip.filip_similarity`. Explained in Chapter 7.3.
    """
    return filip_similarity(image_tokens, text_tokens, text_mask)


_DIRECTIONS = ("image_to_text", "text_to_image")


def _stacked(fn: Callable[..., Any], call: str = "filip_similarity(image_tokens, text_tokens, text_mask)"
             ) -> Callable[..., torch.Tensor]:
    """``fn``'s two similarities stacked into one (2, N_img, N_txt) tensor, after checking what it returned."""
    def stacked(image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        got = fn(image_tokens, text_tokens, text_mask)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            what = f"a {type(got).__name__}" if not isinstance(got, (tuple, list)) else f"{len(got)} items"
            raise _BadResult(f"{call} returned {what}; expected two tensors, (image_to_text, text_to_image).")
        want = (image_tokens.shape[0], text_tokens.shape[0])
        for name, x in zip(_DIRECTIONS, got):
            if not isinstance(x, torch.Tensor):
                raise _BadResult(f"Your {name} is a {type(x).__name__}; expected a tensor of shape {want}.")
            if tuple(x.shape) != want:
                flipped = " Row i, column j is image i and text j: transpose it." \
                    if tuple(x.shape) == want[::-1] else ""
                raise _BadResult(f"Your {name} has shape {tuple(x.shape)}; expected {want} (N_img, N_txt).{flipped}")
        return torch.stack([got[0].to(torch.float64), got[1].to(torch.float64)])
    return stacked


def _filip_mistake(mask_max: bool = True, mask_mean: bool = True, fill: float = -math.inf, zero_padding: bool = False,
                   pool: str = "max-mean", swap: bool = False, prefix: bool = False) -> Callable[..., tuple]:
    """FILIP's similarity with one piece done wrong."""
    def similarity(image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor) -> tuple:
        mask = text_mask
        if prefix:  # the first n positions taken as the real ones, n = the number of real tokens
            mask = torch.arange(mask.shape[1])[None] < mask.sum(dim=1, keepdim=True)
        if zero_padding:
            text_tokens = text_tokens * mask[..., None]
        sim = torch.einsum("ipd,jld->ijpl", image_tokens, text_tokens)  # (N_img, N_txt, P, L)
        real = mask[None, :, None, :]
        if pool == "mean-mean":
            both = (sim * real).sum(dim=(2, 3)) / (mask.sum(dim=1) * sim.shape[2])
            return both, both
        picked = sim.masked_fill(~real, fill) if mask_max else sim
        best_text, best_image = picked.amax(dim=3), sim.amax(dim=2)
        if pool == "max-max":
            i2t = best_text.amax(dim=2)
            t2i = best_image.masked_fill(~mask[None], -math.inf).amax(dim=2)
        else:
            i2t = best_text.mean(dim=2)
            t2i = (best_image * mask[None]).sum(dim=2) / mask.sum(dim=1) if mask_mean else best_image.mean(dim=2)
        return (t2i, i2t) if swap else (i2t, t2i)
    return similarity


_FILIP_HINTS = [
    Hint("Your two results are swapped: image_to_text averages over the image's tokens the best match of each "
         "among the text's tokens; text_to_image averages over the text's real tokens the best match of each among "
         "the image's tokens. Return (image_to_text, text_to_image).", mistake=_filip_mistake(swap=True)),
    Hint("Padding tokens are not words: leave them out of both directions. An image token's best match is taken "
         "over the text's real tokens only (fill the padding with -inf before the max), and the mean over the text "
         "counts its real tokens only.", mistake=_filip_mistake(mask_max=False, mask_mean=False)),
    Hint("image_to_text: each image token's best match must be among the text's real tokens; fill the padding "
         "positions with -inf before taking the max over the text's tokens.", mistake=_filip_mistake(mask_max=False)),
    Hint("text_to_image: average the best matches over the text's real tokens only, dividing by their number "
         "(text_mask.sum(dim=1)), not over all L positions.", mistake=_filip_mistake(mask_mean=False)),
    Hint("A padding position filled with 0 still wins the max when all of an image token's real matches are "
         "negative: fill it with -inf (or the dtype's minimum) instead.", mistake=_filip_mistake(fill=0.0)),
    Hint("Zeroing the padding tokens is not enough: a zero vector still counts in the mean over the text's tokens "
         "(divide by the number of real ones), and its similarity 0 can win a max over negative ones.",
         mistake=_filip_mistake(zero_padding=True, mask_max=False, mask_mean=False)),
    Hint("The real tokens need not come first (the start token is masked too): use text_mask itself, not the "
         "number of real tokens as a prefix length.", mistake=_filip_mistake(prefix=True)),
    Hint("FILIP averages the best matches: the mean over one side's tokens of the max over the other side's. "
         "You took the max of the max, a single pair of tokens.", mistake=_filip_mistake(pool="max-max")),
    Hint("Averaging every pair of tokens is the similarity of the mean tokens, which is CLIP's kind of comparison "
         "with extra steps. FILIP keeps each token's best match (a max) before the mean.",
         mistake=_filip_mistake(pool="mean-mean")),
]


def _filip_inputs(g: torch.Generator, n_img: int, n_txt: int, patches: int, length: int, dim: int,
                  max_real: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit image and text tokens and a text mask whose real tokens start at position 0 or 1 (a start token)."""
    image_tokens = F.normalize(torch.randn(n_img, patches, dim, generator=g), dim=-1)
    text_tokens = F.normalize(torch.randn(n_txt, length, dim, generator=g), dim=-1)
    mask = torch.zeros(n_txt, length, dtype=torch.bool)
    for j in range(n_txt):
        start = int(torch.randint(0, 2, (), generator=g)) if length > 1 else 0
        real = int(torch.randint(1, min(max_real, length - start) + 1, (), generator=g))
        mask[j, start: start + real] = True
    return image_tokens, text_tokens, mask


def check_filip_similarity(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple], *, trials: int = 6,
                           seed: int | None = None, verbose: bool = True) -> CheckResult:
    """Check ``fn(image_tokens, text_tokens, text_mask)``: FILIP's two token-wise similarities.

    ``image_tokens`` is (N_img, P, D) and ``text_tokens`` (N_txt, L, D), unit vectors (so dot
    products are cosines); ``text_mask`` is a bool (N_txt, L), ``True`` at each text's real tokens
    (at least one per text; the first position is sometimes a masked start token; the padding
    tokens hold vectors like any other). Every image token is real. ``fn`` returns
    ``(image_to_text, text_to_image)``, both (N_img, N_txt). The reference is
    :func:`clip_tutorial.objectives.filip.filip_similarity`. Returns a
    :class:`~clip_tutorial.exercises.CheckResult`. Explained in Chapter 7.3.
    """
    ensure_callable(fn, "fn")
    table = [(3, 4, 5, 7, 8, 4), (2, 3, 6, 6, 4, 1), (4, 2, 3, 8, 16, 6), (1, 1, 4, 5, 8, 3), (3, 5, 1, 4, 8, 2),
             (2, 2, 9, 3, 6, 2)]

    def make(g: torch.Generator, trial: int) -> tuple:
        if trial < len(table):
            return _filip_inputs(g, *table[trial])
        sizes = [int(torch.randint(1, 7, (), generator=g)) for _ in range(3)]
        length, dim = int(torch.randint(2, 9, (), generator=g)), int(torch.randint(2, 17, (), generator=g))
        return _filip_inputs(g, *sizes, length, dim, length)

    hints = [Hint(h.message, mistake=_stacked(h.mistake, "a mistake")) for h in _FILIP_HINTS]
    where = (r"at index \((\d), (\d+), (\d+)\)", lambda m: f"in {_DIRECTIONS[int(m[1])]} at image {m[2]}, text {m[3]}")
    result = run_check(_stacked(fn), _stacked(reference_filip_similarity), make, hints, "filip_similarity", trials,
                       seed, False, arg_names=["image_tokens", "text_tokens", "text_mask"], atol=1e-5, rtol=1e-4)
    return finish_check(result, verbose, f"Your similarities match clip_tutorial.objectives.filip.filip_similarity "
                        f"in both directions on {trials} random sets of tokens (one image and one text among them, "
                        "texts of one real token, masked start tokens and padding).", where)


# -- Exercise 4 (diagnose): zeroed padding in the mean -----------------------------------------------

#: The statements of the "diagnose" exercise on FILIP's text-to-image mean, by letter.
PADDED_MEAN_CHOICES: dict[str, str] = {
    "a": "nothing is wrong: multiplying the padding tokens by zero removes them, so the scores are the package's",
    "b": "the mean still divides by all L positions, so each prompt's score shrinks by its share of real tokens: "
         "images drift to the longest prompts, while each prompt still ranks the images in the same order",
    "c": "a zeroed padding token scores 0, more than the negative similarities of real tokens, so the prompts with "
         "the most padding score highest: images drift to the shortest prompts",
}
_PADDED = {"classes": 8, "length": 8, "patches": 10, "dim": 32, "per_class": 40, "noise": 0.5}


def broken_text_to_image(image_tokens: torch.Tensor, text_tokens: torch.Tensor,
                         text_mask: torch.Tensor) -> torch.Tensor:
    """A colleague's text-to-image similarity, broken: the code of the "diagnose" exercise.

    It zeroes the padding tokens, then takes each text token's best match among the
    image's tokens, and averages over all L positions. Do not copy it. Explained in
    Chapter 7.3 (section "Summary and exercises").
    """
    text_tokens = text_tokens * text_mask[..., None]                 # zero the padding
    sim = torch.einsum("ipd,jld->ijpl", image_tokens, text_tokens)   # (N_img, N_txt, P, L)
    return sim.amax(dim=2).mean(dim=2)                               # best image token, mean over L


@functools.lru_cache(maxsize=1)
def _padded_facts(seed: int = 0) -> dict[str, Any]:
    """Zero-shot classification by text-to-image similarity, with the broken and the package's mean."""
    p, g = _PADDED, torch.Generator().manual_seed(seed)
    classes, length, patches, dim = p["classes"], p["length"], p["patches"], p["dim"]
    lengths = torch.arange(1, classes + 1)                           # prompt c has c real tokens
    mask = torch.arange(length)[None] < lengths[:, None]
    prompts = F.normalize(torch.randn(classes, length, dim, generator=g), dim=-1)
    labels = torch.arange(classes).repeat_interleave(p["per_class"])
    images = F.normalize(torch.randn(len(labels), patches, dim, generator=g), dim=-1)   # background patches
    for i, c in enumerate(labels.tolist()):   # the first patches of an image show its prompt's words, with noise
        words = prompts[c, : int(lengths[c])]
        images[i, : len(words)] = F.normalize(words + p["noise"] * torch.randn(words.shape, generator=g)
                                              / math.sqrt(dim), dim=-1)
    with one_thread():
        mended = filip_similarity(images, prompts, mask)[1]
        broken = broken_text_to_image(images, prompts, mask)
        best = torch.einsum("ipd,jld->ijpl", images, prompts).amax(dim=2)   # each token's best match
        real_best = best[mask[None].expand_as(best)]                         # of the real tokens only
    predicted, expected = broken.argmax(dim=1), mended.argmax(dim=1)
    changed = predicted != expected
    same_order = bool(torch.equal(broken.argsort(dim=0), mended.argsort(dim=0)))
    drift = float((lengths[predicted] - lengths[expected])[changed].double().mean()) if changed.any() else 0.0
    if torch.allclose(broken, mended, atol=1e-6):
        letter = "a"
    elif drift > 0 and same_order:
        letter = "b"
    else:  # "c" when predictions drift to shorter prompts; no statement fits otherwise (check_choice says so)
        letter = "c" if drift < 0 else "none of them"
    return {"letter": letter, "images": len(labels), "classes": classes, "length": length,
            "accuracy_mended": float((expected == labels).double().mean()),
            "accuracy_broken": float((predicted == labels).double().mean()), "changed": int(changed.sum()),
            "to_longer": int((lengths[predicted] > lengths[expected])[changed].sum()), "same_order": same_order,
            "drift": drift, "best_positive": float((real_best > 0).double().mean()),
            "best_mean": float(real_best.mean())}


def measure_padded_mean() -> str:
    """Run the broken and the package's text-to-image similarity; return the letter the experiment supports.

    A synthetic zero-shot task, no trained model: 8 class prompts with 1 to 8 real tokens (of L = 8
    positions, unit vectors in 32 dimensions), and 40 images per class of 10 unit tokens each, the
    first of which are noisy copies of the class prompt's tokens, the others random background. Each
    image picks the prompt with the highest text-to-image similarity. The letter is ``"a"`` when the
    two similarities agree, else ``"b"`` or ``"c"`` as the changed predictions go to longer or
    shorter prompts on average. Explained in Chapter 7.3.
    """
    return _padded_facts()["letter"]


def check_padded_mean(answer: Any, *, verbose: bool = True) -> CheckResult:
    """Check your diagnosis (``"a"``, ``"b"`` or ``"c"``) of a text-to-image similarity that zeroes its padding.

    The code under diagnosis is :func:`broken_text_to_image`. The check runs it and the package's
    similarity on a synthetic zero-shot task (see :func:`measure_padded_mean`) and says which
    statement the experiment bears out. ``None`` (no answer yet) prints a reminder and returns a
    falsy result. Explained in Chapter 7.3.

    Raises:
        TypeError: if ``answer`` is neither ``None`` nor a string.
        ValueError: if ``answer`` is not one of the letters.
    """
    return _check_letter(answer, "padded_mean", measure_padded_mean, PADDED_MEAN_CHOICES, _padded_explanation,
                         verbose)


def _padded_explanation() -> str:
    """The measured facts behind the diagnosis of :func:`check_padded_mean`, in words."""
    f = _padded_facts()
    return (
        f"On {f['images']} images and {f['classes']} prompts of 1 to {f['length']} real tokens, the package's "
        f"similarity classifies {f['accuracy_mended']:.1%} of the images correctly and the broken one "
        f"{f['accuracy_broken']:.1%}; {f['changed']} predictions change, {f['to_longer']} of them to a longer prompt. "
        f"A zeroed token adds 0 to the sum, but the mean still divides by all {f['length']} positions, so a prompt "
        f"with n real tokens scores n/{f['length']} of its true similarity. Each best match is a max over the image's "
        f"tokens, so it is nearly always positive ({f['best_positive']:.2%} of them here, {f['best_mean']:.2f} on "
        f"average): the factor lowers every score, and the short prompts' most. One prompt's scores all shrink by "
        f"the same factor, so it still ranks the images in the same order "
        f"({'checked' if f['same_order'] else 'not so here'}): retrieval of images for a text would hide the bug; "
        f"classification, which compares prompts, shows it. Divide by text_mask.sum(dim=1), the real tokens.")


# -- Exercise 5: one guided DDIM step ---------------------------------------------------------------

def reference_guidance_step(x_t: torch.Tensor, eps_cond: torch.Tensor, eps_uncond: torch.Tensor, w: float,
                            alpha_bar_t: float, alpha_bar_prev: float) -> torch.Tensor:
    """One deterministic DDIM step with classifier-free guidance, from level ``alpha_bar_t`` to ``alpha_bar_prev``.

    The guided noise ``eps = eps_uncond + w (eps_cond - eps_uncond)`` comes from
    :func:`clip_tutorial.generate.diffusion.guided_eps` (given a denoiser that returns ``eps_cond``
    or ``eps_uncond``), the clean sample it implies from
    :func:`~clip_tutorial.generate.diffusion.split_prediction`, and the step re-noises that clean
    sample with the same noise at the lower level, :func:`~clip_tutorial.generate.diffusion.q_sample`:
    ``x_prev = sqrt(alpha_bar_prev) x0 + sqrt(1 - alpha_bar_prev) eps``, DDIM with ``eta = 0``.
    Explained in Chapter 7.5 (the step) and 7.6 (the guidance).
    """
    alpha_bar = torch.tensor([alpha_bar_prev, alpha_bar_t], dtype=torch.float64)
    betas = 1 - alpha_bar / torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
    schedule = NoiseSchedule("given", betas, alpha_bar)
    t = torch.ones(x_t.shape[0], dtype=torch.long)                  # step 1 is alpha_bar_t, step 0 alpha_bar_prev

    def denoiser(x: torch.Tensor, step: torch.Tensor, cond: Any, uncond: torch.Tensor) -> torch.Tensor:
        return torch.where(uncond.view(-1, *[1] * (x.ndim - 1)), eps_uncond, eps_cond)

    eps = guided_eps(denoiser, schedule, x_t, t, cond="the prompt", guidance=w)
    x0 = split_prediction(schedule, x_t, t, eps)[0]
    return q_sample(schedule, x0, t - 1, noise=eps)


def _step_mistake(combine: Callable[..., torch.Tensor] = lambda c, u, w: u + w * (c - u), renoise: str = "prev",
                  root: Callable[[float], float] = math.sqrt, renoise_eps: str = "guided"
                  ) -> Callable[..., torch.Tensor]:
    """One guided DDIM step with one piece done wrong."""
    def step(x_t: torch.Tensor, eps_cond: torch.Tensor, eps_uncond: torch.Tensor, w: float, alpha_bar_t: float,
             alpha_bar_prev: float) -> torch.Tensor:
        eps = combine(eps_cond, eps_uncond, w)
        x0 = (x_t - root(1 - alpha_bar_t) * eps) / root(alpha_bar_t)
        if renoise == "none":
            return x0
        level = alpha_bar_prev if renoise == "prev" else alpha_bar_t
        return root(level) * x0 + root(1 - level) * (eps if renoise_eps == "guided" else eps_cond)
    return step


_STEP_HINTS = [
    Hint("That is the (1 + w) eps_cond - w eps_uncond of Ho & Salimans's paper, where w = 0 means no guidance. "
         "Here, as in Stable Diffusion's guidance scale, w = 1 is the plain conditional model: "
         "eps = eps_uncond + w (eps_cond - eps_uncond).", mistake=_step_mistake(lambda c, u, w: (1 + w) * c - w * u)),
    Hint("Guidance starts from the unconditional prediction and moves towards the conditional one: "
         "eps_uncond + w (eps_cond - eps_uncond). You swapped the two.",
         mistake=_step_mistake(lambda c, u, w: c + w * (u - c))),
    Hint("You used eps_cond alone: w must weigh in (w = 0 gives the unconditional model, w = 1 the conditional one).",
         mistake=_step_mistake(lambda c, u, w: c)),
    Hint("You returned the predicted clean sample x0. One step goes to the next noise level: "
         "sqrt(alpha_bar_prev) x0 + sqrt(1 - alpha_bar_prev) eps.", mistake=_step_mistake(renoise="none")),
    Hint("Re-noising x0 at alpha_bar_t gives x_t back. Re-noise at the lower level, alpha_bar_prev.",
         mistake=_step_mistake(renoise="t")),
    Hint("Use the same guided noise in both places: the x0 you re-noise was computed with it.",
         mistake=_step_mistake(renoise_eps="cond")),
    Hint("The noise levels enter through square roots: x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps.",
         mistake=_step_mistake(root=lambda v: v)),
]


def check_guidance_step(fn: Callable[..., torch.Tensor], *, trials: int = 7, seed: int | None = None,
                        verbose: bool = True) -> CheckResult:
    """Check ``fn(x_t, eps_cond, eps_uncond, w, alpha_bar_t, alpha_bar_prev)``: one guided DDIM step.

    ``x_t``, ``eps_cond`` and ``eps_uncond`` are float tensors of one shape (images (B, 3, H, W) or
    embeddings (B, D)); ``w`` is the guidance weight (0, 1 and 7.5 among the trials);
    ``alpha_bar_t < alpha_bar_prev <= 1`` are floats, the last step (``alpha_bar_prev = 1``) among
    the trials. ``fn`` returns ``x_prev``, shaped like ``x_t``. The reference is
    :func:`reference_guidance_step`. Returns a :class:`~clip_tutorial.exercises.CheckResult`.
    Explained in Chapter 7.6.
    """
    ensure_callable(fn, "fn")
    table = [((2, 3, 4, 4), 3.0, 0.4, 0.6), ((5, 8), 0.0, 0.2, 0.35), ((3, 16), 1.0, 0.7, 0.8),
             ((1, 3, 2, 2), 7.5, 0.05, 0.1), ((4, 6), 2.0, 0.9, 1.0), ((2, 3, 8, 8), 1.5, 0.01, 0.03),
             ((1, 4), 4.0, 0.5, 0.98)]

    def make(g: torch.Generator, trial: int) -> tuple:
        if trial < len(table):
            shape, w, ab_t, ab_prev = table[trial]
        else:
            shape = (int(torch.randint(1, 5, (), generator=g)), int(torch.randint(1, 17, (), generator=g)))
            w = round(float(torch.empty(()).uniform_(0.0, 8.0, generator=g)), 2)
            ab_t = round(float(torch.empty(()).uniform_(0.02, 0.9, generator=g)), 3)
            ab_prev = round(float(torch.empty(()).uniform_(ab_t + 0.01, 1.0, generator=g)), 3)
        x_t, eps_cond, eps_uncond = (torch.randn(shape, generator=g) for _ in range(3))
        return x_t, eps_cond, eps_uncond, w, ab_t, ab_prev

    result = run_check(fn, reference_guidance_step, make, _STEP_HINTS, "guidance_step", trials, seed, False,
                       atol=1e-4, rtol=1e-4)
    return finish_check(result, verbose, f"Your step matches clip_tutorial.generate.diffusion (guided_eps, then one "
                        f"DDIM step) on {trials} random inputs (w = 0, 1 and 7.5 and the last step to alpha_bar = 1 "
                        "among them).")


# -- Exercise 6 (predict): what strong guidance does ------------------------------------------------

#: The guidance weight of the "predict" exercise (compared with 1, the plain conditional model).
GUIDANCE_WEIGHT = 3.0
#: The statements of the "predict" exercise on strong guidance, by letter.
STRONG_GUIDANCE_CHOICES: dict[str, str] = {
    "a": "nothing changes: the exact denoiser already knows the class, so guidance has nothing to add; the samples "
         "keep mean 1 and spread 0.5",
    "b": "the samples move away from class A and crowd together: their mean rises above 1 and their spread falls "
         "well below 0.5, more typical of B than B's own data, and less varied",
    "c": "the samples spread out: the push towards B is three times stronger, so the spread grows and many samples "
         "overshoot far beyond B",
}
_MIXTURE = {"means": (-1.0, 1.0), "std": 0.5, "samples": 2000, "steps": 50}


def _mixture_denoiser(schedule: NoiseSchedule) -> Callable[..., torch.Tensor]:
    """The exact noise prediction for 1-D data drawn half from N(-1, 0.5^2) (class 0) and half from N(1, 0.5^2).

    The noisy data of class k at level alpha_bar are Gaussian, N(sqrt(ab) mu_k, ab s^2 + 1 - ab), so
    the best noise prediction is ``-sqrt(1 - ab)`` times the score (the gradient of the log density)
    of that Gaussian when the class is given, and of the two-Gaussian mixture when it is not.
    """
    means, std = torch.tensor(_MIXTURE["means"], dtype=torch.float64), _MIXTURE["std"]

    def denoiser(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None = None
                 ) -> torch.Tensor:
        ab = schedule.alpha_bar[t].view(-1, 1)
        var = ab * std ** 2 + 1 - ab
        centred = x.double() - ab.sqrt() * means                        # (B, 2): x minus each class's mean
        scores = -centred / var
        weights = torch.softmax(-centred ** 2 / (2 * var), dim=1)       # p(class | x), equal priors, same var
        conditional = scores.gather(1, cond.view(-1, 1))
        unconditional = (weights * scores).sum(dim=1, keepdim=True)
        score = conditional if uncond is None else torch.where(uncond.view(-1, 1), unconditional, conditional)
        return (-(1 - ab).sqrt() * score).to(x.dtype)
    return denoiser


@functools.lru_cache(maxsize=1)
def _guidance_facts(seed: int = 0) -> dict[str, Any]:
    """Samples of class 1 (B) with guidance 1 and :data:`GUIDANCE_WEIGHT`: their mean, spread and side."""
    schedule = make_schedule("cosine", 1000)
    denoiser = _mixture_denoiser(schedule)
    n = _MIXTURE["samples"]
    cond = torch.ones(n, dtype=torch.long)
    facts: dict[str, Any] = {"samples": n, "steps": _MIXTURE["steps"]}
    with one_thread():
        for label, w in (("plain", 1.0), ("strong", GUIDANCE_WEIGHT)):
            start = torch.randn(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
            x = ddim_sample(denoiser, schedule, start, cond, steps=_MIXTURE["steps"], guidance=w, progress=False)
            facts[label] = {"mean": float(x.mean()), "std": float(x.std()), "b_side": float((x > 0).double().mean())}
    plain, strong = facts["plain"], facts["strong"]
    if strong["std"] > 1.2 * plain["std"]:
        facts["letter"] = "c"
    elif strong["std"] < 0.8 * plain["std"] and strong["mean"] > plain["mean"]:
        facts["letter"] = "b"
    else:
        facts["letter"] = "a"
    return facts


def measure_strong_guidance() -> str:
    """Sample class B with guidance 1 and :data:`GUIDANCE_WEIGHT`; return the letter the samples support.

    The data are 1-D: class A drawn from N(-1, 0.5^2), class B from N(1, 0.5^2), half each. The
    denoiser is the exact one for these data (no training), so guidance 1 samples B's own
    distribution. 2,000 samples from the same starting noise, 50 deterministic DDIM steps
    (:func:`clip_tutorial.generate.diffusion.ddim_sample`). The letter is ``"c"`` when the spread
    grows by more than a fifth, ``"b"`` when it shrinks by more than a fifth and the mean moves away
    from A, else ``"a"``. Explained in Chapter 7.6.
    """
    return _guidance_facts()["letter"]


def check_strong_guidance(answer: Any, *, verbose: bool = True) -> CheckResult:
    """Check your prediction (``"a"``, ``"b"`` or ``"c"``) of what guidance 3 does to samples of a 1-D class.

    The check runs the sampler (see :func:`measure_strong_guidance`, well under a second) and says
    which statement the samples bear out. ``None`` (no answer yet) prints a reminder and returns a
    falsy result. Explained in Chapter 7.6.

    Raises:
        TypeError: if ``answer`` is neither ``None`` nor a string.
        ValueError: if ``answer`` is not one of the letters.
    """
    return _check_letter(answer, "strong_guidance", measure_strong_guidance, STRONG_GUIDANCE_CHOICES,
                         _guidance_explanation, verbose)


def _guidance_explanation() -> str:
    """The measured facts behind the answer of :func:`check_strong_guidance`, in words."""
    f = _guidance_facts()
    plain, strong = f["plain"], f["strong"]
    return (
        f"With w = 1 the {f['samples']:,} samples have mean {plain['mean']:.2f} and spread {plain['std']:.2f}: B's own "
        f"distribution, as an exact denoiser should give. With w = {GUIDANCE_WEIGHT:g} the mean is "
        f"{strong['mean']:.2f} and the spread {strong['std']:.2f}, from the same starting noise; "
        f"{strong['b_side']:.1%} of them land on B's side of 0, against {plain['b_side']:.1%}. The guided noise is "
        f"the conditional one plus (w - 1) times the difference between the conditional and the unconditional "
        f"predictions, which for the sample amounts to a push along the gradient of log p(B | x): away from A, "
        f"hardest where the two classes overlap. The samples end where a classifier is surest they are B, not "
        f"spread over all of B. That is the trade Stable Diffusion's guidance scale makes: images that match the "
        f"prompt better, and look more alike.")


#: The exercises of Chapter 7, in the book's order (see :mod:`clip_tutorial.exercises.registry`).
EXERCISES = (
    Exercise("ch7.sigmoid_loss", "implement", check_sigmoid_loss, "SigLIP's sigmoid loss"),
    Exercise("ch7.initial_sigmoid_loss", "predict", check_initial_sigmoid_loss,
             "Predict, then run: the sigmoid loss at initialisation"),
    Exercise("ch7.filip_similarity", "implement", check_filip_similarity, "FILIP's token-wise similarity"),
    Exercise("ch7.padded_mean", "diagnose", check_padded_mean, "Break it and explain: padding in the mean"),
    Exercise("ch7.guidance_step", "implement", check_guidance_step, "One guided sampling step"),
    Exercise("ch7.strong_guidance", "predict", check_strong_guidance, "Predict, then run: strong guidance"),
)
