"""Tests of clip_tutorial.exercises.ch3: correct solutions pass, typical mistakes fail with the right hint."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import clip_tutorial.objectives.distributed as distributed
from clip_tutorial.exercises.core import wrap_feedback
from clip_tutorial.exercises import ch3
from clip_tutorial.objectives.loss import clip_loss
from clip_tutorial.evaluation.retrieval import retrieval_ranks
from clip_tutorial.train import TrainConfig, lr_at
from exercise_harness import assert_fails_with_hint, assert_passes

SEEDS = [0, 1]


# -- correct solutions, written independently of the references ------------------------------

def lr_branches(step, total_steps, warmup_steps, peak_lr):
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak_lr * (1 + math.cos(math.pi * progress)) / 2


def lr_tensor(step, total_steps, warmup_steps, peak_lr):
    warm = torch.tensor((step + 1) / max(warmup_steps, 1))
    progress = torch.tensor((step - warmup_steps) / max(1, total_steps - warmup_steps))
    cosine = peak_lr * 0.5 * (1 + torch.cos(math.pi * progress))
    return torch.where(torch.tensor(step < warmup_steps), peak_lr * warm, cosine)  # a 0-dim tensor


def recall_by_rank(similarity, k):
    right = similarity.diagonal()[:, None]
    return ((similarity > right).sum(dim=1) < k).float().mean().item()


def recall_by_topk(similarity, k):
    top = similarity.topk(min(k, similarity.shape[1]), dim=1).indices
    hits = (top == torch.arange(similarity.shape[0])[:, None]).any(dim=1)
    return hits.sum().item() / similarity.shape[0]


def local_loss_slices(all_image_features, all_text_features, logit_scale, rank, world_size):
    b = all_image_features.shape[0] // world_size
    mine = slice(rank * b, (rank + 1) * b)
    labels = torch.arange(b) + rank * b
    image_loss = F.cross_entropy(logit_scale * all_image_features[mine] @ all_text_features.T, labels)
    text_loss = F.cross_entropy(logit_scale * all_text_features[mine] @ all_image_features.T, labels)
    return (image_loss + text_loss) / 2


def local_loss_chunks(all_image_features, all_text_features, logit_scale, rank, world_size):
    images, texts = all_image_features.chunk(world_size), all_text_features.chunk(world_size)
    b = images[rank].shape[0]
    logits = logit_scale * images[rank] @ all_text_features.T
    per_text = logit_scale * texts[rank] @ all_image_features.T
    target = torch.arange(rank * b, (rank + 1) * b)
    rows = -logits.log_softmax(dim=1)[torch.arange(b), target]
    cols = -per_text.log_softmax(dim=1)[torch.arange(b), target]
    return (rows.mean() + cols.mean()) / 2


def floor_counts(captions):
    return sum(math.log(captions.count(c)) for c in captions) / len(captions)


def floor_tensor(captions):
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    index = torch.tensor([ids[c] for c in captions])
    return torch.bincount(index)[index].double().log().mean()


CORRECT = {
    ch3.check_lr_schedule: [lr_branches, lr_tensor],
    ch3.check_recall_at_k: [recall_by_rank, recall_by_topk],
    ch3.check_local_clip_loss: [local_loss_slices, local_loss_chunks],
    ch3.check_loss_floor: [floor_counts, floor_tensor],
}


@pytest.mark.parametrize("check,fn", [(check, fn) for check, fns in CORRECT.items() for fn in fns],
                         ids=lambda x: getattr(x, "__name__", ""))
def test_correct_solutions_pass_for_any_seed(check, fn, capsys):
    assert_passes(check, fn, capsys, trials=8)


# -- the references agree with the package and with what they claim ---------------------------

def test_lr_reference_is_the_training_schedule():
    config = TrainConfig(steps=30, warmup_steps=7, lr=2e-3)
    expected = [lr_at(step, config) for step in range(config.steps)]
    assert ch3.reference_lr_schedule(30, 7, 2e-3).tolist() == [lr / 2e-3 for lr in expected]
    curve = ch3.reference_lr_schedule(30, 7, 2e-3)
    assert curve[6] == pytest.approx(1.0) and curve.argmax() == 6 and bool((curve[7:].diff() < 0).all())


def test_recall_reference_counts_ranks():
    generator = torch.Generator().manual_seed(0)
    similarity = torch.randn(9, 9, generator=generator) + torch.eye(9)
    ranks = retrieval_ranks(similarity)
    curve = ch3.reference_recall_curve(similarity)
    assert curve.tolist() == [float((ranks < k).float().mean()) for k in range(1, 11)]
    assert curve[-1] == 1.0 and bool((curve.diff() >= 0).all())


@pytest.mark.parametrize("world_size,batch", [(2, 3), (4, 2), (3, 1)])
def test_local_loss_reference_is_distributed_clip_loss(world_size, batch, monkeypatch):
    """Every simulated process's share equals distributed_clip_loss(local_loss=True), gradients included."""
    generator = torch.Generator().manual_seed(world_size)
    n = world_size * batch
    images = F.normalize(torch.randn(n, 6, generator=generator), dim=-1).requires_grad_(True)
    texts = F.normalize(torch.randn(n, 6, generator=generator), dim=-1).requires_grad_(True)
    scale = torch.tensor(7.0, requires_grad=True)
    for rank in range(world_size):
        monkeypatch.setattr(distributed, "rank_and_world", lambda r=rank: (r, world_size))
        monkeypatch.setattr(distributed, "gather_features", lambda i, t: (images, texts))
        mine = slice(rank * batch, (rank + 1) * batch)
        package = distributed.distributed_clip_loss(images[mine], texts[mine], scale, local_loss=True)
        package_grads = torch.autograd.grad(package, (images, texts, scale))
        reference = ch3.reference_local_clip_loss(images, texts, scale, rank, world_size)
        reference_grads = torch.autograd.grad(reference, (images, texts, scale))
        torch.testing.assert_close(reference, package, rtol=1e-6, atol=1e-6)
        for got, expected in zip(reference_grads, package_grads):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


@settings(max_examples=15, deadline=None)
@given(world_size=st.integers(1, 4), batch=st.integers(1, 4), scale=st.floats(0.5, 50.0), seed=st.integers(0, 999))
def test_local_losses_average_to_the_global_loss(world_size, batch, scale, seed):
    generator = torch.Generator().manual_seed(seed)
    n = world_size * batch
    images = F.normalize(torch.randn(n, 5, generator=generator, dtype=torch.float64), dim=-1).requires_grad_(True)
    texts = F.normalize(torch.randn(n, 5, generator=generator, dtype=torch.float64), dim=-1).requires_grad_(True)
    scale = torch.tensor(scale, dtype=torch.float64)
    local = torch.stack([ch3.reference_local_clip_loss(images, texts, scale, r, world_size) for r in range(world_size)])
    whole = clip_loss(scale * images @ texts.T)
    torch.testing.assert_close(local.mean(), whole, rtol=1e-12, atol=1e-12)
    # The gathers' backward sums every process's gradient: W local losses push like W global ones.
    summed = torch.autograd.grad(local.sum(), (images, texts))
    global_grads = torch.autograd.grad(world_size * whole, (images, texts))
    for got, expected in zip(summed, global_grads):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_loss_floor_is_reached_by_the_best_possible_model():
    captions = ["a red circle"] * 3 + ["a blue square"] * 2 + ["a green star", "a red star"]
    floor = ch3.reference_loss_floor(captions)
    assert floor == pytest.approx((3 * math.log(3) + 2 * math.log(2)) / 7)
    # The best model: every caption its own direction, every image exactly on its caption's direction.
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    features = F.one_hot(torch.tensor([ids[c] for c in captions]), len(ids)).double()
    assert float(clip_loss(200.0 * features @ features.T)) == pytest.approx(floor, abs=1e-9)
    # No model does better: identical captions have identical text features.
    generator = torch.Generator().manual_seed(0)
    texts = F.normalize(torch.randn(len(ids), 8, generator=generator, dtype=torch.float64), dim=-1)[features.argmax(1)]
    for _ in range(20):
        images = F.normalize(torch.randn(len(captions), 8, generator=generator, dtype=torch.float64), dim=-1)
        scale = 100 * torch.rand((), generator=generator, dtype=torch.float64)
        assert float(clip_loss(scale * images @ texts.T)) >= floor
    assert ch3.reference_loss_floor(["a", "b", "c"]) == 0.0
    assert ch3.reference_loss_floor(["a"] * 5) == pytest.approx(math.log(5))


def test_local_loss_reference_rejects_a_bad_split():
    images = torch.randn(6, 4)
    with pytest.raises(ValueError, match="world_size"):
        ch3.reference_local_clip_loss(images, images, torch.tensor(1.0), 0, 4)
    with pytest.raises(ValueError, match="rank"):
        ch3.reference_local_clip_loss(images, images, torch.tensor(1.0), 3, 3)


# -- typical mistakes ------------------------------------------------------------------------

def _cos(progress, peak):
    return 0.5 * peak * (1 + math.cos(math.pi * progress))


def _other_ranks_detached(images, texts, scale, rank, world):
    b = images.shape[0] // world
    keep = [x if r == rank else x.detach() for r, x in enumerate(images.split(b))]
    keep_texts = [x if r == rank else x.detach() for r, x in enumerate(texts.split(b))]
    return local_loss_slices(torch.cat(keep), torch.cat(keep_texts), scale, rank, world)


def _local_with_labels(images, texts, scale, rank, world, labels_from):
    b = images.shape[0] // world
    labels = labels_from(b, rank, world)
    mine = slice(rank * b, (rank + 1) * b)
    return (F.cross_entropy(scale * images[mine] @ texts.T, labels)
            + F.cross_entropy(scale * texts[mine] @ images.T, labels)) / 2


WRONG = [
    ("warm-up from 0", ch3.check_lr_schedule,
     lambda s, t, w, p: p * s / w if s < w else _cos((s - w) / max(1, t - w), p), "Warm-up off by one"),
    ("cosine from step 0", ch3.check_lr_schedule,
     lambda s, t, w, p: p * (s + 1) / w if s < w else _cos(s / t, p), "starts where the warm-up ends"),
    ("full cosine", ch3.check_lr_schedule,
     lambda s, t, w, p: p * (s + 1) / w if s < w else p * math.cos(math.pi * (s - w) / (t - w)), "never goes negative"),
    ("linear decay", ch3.check_lr_schedule,
     lambda s, t, w, p: p * (s + 1) / w if s < w else p * (1 - (s - w) / (t - w)), "not a straight line"),
    ("divides by warm-up", ch3.check_lr_schedule,
     lambda s, t, w, p: (lambda warm: p * warm if s < w else _cos((s - w) / max(1, t - w), p))((s + 1) / w),
     "warmup_steps = 0"),
    ("rank counts itself", ch3.check_recall_at_k,
     lambda s, k: ((s >= s.diagonal()[:, None]).sum(1) < k).float().mean(), "Off by one"),
    ("columns", ch3.check_recall_at_k,
     lambda s, k: ((s > s.diagonal()[None, :]).sum(0) < k).float().mean(), "Rows are the queries"),
    ("ascending", ch3.check_recall_at_k,
     lambda s, k: ((s < s.diagonal()[:, None]).sum(1) < k).float().mean(), "descending"),
    ("count", ch3.check_recall_at_k, lambda s, k: ((s > s.diagonal()[:, None]).sum(1) < k).sum(), "divide the number"),
    ("percent", ch3.check_recall_at_k, lambda s, k: 100 * recall_by_rank(s, k), "percentage"),
    ("recall@1 always", ch3.check_recall_at_k, lambda s, k: recall_by_rank(s, 1), "does not change with k"),
    ("topk past the end", ch3.check_recall_at_k,
     lambda s, k: (s.topk(k, dim=1).indices == torch.arange(len(s))[:, None]).any(1).float().mean(), "clamp it"),
    ("no rank offset", ch3.check_local_clip_loss,
     lambda i, t, s, r, w: _local_with_labels(i, t, s, r, w, lambda b, r, w: torch.arange(b)), "rank * B + i"),
    ("offset by rank", ch3.check_local_clip_loss,
     lambda i, t, s, r, w: _local_with_labels(i, t, s, r, w, lambda b, r, w: torch.arange(b) + r), "rank * B"),
    ("no half", ch3.check_local_clip_loss, lambda i, t, s, r, w: 2 * local_loss_slices(i, t, s, r, w), "/ 2"),
    ("one direction", ch3.check_local_clip_loss,
     lambda i, t, s, r, w: F.cross_entropy(s * i.chunk(w)[r] @ t.T, torch.arange(len(i) // w) + r * (len(i) // w)),
     "only one direction"),
    ("local pairs only", ch3.check_local_clip_loss,
     lambda i, t, s, r, w: clip_loss(s * i.chunk(w)[r] @ t.chunk(w)[r].T), "negatives must come from every process"),
    ("global loss", ch3.check_local_clip_loss, lambda i, t, s, r, w: clip_loss(s * i @ t.T), "global loss"),
    ("no scale", ch3.check_local_clip_loss,
     lambda i, t, s, r, w: local_loss_slices(i, t, torch.ones(()), r, w), "logit_scale"),
    ("others detached", ch3.check_local_clip_loss, _other_ranks_detached, "torch.distributed.nn.functional.all_gather"),
    ("log(k - 1)", ch3.check_loss_floor,
     lambda c: sum(math.log(c.count(x) - 1) for x in c if c.count(x) > 1) / len(c), "counts itself"),
    ("distinct mean", ch3.check_loss_floor,
     lambda c: sum(math.log(c.count(x)) for x in set(c)) / len(set(c)), "not over the distinct"),
    ("log of mean", ch3.check_loss_floor,
     lambda c: math.log(sum(c.count(x) for x in c) / len(c)), "not the logarithm of the mean"),
    ("log2", ch3.check_loss_floor, lambda c: sum(math.log2(c.count(x)) for x in c) / len(c), "natural logarithm"),
]


@pytest.mark.parametrize("label,check,fn,hint", WRONG, ids=[f"{w[1].__name__}-{w[0]}" for w in WRONG])
def test_typical_mistakes_fail_with_their_own_hint_only(label, check, fn, hint, capsys):
    assert_fails_with_hint(check, fn, hint, capsys, seeds=SEEDS)


def test_feedback_names_the_step_the_k_and_the_feature():
    lr = ch3.check_lr_schedule(lambda s, t, w, p: 1.01 * lr_branches(s, t, w, p), seed=0, verbose=False)
    assert not lr and "at step " in lr.message and "1.01 times" in lr.message
    recall = ch3.check_recall_at_k(lambda s, k: recall_by_rank(s, k + 1), seed=0, verbose=False)
    assert not recall and "at k = " in recall.message
    grads = ch3.check_local_clip_loss(_other_ranks_detached, seed=0, verbose=False)
    assert not grads and "(gradients)" in grads.message and "in the gradient of all_" in grads.message


def test_a_result_that_is_not_a_number_is_explained():
    none = ch3.check_lr_schedule(lambda s, t, w, p: None, seed=0, verbose=False)
    assert not none and "returned None" in none.message and "`return`" in none.message
    assert "_NotANumber" not in none.message and "It happened" not in none.message
    vector = ch3.check_recall_at_k(lambda s, k: (s > s.diagonal()[:, None]).sum(1) < k, seed=0, verbose=False)
    assert not vector and "returned a tensor of shape (8,)" in vector.message
    floor = ch3.check_loss_floor(lambda c: "log k", seed=0, verbose=False)
    assert not floor and "returned a str" in floor.message


def test_a_detached_loss_is_refused():
    result = ch3.check_local_clip_loss(lambda *a: torch.tensor(float(local_loss_slices(*a).detach())), seed=0, verbose=False)
    assert not result and "autograd graph" in result.message


def test_an_unimplemented_stub_gets_told_what_to_do():
    def local_clip_loss(all_image_features, all_text_features, logit_scale, rank, world_size):
        raise NotImplementedError("your code here")
    result = ch3.check_local_clip_loss(local_clip_loss, seed=0, verbose=False)
    assert not result and "NotImplementedError" in result.message and "Replace" in result.message


def test_verbose_false_prints_nothing(capsys):
    assert ch3.check_loss_floor(floor_counts, verbose=False)
    assert not ch3.check_recall_at_k(lambda s, k: 0.5, verbose=False)
    assert capsys.readouterr().out == ""


# -- bad arguments -----------------------------------------------------------------------------

@pytest.mark.parametrize("check", [ch3.check_lr_schedule, ch3.check_recall_at_k, ch3.check_local_clip_loss,
                                   ch3.check_loss_floor])
def test_checks_reject_bad_arguments(check):
    with pytest.raises(TypeError, match="fn: expected a function"):
        check(0.001)
    with pytest.raises(ValueError, match="trials"):
        check(lambda *args: None, trials=0)


# -- the "predict" and "diagnose" exercises ----------------------------------------------------

def test_the_chapter_lists_its_exercises_in_book_order():
    keys = [exercise.key for exercise in ch3.EXERCISES]
    assert keys == ["ch3.lr_schedule", "ch3.recall_at_k", "ch3.local_clip_loss", "ch3.twin_captions_floor",
                    "ch3.loss_floor", "ch3.growing_gradients", "ch3.runaway_temperature"]
    assert [exercise.kind for exercise in ch3.EXERCISES].count("implement") == 4


def test_loss_floor_batches_hold_captions_that_shapesworld_writes():
    from clip_tutorial.data import COLOURS, SHAPES, TEMPLATES

    assert "a {colour} {shape}" in TEMPLATES
    possible = {f"a {colour} {shape}" for colour in COLOURS for shape in SHAPES}
    generator = torch.Generator().manual_seed(0)
    for trial in range(12):
        (captions,) = ch3._floor_batch(generator, trial)
        assert captions and set(captions) <= possible
    assert set(ch3.TWIN_CAPTIONS) <= possible and len(set(ch3.TWIN_CAPTIONS)) == len(ch3.TWIN_CAPTIONS) - 1


def test_the_twin_experiment_finds_log_2_over_4_and_nothing_without_twins():
    assert ch3.measure_twin_captions_floor() == pytest.approx(math.log(2) / 4, abs=1e-3)
    distinct = tuple(dict.fromkeys(ch3.TWIN_CAPTIONS))
    assert ch3.measure_twin_captions_floor(distinct) < 1e-3, "without a twin the loss can go to 0"
    assert ch3.measure_twin_captions_floor(("a red circle",) * 3 + distinct[1:]) == pytest.approx(
        3 * math.log(3) / 9, abs=1e-3), "three copies of one caption in nine pairs: 3 log 3 / 9"


def test_the_twin_check_compares_with_the_measurement(capsys):
    assert ch3.check_twin_captions_floor(math.log(2) / 4)
    assert "measured 0.173" in capsys.readouterr().out
    for wrong in (0.0, math.log(2), math.log(2) / 8):
        result = ch3.check_twin_captions_floor(wrong, verbose=False)
        assert not result and "outside" in result.message and "log 2 / 4" in result.message


def test_the_broken_loops_show_their_symptoms_and_the_right_fix_cures_them():
    broken = ch3.toy_training(**ch3.GROWING_GRADIENTS_RUN, zero_grad=False, clamp_at=None)
    mended = ch3.toy_training(**ch3.GROWING_GRADIENTS_RUN, zero_grad=True, clamp_at=None)
    assert broken["grad_norm"][-1] > 2 * broken["grad_norm"][0], "without zero_grad the gradients pile up"
    assert mended["grad_norm"][-1] < 0.1 * mended["grad_norm"][0]
    assert broken["loss"][0] == mended["loss"][0], "the same start"
    assert max(broken["scale"]) < 100, "the clamp never acts in this run"
    runaway = ch3.toy_training(**ch3.RUNAWAY_TEMPERATURE_RUN, clamp_at=100.0)
    capped = ch3.toy_training(**ch3.RUNAWAY_TEMPERATURE_RUN)
    assert max(runaway["scale"]) > 150 and max(capped["scale"]) == pytest.approx(100.0)


def test_the_diagnose_experiments_name_the_right_fix():
    assert ch3._measure_growing_gradients() == "b"
    assert ch3._measure_runaway_temperature() == "c"


def test_the_experiments_leave_the_random_state_and_the_threads_alone():
    threads = torch.get_num_threads()
    state = torch.get_rng_state()
    ch3.toy_problem(seed=3)
    ch3.check_growing_gradients("a", verbose=False)
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads


@pytest.mark.parametrize("check", [ch3.check_twin_captions_floor, ch3.check_growing_gradients,
                                   ch3.check_runaway_temperature])
def test_an_unanswered_exercise_is_told_to_answer_first(check, capsys):
    result = check(None)
    assert not result and "first" in result.message and "first" in capsys.readouterr().out


def test_a_wrong_diagnosis_is_told_the_measured_one():
    result = ch3.check_runaway_temperature("a", verbose=False)
    assert not result and "The experiment shows (c)" in result.message and "does not cap" in result.message
    result = ch3.check_growing_gradients(" B ", verbose=False)
    assert result and "accumulates" in result.message


def test_predict_and_diagnose_checks_reject_bad_answers():
    with pytest.raises(TypeError, match="prediction"):
        ch3.check_twin_captions_floor("log 2 / 4")
    with pytest.raises(ValueError, match="prediction"):
        ch3.check_twin_captions_floor(math.inf)
    with pytest.raises(ValueError, match="answer"):
        ch3.check_growing_gradients("d")
    with pytest.raises(TypeError, match="answer"):
        ch3.check_runaway_temperature(3)
