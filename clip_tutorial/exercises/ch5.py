"""Checks for the exercises of Chapter 5: prompt ensembles, search, thresholds, base rates, composed queries.

Four exercises ask for a function. Each ``check_<name>(fn)`` runs your ``fn`` on fresh random
inputs, compares it with the package's reference, prints ✅ or ❌ with an explanation, and returns
a :class:`~clip_tutorial.exercises.CheckResult` that is truthy when you passed. These checks take
the keyword arguments ``trials`` (number of random inputs), ``seed`` (of the inputs; a fresh one
by default) and ``verbose`` (print the feedback).

Two exercises ask for a prediction or a diagnosis instead: :func:`check_unnormalised_query` and
:func:`check_precision_at_low_prevalence` take your answer, run the experiment on the shipped
``ch3-best`` model (about a second on a CPU) and compare.

``EXERCISES`` lists all six in the book's order. Explained in Chapter 5 (section "Summary and exercises").
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from clip_tutorial.apps.calibration import precision_recall_curve, threshold_for_precision, threshold_for_recall
from clip_tutorial.apps.query_arithmetic import compose_query
from clip_tutorial.evaluation.retrieval import recall_at_k
from clip_tutorial.evaluation.zeroshot import ensemble_prompt_embeddings
from clip_tutorial.data import ShapesWorld, class_names
from clip_tutorial.data.render import COLOURS, SHAPES
from clip_tutorial.train.shipped import load_shipped
from clip_tutorial.evaluation.zeroshot import build_zero_shot_classifier, encode_images, encode_texts
from .core import CheckResult, Hint, as_number, ask_first, ensure_callable, finish_check, report, run_check
from .predict import check_choice, check_estimate, percentage_hint
from .registry import Exercise

__all__ = ["EXERCISES", "check_zero_shot_weights", "check_recall_with_relevance", "check_unnormalised_query",
           "check_threshold_for_precision", "check_precision_at_low_prevalence", "check_compose_query",
           "reference_zero_shot_weights", "reference_recall_with_relevance", "reference_threshold_for_precision",
           "measure_unnormalised_query", "measure_precision_at_low_prevalence"]


# -- Exercise 1: prompt ensembling ---------------------------------------------------------------

def reference_zero_shot_weights(text_features: torch.Tensor) -> torch.Tensor:
    """The (D, C) zero-shot weights of a prompt ensemble, from (T, C, D) per-template text embeddings.

    Row ``text_features[t, c]`` is the text embedding of template ``t`` filled with class ``c``.
    Each embedding is L2-normalised, the normalised embeddings of one class are averaged over the
    templates, and the mean is L2-normalised again; column ``c`` of the result is class ``c``'s
    weight vector. This is what :func:`clip_tutorial.build_zero_shot_classifier` computes from the
    prompts, and it is computed by :func:`clip_tutorial.evaluation.zeroshot.ensemble_prompt_embeddings`, which
    takes the classes first. Explained in Chapter 5.1.

    Raises:
        ValueError: if ``text_features`` is not a non-empty 3-D float tensor.
    """
    if not isinstance(text_features, torch.Tensor) or text_features.ndim != 3 or 0 in text_features.shape \
            or not text_features.is_floating_point():
        got = (f"shape {tuple(text_features.shape)}, dtype {text_features.dtype}"
               if isinstance(text_features, torch.Tensor) else type(text_features).__name__)
        raise ValueError(f"text_features: expected a non-empty float tensor (templates, classes, dim), got {got}")
    return ensemble_prompt_embeddings(text_features.transpose(0, 1))


def _weights_mistake(first: int | None = -1, last: int | None = -1) -> Callable[[torch.Tensor], torch.Tensor]:
    """The ensemble with a wrong normalisation: ``None`` skips one, an int normalises along that axis."""
    def weights(x: torch.Tensor) -> torch.Tensor:
        x = x if first is None else F.normalize(x, dim=first)
        mean = x.mean(dim=0)
        return (mean if last is None else F.normalize(mean, dim=last)).T
    return weights


def _class_axis_averaged(got: Any, expected: Any, inputs: tuple) -> bool:
    templates, classes, dim = inputs[0].shape
    averaged = ((dim, templates), (templates, dim))
    return isinstance(got, torch.Tensor) and templates != classes and tuple(got.shape) in averaged


_WEIGHTS_HINTS = [
    Hint("Normalise each prompt's embedding *before* averaging: a prompt whose embedding happens to be long would "
         "otherwise outweigh the others. F.normalize(text_features, dim=-1) first.",
         mistake=_weights_mistake(first=None)),
    Hint("Normalise the mean again at the end: the average of unit vectors is shorter than 1 (the more the templates "
         "disagree, the shorter), and the class weights must have unit norm to give cosine similarities.",
         mistake=_weights_mistake(last=None)),
    Hint("Normalise twice, once each embedding and once each class mean: without either, a class whose prompts have "
         "long embeddings gets larger scores.", mistake=_weights_mistake(first=None, last=None)),
    Hint("Normalise along the feature axis (dim=-1, the D numbers of one embedding), not across classes or templates.",
         mistake=_weights_mistake(first=1)),
    Hint("Normalise the class means along the feature axis too (dim=-1 of the (C, D) mean, before transposing).",
         mistake=_weights_mistake(last=0)),
    Hint("Average over the templates (dim=0 of the (T, C, D) input) so that one weight vector per class remains.",
         detect=_class_axis_averaged),
]


def check_zero_shot_weights(fn: Callable[[torch.Tensor], torch.Tensor], *, trials: int = 6, seed: int | None = None,
                            verbose: bool = True) -> CheckResult:
    """Check ``fn(text_features)``: (T, C, D) per-template text embeddings to the (D, C) zero-shot weights.

    The embeddings are random and of very different lengths, as raw text-encoder outputs are; one
    trial has a single template, one a single class. The reference is
    :func:`reference_zero_shot_weights`. Returns a :class:`~clip_tutorial.exercises.CheckResult`.
    Explained in Chapter 5.1.
    """
    ensure_callable(fn, "fn")
    table = [(4, 6, 8), (3, 5, 4), (1, 4, 6), (5, 1, 3), (2, 7, 5), (6, 3, 16)]  # (templates, classes, dim)

    def make(g: torch.Generator, trial: int) -> tuple:
        if trial < len(table):
            t, c, d = table[trial]
        else:
            t, c = (int(torch.randint(1, 9, (), generator=g)) for _ in range(2))
            d = int(torch.randint(2, 17, (), generator=g))  # with D = 1 a class's unit prompts can cancel out
        classes = torch.randn(1, c, d, generator=g)
        features = classes + 0.7 * torch.randn(t, c, d, generator=g)  # the prompts of a class roughly agree
        return (features * torch.empty(t, c, 1).uniform_(0.2, 5.0, generator=g),)  # ... but not in length

    result = run_check(fn, reference_zero_shot_weights, make, _WEIGHTS_HINTS, "zero_shot_weights", trials, seed, False,
                       arg_names=["text_features"], atol=1e-6, rtol=1e-5)
    return finish_check(result, verbose, f"Your weights match the prompt ensemble of build_zero_shot_classifier on {trials} "
                   "sets of text embeddings (a single template and a single class among them).",
                   (r" at index \((\d+), (\d+)\)", lambda m: f" at feature {m.group(1)} of class {m.group(2)}"))


# -- Exercise 2: recall@K when a query has several relevant items -------------------------------

def reference_recall_with_relevance(similarity: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Recall@k for k = 1 .. G + 1 of a (Q, G) ``similarity`` with a (Q, G) boolean ``relevant`` matrix.

    A query counts as a hit at ``k`` when *any* of its relevant gallery items is among its ``k``
    highest-scoring items. Computed by :func:`clip_tutorial.evaluation.retrieval.recall_at_k` with
    ``positives=relevant``. Explained in Chapter 5.2.
    """
    ks = range(1, similarity.shape[1] + 2)
    return torch.tensor(list(recall_at_k(similarity, ks, positives=relevant).values()), dtype=torch.float64)


def _search_curve(recall: Callable[[torch.Tensor, torch.Tensor, int], Any]
                  ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def curve(similarity: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
        ks = range(1, similarity.shape[1] + 2)
        return torch.tensor([as_number(recall(similarity, relevant, k), f"recall_at_k(similarity, relevant, k={k})")
                             for k in ks], dtype=torch.float64)
    return curve


def _top_k(similarity: torch.Tensor, relevant: torch.Tensor, k: int) -> torch.Tensor:
    """(Q, G) bool: which relevant items are among each query's top k."""
    top = torch.zeros_like(relevant)
    top.scatter_(1, similarity.topk(min(k, similarity.shape[1]), dim=1).indices, True)
    return top & relevant


def _first_relevant(similarity: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """The recall curve when only the first relevant item of each row (in column order) counts."""
    first = F.one_hot(relevant.long().argmax(dim=1), relevant.shape[1]).bool()
    return reference_recall_with_relevance(similarity, first)


_SEARCH_HINTS = [
    Hint("A query is a hit when *any* relevant item is in its top k; the recall is the fraction of queries with a hit. "
         "You computed the fraction of each query's relevant items found in its top k (the information-retrieval "
         "recall), which stays low whenever a query has more relevant items than k.",
         mistake=_search_curve(lambda s, r, k: (_top_k(s, r, k).sum(1) / r.sum(1)).mean())),
    Hint("One relevant item in the top k is enough: you asked for all of them.",
         mistake=_search_curve(lambda s, r, k: (_top_k(s, r, k).sum(1) == r.sum(1)).float().mean())),
    Hint("That is precision@k (the fraction of the top k that is relevant). Recall@K asks whether any relevant item "
         "is in the top k.", mistake=_search_curve(lambda s, r, k: (_top_k(s, r, k).sum(1) / k).mean())),
    Hint("Any relevant item counts, not only the first True of the row: look at the relevant item the model scores "
         "highest.", mistake=_first_relevant),
    Hint("The relevance is in the `relevant` matrix, not on the diagonal: a query's relevant items can be anywhere "
         "in its row, and there can be several.",
         mistake=lambda s, r: reference_recall_with_relevance(s, torch.eye(*s.shape, dtype=torch.bool))),
    Hint("Off by one: a query's rank is the number of items that score *strictly higher* than its best relevant "
         "item, and it is a hit when that rank is below k.",
         mistake=lambda s, r: F.pad(reference_recall_with_relevance(s, r)[:-1], (1, 0))),
    Hint("Rows are the queries: row i scores query i against every gallery item, so rank along dim=1.",
         mistake=lambda s, r: reference_recall_with_relevance(s.T, r.T)),
    Hint("Sort in descending order: the top k are the k *highest* similarities.",
         mistake=lambda s, r: reference_recall_with_relevance(-s, r)),
    Hint("Return a fraction between 0 and 1: divide the number of hits by the number of queries.",
         detect=lambda got, expected, inputs: len(inputs[0]) > 1 and torch.allclose(got, expected * len(inputs[0]))),
    Hint("Return a fraction between 0 and 1, not a percentage.",
         detect=lambda got, expected, inputs: torch.allclose(got, expected * 100)),
    Hint("k can exceed the number of gallery items (then every query finds a relevant item): clamp it, "
         "e.g. min(k, similarity.shape[1]), before calling topk.", error_contains="out of range"),
]


def check_recall_with_relevance(fn: Callable[[torch.Tensor, torch.Tensor, int], float], *, trials: int = 7,
                                seed: int | None = None, verbose: bool = True) -> CheckResult:
    """Check ``fn(similarity, relevant, k)``: the fraction of queries with a relevant item in their top k.

    ``similarity`` is (Q, G) float, queries in rows; ``relevant`` is (Q, G) bool, and every query
    has at least one relevant item. Each trial calls ``fn`` for every k from 1 to G + 1, on square
    and non-square matrices, one query alone, and queries for which everything is relevant. The
    scores are continuous, so there are no ties. The reference is
    :func:`reference_recall_with_relevance`. Returns a :class:`~clip_tutorial.exercises.CheckResult`.
    Explained in Chapter 5.2.
    """
    ensure_callable(fn, "fn")
    table = [(8, 8), (6, 15), (1, 9), (12, 5), (10, 10), (5, 1), (9, 20)]  # (queries, gallery)

    def make(g: torch.Generator, trial: int) -> tuple:
        q, n = table[trial] if trial < len(table) else (int(torch.randint(1, 20, (), generator=g)) for _ in range(2))
        relevant = torch.rand(q, n, generator=g) < 0.3
        relevant[torch.arange(q), torch.randint(0, n, (q,), generator=g)] = True  # every query has one at least
        if trial == 3:
            relevant[0] = True  # a query for which everything is relevant
        return torch.randn(q, n, generator=g) + relevant, relevant

    result = run_check(_search_curve(fn), reference_recall_with_relevance, make, _SEARCH_HINTS, "recall_with_relevance",
                       trials, seed, False, arg_names=["similarity", "relevant"])
    return finish_check(result, verbose, f"Your recall matches clip_tutorial.evaluation.retrieval.recall_at_k(..., positives=relevant) "
                   f"on {trials} similarity matrices (square and not, up to 20 items), for every k from 1 to G + 1.",
                   (r" at index \((\d+),\)", lambda m: f" at k = {int(m.group(1)) + 1}"))


# -- Exercise 3 (diagnose): a search that forgot to normalise the query ---------------------------

#: The score cut-off of the experiment: a search that shows "every image scoring at least this".
QUERY_CUTOFF = 0.5

_UNNORMALISED_CHOICES = {
    "a": "the results change: the long raw query pulls every query towards the same few images, and recall drops",
    "b": "every query returns the same images in the same order as before; only the scores grow, by a different "
         "factor for each query, so a fixed score cut-off keeps far more images, and a different number per query",
    "c": "nothing changes at all: the image embeddings are unit vectors, so the scores are cosine similarities anyway",
}


@functools.lru_cache(maxsize=1)
def _shipped_ch3_best() -> tuple:
    trained = load_shipped("ch3-best")
    return trained.model, trained.tokenizer, trained.recipe


@functools.lru_cache(maxsize=1)
def _unnormalised_query_facts(n_images: int = 1000, seed: int = 11) -> dict[str, Any]:
    model, tokenizer, recipe = _shipped_ch3_best()
    gallery = encode_images(model, ShapesWorld(n_images, split="all", seed=seed, styles=recipe.styles).tensors())
    raw = encode_texts(model, tokenizer, [f"a photo of a {c} {s}" for c in COLOURS for s in SHAPES], normalize=False)
    broken = raw @ gallery.T                          # the query as the text tower returns it
    mended = F.normalize(raw, dim=-1) @ gallery.T     # the query normalised, as the index expects
    k = 10
    same_results = bool(torch.equal(broken.topk(k, dim=1).indices, mended.topk(k, dim=1).indices))
    same_scores = bool(torch.allclose(broken, mended, atol=1e-4))
    kept_broken = (broken >= QUERY_CUTOFF).sum(dim=1).double()
    kept_mended = (mended >= QUERY_CUTOFF).sum(dim=1).double()
    if not same_results:
        letter = "a"
    elif same_scores:
        letter = "c"
    else:
        letter = "b"
    return {"letter": letter, "k": k, "queries": len(raw), "images": n_images, "same_results": same_results,
            "norm_min": float(raw.norm(dim=-1).min()), "norm_max": float(raw.norm(dim=-1).max()),
            "kept_broken": (float(kept_broken.min()), float(kept_broken.mean()), float(kept_broken.max())),
            "kept_mended": (float(kept_mended.min()), float(kept_mended.mean()), float(kept_mended.max()))}


def measure_unnormalised_query() -> str:
    """Run the broken and the mended search on ``ch3-best`` and return the letter of the true statement.

    The gallery is 1,000 ShapesWorld images embedded and normalised, as an index stores them; the
    queries are the 64 prompts "a photo of a <colour> <shape>". The broken search multiplies the
    raw text embeddings with the gallery, the mended one normalises them first. Explained in Chapter 5.8.
    """
    return _unnormalised_query_facts()["letter"]




def check_unnormalised_query(answer: Any, *, verbose: bool = True) -> CheckResult:
    """Check your diagnosis (``"a"``, ``"b"`` or ``"c"``) of a search that does not normalise its query.

    The check runs the broken and the mended search on the shipped ``ch3-best`` model (see
    :func:`measure_unnormalised_query`) and says which statement the experiment bears out. ``None``
    (no answer yet) prints a reminder and returns a falsy result. Explained in Chapter 5.8.

    Raises:
        TypeError: if ``answer`` is neither ``None`` nor a string.
        ValueError: if ``answer`` is not one of the letters.
    """
    if answer is None:
        return ask_first("unnormalised_query", 'answer ("a", "b" or "c")', verbose)
    facts = _unnormalised_query_facts()
    low, mean_broken, high = facts["kept_broken"]
    explanation = (
        f"Measured on {facts['images']:,} images and {facts['queries']} queries: the top {facts['k']} of every query "
        f"{'are' if facts['same_results'] else 'are not'} the same, in the same order. Leaving the query unnormalised "
        f"multiplies all of its scores by one positive number, the query's length (here between "
        f"{facts['norm_min']:.1f} and {facts['norm_max']:.1f}), and that cannot reorder one query's results. The "
        f"symptom shows only where scores are compared with a number or with another query's scores: with a cut-off "
        f"of {QUERY_CUTOFF}, the mended search keeps {facts['kept_mended'][1]:.1f} images per query on average, the "
        f"broken one {mean_broken:.1f} (from {low:.0f} to {high:.0f}). Zero-shot classification compares one image "
        f"with several texts, so there a missing normalisation of the texts does change the answer.")
    result = check_choice(answer, measure_unnormalised_query, _UNNORMALISED_CHOICES, name="unnormalised_query",
                          explanation=explanation, verbose=False)
    return report(result, verbose)


# -- Exercise 4: a threshold that reaches a target precision ------------------------------------

def reference_threshold_for_precision(scores: torch.Tensor, labels: torch.Tensor, target_precision: float) -> float:
    """The lowest threshold ``t`` among the scores whose detector ``scores >= t`` has precision >= the target.

    Computed by :func:`clip_tutorial.apps.calibration.threshold_for_precision`. Explained in Chapter 5.4.
    """
    return threshold_for_precision(scores, labels, target_precision)


def _threshold(fn: Callable[[torch.Tensor, torch.Tensor, float], Any]) -> Callable[..., torch.Tensor]:
    def threshold(scores: torch.Tensor, labels: torch.Tensor, target_precision: float) -> torch.Tensor:
        call = "threshold_for_precision(scores, labels, target_precision)"
        value = as_number(fn(scores, labels, target_precision), call)
        return torch.tensor(value, dtype=torch.float64)
    return threshold


def _candidates(scores: torch.Tensor, labels: torch.Tensor, strict: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Distinct scores in decreasing order and the precision of flagging ``>=`` (or ``>``) each."""
    s, y = scores.double().numpy(), labels.numpy()
    thresholds = np.unique(s)[::-1]
    flagged = s[None, :] > thresholds[:, None] if strict else s[None, :] >= thresholds[:, None]
    count = flagged.sum(1)
    return thresholds, np.where(count > 0, (flagged & y).sum(1) / np.maximum(count, 1), 1.0)


def _strictly_above(scores: torch.Tensor, labels: torch.Tensor, target: float) -> float:
    thresholds, precision = _candidates(scores, labels, strict=True)
    return float(thresholds[np.flatnonzero(precision >= target)[-1]])


def _highest(scores: torch.Tensor, labels: torch.Tensor, target: float) -> float:
    precision, _, thresholds = precision_recall_curve(scores, labels)
    return float(thresholds[np.flatnonzero(precision >= target)[0]])


def _stop_at_first_miss(scores: torch.Tensor, labels: torch.Tensor, target: float) -> float:
    precision, _, thresholds = precision_recall_curve(scores, labels)
    misses = np.flatnonzero(precision < target)
    return float(thresholds[(misses[0] if misses.size else len(thresholds)) - 1])


def _ties_split(scores: torch.Tensor, labels: torch.Tensor, target: float) -> float:
    order = torch.argsort(scores, descending=True, stable=True)
    hits = labels[order].double().cumsum(0)
    precision = hits / torch.arange(1, len(scores) + 1)
    return float(scores[order][int(torch.nonzero(precision >= target).max())])


_THRESHOLD_HINTS = [
    Hint("The detector flags scores *at least* the threshold (scores >= t), so the item that scores exactly t is "
         "flagged too; you used scores > t.", mistake=_strictly_above),
    Hint("Return the *lowest* threshold that reaches the target: it flags the most items, so it keeps the most "
         "recall. The highest one flags only the very top.", mistake=_highest),
    Hint("Precision is not monotonic: it can dip below the target and come back as the threshold drops. Do not "
         "stop at the first threshold that misses the target; check every candidate and keep the lowest that meets it.",
         mistake=_stop_at_first_miss),
    Hint("Items with equal scores are flagged together: compute the precision at each distinct score (after all "
         "items tied at it), not after each item in sorted order.", mistake=_ties_split),
    Hint("You targeted the recall (the fraction of positives flagged). Precision is the fraction of the *flagged* "
         "items that are positive.", mistake=lambda s, y, t: threshold_for_recall(s, y, t)),
    Hint("Return one of the scores (the score of the last item the detector flags), not a value between two scores.",
         detect=lambda got, expected, inputs: not bool((inputs[0].double() == got).any())),
]


def check_threshold_for_precision(fn: Callable[[torch.Tensor, torch.Tensor, float], float], *, trials: int = 8,
                                  seed: int | None = None, verbose: bool = True) -> CheckResult:
    """Check ``fn(scores, labels, target_precision)``: the lowest threshold that reaches the target precision.

    ``scores`` is a 1-D float tensor, ``labels`` a bool tensor of the same length (``True`` for
    the items that show the concept), ``target_precision`` a float in (0, 1]. The highest score
    always belongs to a positive, so every target can be reached. Some trials have tied scores,
    and one has a precision that dips below the target and recovers. The reference is
    :func:`clip_tutorial.apps.calibration.threshold_for_precision`. Returns a
    :class:`~clip_tutorial.exercises.CheckResult`. Explained in Chapter 5.4.
    """
    ensure_callable(fn, "fn")
    # Precision 1, 1, 0.67, 0.5, 0.6, 0.67, 0.71, 0.62, 0.56, 0.5 down the ranking: it dips below 0.6 and recovers.
    dip = (torch.linspace(0.9, 0.0, 10), torch.tensor([1, 1, 0, 0, 1, 1, 1, 0, 0, 0]).bool(), 0.6)
    # Precision 1, 0.5, 0.43, 0.6 at the four distinct scores; counted after each item of the tie at 0.8 (in input
    # order) it would be 0.67, 0.75, 0.6, 0.5, 0.43, but a tie is flagged as a whole. The scores come unsorted.
    tie = (torch.tensor([0.8, 1.0, 0.1, 0.8, 0.8, 0.1, 0.9, 0.8, 0.1, 0.8]),
           torch.tensor([1, 1, 1, 1, 0, 1, 0, 0, 1, 0]).bool(), 0.7)
    targets = (0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 1.0)

    def make(g: torch.Generator, trial: int) -> tuple:
        if trial < 2:
            return tuple(x.clone() if isinstance(x, torch.Tensor) else x for x in (dip, tie)[trial])
        n = int(torch.randint(6, 60, (), generator=g))
        labels = torch.rand(n, generator=g) < 0.4
        labels[0] = True
        scores = torch.randn(n, generator=g) + 1.2 * labels
        if trial % 2:
            scores = (scores * 4).round() / 4  # coarse scores: many ties
        scores[0] = scores.max() + 0.5  # the top score is a positive's, so precision 1 is reachable
        return scores, labels, targets[int(torch.randint(0, len(targets), (), generator=g))]

    result = run_check(_threshold(fn), lambda s, y, t: torch.tensor(reference_threshold_for_precision(s, y, t),
                                                                    dtype=torch.float64),
                       make, _THRESHOLD_HINTS, "threshold_for_precision", trials, seed, False,
                       arg_names=["scores", "labels", "target_precision"], atol=1e-9, rtol=0.0)
    return finish_check(result, verbose, f"Your threshold matches clip_tutorial.apps.calibration.threshold_for_precision on "
                   f"{trials} sets of scores (with ties, and with a precision that dips and recovers).")


# -- Exercise 5 (predict): the same detector where the concept is rare ------------------------------

#: The settings of the experiment: the detector's precision on a balanced stream, the share of
#: positives in the rare stream, and how far a prediction may be from the measurement.
BALANCED_PRECISION = 0.9
LOW_PREVALENCE = 0.01
PREVALENCE_TOLERANCE = 0.02

@functools.lru_cache(maxsize=1)
def _circle_detector(n_images: int = 2000, seed: int = 21) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and labels of a circle detector: the zero-shot probability of the eight circle classes."""
    model, tokenizer, recipe = _shipped_ch3_best()
    data = ShapesWorld(n_images, split="all", seed=seed, styles=recipe.styles)
    names = class_names("pair")
    logits = model.logit_scale_value().item() * encode_images(model, data.tensors()) @ \
        build_zero_shot_classifier(model, tokenizer, names)
    circle = torch.tensor([name.split()[1] == "circle" for name in names])
    labels = torch.tensor([objects[0].shape == "circle" for objects in data.attributes])
    return logits.softmax(dim=-1)[:, circle].sum(dim=-1), labels


@functools.lru_cache(maxsize=4)
def _low_prevalence_facts(balanced_precision: float = BALANCED_PRECISION, prevalence: float = LOW_PREVALENCE,
                          draws: int = 500, seed: int = 0) -> dict[str, float]:
    scores, labels = _circle_detector()
    positives, negatives = scores[labels], scores[~labels]
    candidates = scores.unique()  # ascending
    recall = (positives[None, :] >= candidates[:, None]).double().mean(dim=1)
    false_positive_rate = (negatives[None, :] >= candidates[:, None]).double().mean(dim=1)
    balanced = recall / (recall + false_positive_rate)  # as many positives as negatives; every candidate flags one
    at = int(torch.nonzero(balanced >= balanced_precision).min())  # the lowest threshold precise enough
    threshold = candidates[at]
    # The rare stream: every negative, and just enough positives, drawn at random, for the prevalence.
    n_positives = round(prevalence / (1 - prevalence) * len(negatives))
    false_alarms = int((negatives >= threshold).sum())
    generator = torch.Generator().manual_seed(seed)
    precisions = []
    for _ in range(draws):
        drawn = positives[torch.randperm(len(positives), generator=generator)[:n_positives]]
        hits = int((drawn >= threshold).sum())
        precisions.append(hits / (hits + false_alarms) if hits + false_alarms else 1.0)
    return {"threshold": float(threshold), "recall": float(recall[at]),
            "false_positive_rate": float(false_positive_rate[at]), "balanced_precision": float(balanced[at]),
            "negatives": len(negatives), "positives_drawn": n_positives, "false_alarms": false_alarms,
            "precision": float(np.mean(precisions)), "draws": draws}


def _predicted_precision() -> float:
    odds = (1 - BALANCED_PRECISION) / BALANCED_PRECISION  # false over true alarms at p = 1/2: f / r
    return LOW_PREVALENCE / (LOW_PREVALENCE + (1 - LOW_PREVALENCE) * odds)


def measure_precision_at_low_prevalence() -> float:
    """The precision, where one image in 100 shows a circle, of a circle detector that is 0.9 precise on balanced data.

    The detector is the zero-shot probability that ``ch3-best`` gives to the eight circle classes,
    on 2,000 ShapesWorld images. Its threshold is the lowest at which the precision on a balanced
    stream (as many circles as other shapes, weighted equally) reaches 0.9. The rare stream keeps
    every non-circle image and draws just enough circles at random for a prevalence of 1%; the
    result is the mean precision over 500 such draws. Explained in Chapter 5.8.
    """
    return _low_prevalence_facts()["precision"]


def check_precision_at_low_prevalence(prediction: Any, *, verbose: bool = True) -> CheckResult:
    """Check your prediction of a detector's precision at 1% prevalence, given 0.9 at 50%.

    The check runs the experiment of :func:`measure_precision_at_low_prevalence` on the shipped
    ``ch3-best`` model and accepts a prediction within 0.02 of the measurement. ``None`` (no
    prediction yet) prints a reminder and returns a falsy result. Explained in Chapter 5.8.

    Raises:
        TypeError: if ``prediction`` is not a number (or ``None``).
        ValueError: if ``prediction`` is not finite.
    """
    if prediction is None:
        return ask_first("precision_at_low_prevalence", "prediction", verbose)
    facts = _low_prevalence_facts()
    explanation = (
        f"At the threshold, the detector finds a share r = {facts['recall']:.3f} of the circles and flags a share "
        f"f = {facts['false_positive_rate']:.3f} of the other images; neither depends on how common circles are. "
        f"Precision does: with a share p of positives it is p r / (p r + (1 - p) f). A precision of "
        f"{BALANCED_PRECISION:g} at p = 1/2 means f = r ({1 - BALANCED_PRECISION:g} / {BALANCED_PRECISION:g}), so at "
        f"p = {LOW_PREVALENCE:g} it is {LOW_PREVALENCE:g} / ({LOW_PREVALENCE:g} + {1 - LOW_PREVALENCE:g} "
        f"({1 - BALANCED_PRECISION:g} / {BALANCED_PRECISION:g})) = {_predicted_precision():.3f}, whatever r is. "
        f"In the rare stream, "
        f"{facts['positives_drawn']} circles meet {facts['false_alarms']} false alarms from "
        f"{facts['negatives']:,} other images: most alarms are false.")
    result = check_estimate(prediction, measure_precision_at_low_prevalence, name="precision_at_low_prevalence",
                            tolerance=PREVALENCE_TOLERANCE, explanation=explanation, verbose=False)
    return report(percentage_hint(result, prediction, "precision"), verbose)


# -- Exercise 6: "like this one, but blue" -------------------------------------------------------

def _composed(image: Callable = F.normalize, text: Callable = F.normalize, out: Callable = F.normalize,
              step: Callable = lambda w, a, r: w * (a - r)) -> Callable[..., torch.Tensor]:
    """The composed query with one piece swapped for a wrong one."""
    return lambda x, a, r, w: out(image(x, dim=-1) + step(w, text(a, dim=-1), text(r, dim=-1)), dim=-1)


def _keep(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return x


_COMPOSE_HINTS = [
    Hint("Normalise the inputs first, the image embedding and both text embeddings: raw text embeddings are often "
         "much longer than image embeddings and would drown the image.", mistake=_composed(image=_keep, text=_keep)),
    Hint("Normalise the text embeddings before using them: a long text embedding moves the query much further than "
         "the weight says.", mistake=_composed(text=_keep)),
    Hint("Normalise the image embedding first, so that the weight means the same for every image.",
         mistake=_composed(image=_keep)),
    Hint("Normalise the result: the search compares unit vectors by cosine similarity.", mistake=_composed(out=_keep)),
    Hint("Move towards `add` and away from `remove`: add weight * (add - remove), not the reverse.",
         mistake=_composed(step=lambda w, a, r: w * (r - a))),
    Hint("The weight scales the whole step, weight * (add - remove), not only the text to add.",
         mistake=_composed(step=lambda w, a, r: w * a - r)),
    Hint("Subtract `remove` too: without it the query keeps its old colour as well as the new one.",
         mistake=_composed(step=lambda w, a, r: w * a)),
    Hint("Add the step weight * (add - remove) as it is; normalising the difference first changes its length.",
         mistake=_composed(step=lambda w, a, r: w * F.normalize(a - r, dim=-1))),
]


def check_compose_query(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor], *,
                        trials: int = 6, seed: int | None = None, verbose: bool = True) -> CheckResult:
    """Check ``fn(image_features, add, remove, weight)``: (N, D) queries "like this image, but ``add``, not ``remove``".

    ``image_features``, ``add`` and ``remove`` are (N, D) raw embeddings of very different lengths
    (row ``i`` of ``add`` and ``remove`` belongs to image ``i``), ``weight`` a float; the weights
    include 0 (the query is then the normalised image). The reference is
    :func:`clip_tutorial.apps.query_arithmetic.compose_query`. Returns a
    :class:`~clip_tutorial.exercises.CheckResult`. Explained in Chapter 5.5.
    """
    ensure_callable(fn, "fn")
    table = [(4, 8, 1.0), (3, 5, 0.5), (1, 6, 2.0), (5, 4, 0.0), (2, 16, 1.5), (6, 3, 0.8)]  # (N, D, weight)

    def make(g: torch.Generator, trial: int) -> tuple:
        n, d, weight = table[trial] if trial < len(table) else (
            int(torch.randint(1, 8, (), generator=g)), int(torch.randint(2, 17, (), generator=g)),
            round(float(3 * torch.rand((), generator=g)), 2))
        images = torch.randn(n, d, generator=g) * torch.empty(n, 1).uniform_(0.3, 3.0, generator=g)
        texts = torch.randn(2, n, d, generator=g) * torch.empty(2, n, 1).uniform_(4.0, 15.0, generator=g)
        return images, texts[0], texts[1], weight

    result = run_check(fn, compose_query, make, _COMPOSE_HINTS, "compose_query", trials, seed, False,
                       arg_names=["image_features", "add", "remove", "weight"], atol=1e-5, rtol=1e-4)
    return finish_check(result, verbose, f"Your queries match clip_tutorial.apps.query_arithmetic.compose_query on {trials} sets of "
                   "embeddings, a weight of 0 among them.",
                   (r" at index \((\d+), (\d+)\)", lambda m: f" at feature {m.group(2)} of query {m.group(1)}"))


#: The exercises of Chapter 5, in the book's order (see :mod:`clip_tutorial.exercises.registry`).
EXERCISES = (
    Exercise("ch5.zero_shot_weights", "implement", check_zero_shot_weights, "Prompt ensembling"),
    Exercise("ch5.recall_with_relevance", "implement", check_recall_with_relevance,
             "Recall@K when many images are right"),
    Exercise("ch5.unnormalised_query", "diagnose", check_unnormalised_query,
             "Break it and explain: a query that was never normalised"),
    Exercise("ch5.threshold_for_precision", "implement", check_threshold_for_precision,
             "A threshold for a target precision"),
    Exercise("ch5.precision_at_low_prevalence", "predict", check_precision_at_low_prevalence,
             "Predict, then run: the same detector where the concept is rare"),
    Exercise("ch5.compose_query", "implement", check_compose_query, "Like this one, but blue"),
)
