"""Checks for the exercises of Chapter 3: training, scaling out and evaluating CLIP.

Four "implement" exercises (the learning-rate schedule, recall@K, one process's local loss, the
floor that repeated captions put under the loss) each have a ``check_<name>(fn)`` that runs your
``fn`` on fresh random inputs, compares it with the package's reference, prints ✅ or ❌ with an
explanation, and returns a :class:`~clip_tutorial.exercises.CheckResult` that is truthy when you
passed; these checks take the keyword arguments ``trials`` (number of random inputs), ``seed`` (of
the inputs; a fresh one by default) and ``verbose`` (print the feedback). One "predict" exercise
(:func:`check_twin_captions_floor`) and two "diagnose" exercises (:func:`check_growing_gradients`,
:func:`check_runaway_temperature`) take your number or letter, run the experiment themselves and
compare. :data:`EXERCISES` lists them all in the book's order.

Explained in Chapter 3 (section "Summary and exercises").
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from clip_tutorial.core.checks import check_int, check_positive_int
from clip_tutorial.data import COLOURS, SHAPES
from clip_tutorial.objectives.loss import clip_loss
from clip_tutorial.model import MAX_LOGIT_SCALE
from clip_tutorial.evaluation.retrieval import recall_at_k
from clip_tutorial.train.config import TrainConfig, lr_at
from .core import CheckResult, Hint, as_number, ensure_callable, finish_check, one_thread, run_check
from .predict import check_choice, check_estimate
from .registry import Exercise

__all__ = ["EXERCISES", "check_lr_schedule", "check_recall_at_k", "check_local_clip_loss", "check_twin_captions_floor",
           "check_loss_floor", "check_growing_gradients", "check_runaway_temperature", "reference_lr_schedule",
           "reference_recall_curve", "reference_local_clip_loss", "reference_loss_floor", "TWIN_CAPTIONS",
           "measure_twin_captions_floor", "toy_problem", "toy_training", "GROWING_GRADIENTS_CHOICES",
           "RUNAWAY_TEMPERATURE_CHOICES"]


# -- Exercise 1: warm-up and cosine ---------------------------------------------------------------

def reference_lr_schedule(total_steps: int, warmup_steps: int, peak_lr: float) -> torch.Tensor:
    """The learning rate of every step ``0 .. total_steps - 1`` as a fraction of ``peak_lr``.

    Computed by :func:`clip_tutorial.train.lr_at`. Explained in Chapter 3.2: a linear warm-up
    reaching ``peak_lr`` at step ``warmup_steps - 1``, then a cosine decay that would reach 0 at
    step ``total_steps``. Fractions of the peak let one tolerance suit every peak.
    """
    config = TrainConfig(steps=total_steps, warmup_steps=warmup_steps, lr=peak_lr)
    return torch.tensor([lr_at(step, config) / peak_lr for step in range(total_steps)], dtype=torch.float64)


def _curve(lr: Callable[[int, int, int, float], Any]) -> Callable[[int, int, float], torch.Tensor]:
    def schedule(total_steps: int, warmup_steps: int, peak_lr: float) -> torch.Tensor:
        values = [as_number(lr(step, total_steps, warmup_steps, peak_lr),
                          f"lr_schedule(step={step}, total_steps={total_steps}, warmup_steps={warmup_steps}, ...)")
                  for step in range(total_steps)]
        return torch.tensor(values, dtype=torch.float64) / peak_lr
    return schedule


def _lr_mistake(warm: Callable = lambda s, w: (s + 1) / w, progress: Callable = lambda s, t, w: (s - w) / max(1, t - w),
                decay: Callable = lambda x: (1 + math.cos(math.pi * x)) / 2) -> Callable:
    """The schedule with one piece swapped for a wrong one."""
    return _curve(lambda s, t, w, p: p * (warm(s, w) if s < w else decay(progress(s, t, w))))


_LR_HINTS = [
    Hint("Warm-up off by one: the first step (step 0) should already train, with peak_lr / warmup_steps, and "
         "the last warm-up step (warmup_steps - 1) reaches the peak; use (step + 1) / warmup_steps.",
         mistake=_lr_mistake(warm=lambda s, w: s / w)),
    Hint("The cosine starts where the warm-up ends: its progress is (step - warmup_steps) / (total_steps - "
         "warmup_steps), not step / total_steps.", mistake=_lr_mistake(progress=lambda s, t, w: s / t)),
    Hint("The decay is 0.5 * peak_lr * (1 + cos(pi * progress)): it starts at the peak and ends at 0, and never "
         "goes negative.", mistake=_lr_mistake(decay=lambda x: math.cos(math.pi * x))),
    Hint("The decay follows a cosine, not a straight line: slow at first, fastest half-way, slow again at the end.",
         mistake=_lr_mistake(decay=lambda x: 1 - x)),
    Hint("With warmup_steps = 0 there is no warm-up at all: test step < warmup_steps before dividing by "
         "warmup_steps, and go straight to the cosine.", error_contains="division by zero"),
]


def check_lr_schedule(fn: Callable[[int, int, int, float], float], *, trials: int = 8, seed: int | None = None,
                      verbose: bool = True) -> CheckResult:
    """Check ``fn(step, total_steps, warmup_steps, peak_lr)``: the learning rate (a float) of a 0-based step.

    Every step of several schedules, with warm-ups of 0 steps, 1 step and all steps among them,
    must equal :func:`clip_tutorial.train.lr_at`, the schedule :func:`~clip_tutorial.train_clip`
    uses. Returns a :class:`~clip_tutorial.exercises.CheckResult`. Explained in Chapter 3.2.
    """
    ensure_callable(fn, "fn")
    table = [(20, 5, 1e-3), (10, 0, 0.5), (16, 1, 3e-4), (7, 6, 1.0), (1, 0, 2.0), (50, 10, 5e-4), (4, 4, 1e-2)]

    def make(g: torch.Generator, trial: int) -> tuple:
        if trial < len(table):
            return table[trial]
        total = int(torch.randint(2, 60, (), generator=g))
        return total, int(torch.randint(0, total, (), generator=g)), 10.0 ** -int(torch.randint(1, 5, (), generator=g))

    result = run_check(_curve(fn), reference_lr_schedule, make, _LR_HINTS, "lr_schedule", trials, seed, False,
                       atol=1e-6, rtol=1e-5)
    result = CheckResult(result.passed, result.message.replace(" (tolerance", " (as fractions of peak_lr; tolerance"),
                         result.name)
    return finish_check(result, verbose, f"Your schedule matches clip_tutorial.train.lr_at at every step of {trials} "
                   "schedules, warm-ups of 0 and 1 step and all steps included.",
                   (r" at index \((\d+),\)", lambda m: f" at step {m.group(1)}"))


# -- Exercise 2: recall@K ------------------------------------------------------------------------

def reference_recall_curve(similarity: torch.Tensor) -> torch.Tensor:
    """Recall@k for k = 1 .. N + 1 of an (N, N) ``similarity``: queries in rows, query i's right item in column i.

    Computed by :func:`clip_tutorial.evaluation.retrieval.recall_at_k`. Explained in Chapter 3.5.
    """
    ks = range(1, similarity.shape[1] + 2)
    return torch.tensor(list(recall_at_k(similarity, ks).values()), dtype=torch.float64)


def _recall_curve(recall: Callable[[torch.Tensor, int], Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    def curve(similarity: torch.Tensor) -> torch.Tensor:
        ks = range(1, similarity.shape[1] + 2)
        return torch.tensor([as_number(recall(similarity, k), f"recall_at_k(similarity, k={k})") for k in ks],
                            dtype=torch.float64)
    return curve


_RECALL_HINTS = [
    Hint("Off by one: a query's rank is the number of items that score *strictly higher* than its right item "
         "(the item does not count itself), and it is found in the top k when that rank is below k.",
         mistake=lambda s: F.pad(reference_recall_curve(s)[:-1], (1, 0))),
    Hint("Rows are the queries: row i scores query i against every gallery item, so rank along dim=1. "
         "(Text-to-image recall is the same function applied to similarity.T.)",
         mistake=lambda s: reference_recall_curve(s.T)),
    Hint("Sort in descending order: the top k are the k *highest* similarities (torch.topk, or "
         "argsort(descending=True)).", mistake=lambda s: reference_recall_curve(-s)),
    Hint("Return a fraction between 0 and 1: divide the number of hits by the number of queries.",
         detect=lambda got, expected, inputs: len(inputs[0]) > 1 and torch.allclose(got, expected * len(inputs[0]))),
    Hint("Return a fraction between 0 and 1, not a percentage.",
         detect=lambda got, expected, inputs: torch.allclose(got, expected * 100)),
    Hint("Your value does not change with k: compare each rank with k, not only whether the right item came first.",
         detect=lambda got, expected, inputs: bool((got == got[0]).all()) and not bool((expected == expected[0]).all())),
    Hint("k can exceed the number of gallery items (then every query finds its item): clamp it, "
         "e.g. min(k, similarity.shape[1]), before calling topk.", error_contains="out of range"),
]


def check_recall_at_k(fn: Callable[[torch.Tensor, int], float], *, trials: int = 7, seed: int | None = None,
                      verbose: bool = True) -> CheckResult:
    """Check ``fn(similarity, k)``: the fraction of queries (rows) whose right item (column i) is in the top k.

    Each trial calls ``fn`` for every k from 1 to N + 1 on an (N, N) matrix of random scores with
    some signal on the diagonal. The scores are continuous, so there are no ties (the package
    counts a tie in the query's favour). The reference is :func:`clip_tutorial.evaluation.retrieval.recall_at_k`.
    Returns a :class:`~clip_tutorial.exercises.CheckResult`. Explained in Chapter 3.5.
    """
    ensure_callable(fn, "fn")
    sizes = [8, 12, 1, 5, 16, 3, 10]

    def make(g: torch.Generator, trial: int) -> tuple:
        n = sizes[trial] if trial < len(sizes) else int(torch.randint(2, 20, (), generator=g))
        return (torch.randn(n, n, generator=g) + torch.eye(n),)

    result = run_check(_recall_curve(fn), reference_recall_curve, make, _RECALL_HINTS, "recall_at_k", trials, seed,
                       False, arg_names=["similarity"])
    return finish_check(result, verbose, f"Your recall matches clip_tutorial.evaluation.retrieval.recall_at_k on {trials} similarity "
                   "matrices (N from 1 to 16), for every k from 1 to N + 1.",
                   (r" at index \((\d+),\)", lambda m: f" at k = {int(m.group(1)) + 1}"))


# -- Exercise 3: the local loss of one process ---------------------------------------------------

def reference_local_clip_loss(all_image_features: torch.Tensor, all_text_features: torch.Tensor,
                              logit_scale: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Process ``rank``'s share of CLIP's loss, from the features of all ``world_size`` processes.

    The features are what :func:`clip_tutorial.objectives.distributed.gather_features` returns, (N, D) each:
    process ``r``'s pairs are rows ``r * B`` to ``(r + 1) * B - 1``, with ``B = N / world_size``.
    The value is that of :func:`clip_tutorial.objectives.distributed.distributed_clip_loss` with
    ``local_loss=True`` on that process. It is computed here as the process's block of rows of the
    global logit matrix and of its transpose, which shows why the ``world_size`` local losses
    average to :func:`~clip_tutorial.clip_loss` of the whole batch. Explained in Chapter 3.4.

    Raises:
        TypeError: if ``world_size`` or ``rank`` is not an int.
        ValueError: if ``world_size`` does not divide N or ``rank`` is out of range.
    """
    n = all_image_features.shape[0]
    if n % check_positive_int("world_size", world_size):
        raise ValueError(f"world_size: expected a positive int dividing the {n} gathered pairs, got {world_size!r}")
    rank = check_int("rank", rank, 0, world_size - 1)
    batch = n // world_size
    rows = slice(rank * batch, (rank + 1) * batch)
    logits = logit_scale * all_image_features @ all_text_features.T
    labels = torch.arange(rows.start, rows.stop, device=logits.device)
    return (F.cross_entropy(logits[rows], labels) + F.cross_entropy(logits.T[rows], labels)) / 2


def _local(images: torch.Tensor, texts: torch.Tensor, scale: torch.Tensor, rank: int, world: int,
           offset: int | None = None, both: bool = True, half: bool = True) -> torch.Tensor:
    """The local loss with a configurable mistake: a wrong label offset, one direction, no 1/2."""
    b = images.shape[0] // world
    labels = torch.arange(b) + (rank * b if offset is None else offset)
    image_loss = F.cross_entropy(scale * images[rank * b:(rank + 1) * b] @ texts.T, labels)
    text_loss = F.cross_entropy(scale * texts[rank * b:(rank + 1) * b] @ images.T, labels) if both else image_loss
    return (image_loss + text_loss) / (2 if half else 1)


def _others_detached(images: torch.Tensor, texts: torch.Tensor, scale: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """The local loss when the gather returns detached copies of the other processes' features."""
    own = torch.zeros(images.shape[0], 1, dtype=images.dtype)
    own[rank * (len(own) // world):(rank + 1) * (len(own) // world)] = 1
    return reference_local_clip_loss(images * own + images.detach() * (1 - own), texts * own + texts.detach() * (1 - own),
                                     scale, rank, world)


_OFFSET = ("Wrong rank offset: the right text for local pair i is in column rank * B + i of the gathered features, "
           "where B = N // world_size is the local batch (not rank, nor rank * world_size).")
_LOCAL_HINTS = [
    *(Hint(_OFFSET, mistake=lambda i, t, s, r, w, f=f: _local(i, t, s, r, w, offset=f(r, w)))
      for f in (lambda r, w: 0, lambda r, w: r, lambda r, w: r * w)),
    Hint("The loss averages the two directions: (image loss + text loss) / 2.",
         mistake=lambda i, t, s, r, w: _local(i, t, s, r, w, half=False)),
    Hint("You have only one direction. The texts of this process classify their image among all N gathered "
         "images too: cross_entropy(logit_scale * my_texts @ all_images.T, labels).",
         mistake=lambda i, t, s, r, w: _local(i, t, s, r, w, both=False)),
    Hint("You used only this process's pairs, a B x B matrix: the negatives must come from every process, "
         "B x N logits against all gathered features.",
         mistake=lambda i, t, s, r, w: clip_loss(s * i.chunk(w)[r] @ t.chunk(w)[r].T)),
    Hint("That is the global loss of the whole N x N matrix (local_loss=False). The local loss keeps only this "
         "process's B rows: its images against all texts and its texts against all images.",
         mistake=lambda i, t, s, r, w: clip_loss(s * i @ t.T)),
    Hint("Multiply the similarities by logit_scale (1 / temperature) before the cross-entropy.",
         mistake=lambda i, t, s, r, w: _local(i, t, torch.ones_like(s), r, w)),
]


def _gradients(loss_fn: Callable[..., Any]) -> Callable[..., torch.Tensor]:
    """(2, N, D): the gradient of ``loss_fn``'s loss with respect to the gathered image and text features."""
    def gradients(all_image_features: torch.Tensor, all_text_features: torch.Tensor, logit_scale: torch.Tensor,
                  rank: int, world_size: int) -> torch.Tensor:
        features = [all_image_features.detach().requires_grad_(True), all_text_features.detach().requires_grad_(True)]
        grads = torch.autograd.grad(loss_fn(*features, logit_scale.detach(), rank, world_size), features,
                                    allow_unused=True)
        return torch.stack([torch.zeros_like(x) if g is None else g for x, g in zip(features, grads)])
    return gradients


_GRADIENT_HINTS = [
    Hint("No gradient reaches the other processes' features. torch.distributed.all_gather returns detached copies; "
         "gather with torch.distributed.nn.functional.all_gather so that the negatives from other processes are "
         "pushed too (here: do not .detach() any part of the gathered features).",
         mistake=_gradients(_others_detached)),
]


def check_local_clip_loss(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, int], torch.Tensor], *,
                          trials: int = 6, seed: int | None = None, verbose: bool = True) -> CheckResult:
    """Check ``fn(all_image_features, all_text_features, logit_scale, rank, world_size)``: one process's local loss.

    The features (N, D) are every process's features concatenated in rank order, as after the
    all-gather; ``fn`` returns the scalar loss of process ``rank``'s B = N / world_size pairs
    against all N, as :func:`clip_tutorial.objectives.distributed.distributed_clip_loss` computes it with
    ``local_loss=True`` (the reference is :func:`reference_local_clip_loss`). The check compares
    the values, then the gradients with respect to the gathered features, and last confirms that
    the ``world_size`` local losses average to :func:`~clip_tutorial.clip_loss` of the whole batch.
    Returns a :class:`~clip_tutorial.exercises.CheckResult`. Explained in Chapter 3.4.
    """
    ensure_callable(fn, "fn")
    table = [(2, 3, 1), (4, 2, 3), (3, 1, 2), (1, 5, 0), (2, 4, 0), (3, 2, 1)]  # (world_size, local batch, rank)

    def make(g: torch.Generator, trial: int) -> tuple:
        if trial < len(table):
            world, batch, rank = table[trial]
        else:
            world, batch = (int(torch.randint(1, 5, (), generator=g)) for _ in range(2))
            rank = int(torch.randint(0, world, (), generator=g))
        images = F.normalize(torch.randn(world * batch, 4 + trial % 3, generator=g), dim=-1)
        texts = F.normalize(images + 0.8 * torch.randn(images.shape, generator=g), dim=-1)
        return images, texts, 5.0 + 10.0 * torch.rand((), generator=g), rank, world

    result = run_check(fn, reference_local_clip_loss, make, _LOCAL_HINTS, "local_clip_loss", trials, seed, False,
                       require_grad=True, atol=1e-6, rtol=1e-5)
    if result.passed:
        result = run_check(_gradients(fn), _gradients(reference_local_clip_loss), make, _GRADIENT_HINTS,
                           "local_clip_loss (gradients)", trials, 0 if seed is None else seed, False, atol=1e-6, rtol=1e-5)
    mean = whole = 0.0
    if result.passed:
        images, texts, scale, _, world = make(torch.Generator().manual_seed(1), 1)
        mean = sum(float(fn(images, texts, scale, r, world)) for r in range(world)) / world
        whole = float(clip_loss(scale * images @ texts.T))
        if not math.isclose(mean, whole, rel_tol=1e-5, abs_tol=1e-6):
            result = CheckResult(False, f"❌ local_clip_loss: not yet. The mean of your {world} local losses, {mean:.6f}, "
                                 f"differs from clip_loss of the whole batch, {whole:.6f}.", result.name)
    return finish_check(CheckResult(result.passed, result.message, "local_clip_loss"), verbose,
                   f"Your local loss and its gradients match the reference on {trials} random inputs, and the mean of "
                   f"your local losses is clip_loss of the whole batch ({mean:.6f} = {whole:.6f}).",
                   (r" at index \((\d), (\d+), (\d+)\)", lambda m: " in the gradient of "
                    f"{('all_image_features', 'all_text_features')[int(m.group(1))]}[{m.group(2)}, {m.group(3)}]"))


# -- Exercise 4: the floor that repeated captions put under the loss -----------------------------

def reference_loss_floor(captions: list[str]) -> float:
    """The lowest value CLIP's loss can reach on a batch with these captions: the mean of log k.

    Identical captions have identical text features, so no model can tell their columns (or, for
    the texts, their rows) apart: with ``k`` copies of a caption, the best a row can do is split
    its probability evenly, ``1 / k`` each, which costs ``log k``. Both directions give the mean
    of ``log k_i`` over the batch. Explained in Chapter 3.3.
    """
    from clip_tutorial.apps.experiments import duplicate_loss_floor

    return duplicate_loss_floor(captions)


def _floor(floor: Callable[[list[str]], Any]) -> Callable[[list[str]], torch.Tensor]:
    return lambda captions: torch.tensor(as_number(floor(captions), "loss_floor(captions)"), dtype=torch.float64)


def _near(got: torch.Tensor, values: list[float]) -> bool:
    return any(math.isclose(float(got), v, rel_tol=1e-7, abs_tol=1e-9) for v in values)


def _mean_log(captions: list[str], count: Callable[[int], float], over: Any = None) -> float:
    over = list(captions if over is None else over)
    return sum(count(captions.count(c)) for c in over) / len(over)


_FLOOR_HINTS = [
    Hint("A caption counts itself: with k copies (itself included) the best probability is 1 / k, so the cost is "
         "log k, and a caption that appears once costs log 1 = 0.", detect=lambda got, expected, inputs: bool(
             torch.isinf(got)) or _near(got, [_mean_log(inputs[0], lambda k: math.log(max(k - 1, 1)))])),
    Hint("Average over the pairs of the batch (every row pays log k for its own caption), not over the distinct "
         "captions.", detect=lambda got, expected, inputs: _near(got, [_mean_log(inputs[0], math.log, set(inputs[0]))])),
    Hint("Take the mean of the logarithms, not the logarithm of the mean (or of the number of distinct captions).",
         detect=lambda got, expected, inputs: _near(got, [math.log(_mean_log(inputs[0], float)),
                                                          math.log(len(inputs[0]) / len(set(inputs[0])))])),
    Hint("Use the natural logarithm (math.log or torch.log), as the cross-entropy does.",
         detect=lambda got, expected, inputs: float(expected) > 0 and _near(got, [float(expected) / math.log(2),
                                                                                  float(expected) / math.log(10)])),
]


_FLOOR_TABLE = [(16, 6), (8, 8), (1, 4), (12, 1), (32, 10), (6, 3), (20, 20)]  # (batch, distinct captions to draw from)


def _floor_batch(g: torch.Generator, trial: int) -> tuple[list[str]]:
    """A batch of ShapesWorld captions ("a {colour} {shape}", its second template) with repeats.

    Trial 1 has no repeats; trial 3 is one caption repeated. Every caption can occur in ShapesWorld.
    """
    colours, combinations = list(COLOURS), len(COLOURS) * len(SHAPES)
    batch, kinds = _FLOOR_TABLE[trial] if trial < len(_FLOOR_TABLE) else (int(torch.randint(2, 40, (), generator=g)), 0)
    kinds = kinds or int(torch.randint(1, combinations, (), generator=g))
    picks = torch.randperm(combinations, generator=g)[:kinds]
    picks = picks if trial == 1 else picks[torch.randint(0, kinds, (batch,), generator=g)]  # trial 1: no repeats
    return ([f"a {colours[int(i) // len(SHAPES)]} {SHAPES[int(i) % len(SHAPES)]}" for i in picks],)


def check_loss_floor(fn: Callable[[list[str]], float], *, trials: int = 8, seed: int | None = None,
                     verbose: bool = True) -> CheckResult:
    """Check ``fn(captions)``: the lowest loss any model can reach on a batch with these captions (a float).

    The captions are ShapesWorld captions of the form "a {colour} {shape}" with many repeats; one
    batch has none, one has a single caption repeated. The reference is :func:`reference_loss_floor`.
    Returns a :class:`~clip_tutorial.exercises.CheckResult`. Explained in Chapter 3.3.
    """
    ensure_callable(fn, "fn")
    result = run_check(_floor(fn), lambda captions: torch.tensor(reference_loss_floor(captions), dtype=torch.float64),
                       _floor_batch, _FLOOR_HINTS, "loss_floor", trials, seed, False, arg_names=["captions"], atol=1e-9,
                       rtol=1e-7)
    return finish_check(result, verbose, f"Your floor matches the reference on {trials} batches of captions (with no "
                   "repeats, with one caption only, and with many repeats).")




# -- Exercise 4 (predict): two pairs share a caption -----------------------------------------------

#: The batch of the "predict" exercise: eight ShapesWorld captions, the first and the fourth the same.
TWIN_CAPTIONS: tuple[str, ...] = ("a red circle", "a blue square", "a green star", "a red circle", "a pink heart",
                                  "a cyan cross", "a black diamond", "a yellow hexagon")


def measure_twin_captions_floor(captions: tuple[str, ...] = TWIN_CAPTIONS, *, logit_scale: float = MAX_LOGIT_SCALE,
                                steps: int = 300, seed: int = 0) -> float:
    """The lowest CLIP loss that an optimiser finds for a batch with these captions, at a fixed logit scale.

    The "model" is as free as a model can be: every image gets a feature vector of its own, and
    every *distinct* caption gets one, shared by its copies, since any text encoder maps the same
    text to the same feature. Adam moves all of them for ``steps`` steps to minimise
    :func:`~clip_tutorial.clip_loss` at ``logit_scale`` (CLIP's largest, 100, by default); the
    lowest loss seen is returned. Explained in Chapter 3.6 (the "predict" exercise).

    Raises:
        ValueError: if ``captions`` is empty.
    """
    captions = list(captions)
    if not captions:
        raise ValueError("captions: expected at least one caption, got none")
    index = {caption: i for i, caption in enumerate(dict.fromkeys(captions))}
    which = torch.tensor([index[caption] for caption in captions])
    generator = torch.Generator().manual_seed(seed)
    dim = len(index) + 1  # room for every distinct caption to have a direction of its own
    images = torch.randn(len(captions), dim, generator=generator).requires_grad_()
    texts = torch.randn(len(index), dim, generator=generator).requires_grad_()
    optimizer = torch.optim.Adam([images, texts], lr=0.05)
    lowest = math.inf
    with one_thread():
        for _ in range(steps):
            logits = logit_scale * F.normalize(images, dim=-1) @ F.normalize(texts[which], dim=-1).T
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            lowest = min(lowest, loss.item())
    return lowest


def check_twin_captions_floor(prediction: object, *, verbose: bool = True) -> CheckResult:
    """Check your prediction of the lowest loss on a batch of eight pairs in which two share a caption.

    The experiment is :func:`measure_twin_captions_floor` on :data:`TWIN_CAPTIONS`: free features
    for every image and every distinct caption, optimised at a logit scale of 100. Explained in
    Chapter 3.6.

    Args:
        prediction: your number, in nats (``None`` before you have written one).
        verbose: print the feedback.

    Returns:
        A :class:`~clip_tutorial.exercises.CheckResult`, truthy within 0.02 nats of the measured loss.
    """
    return check_estimate(
        prediction, measure_twin_captions_floor, name="twin_captions_floor", tolerance=0.02, unit=" nats",
        explanation="The two pairs with the same caption have the same text feature, so each of their two image rows "
                    "sees two equal logits, its own caption's and its twin's: the best it can do is 1/2 each, which "
                    "costs log 2. Their two text rows are equal too and can do no better. The six other pairs can be "
                    "made perfect (cost 0). Each direction averages over the 8 rows: 2 log 2 / 8 = log 2 / 4, about "
                    "0.173 nats, and so does their mean.",
        verbose=verbose)


# -- Exercises 6 and 7 (diagnose): a toy CLIP to break -----------------------------------------------

def toy_problem(seed: int = 0, *, pairs: int = 64, embed_dim: int = 16, noise: float = 0.5
                ) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Linear, torch.nn.Linear, torch.nn.Parameter]:
    """A toy CLIP that trains in a fraction of a second: paired vectors and two linear encoders.

    Each of ``pairs`` "images" (32 numbers) and its "caption" (24 numbers) are two noisy views of
    the same 8 hidden numbers; ``noise`` sets how noisy. A linear image encoder and a linear text
    encoder map them into a joint space of ``embed_dim`` dimensions, and ``log_scale`` is CLIP's
    learned logit scale, stored as its logarithm and initialised at ``log(1 / 0.07)``. The global
    random state is left as it was. Explained in Chapter 3.6 (the "diagnose" exercises).

    Returns:
        ``(images, texts, image_encoder, text_encoder, log_scale)``.
    """
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(pairs, 8, generator=generator)
    images = hidden @ torch.randn(8, 32, generator=generator) + noise * torch.randn(pairs, 32, generator=generator)
    texts = hidden @ torch.randn(8, 24, generator=generator) + noise * torch.randn(pairs, 24, generator=generator)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        image_encoder, text_encoder = torch.nn.Linear(32, embed_dim), torch.nn.Linear(24, embed_dim)
    log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    return images, texts, image_encoder, text_encoder, log_scale


def toy_training(*, steps: int, lr: float, zero_grad: bool = True, clamp_at: float | None = math.log(MAX_LOGIT_SCALE),
                 clamp_before_step: bool = False, seed: int = 0, pairs: int = 64, embed_dim: int = 16,
                 noise: float = 0.5) -> dict[str, list[float]]:
    """Train :func:`toy_problem`'s toy CLIP with AdamW, with or without the mistakes of the exercises.

    Full-batch steps of :func:`~clip_tutorial.clip_loss` with CLIP's AdamW settings (betas 0.9
    and 0.98, eps 1e-6; no weight decay here). ``zero_grad=False`` forgets to reset the gradients
    before each backward pass. After each step (before it, with ``clamp_before_step``) the
    parameter ``log_scale`` is clamped to ``[0, clamp_at]``; ``None`` clamps nothing. The right
    bound is ``log(100)``, the default. It runs on one CPU thread, the fastest for such small
    tensors. Explained in Chapter 3.6.

    Returns:
        Per step: ``"loss"``, ``"grad_norm"`` (the norm of all the gradients the optimiser was given)
        and ``"scale"`` (``log_scale.exp()`` after the step and the clamp).
    """
    images, texts, image_encoder, text_encoder, log_scale = toy_problem(seed, pairs=pairs, embed_dim=embed_dim,
                                                                        noise=noise)
    parameters = [*image_encoder.parameters(), *text_encoder.parameters(), log_scale]
    optimizer = torch.optim.AdamW(parameters, lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0)
    record: dict[str, list[float]] = {"loss": [], "grad_norm": [], "scale": []}

    def clamp() -> None:
        if clamp_at is not None:
            with torch.no_grad():
                log_scale.clamp_(0, clamp_at)

    with one_thread():
        for _ in range(steps):
            if zero_grad:
                optimizer.zero_grad()
            image_features = F.normalize(image_encoder(images), dim=-1)
            text_features = F.normalize(text_encoder(texts), dim=-1)
            loss = clip_loss(log_scale.exp() * image_features @ text_features.T)
            loss.backward()
            if clamp_before_step:
                clamp()
            optimizer.step()
            if not clamp_before_step:
                clamp()
            record["loss"].append(loss.item())
            record["grad_norm"].append(float(torch.cat([p.grad.flatten() for p in parameters]).norm()))
            record["scale"].append(float(log_scale.detach().exp()))
    return record


def _only_fix(name: str, fixes: dict[str, Callable[[], bool]]) -> str:
    """The letter of the one fix that cures the symptom; an error if none or several do."""
    cured = [letter for letter, works in fixes.items() if works()]
    if len(cured) != 1:
        raise RuntimeError(f"{name}: expected exactly one fix to cure the symptom, got {cured or 'none'}")
    return cured[0]


#: The settings of the loop that forgets to reset its gradients (Exercise 6).
GROWING_GRADIENTS_RUN = {"steps": 50, "lr": 0.01}

GROWING_GRADIENTS_CHOICES = {
    "a": "The learning rate is too high: the steps overshoot. Divide it by 10",
    "b": "The gradients are never reset: each backward() adds this step's gradient to all the earlier ones. "
         "Call optimizer.zero_grad() before backward()",
    "c": "The logit scale is not clamped, so the softmax becomes too sharp. Clamp log_scale to [0, log 100] "
         "after each step",
}


def _healthy_gradients(record: dict[str, list[float]]) -> bool:
    """A sound run near a minimum has smaller gradients at its end than at its start."""
    return record["grad_norm"][-1] < record["grad_norm"][0]


def _measure_growing_gradients() -> str:
    """Apply each choice's fix to the loop that forgets to zero the gradients; return the one that cures it."""
    broken = {**GROWING_GRADIENTS_RUN, "zero_grad": False, "clamp_at": None}
    if _healthy_gradients(toy_training(**broken)):
        raise RuntimeError("growing_gradients: the broken loop showed no symptom")
    return _only_fix("growing_gradients", {
        "a": lambda: _healthy_gradients(toy_training(**{**broken, "lr": broken["lr"] / 10})),
        "b": lambda: _healthy_gradients(toy_training(**{**broken, "zero_grad": True})),
        "c": lambda: _healthy_gradients(toy_training(**{**broken, "clamp_at": math.log(MAX_LOGIT_SCALE)})),
    })


def check_growing_gradients(answer: object, *, verbose: bool = True) -> CheckResult:
    """Check your diagnosis of a training loop whose gradient norm grows while its loss falls.

    The experiment trains :func:`toy_problem`'s toy CLIP with the broken loop, then once with
    each choice's fix alone, and finds the one fix after which the gradients at the end of the
    run are smaller than at its start, as they are in any run that settles into a minimum.
    Explained in Chapter 3.6.

    Args:
        answer: the letter of your diagnosis, ``"a"``, ``"b"`` or ``"c"`` (``None`` before you choose).
        verbose: print the feedback.

    Returns:
        A :class:`~clip_tutorial.exercises.CheckResult`, truthy when the diagnosis is the measured one.
    """
    return check_choice(
        answer, _measure_growing_gradients, GROWING_GRADIENTS_CHOICES, name="growing_gradients",
        explanation="backward() accumulates: it adds the new gradient to whatever .grad already holds, which is what "
                    "makes gradient accumulation over several small batches possible. Without zero_grad(), step t "
                    "applies the sum of the gradients of steps 1 to t, so the optimiser keeps pushing in the "
                    "directions of long ago. A smaller learning rate only slows that down, and the clamp never "
                    "comes into play (the scale stays far below 100 here). Resetting the gradients is the one fix "
                    "that lets them shrink as the loss approaches its minimum.",
        verbose=verbose)


#: The settings of the loop whose clamp bounds the wrong quantity (Exercise 7): a crowded joint space of 3
#: dimensions for 128 pairs, where the loss keeps asking for a sharper softmax.
RUNAWAY_TEMPERATURE_RUN = {"steps": 100, "lr": 0.1, "pairs": 128, "embed_dim": 3, "noise": 0.1}

RUNAWAY_TEMPERATURE_CHOICES = {
    "a": "The clamp is redundant and harmless: the forward pass of OpenAI's released model already caps "
         "logit_scale.exp() at 100, so the loop needs no clamp",
    "b": "The clamp runs after optimizer.step(), so the step pushes the scale past 100 before it is clamped: "
         "clamp before the step instead",
    "c": "log_scale holds the logarithm of the scale, so clamping it at 100 lets the scale reach e^100: "
         "clamp it at log(100), about 4.605",
}


def _scale_capped(record: dict[str, list[float]]) -> bool:
    return max(record["scale"]) <= MAX_LOGIT_SCALE * (1 + 1e-6)


def _measure_runaway_temperature() -> str:
    """Apply each choice's fix to the loop that clamps at 100; return the one that keeps the scale at most 100."""
    broken = {**RUNAWAY_TEMPERATURE_RUN, "clamp_at": float(MAX_LOGIT_SCALE)}
    if _scale_capped(toy_training(**broken)):
        raise RuntimeError("runaway_temperature: the broken loop showed no symptom")
    return _only_fix("runaway_temperature", {
        "a": lambda: _scale_capped(toy_training(**{**broken, "clamp_at": None})),
        "b": lambda: _scale_capped(toy_training(**{**broken, "clamp_before_step": True})),
        "c": lambda: _scale_capped(toy_training(**{**broken, "clamp_at": math.log(MAX_LOGIT_SCALE)})),
    })


def check_runaway_temperature(answer: object, *, verbose: bool = True) -> CheckResult:
    """Check your diagnosis of a training loop whose logit scale climbs past 100 although it is clamped.

    The experiment trains :func:`toy_problem`'s toy CLIP, in a crowded joint space where the loss
    keeps asking for a larger scale, with the broken clamp, then once with each choice's fix
    alone, and finds the one fix that keeps ``log_scale.exp()`` at most 100 for the whole run.
    Explained in Chapter 3.6.

    Args:
        answer: the letter of your diagnosis, ``"a"``, ``"b"`` or ``"c"`` (``None`` before you choose).
        verbose: print the feedback.

    Returns:
        A :class:`~clip_tutorial.exercises.CheckResult`, truthy when the diagnosis is the measured one.
    """
    return check_choice(
        answer, _measure_runaway_temperature, RUNAWAY_TEMPERATURE_CHOICES, name="runaway_temperature",
        explanation="CLIP learns the logarithm of its logit scale, and the loss multiplies the similarities by "
                    "log_scale.exp(). A bound of 100 on the logarithm allows a scale of e^100, so it never acts. "
                    "Clamping before the step changes nothing about that bound. And OpenAI's released forward pass "
                    "does not cap the scale at all (it computes logit_scale.exp() only): the cap at 100 is applied in "
                    "training, to the parameter, as clamp(0, log 100).",
        verbose=verbose)


#: The exercises of Chapter 3, in the book's order (section "Summary and exercises").
EXERCISES = (
    Exercise("ch3.lr_schedule", "implement", check_lr_schedule, "Warm-up and cosine"),
    Exercise("ch3.recall_at_k", "implement", check_recall_at_k, "Recall@K"),
    Exercise("ch3.local_clip_loss", "implement", check_local_clip_loss, "One process's share of the loss"),
    Exercise("ch3.twin_captions_floor", "predict", check_twin_captions_floor,
             "Predict: the lowest loss when two captions are the same"),
    Exercise("ch3.loss_floor", "implement", check_loss_floor, "The floor under the loss"),
    Exercise("ch3.growing_gradients", "diagnose", check_growing_gradients,
             "Break it and explain: gradients that grow while the loss falls"),
    Exercise("ch3.runaway_temperature", "diagnose", check_runaway_temperature,
             "Break it and explain: a clamped temperature that runs away"),
)
