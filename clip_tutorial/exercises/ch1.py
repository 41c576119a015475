"""Checks for the exercises of Chapter 1: cosine similarity, logits, the loss, zero-shot prediction.

The "implement" checks, ``check_<name>(fn)``, run your ``fn`` on fresh random inputs of several
shapes (a batch of one included), compare it with the package's reference, print ✅ or ❌ with an
explanation, and return a :class:`~clip_tutorial.exercises.CheckResult` that is truthy when you
passed. The "predict" and "diagnose" checks take your number or letter, run the experiment
themselves, and say how your answer compares. :data:`EXERCISES` lists them in the book's order;
the solutions are in :mod:`clip_tutorial.exercises.solutions.ch1`.

Explained in Chapter 1 (section "Summary and exercises").
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from clip_tutorial.core.checks import check_int, check_positive_int
from clip_tutorial.objectives.loss import clip_loss
from clip_tutorial.model import MAX_LOGIT_SCALE
from .core import CheckResult, Hint, ask_first, one_thread, run_check
from .predict import check_choice, check_estimate
from .registry import Exercise

__all__ = ["check_cosine_similarity", "check_contrastive_loss", "check_zero_shot_predict",
           "check_temperature_scaled_logits", "check_untrained_loss", "check_shuffled_class_names",
           "reference_cosine_similarity", "reference_zero_shot_predict", "reference_temperature_scaled_logits",
           "measure_untrained_loss", "measure_shuffled_class_names", "UNTRAINED_BATCH", "UNTRAINED_MODELS",
           "SHUFFLED_CHOICES",
           "EXERCISES"]


def reference_cosine_similarity(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """(N, M) cosine similarities of N image and M text feature rows: normalise both, then matmul."""
    return F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T


def reference_zero_shot_predict(image_features: torch.Tensor, class_text_features: torch.Tensor) -> torch.Tensor:
    """(N,) index of the most similar class text for each image (a LongTensor)."""
    return reference_cosine_similarity(image_features, class_text_features).argmax(dim=-1)


def reference_temperature_scaled_logits(image_features: torch.Tensor, text_features: torch.Tensor,
                                        logit_scale: torch.Tensor) -> torch.Tensor:
    """(N, M) ``logits_per_image``: ``exp(logit_scale)`` times the cosine similarities.

    This is what OpenAI's released forward pass computes: ``logit_scale.exp()``, with no clamp.
    The limit of 100 belongs to training, which clips the parameter itself after each step.
    """
    return logit_scale.exp() * reference_cosine_similarity(image_features, text_features)


def _features(g: torch.Generator, n: int, d: int) -> torch.Tensor:
    """Random rows with very different lengths, so that forgetting to normalise shows."""
    return torch.randn(n, d, generator=g) * torch.empty(n, 1).uniform_(0.1, 5.0, generator=g)


def _pick(table: list[tuple], g: torch.Generator, trial: int, low: int = 1, high: int = 12) -> tuple:
    if trial < len(table):
        return table[trial]
    return tuple(int(torch.randint(low, high, (), generator=g)) for _ in table[0])


def _two_feature_sets(table: list[tuple]) -> Callable[[torch.Generator, int], tuple]:
    """Inputs maker for functions of two feature matrices: (rows_a, rows_b, dim) drawn from ``table``."""

    def make(g: torch.Generator, trial: int) -> tuple:
        rows_a, rows_b, dim = _pick(table, g, trial)
        return _features(g, rows_a, max(dim, 2)), _features(g, rows_b, max(dim, 2))

    return make


_NORMALISE = ("divide each feature vector by its length first: x / x.norm(dim=-1, keepdim=True) "
              "or F.normalize(x, dim=-1)")
_COSINE_HINTS = [
    Hint(f"You did not normalise the features, so you got dot products, not cosines: {_NORMALISE}.",
         mistake=lambda a, b: a @ b.T),
    Hint("Only one of the two inputs was normalised; normalise both image_features and text_features.",
         mistake=lambda a, b: F.normalize(a, dim=-1) @ b.T),
    Hint("Only one of the two inputs was normalised; normalise both image_features and text_features.",
         mistake=lambda a, b: a @ F.normalize(b, dim=-1).T),
    Hint("You normalised along the wrong dimension: each feature vector is a row, so normalise over dim=-1, "
         "not dim=0.", mistake=lambda a, b: F.normalize(a, dim=0) @ F.normalize(b, dim=0).T),
    Hint("You divided by the squared length (sum of squares); divide by the length, its square root.",
         mistake=lambda a, b: (a / (a * a).sum(-1, keepdim=True)) @ (b / (b * b).sum(-1, keepdim=True)).T),
    Hint("Rows should be images and columns texts: compute image_features @ text_features.T, "
         "not the other way round.", mistake=lambda a, b: reference_cosine_similarity(b, a)),
    Hint("An (N, D) matrix times an (M, D) matrix does not fit: transpose the text features (text_features.T).",
         error_contains="cannot be multiplied"),
]


def check_cosine_similarity(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, trials: int = 6,
                            seed: int | None = None, verbose: bool = True) -> CheckResult:
    """Check ``fn(image_features, text_features)``: the (N, M) matrix of cosine similarities.

    Explained in Chapter 1.

    Args:
        fn: your function; ``image_features`` is (N, D), ``text_features`` is (M, D).
        trials: number of random inputs to try.
        seed: seed of the inputs (a fresh one by default).
        verbose: print the feedback.

    Returns:
        A :class:`~clip_tutorial.exercises.CheckResult`, truthy when ``fn`` is correct.
    """
    table = [(4, 6, 8), (5, 3, 16), (1, 1, 8), (1, 4, 8), (7, 1, 3), (6, 6, 32)]
    return run_check(fn, reference_cosine_similarity, _two_feature_sets(table), _COSINE_HINTS, "cosine_similarity", trials, seed, verbose)


def _ce(logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    return F.cross_entropy(logits, torch.arange(logits.shape[0]), reduction=reduction)


_ONE_WAY = ("You computed only one direction. CLIP's loss is symmetric: the cross-entropy of the rows "
            "(each image picks its text) and of the columns (each text picks its image: logits_per_image.T), averaged.")
_LOSS_HINTS = [
    Hint(_ONE_WAY, mistake=lambda x: _ce(x)),
    Hint(_ONE_WAY, mistake=lambda x: _ce(x.T)),
    Hint("You forgot to divide by 2: the loss is the mean of the two directions, (loss_images + loss_texts) / 2.",
         mistake=lambda x: _ce(x) + _ce(x.T)),
    Hint("Check your parentheses: (loss_images + loss_texts) / 2, not loss_images + loss_texts / 2.",
         mistake=lambda x: _ce(x) + _ce(x.T) / 2),
    Hint("You summed the losses of the examples; average them over the batch (cross_entropy's default "
         "reduction='mean').", mistake=lambda x: (_ce(x, "sum") + _ce(x.T, "sum")) / 2),
    Hint("You summed the losses of the examples; average them over the batch (cross_entropy's default "
         "reduction='mean').", mistake=lambda x: _ce(x, "sum") + _ce(x.T, "sum")),
    Hint("F.cross_entropy applies log-softmax itself: pass the raw logits, not probabilities from softmax.",
         mistake=lambda x: (_ce(x.softmax(-1)) + _ce(x.T.softmax(-1))) / 2),
    Hint("The targets are the diagonal: row i matches column i, so the labels are torch.arange(batch_size).",
         error_contains="out of bounds"),
]


def check_contrastive_loss(fn: Callable[[torch.Tensor], torch.Tensor], *, trials: int = 6, seed: int | None = None,
                           verbose: bool = True) -> CheckResult:
    """Check ``fn(logits_per_image)``: CLIP's symmetric InfoNCE loss, a scalar tensor.

    The reference is :func:`clip_tutorial.objectives.loss.clip_loss`. The result must also stay differentiable.
    Explained in Chapter 1.

    Args:
        fn: your function; ``logits_per_image`` is (N, N) with the matching pairs on the diagonal.
        trials: number of random inputs to try.
        seed: seed of the inputs (a fresh one by default).
        verbose: print the feedback.

    Returns:
        A :class:`~clip_tutorial.exercises.CheckResult`, truthy when ``fn`` is correct.
    """
    table = [(6,), (5,), (2,), (1,), (12,), (3,)]

    def make(g: torch.Generator, trial: int) -> tuple:
        (n,) = _pick(table, g, trial, 2, 16)
        return (3.0 * torch.randn(n, n, generator=g) + 4.0 * torch.eye(n),)

    def reference(logits_per_image: torch.Tensor) -> torch.Tensor:
        return clip_loss(logits_per_image)

    return run_check(fn, reference, make, _LOSS_HINTS, "contrastive_loss", trials, seed, verbose, require_grad=True)


_ZERO_SHOT_HINTS = [
    Hint("You took the argmax over the wrong dimension: each image (row) picks its best class (column), "
         "so use argmax(dim=-1).", mistake=lambda a, c: reference_cosine_similarity(a, c).argmax(dim=0)),
    Hint("You picked the least similar class: use argmax, not argmin.",
         mistake=lambda a, c: reference_cosine_similarity(a, c).argmin(dim=-1)),
    Hint(f"Normalise the class text features too: without it, classes with longer feature vectors win too often; "
         f"{_NORMALISE}.", mistake=lambda a, c: (a @ c.T).argmax(dim=-1)),
    Hint("You returned the similarity scores; return one class index per image: the argmax over the classes.",
         detect=lambda got, expected, inputs: got.ndim == 2),
    Hint("argmax already returns integer indices (torch.long); do not convert them to float.",
         detect=lambda got, expected, inputs: got.is_floating_point() and bool((got == expected).all())),
]


def check_zero_shot_predict(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, trials: int = 6,
                            seed: int | None = None, verbose: bool = True) -> CheckResult:
    """Check ``fn(image_features, class_text_features)``: the (N,) predicted class index of each image.

    Explained in Chapter 1.

    Args:
        fn: your function; ``image_features`` is (N, D), ``class_text_features`` is (C, D), one row per class.
        trials: number of random inputs to try.
        seed: seed of the inputs (a fresh one by default).
        verbose: print the feedback.

    Returns:
        A :class:`~clip_tutorial.exercises.CheckResult`, truthy when ``fn`` is correct.
    """
    table = [(20, 5, 8), (1, 5, 8), (7, 7, 8), (10, 1, 4), (3, 10, 16), (1, 1, 4)]
    return run_check(fn, reference_zero_shot_predict, _two_feature_sets(table), _ZERO_SHOT_HINTS, "zero_shot_predict", trials, seed, verbose)


_CLAMPED = (f"You clamped the scale at {MAX_LOGIT_SCALE:g}. OpenAI's forward pass does not: it multiplies by "
            "logit_scale.exp() as it is. The limit of 100 is kept during training, where the parameter itself is "
            "clipped after each optimiser step, so a model trained that way never needs the clamp.")
_TEMPERATURE_HINTS = [
    Hint("logit_scale is stored as a logarithm: the scale is logit_scale.exp().",
         mistake=lambda a, b, s: s * reference_cosine_similarity(a, b)),
    Hint(_CLAMPED, mistake=lambda a, b, s: s.exp().clamp(max=MAX_LOGIT_SCALE) * reference_cosine_similarity(a, b)),
    Hint(_CLAMPED, mistake=lambda a, b, s: s.clamp(max=math.log(MAX_LOGIT_SCALE)).exp() * reference_cosine_similarity(a, b)),
    Hint("exp(logit_scale) is 1 / temperature: multiply the similarities by it, do not divide.",
         mistake=lambda a, b, s: reference_cosine_similarity(a, b) / s.exp()),
    Hint(f"Normalise the features before the matrix product: {_NORMALISE}.",
         mistake=lambda a, b, s: s.exp() * (a @ b.T)),
    Hint("Rows should be images and columns texts (logits_per_image): image_features @ text_features.T.",
         mistake=lambda a, b, s: reference_temperature_scaled_logits(b, a, s)),
]


def check_temperature_scaled_logits(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], *,
                                    trials: int = 6, seed: int | None = None, verbose: bool = True) -> CheckResult:
    """Check ``fn(image_features, text_features, logit_scale)``: CLIP's ``logits_per_image``.

    The logits are ``exp(logit_scale)`` times the cosine similarities, as OpenAI's released
    forward pass computes them (no clamp: training keeps the scale at most 100 by clipping the
    parameter). ``logit_scale`` is a 0-dim ``nn.Parameter``; some trials use values above
    ``log(100)``, where a clamp would show. Explained in Chapter 1.

    Args:
        fn: your function; ``image_features`` is (N, D), ``text_features`` is (M, D).
        trials: number of random inputs to try.
        seed: seed of the inputs (a fresh one by default).
        verbose: print the feedback.

    Returns:
        A :class:`~clip_tutorial.exercises.CheckResult`, truthy when ``fn`` is correct.
    """
    init = math.log(1 / 0.07)
    table = [(4, 6, 8, init), (3, 3, 8, 5.0), (1, 1, 4, init), (5, 2, 16, 0.0), (2, 7, 8, 6.5), (6, 1, 8, 3.2)]

    def make(g: torch.Generator, trial: int) -> tuple:
        if trial < len(table):
            n, m, d, value = table[trial]
        else:
            n, m, d = (int(torch.randint(1, 10, (), generator=g)) for _ in range(3))
            value = float(torch.empty(()).uniform_(0.0, 6.0, generator=g))
        scale = torch.nn.Parameter(torch.tensor(value))
        return _features(g, n, max(d, 2)), _features(g, m, max(d, 2)), scale

    return run_check(fn, reference_temperature_scaled_logits, make, _TEMPERATURE_HINTS, "temperature_scaled_logits",
                trials, seed, verbose)


# -- Exercise 4 (predict): the loss of an untrained CLIP ------------------------------------------

#: The batch size of the "predict" exercise: an untrained CLIP's loss on this many image-caption pairs.
UNTRAINED_BATCH = 64
#: How many freshly initialised models the "predict" exercise's measurement averages over.
UNTRAINED_MODELS = 5



def measure_untrained_loss(batch_size: int = UNTRAINED_BATCH, models: int = UNTRAINED_MODELS,
                           seed: int = 0) -> float:
    """CLIP's loss on one batch of ShapesWorld pairs, for freshly initialised models, averaged over ``models``.

    Each model has the sizes of the ``"ch1-demo"`` recipe and its own initial weights (seeds
    ``seed``, ``seed + 1``, ...) and batch of ``batch_size`` training pairs. The loss is
    :func:`clip_tutorial.objectives.loss.clip_loss` of the model's ``logits_per_image``, at the initial logit
    scale ``1 / 0.07``. It takes well under a second on one CPU thread. Explained in Chapter 1
    (section "Summary and exercises").

    Raises:
        TypeError: if ``batch_size`` or ``models`` is not an int.
        ValueError: if ``batch_size`` is below 2 or ``models`` below 1.
    """
    from clip_tutorial.data import ShapesWorld
    from clip_tutorial.model import CLIP
    from clip_tutorial.train.recipes import get_recipe, make_tokenizer

    batch_size, models = check_int("batch_size", batch_size, minimum=2), check_positive_int("models", models)
    recipe = get_recipe("ch1-demo")
    tokenizer = make_tokenizer(recipe.model.context_length)
    config = recipe.model.replace(vocab_size=tokenizer.vocab_size, eot_token_id=tokenizer.eot_id)
    losses = []
    with one_thread(), torch.no_grad():
        for k in range(models):
            torch.manual_seed(seed + k)
            model = CLIP(config).eval()
            batch = ShapesWorld(batch_size, split="train", seed=seed + k)
            losses.append(float(clip_loss(model(batch.tensors(), tokenizer(batch.captions)).logits_per_image)))
    return sum(losses) / len(losses)


_UNTRAINED_EXPLANATION = (
    "An untrained CLIP embeds images and captions in random directions, so no caption stands out for its "
    "image: each row of the logit matrix is close to uniform. The cross-entropy of a uniform guess among N "
    f"candidates is ln N, here ln {UNTRAINED_BATCH} = {math.log(UNTRAINED_BATCH):.2f} nats. The measurement "
    "sits a little above it. Random similarities are not all equal, the initial scale 1/0.07 = 14.3 stretches "
    "them, and random differences between the logits raise the loss on average, never lower it. Training "
    "starts from about ln N; a loss that stays there means the model has learned nothing.")


def check_untrained_loss(prediction: Any, *, verbose: bool = True) -> CheckResult:
    """Check your prediction of an untrained CLIP's loss on a batch of :data:`UNTRAINED_BATCH` pairs.

    The check runs :func:`measure_untrained_loss` and accepts a prediction within 0.5 nats of
    it. ``None`` (no prediction yet) gives ❌ and a reminder, without raising. Explained in
    Chapter 1 (section "Summary and exercises").

    Raises:
        TypeError: if ``prediction`` is not a number.
    """
    return check_estimate(prediction, measure_untrained_loss, name="untrained_loss", tolerance=0.5,
                          explanation=_UNTRAINED_EXPLANATION, unit=" nats", verbose=verbose)


# -- Exercise 6 (diagnose): a zero-shot classifier below chance -----------------------------------

#: The diagnoses offered by the "diagnose" exercise, by letter.
SHUFFLED_CHOICES: dict[str, str] = {
    "a": "the model never learned the 16 held-out combinations, and failing on them drags the average down",
    "b": 'the prompt "a photo of a {}" does not suit the model; another template would fix it',
    "c": "the class names are in a different order from the label numbers, so right answers are scored as wrong",
}


def _shuffled_experiment(n: int = 640, seed: int = 0) -> dict[str, float]:
    """Accuracies of the broken zero-shot evaluation of the exercise and of one repair per diagnosis."""
    from clip_tutorial.data import ShapesWorld, class_names, heldout_combinations
    from clip_tutorial.train.shipped import load_shipped
    from clip_tutorial.evaluation.zeroshot import build_zero_shot_classifier, encode_images

    trained = load_shipped("ch1-demo")
    model, tokenizer, recipe = trained.model, trained.tokenizer, trained.recipe
    heldout = heldout_combinations(recipe.n_heldout, seed=recipe.data_seed)
    test = ShapesWorld(n, split="all", seed=seed, styles=recipe.styles, heldout=heldout)
    labels = test.labels("pair")
    seen = torch.tensor([(o[0].colour, o[0].shape) not in set(heldout) for o in test.attributes])
    with one_thread():
        features = encode_images(model, test.tensors())

        def accuracy(names: list[str], template: str = "a photo of a {}", keep: torch.Tensor | None = None) -> float:
            classifier = build_zero_shot_classifier(model, tokenizer, names, [template])
            right = (features @ classifier).argmax(dim=1) == labels
            return float(right[keep].float().mean() if keep is not None else right.float().mean())

        shuffled = sorted(class_names())  # the bug: alphabetical order, while the labels follow class_names()
        return {"broken": accuracy(shuffled),
                "a": accuracy(shuffled, keep=seen),             # the seen combinations only: still broken?
                "b": accuracy(shuffled, template="a {}"),        # another template: still broken?
                "c": accuracy(class_names())}                    # the names in the labels' order


def measure_shuffled_class_names(n: int = 640, seed: int = 0) -> str:
    """The letter of :data:`SHUFFLED_CHOICES` that the experiment supports.

    It runs the broken evaluation of the exercise on ``n`` fresh images of all 64 combinations
    (with the shipped ``"ch1-demo"`` model), then one repair per diagnosis: (a) scoring only the
    images of combinations seen in training, (b) another prompt template, (c) the class names in
    the order of the labels. The diagnosis whose repair restores the accuracy is the right one.
    Explained in Chapter 1 (section "Summary and exercises").
    """
    results = _shuffled_experiment(n, seed)
    return max("abc", key=lambda letter: results[letter])


def check_shuffled_class_names(answer: Any, *, verbose: bool = True) -> CheckResult:
    """Check your diagnosis (``"a"``, ``"b"`` or ``"c"``) of the zero-shot classifier that scores below chance.

    The check runs the broken evaluation and one repair per diagnosis, and says which repair
    restores the accuracy. ``None`` (no answer yet) gives ❌ and a reminder, without raising.
    Explained in Chapter 1 (section "Summary and exercises").

    Raises:
        TypeError: if ``answer`` is not a string.
        ValueError: if ``answer`` is not one of the letters.
    """
    if answer is None:
        return ask_first("shuffled_class_names", "answer", verbose)
    results = _shuffled_experiment()
    explanation = (
        f"The experiment: the broken code scores {results['broken']:.1%} (chance is {1 / 64:.1%}). Scoring only the "
        f"combinations seen in training gives {results['a']:.1%}, and the template \"a {{}}\" gives "
        f"{results['b']:.1%}: neither repairs it. Listing the names in the order of the labels, class_names(), gives "
        f"{results['c']:.1%}. Sorting the names moved the classes to other columns, so the model's answers were "
        "compared with the wrong label numbers; scoring below chance, which guessing would not do, was the clue. A "
        "zero-shot classifier's columns must follow the order of the labels.")
    truth = max("abc", key=lambda letter: results[letter])
    return check_choice(answer, lambda: truth, SHUFFLED_CHOICES, name="shuffled_class_names",
                        explanation=explanation, verbose=verbose)


#: Chapter 1's exercises in the book's order (Summary and exercises).
EXERCISES: tuple[Exercise, ...] = (
    Exercise("ch1.cosine_similarity", "implement", check_cosine_similarity, "Cosine similarity"),
    Exercise("ch1.temperature_scaled_logits", "implement", check_temperature_scaled_logits,
             "Temperature-scaled logits"),
    Exercise("ch1.contrastive_loss", "implement", check_contrastive_loss, "The contrastive loss"),
    Exercise("ch1.untrained_loss", "predict", check_untrained_loss, "The loss of an untrained CLIP"),
    Exercise("ch1.zero_shot_predict", "implement", check_zero_shot_predict, "Zero-shot prediction"),
    Exercise("ch1.shuffled_class_names", "diagnose", check_shuffled_class_names,
             "A zero-shot classifier below chance"),
)
