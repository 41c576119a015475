"""Tests of clip_tutorial.exercises.ch7: correct solutions pass, typical mistakes fail with the right hint."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from clip_tutorial.exercises import ch7
from clip_tutorial.exercises.core import wrap_feedback
from clip_tutorial.exercises.solutions import ch7 as solutions
from clip_tutorial.generate.diffusion import NoiseSchedule, ddim_sample
from exercise_harness import assert_fails_with_hint, assert_passes

SEEDS = [0, 1]


# -- what tests/test_solutions.py asserts of every registered chapter, run on this one directly --------

def test_the_chapter_lists_six_exercises_in_book_order():
    assert [(e.key, e.kind) for e in ch7.EXERCISES] == [
        ("ch7.sigmoid_loss", "implement"), ("ch7.initial_sigmoid_loss", "predict"),
        ("ch7.filip_similarity", "implement"), ("ch7.padded_mean", "diagnose"),
        ("ch7.guidance_step", "implement"), ("ch7.strong_guidance", "predict")]
    assert sum(e.kind != "implement" for e in ch7.EXERCISES) >= 2


@pytest.mark.parametrize("exercise", ch7.EXERCISES, ids=lambda e: e.key)
def test_each_solution_passes_its_check(exercise):
    fn = getattr(solutions, exercise.name)
    result = exercise.check(fn if exercise.kind == "implement" else fn(), verbose=False)
    assert result and result.message.startswith("✅"), result.message


@pytest.mark.parametrize("exercise", ch7.EXERCISES, ids=lambda e: e.key)
def test_each_check_rejects_a_wrong_answer(exercise):
    if exercise.kind == "implement":
        def wrong(*args, **kwargs):
            raise NotImplementedError("your code here")
    else:
        right = getattr(solutions, exercise.name)()
        wrong = ("a" if right != "a" else "b") if isinstance(right, str) else float(right) * 10 + 100
    assert not exercise.check(wrong, verbose=False)


# -- correct solutions, written independently of the references ------------------------------

def sigmoid_by_bce(image_features, text_features, t, b):
    logits = t * F.normalize(image_features, dim=1) @ F.normalize(text_features, dim=1).T + b
    targets = torch.eye(len(logits))
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / len(logits)


def sigmoid_by_loop(image_features, text_features, t, b):
    n, total = len(image_features), 0.0
    for i in range(n):
        for j in range(n):
            cos = torch.dot(image_features[i], text_features[j]) / (image_features[i].norm() * text_features[j].norm())
            z = t * cos + b
            total = total + torch.log1p(torch.exp(-z if i == j else z))
    return total / n


def filip_by_loops(image_tokens, text_tokens, text_mask):
    n_img, n_txt = image_tokens.shape[0], text_tokens.shape[0]
    i2t, t2i = torch.zeros(n_img, n_txt), torch.zeros(n_img, n_txt)
    for i in range(n_img):
        for j in range(n_txt):
            words = text_tokens[j][text_mask[j]]          # the real tokens only
            sim = image_tokens[i] @ words.T               # (P, real)
            i2t[i, j] = sim.max(dim=1).values.mean()
            t2i[i, j] = sim.max(dim=0).values.mean()
    return i2t, t2i


def filip_by_where(image_tokens, text_tokens, text_mask):
    sim = torch.einsum("ipd,jld->ijpl", image_tokens, text_tokens)
    real = text_mask[None, :, None, :].expand_as(sim)
    best_text = torch.where(real, sim, torch.full_like(sim, -2.0)).max(dim=3).values   # cosines are >= -1
    best_image = sim.max(dim=2).values
    counts = text_mask.sum(dim=1).to(sim.dtype)
    return best_text.mean(dim=2), torch.where(text_mask[None], best_image, 0.0).sum(dim=2) / counts


def step_by_ratio(x_t, eps_cond, eps_uncond, w, alpha_bar_t, alpha_bar_prev):
    """The same DDIM step written as x_prev = a x_t + c eps (the form of Song et al.'s Eq. 12 with eta = 0)."""
    eps = (1 - w) * eps_uncond + w * eps_cond
    a = math.sqrt(alpha_bar_prev / alpha_bar_t)
    c = math.sqrt(1 - alpha_bar_prev) - math.sqrt(alpha_bar_prev * (1 - alpha_bar_t) / alpha_bar_t)
    return a * x_t + c * eps


CORRECT = {
    ch7.check_sigmoid_loss: [sigmoid_by_bce, sigmoid_by_loop, solutions.sigmoid_loss],
    ch7.check_filip_similarity: [filip_by_loops, filip_by_where, solutions.filip_similarity],
    ch7.check_guidance_step: [step_by_ratio, solutions.guidance_step],
}


@pytest.mark.parametrize("check,fn", [(check, fn) for check, fns in CORRECT.items() for fn in fns],
                         ids=lambda x: getattr(x, "__name__", ""))
def test_correct_solutions_pass_for_any_seed(check, fn, capsys):
    assert_passes(check, fn, capsys, trials=10)


# -- the references agree with first principles -------------------------------------------------

def test_sigmoid_reference_by_hand_for_two_pairs():
    image = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [3.0, 3.0]])      # cosines: [[1, 1/sqrt2], [0, 1/sqrt2]]
    t, b = torch.tensor(4.0), torch.tensor(-1.0)
    c = 1 / math.sqrt(2)
    softplus = lambda z: math.log1p(math.exp(z))  # noqa: E731
    by_hand = (softplus(-(4 - 1)) + softplus(4 * c - 1) + softplus(0 - 1) + softplus(-(4 * c - 1))) / 2
    assert float(ch7.reference_sigmoid_loss(image, text, t, b)) == pytest.approx(by_hand, rel=1e-6)


def test_filip_reference_by_hand():
    # one image of two tokens, one text of two real tokens and one padding token that would win every max
    image = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    text = torch.tensor([[[0.6, 0.8], [1.0, 0.0], [0.7071, 0.7071]]])
    mask = torch.tensor([[True, True, False]])
    i2t, t2i = ch7.reference_filip_similarity(image, text, mask)
    # image token 1 -> best of (0.6, 1.0) = 1.0; image token 2 -> best of (0.8, 0.0) = 0.8
    assert float(i2t) == pytest.approx((1.0 + 0.8) / 2)
    # text token 1 -> best of (0.6, 0.8) = 0.8; text token 2 -> best of (1.0, 0.0) = 1.0
    assert float(t2i) == pytest.approx((0.8 + 1.0) / 2)


@settings(max_examples=10, deadline=None)
@given(w=st.floats(0.0, 8.0), seed=st.integers(0, 999))
def test_guidance_reference_is_the_first_step_of_ddim_sample(w, seed):
    """ddim_sample on a two-step schedule, with a model that predicts no noise at the last step: its output is
    the first step divided by sqrt(alpha_bar[0]), so the reference's step is recovered exactly."""
    g = torch.Generator().manual_seed(seed)
    ab_t, ab_prev = 0.3, 0.7
    x_t, eps_c, eps_u = (torch.randn(3, 5, generator=g, dtype=torch.float64) for _ in range(3))
    alpha_bar = torch.tensor([ab_prev, ab_t], dtype=torch.float64)
    schedule = NoiseSchedule("given", 1 - alpha_bar / torch.tensor([1.0, ab_prev], dtype=torch.float64), alpha_bar)

    def model(x, t, cond, uncond=None):
        out = torch.where(uncond.view(-1, 1), eps_u, eps_c) if uncond is not None else eps_c
        return out * (t.view(-1, 1) == 1)

    final = ddim_sample(model, schedule, x_t, cond="a prompt", steps=2, guidance=w, progress=False)
    expected = ch7.reference_guidance_step(x_t, eps_c, eps_u, w, ab_t, ab_prev)
    torch.testing.assert_close(final * math.sqrt(ab_prev), expected)


def test_guidance_reference_special_weights():
    g = torch.Generator().manual_seed(0)
    x_t, eps_c, eps_u = (torch.randn(2, 4, generator=g) for _ in range(3))
    unconditional = ch7.reference_guidance_step(x_t, eps_u, eps_u, 5.0, 0.4, 0.6)
    torch.testing.assert_close(ch7.reference_guidance_step(x_t, eps_c, eps_u, 0.0, 0.4, 0.6), unconditional)
    conditional = ch7.reference_guidance_step(x_t, eps_c, eps_c, 5.0, 0.4, 0.6)
    torch.testing.assert_close(ch7.reference_guidance_step(x_t, eps_c, eps_u, 1.0, 0.4, 0.6), conditional)
    # the last step (alpha_bar_prev = 1) returns the clean sample itself
    x0 = (x_t - math.sqrt(0.6) * eps_c) / math.sqrt(0.4)
    torch.testing.assert_close(ch7.reference_guidance_step(x_t, eps_c, eps_u, 1.0, 0.4, 1.0), x0)


# -- typical mistakes ------------------------------------------------------------------------

def _cos(a, b):
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def _labels(n):
    return 2 * torch.eye(n) - 1


def _mean_over_all(image_tokens, text_tokens, text_mask):
    i2t, _ = filip_by_where(image_tokens, text_tokens, text_mask)
    return i2t, torch.einsum("ipd,jld->ijpl", image_tokens, text_tokens).max(dim=2).values.mean(dim=2)


def _max_over_all(image_tokens, text_tokens, text_mask):
    _, t2i = filip_by_where(image_tokens, text_tokens, text_mask)
    return torch.einsum("ipd,jld->ijpl", image_tokens, text_tokens).max(dim=3).values.mean(dim=2), t2i


def _no_mask(image_tokens, text_tokens, text_mask):
    sim = torch.einsum("ipd,jld->ijpl", image_tokens, text_tokens)
    return sim.max(dim=3).values.mean(dim=2), sim.max(dim=2).values.mean(dim=2)


def _zero_fill(image_tokens, text_tokens, text_mask):
    sim = torch.einsum("ipd,jld->ijpl", image_tokens, text_tokens) * text_mask[None, :, None, :]
    return sim.max(dim=3).values.mean(dim=2), filip_by_where(image_tokens, text_tokens, text_mask)[1]


def _zeroed_tokens(image_tokens, text_tokens, text_mask):
    return _no_mask(image_tokens, text_tokens * text_mask[..., None], text_mask)


def _prefix(image_tokens, text_tokens, text_mask):
    lengths = text_mask.sum(dim=1)
    return filip_by_where(image_tokens, text_tokens, torch.arange(text_mask.shape[1])[None] < lengths[:, None])


def _max_of_max(image_tokens, text_tokens, text_mask):
    sim = torch.einsum("ipd,jld->ijpl", image_tokens, text_tokens)
    best = sim.masked_fill(~text_mask[None, :, None, :], -2.0).amax(dim=(2, 3))   # one pair of tokens
    return best, best


def _step(combine=lambda c, u, w: u + w * (c - u), level="prev"):
    def step(x_t, c, u, w, ab_t, ab_prev):
        eps = combine(c, u, w)
        x0 = (x_t - (1 - ab_t) ** 0.5 * eps) / ab_t ** 0.5
        if level is None:
            return x0
        a = ab_prev if level == "prev" else ab_t
        return a ** 0.5 * x0 + (1 - a) ** 0.5 * eps
    return step


WRONG = [
    ("labels 0 and 1", ch7.check_sigmoid_loss,
     lambda i, x, t, b: -F.logsigmoid(torch.eye(len(i)) * (t * _cos(i, x) + b)).sum() / len(i), "-1 everywhere else"),
    ("all positive", ch7.check_sigmoid_loss,
     lambda i, x, t, b: -F.logsigmoid(t * _cos(i, x) + b).sum() / len(i), "not +1 everywhere"),
    ("signs flipped", ch7.check_sigmoid_loss,
     lambda i, x, t, b: -F.logsigmoid(-_labels(len(i)) * (t * _cos(i, x) + b)).sum() / len(i), "wrong way round"),
    ("mean over pairs", ch7.check_sigmoid_loss,
     lambda i, x, t, b: -F.logsigmoid(_labels(len(i)) * (t * _cos(i, x) + b)).mean(), ".mean() divides by N^2"),
    ("no division", ch7.check_sigmoid_loss,
     lambda i, x, t, b: -F.logsigmoid(_labels(len(i)) * (t * _cos(i, x) + b)).sum(), "Divide the sum"),
    ("softmax", ch7.check_sigmoid_loss,
     lambda i, x, t, b: F.cross_entropy(t * _cos(i, x) + b, torch.arange(len(i))) / 2
     + F.cross_entropy((t * _cos(i, x) + b).T, torch.arange(len(i))) / 2, "CLIP's softmax loss"),
    ("not normalised", ch7.check_sigmoid_loss,
     lambda i, x, t, b: -F.logsigmoid(_labels(len(i)) * (t * i @ x.T + b)).sum() / len(i), "Normalise the features"),
    ("bias inside", ch7.check_sigmoid_loss,
     lambda i, x, t, b: -F.logsigmoid(_labels(len(i)) * (t * (_cos(i, x) + b))).sum() / len(i), "t * (cos + b)"),
    ("exp of t", ch7.check_sigmoid_loss,
     lambda i, x, t, b: -F.logsigmoid(_labels(len(i)) * (t.exp() * _cos(i, x) + b)).sum() / len(i), "exp(t)"),
    ("swapped", ch7.check_filip_similarity, lambda *a: filip_by_where(*a)[::-1], "Your two results are swapped"),
    ("no mask", ch7.check_filip_similarity, _no_mask, "Padding tokens are not words"),
    ("padding in the max", ch7.check_filip_similarity, _max_over_all, "fill the padding"),
    ("padding in the mean", ch7.check_filip_similarity, _mean_over_all, "not over all L positions"),
    ("filled with zero", ch7.check_filip_similarity, _zero_fill, "still wins the max"),
    ("zeroed tokens", ch7.check_filip_similarity, _zeroed_tokens, "Zeroing the padding tokens is not enough"),
    ("prefix", ch7.check_filip_similarity, _prefix, "need not come first"),
    ("max of max", ch7.check_filip_similarity, _max_of_max, "max of the max"),
    ("mean of all", ch7.check_filip_similarity,
     lambda im, tx, m: (lambda s: (s, s))(torch.einsum("id,jd->ij", im.mean(dim=1), (tx * m[..., None]).sum(dim=1)
                                                       / m.sum(dim=1, keepdim=True))), "CLIP's kind of comparison"),
    ("paper's w", ch7.check_guidance_step, _step(lambda c, u, w: (1 + w) * c - w * u), "Ho & Salimans"),
    ("swapped predictions", ch7.check_guidance_step, _step(lambda c, u, w: c + w * (u - c)), "You swapped the two"),
    ("no guidance", ch7.check_guidance_step, _step(lambda c, u, w: c), "w must weigh in"),
    ("returns x0", ch7.check_guidance_step, _step(level=None), "predicted clean sample x0"),
    ("re-noised at t", ch7.check_guidance_step, _step(level="t"), "gives x_t back"),
    ("conditional noise back", ch7.check_guidance_step,
     lambda x, c, u, w, a, p: (lambda e: p ** 0.5 * (x - (1 - a) ** 0.5 * e) / a ** 0.5 + (1 - p) ** 0.5 * c)(
         u + w * (c - u)), "same guided noise"),
    ("no square roots", ch7.check_guidance_step,
     lambda x, c, u, w, a, p: (lambda e: p * (x - (1 - a) * e) / a + (1 - p) * e)(u + w * (c - u)), "square roots"),
]


@pytest.mark.parametrize("label,check,fn,hint", WRONG, ids=[f"{w[1].__name__}-{w[0]}" for w in WRONG])
def test_typical_mistakes_fail_with_their_own_hint_only(label, check, fn, hint, capsys):
    assert_fails_with_hint(check, fn, hint, capsys, seeds=SEEDS)


def test_a_loss_cut_off_from_autograd_is_refused():
    result = ch7.check_sigmoid_loss(lambda *a: torch.tensor(sigmoid_by_bce(*a).detach().item()), seed=0, verbose=False)
    assert not result and "grad_fn" in result.message


def test_a_filip_result_of_the_wrong_kind_is_explained():
    one = ch7.check_filip_similarity(lambda *a: filip_by_where(*a)[0], seed=0, verbose=False)
    assert not one and "returned a Tensor" in one.message and "(image_to_text, text_to_image)" in one.message
    three = ch7.check_filip_similarity(lambda *a: (*filip_by_where(*a), None), seed=0, verbose=False)
    assert not three and "returned 3 items" in three.message
    flipped = ch7.check_filip_similarity(lambda *a: (filip_by_where(*a)[0], filip_by_where(*a)[1].T), seed=0,
                                         verbose=False)
    assert not flipped and "text_to_image has shape" in flipped.message and "transpose it" in flipped.message
    listed = ch7.check_filip_similarity(lambda *a: (filip_by_where(*a)[0], [0.5]), seed=0, verbose=False)
    assert not listed and "text_to_image is a list" in listed.message


def test_a_filip_difference_is_placed_in_its_direction():
    def off_by_one_place(*args):
        i2t, t2i = filip_by_where(*args)
        t2i = t2i.clone()
        t2i[0, 1] += 0.5
        return i2t, t2i
    result = ch7.check_filip_similarity(off_by_one_place, seed=0, verbose=False)
    assert not result and "in text_to_image at image 0, text 1" in result.message


@pytest.mark.parametrize("check", [ch7.check_sigmoid_loss, ch7.check_filip_similarity, ch7.check_guidance_step])
def test_an_unimplemented_stub_gets_told_what_to_do(check):
    def stub(*args):
        raise NotImplementedError("your code here")
    result = check(stub, seed=0, verbose=False)
    assert not result and "NotImplementedError" in result.message and "Replace" in result.message


@pytest.mark.parametrize("check", [ch7.check_sigmoid_loss, ch7.check_filip_similarity, ch7.check_guidance_step])
def test_checks_reject_bad_arguments(check):
    with pytest.raises(TypeError, match="fn: expected a function"):
        check(0.5)
    with pytest.raises(ValueError, match="trials"):
        check(lambda *args: None, trials=0)


# -- the predictions and the diagnosis ---------------------------------------------------------

def test_the_initial_loss_is_near_minus_b_and_the_derivation_within_tolerance():
    facts = ch7._initial_facts()
    assert facts["positives"] == pytest.approx(10.0, abs=0.1) and 0.05 < facts["negatives"] < 0.15
    assert abs(solutions.initial_sigmoid_loss() - ch7.measure_initial_sigmoid_loss()) < ch7.INITIAL_TOLERANCE / 2
    # the answers of the usual wrong reasonings all fail
    for wrong in (math.log(ch7.INITIAL_BATCH), ch7.INITIAL_BATCH * math.log(2), facts["loss"] / ch7.INITIAL_BATCH,
                  facts["no_bias"], math.log(2)):
        assert not ch7.check_initial_sigmoid_loss(wrong, verbose=False)


def test_zeroed_padding_drifts_to_long_prompts_and_keeps_each_prompts_order():
    facts = ch7._padded_facts()
    assert facts["letter"] == "b" and facts["same_order"]
    assert facts["accuracy_mended"] > 0.95 and facts["accuracy_broken"] < facts["accuracy_mended"] - 0.1
    assert facts["changed"] > 0 and facts["to_longer"] == facts["changed"]


def test_the_broken_mean_is_the_package_mean_times_the_share_of_real_tokens():
    g = torch.Generator().manual_seed(3)
    image = F.normalize(torch.randn(4, 5, 8, generator=g), dim=-1)
    text = F.normalize(torch.randn(3, 6, 8, generator=g), dim=-1)
    mask = torch.tensor([[True] * 6, [False, True, True, False, False, False], [True, False, False, False, False,
                                                                                 False]])
    share = mask.sum(dim=1) / mask.shape[1]
    torch.testing.assert_close(ch7.broken_text_to_image(image, text, mask),
                               ch7.reference_filip_similarity(image, text, mask)[1] * share)


def test_strong_guidance_narrows_and_moves_the_samples():
    facts = ch7._guidance_facts()
    plain, strong = facts["plain"], facts["strong"]
    assert plain["mean"] == pytest.approx(1.0, abs=0.05) and plain["std"] == pytest.approx(0.5, abs=0.03)
    assert strong["mean"] > plain["mean"] + 0.3 and strong["std"] < 0.7 * plain["std"]
    assert facts["letter"] == "b"


@pytest.mark.parametrize("check,answer", [(ch7.check_initial_sigmoid_loss, 10.0), (ch7.check_padded_mean, "B "),
                                          (ch7.check_strong_guidance, "b")])
def test_a_right_answer_passes_and_the_feedback_fits_the_column(check, answer, capsys):
    result = check(answer)
    printed = capsys.readouterr().out
    assert result and printed.startswith("✅") and wrap_feedback(result.message) in printed
    assert max(len(line) for line in printed.splitlines()) <= 88


@pytest.mark.parametrize("check,answer,shown", [(ch7.check_initial_sigmoid_loss, 6.93, "outside"),
                                                (ch7.check_padded_mean, "a", "The experiment shows (b)"),
                                                (ch7.check_padded_mean, "c", "The experiment shows (b)"),
                                                (ch7.check_strong_guidance, "a", "The experiment shows (b)"),
                                                (ch7.check_strong_guidance, "c", "The experiment shows (b)")])
def test_a_wrong_answer_fails_with_the_measurement(check, answer, shown):
    result = check(answer, verbose=False)
    assert not result and shown in result.message


@pytest.mark.parametrize("check,what", [(ch7.check_initial_sigmoid_loss, "write your prediction"),
                                        (ch7.check_padded_mean, "write your answer"),
                                        (ch7.check_strong_guidance, "write your answer")])
def test_no_answer_yet_is_a_reminder_not_an_error(check, what, capsys):
    result = check(None)
    assert not result and what in result.message and what in capsys.readouterr().out
    assert not check(None, verbose=False) and capsys.readouterr().out == ""


def test_the_new_checks_name_bad_answers():
    for check in (ch7.check_padded_mean, ch7.check_strong_guidance):
        with pytest.raises(ValueError, match="answer"):
            check("d")
        with pytest.raises(TypeError, match="answer"):
            check(2)
    with pytest.raises(TypeError, match="prediction"):
        ch7.check_initial_sigmoid_loss("ten")
    with pytest.raises(ValueError, match="prediction"):
        ch7.check_initial_sigmoid_loss(float("nan"))
