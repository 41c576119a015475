"""Tests of clip_tutorial.exercises.ch5: correct solutions pass, typical mistakes fail with the right hint."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import precision_recall_curve as sklearn_precision_recall_curve

from clip_tutorial.exercises.core import wrap_feedback
from clip_tutorial import CLIP, build_zero_shot_classifier, encode_texts, get_config
from clip_tutorial.apps.query_arithmetic import compose_query
from clip_tutorial.exercises import ch5
from clip_tutorial.train.recipes import make_tokenizer
from exercise_harness import assert_fails_with_hint, assert_passes

SEEDS = [0, 1]


# -- correct solutions, written independently of the references ------------------------------

def weights_by_norms(text_features):
    unit = text_features / text_features.norm(dim=-1, keepdim=True)
    mean = unit.sum(dim=0)  # the final normalisation makes a sum as good as a mean
    return (mean / mean.norm(dim=-1, keepdim=True)).T


def weights_by_loop(text_features):
    columns = []
    for c in range(text_features.shape[1]):
        prompts = [F.normalize(text_features[t, c], dim=0) for t in range(text_features.shape[0])]
        columns.append(F.normalize(torch.stack(prompts).mean(dim=0), dim=0))
    return torch.stack(columns, dim=1)


def recall_by_best_relevant(similarity, relevant, k):
    best = similarity.masked_fill(~relevant, float("-inf")).max(dim=1, keepdim=True).values
    return ((similarity > best).sum(dim=1) < k).double().mean().item()


def recall_by_topk(similarity, relevant, k):
    top = similarity.topk(min(k, similarity.shape[1]), dim=1).indices
    return relevant.gather(1, top).any(dim=1).sum().item() / similarity.shape[0]


def threshold_by_scan(scores, labels, target_precision):
    best = None
    for t in sorted(set(scores.tolist()), reverse=True):
        flagged = scores >= t
        if (flagged & labels).sum() / flagged.sum() >= target_precision:
            best = t
    return best


def threshold_by_sort(scores, labels, target_precision):
    values, order = scores.sort(descending=True)
    hits = labels[order].double().cumsum(0)
    precision = hits / torch.arange(1, len(scores) + 1)
    last_of_tie = torch.cat([values[1:] != values[:-1], torch.tensor([True])])  # a tie is flagged as a whole
    ok = (precision >= target_precision) & last_of_tie
    return values[ok.nonzero().max()]  # a 0-dim tensor


def compose_by_formula(image_features, add, remove, weight):
    unit = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731
    query = unit(image_features) + weight * (unit(add) - unit(remove))
    return unit(query)


def compose_in_steps(image_features, add, remove, weight):
    direction = F.normalize(add, dim=-1) - F.normalize(remove, dim=-1)  # "blue" minus "red"
    return F.normalize(F.normalize(image_features, dim=-1) + weight * direction, dim=-1)


CORRECT = {
    ch5.check_zero_shot_weights: [weights_by_norms, weights_by_loop],
    ch5.check_recall_with_relevance: [recall_by_best_relevant, recall_by_topk],
    ch5.check_threshold_for_precision: [threshold_by_scan, threshold_by_sort],
    ch5.check_compose_query: [compose_by_formula, compose_in_steps],
}


@pytest.mark.parametrize("check,fn", [(check, fn) for check, fns in CORRECT.items() for fn in fns],
                         ids=lambda x: getattr(x, "__name__", ""))
def test_correct_solutions_pass_for_any_seed(check, fn, capsys):
    assert_passes(check, fn, capsys, trials=10)


# -- the references agree with the package and with brute force --------------------------------

def test_ensemble_reference_is_build_zero_shot_classifier():
    """The weights from a real CLIP's raw per-template embeddings equal the package's ensemble of the prompts."""
    torch.manual_seed(0)
    config = get_config("tiny")
    model = CLIP(config).eval()
    tokenizer = make_tokenizer(config.context_length)
    classes, templates = ["red circle", "blue square", "green star"], ["a photo of a {}", "a {}", "a drawing of a {}"]
    package = build_zero_shot_classifier(model, tokenizer, classes, templates)
    raw = encode_texts(model, tokenizer, [t.format(c) for t in templates for c in classes], normalize=False)
    weights = ch5.reference_zero_shot_weights(raw.view(len(templates), len(classes), -1))
    assert weights.shape == (config.embed_dim, len(classes))
    torch.testing.assert_close(weights, package, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(raw.norm(dim=-1), raw.norm(dim=-1)[0]), "the raw embeddings differ in length"


def test_ensemble_reference_rejects_bad_input():
    with pytest.raises(ValueError, match="text_features"):
        ch5.reference_zero_shot_weights(torch.randn(4, 5))
    with pytest.raises(ValueError, match="text_features"):
        ch5.reference_zero_shot_weights(torch.ones(2, 3, 4, dtype=torch.long))


@settings(max_examples=25, deadline=None)
@given(queries=st.integers(1, 8), gallery=st.integers(1, 12), seed=st.integers(0, 999))
def test_recall_reference_is_a_brute_force_hit_rate(queries, gallery, seed):
    generator = torch.Generator().manual_seed(seed)
    relevant = torch.rand(queries, gallery, generator=generator) < 0.3
    relevant[:, 0] |= ~relevant.any(dim=1)
    similarity = torch.randn(queries, gallery, generator=generator)
    curve = ch5.reference_recall_with_relevance(similarity, relevant)
    for k in range(1, gallery + 2):
        hits = [any(bool(relevant[q, j]) for j in sorted(range(gallery), key=lambda j: -float(similarity[q, j]))[:k])
                for q in range(queries)]
        assert curve[k - 1].item() == pytest.approx(sum(hits) / queries)
    assert curve[-1] == 1.0 and bool((curve.diff() >= 0).all())


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 40), target=st.sampled_from([0.5, 0.7, 0.9, 1.0]), seed=st.integers(0, 999))
def test_threshold_reference_is_the_lowest_precise_enough_score(n, target, seed):
    """Against brute force over every score, and against scikit-learn's precision-recall curve."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.rand(n, generator=generator) < 0.5
    labels[0] = True
    scores = ((torch.randn(n, generator=generator) + labels) * 3).round() / 3
    scores[0] = scores.max() + 1
    threshold = ch5.reference_threshold_for_precision(scores, labels, target)
    assert threshold == pytest.approx(float(threshold_by_scan(scores, labels, target)), abs=0)
    precision, _, thresholds = sklearn_precision_recall_curve(labels.numpy(), scores.numpy())
    assert threshold == pytest.approx(float(thresholds[np.flatnonzero(precision[:-1] >= target)[0]]), abs=1e-7)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 5), dim=st.integers(2, 12), weight=st.floats(0.0, 3.0), seed=st.integers(0, 999))
def test_composed_query_reference_is_a_unit_step_from_the_image(n, dim, weight, seed):
    """The check's reference: unit length, the normalised image at weight 0, and the step it claims."""
    generator = torch.Generator().manual_seed(seed)
    images, add, remove = (torch.randn(n, dim, generator=generator, dtype=torch.float64) * 5 for _ in range(3))
    query = compose_query(images, add, remove, weight).double()
    torch.testing.assert_close(query.norm(dim=-1), torch.ones(n, dtype=torch.float64), rtol=0, atol=1e-5)
    torch.testing.assert_close(compose_query(images, add, remove, 0.0).double(), F.normalize(images, dim=-1),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(query, compose_by_formula(images, add, remove, weight), rtol=0, atol=1e-5)


# -- typical mistakes ------------------------------------------------------------------------

def _recall_mistake(hit):
    """A recall that counts a query as a hit when ``hit(found, relevant_count, k)`` holds, per query."""
    def recall(similarity, relevant, k):
        top = similarity.topk(min(k, similarity.shape[1]), dim=1).indices
        found = relevant.gather(1, top).sum(dim=1).double()
        return hit(found, relevant.sum(dim=1).double(), k).double().mean().item()
    return recall


def _threshold_scan(flag=lambda s, t: s >= t, pick=max, precision=lambda tp, flagged, pos: tp / flagged):
    """The scan of ``threshold_by_scan`` with one piece swapped."""
    def threshold(scores, labels, target_precision):
        reached = []
        for t in sorted(set(scores.tolist()), reverse=True):
            flagged = flag(scores, t)
            value = float(precision((flagged & labels).sum(), flagged.sum(), labels.sum())) if flagged.any() else 1.0
            reached.append((value >= target_precision, t))
        ok = [t for good, t in reached if good]
        return min(ok) if pick is max else max(ok)
    return threshold


def _greedy(scores, labels, target_precision):
    last = None
    for t in sorted(set(scores.tolist()), reverse=True):
        flagged = scores >= t
        if (flagged & labels).sum() / flagged.sum() < target_precision:
            return last
        last = t
    return last


WRONG = [
    ("no first normalisation", ch5.check_zero_shot_weights,
     lambda x: F.normalize(x.mean(dim=0), dim=-1).T, "Normalise each prompt's embedding"),
    ("no final normalisation", ch5.check_zero_shot_weights,
     lambda x: F.normalize(x, dim=-1).mean(dim=0).T, "Normalise the mean again"),
    ("no normalisation", ch5.check_zero_shot_weights, lambda x: x.mean(dim=0).T, "Normalise twice"),
    ("normalised across classes", ch5.check_zero_shot_weights,
     lambda x: F.normalize(F.normalize(x, dim=1).mean(dim=0), dim=-1).T, "feature axis (dim=-1"),
    ("mean normalised across classes", ch5.check_zero_shot_weights,
     lambda x: F.normalize(F.normalize(x, dim=-1).mean(dim=0), dim=0).T, "class means along the feature axis"),
    ("averaged over classes", ch5.check_zero_shot_weights,
     lambda x: F.normalize(F.normalize(x, dim=-1).mean(dim=1), dim=-1).T, "Average over the templates"),
    ("fraction of relevant found", ch5.check_recall_with_relevance,
     _recall_mistake(lambda found, count, k: found / count), "information-retrieval"),
    ("all relevant found", ch5.check_recall_with_relevance,
     _recall_mistake(lambda found, count, k: found == count), "asked for all of them"),
    ("precision@k", ch5.check_recall_with_relevance, _recall_mistake(lambda found, count, k: found / k), "precision@k"),
    ("first relevant only", ch5.check_recall_with_relevance,
     lambda s, r, k: ((s > s.gather(1, r.long().argmax(1, keepdim=True))).sum(1) < k).double().mean(), "first True"),
    ("diagonal", ch5.check_recall_with_relevance,
     lambda s, r, k: ((s > s.diagonal()[:, None]).sum(1) < k).double().mean(), "not on the diagonal"),
    ("rank counts itself", ch5.check_recall_with_relevance,
     lambda s, r, k: recall_by_best_relevant(s, r, k - 1) if k > 1 else 0.0, "Off by one"),
    ("ascending", ch5.check_recall_with_relevance, lambda s, r, k: recall_by_best_relevant(-s, r, k), "descending"),
    ("count", ch5.check_recall_with_relevance,
     lambda s, r, k: recall_by_best_relevant(s, r, k) * len(s), "divide the number"),
    ("percent", ch5.check_recall_with_relevance, lambda s, r, k: 100 * recall_by_topk(s, r, k), "percentage"),
    ("topk past the end", ch5.check_recall_with_relevance,
     lambda s, r, k: r.gather(1, s.topk(k, dim=1).indices).any(1).double().mean(), "clamp it"),
    ("strictly above", ch5.check_threshold_for_precision, _threshold_scan(flag=lambda s, t: s > t), "scores > t"),
    ("highest threshold", ch5.check_threshold_for_precision, _threshold_scan(pick=min), "lowest"),
    ("stops at the first miss", ch5.check_threshold_for_precision, _greedy, "not monotonic"),
    ("ties split", ch5.check_threshold_for_precision,
     lambda s, y, t: (lambda v, o: v[((y[o].double().cumsum(0) / torch.arange(1, len(s) + 1)) >= t).nonzero().max()])(
         *s.sort(descending=True, stable=True)), "flagged together"),
    ("recall targeted", ch5.check_threshold_for_precision,
     _threshold_scan(precision=lambda tp, flagged, pos: tp / pos, pick=min), "targeted the recall"),
    ("no normalisation of the inputs", ch5.check_compose_query,
     lambda x, a, r, w: F.normalize(x + w * (a - r), dim=-1), "Normalise the inputs first"),
    ("texts not normalised", ch5.check_compose_query,
     lambda x, a, r, w: F.normalize(F.normalize(x, dim=-1) + w * (a - r), dim=-1), "Normalise the text embeddings"),
    ("image not normalised", ch5.check_compose_query,
     lambda x, a, r, w: F.normalize(x + w * (F.normalize(a, dim=-1) - F.normalize(r, dim=-1)), dim=-1),
     "Normalise the image embedding"),
    ("result not normalised", ch5.check_compose_query,
     lambda x, a, r, w: F.normalize(x, dim=-1) + w * (F.normalize(a, dim=-1) - F.normalize(r, dim=-1)),
     "Normalise the result"),
    ("reversed", ch5.check_compose_query, lambda x, a, r, w: compose_by_formula(x, r, a, w), "away from `remove`"),
    ("weight on add only", ch5.check_compose_query,
     lambda x, a, r, w: F.normalize(F.normalize(x, dim=-1) + w * F.normalize(a, dim=-1) - F.normalize(r, dim=-1),
                                    dim=-1),
     "scales the whole step"),
    ("no remove", ch5.check_compose_query,
     lambda x, a, r, w: F.normalize(F.normalize(x, dim=-1) + w * F.normalize(a, dim=-1), dim=-1), "Subtract `remove`"),
    ("normalised difference", ch5.check_compose_query,
     lambda x, a, r, w: F.normalize(F.normalize(x, dim=-1) + w * F.normalize(
         F.normalize(a, dim=-1) - F.normalize(r, dim=-1), dim=-1), dim=-1), "as it is"),
    ("midpoint", ch5.check_threshold_for_precision,
     lambda s, y, t: float(threshold_by_scan(s, y, t)) - 1e-3, "one of the scores"),
]


@pytest.mark.parametrize("label,check,fn,hint", WRONG, ids=[f"{w[1].__name__}-{w[0]}" for w in WRONG])
def test_typical_mistakes_fail_with_their_own_hint_only(label, check, fn, hint, capsys):
    assert_fails_with_hint(check, fn, hint, capsys, seeds=SEEDS)


def test_feedback_names_the_class_and_the_k():
    weights = ch5.check_zero_shot_weights(lambda x: 1.01 * weights_by_norms(x), seed=0, verbose=False)
    assert not weights and " of class " in weights.message and "1.01 times" in weights.message
    transposed = ch5.check_zero_shot_weights(lambda x: weights_by_norms(x).T, seed=0, verbose=False)
    assert not transposed and "transposed" in transposed.message
    recall = ch5.check_recall_with_relevance(lambda s, r, k: recall_by_topk(s, r, k + 1), seed=0, verbose=False)
    assert not recall and "at k = " in recall.message


def test_a_result_that_is_not_a_number_is_explained():
    none = ch5.check_threshold_for_precision(lambda s, y, t: None, seed=0, verbose=False)
    assert not none and "returned None" in none.message and "_NotANumber" not in none.message
    vector = ch5.check_recall_with_relevance(lambda s, r, k: r.any(1), seed=0, verbose=False)
    assert not vector and "returned a tensor of shape (8,)" in vector.message


def test_an_unimplemented_stub_gets_told_what_to_do():
    def zero_shot_weights(text_features):
        raise NotImplementedError("your code here")
    result = ch5.check_zero_shot_weights(zero_shot_weights, seed=0, verbose=False)
    assert not result and "NotImplementedError" in result.message and "Replace" in result.message


def test_an_input_changed_in_place_is_refused():
    def in_place(text_features):
        text_features /= text_features.norm(dim=-1, keepdim=True)
        return weights_by_norms(text_features)
    result = ch5.check_zero_shot_weights(in_place, seed=0, verbose=False)
    assert not result and "in place" in result.message


def test_verbose_false_prints_nothing(capsys):
    assert ch5.check_threshold_for_precision(threshold_by_scan, verbose=False)
    assert not ch5.check_recall_with_relevance(lambda s, r, k: 0.5, verbose=False)
    assert capsys.readouterr().out == ""


# -- bad arguments -----------------------------------------------------------------------------

@pytest.mark.parametrize("check", [ch5.check_zero_shot_weights, ch5.check_recall_with_relevance,
                                   ch5.check_threshold_for_precision, ch5.check_compose_query])
def test_checks_reject_bad_arguments(check):
    with pytest.raises(TypeError, match="fn: expected a function"):
        check(0.5)
    with pytest.raises(ValueError, match="trials"):
        check(lambda *args: None, trials=0)


# -- the prediction and the diagnosis (Exercises 3 and 5) ------------------------------------

def test_the_chapter_lists_six_exercises_in_book_order():
    assert [(e.name, e.kind) for e in ch5.EXERCISES] == [
        ("zero_shot_weights", "implement"), ("recall_with_relevance", "implement"),
        ("unnormalised_query", "diagnose"), ("threshold_for_precision", "implement"),
        ("precision_at_low_prevalence", "predict"), ("compose_query", "implement")]


def test_the_unnormalised_query_keeps_the_ranking_and_changes_the_scores():
    """The experiment itself: same top 10 for every query, many more images above the cut-off."""
    facts = ch5._unnormalised_query_facts()
    assert ch5.measure_unnormalised_query() == "b" and facts["same_results"]
    assert facts["norm_min"] > 1.5, "the raw text embeddings are far from unit length"
    assert facts["kept_broken"][1] > 2 * facts["kept_mended"][1]


def test_the_subsampled_precision_agrees_with_the_formula():
    """Drawing real scores at 1% prevalence gives what p r / (p r + (1 - p) f) predicts."""
    facts = ch5._low_prevalence_facts()
    assert facts["balanced_precision"] == pytest.approx(ch5.BALANCED_PRECISION, abs=0.005)
    p = facts["positives_drawn"] / (facts["positives_drawn"] + facts["negatives"])
    r, f = facts["recall"], facts["false_positive_rate"]
    assert ch5.measure_precision_at_low_prevalence() == pytest.approx(p * r / (p * r + (1 - p) * f), abs=0.005)
    assert ch5.measure_precision_at_low_prevalence() == pytest.approx(ch5._predicted_precision(),
                                                                      abs=ch5.PREVALENCE_TOLERANCE / 2)


@pytest.mark.parametrize("check,answer", [(ch5.check_unnormalised_query, "b"),
                                          (ch5.check_precision_at_low_prevalence, 0.083)])
def test_a_right_answer_passes_and_the_feedback_fits_the_column(check, answer, capsys):
    result = check(answer)
    printed = capsys.readouterr().out
    assert result and printed.startswith("✅") and wrap_feedback(result.message) in printed
    assert max(len(line) for line in printed.splitlines()) <= 88


@pytest.mark.parametrize("check,answer,shown", [(ch5.check_unnormalised_query, "a", "The experiment shows (b)"),
                                                (ch5.check_unnormalised_query, "C", "The experiment shows (b)"),
                                                (ch5.check_precision_at_low_prevalence, 0.9, "outside"),
                                                (ch5.check_precision_at_low_prevalence, 0.5, "outside")])
def test_a_wrong_answer_fails_with_the_measurement(check, answer, shown):
    result = check(answer, verbose=False)
    assert not result and shown in result.message


def test_a_percentage_is_told_to_be_a_fraction():
    result = ch5.check_precision_at_low_prevalence(8.3, verbose=False)
    assert not result and "fraction between 0 and 1" in result.message
    assert "fraction" not in ch5.check_precision_at_low_prevalence(0.5, verbose=False).message


@pytest.mark.parametrize("check,what", [(ch5.check_unnormalised_query, "write your answer"),
                                        (ch5.check_precision_at_low_prevalence, "write your prediction")])
def test_no_answer_yet_is_a_reminder_not_an_error(check, what, capsys):
    result = check(None)
    assert not result and what in result.message and what in capsys.readouterr().out
    assert not check(None, verbose=False) and capsys.readouterr().out == ""


def test_the_new_checks_name_bad_answers():
    with pytest.raises(ValueError, match="answer"):
        ch5.check_unnormalised_query("d")
    with pytest.raises(TypeError, match="answer"):
        ch5.check_unnormalised_query(2)
    with pytest.raises(TypeError, match="prediction"):
        ch5.check_precision_at_low_prevalence("eight percent")
    with pytest.raises(ValueError, match="prediction"):
        ch5.check_precision_at_low_prevalence(float("nan"))
