"""Tests of clip_tutorial.exercises.ch6: correct solutions pass, typical mistakes fail with the right hint."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clip_tutorial.apps.robustness import fit_baseline
from clip_tutorial.exercises import ch6
from clip_tutorial.exercises.core import wrap_feedback
from exercise_harness import assert_fails_with_hint, assert_passes

SEEDS = [0, 1]


# -- correct solutions, written independently of the references ------------------------------

def robustness_by_polyfit(baseline_id, baseline_shifted, model_id, model_shifted):
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    slope, intercept = np.polyfit(logit(baseline_id.numpy()), logit(baseline_shifted.numpy()), 1)
    return model_shifted - 1 / (1 + np.exp(-(slope * logit(model_id) + intercept)))


def robustness_by_lstsq(baseline_id, baseline_shifted, model_id, model_shifted):
    x, y = torch.logit(baseline_id), torch.logit(baseline_shifted)
    design = torch.stack([x, torch.ones_like(x)], dim=1)
    slope, intercept = torch.linalg.lstsq(design, y[:, None]).solution.flatten()
    return torch.tensor(model_shifted) - torch.sigmoid(slope * torch.logit(torch.tensor(model_id)) + intercept)


def interpolate_by_lerp(a, b, alpha):
    return {k: torch.lerp(v, b[k], alpha) if v.is_floating_point() else (b[k] if alpha >= 0.5 else v).clone()
            for k, v in a.items()}


def interpolate_by_sum(a, b, alpha):
    out = {}
    for key in a:
        if a[key].dtype in (torch.int64, torch.int32):
            out[key] = torch.clone(a[key] if alpha < 0.5 else b[key])
        else:
            out[key] = a[key] + alpha * (b[key] - a[key])
    return out


def success_by_loop(labels, clean, attacked, written):
    correct = fooled = 0
    for y, c, a, w in zip(labels.tolist(), clean.tolist(), attacked.tolist(), written.tolist()):
        if c == y:
            correct += 1
            fooled += a // 8 == w
    return fooled / correct


def success_by_mask(labels, clean, attacked, written):
    right = clean == labels
    return ((attacked // 8 == written) & right).float().sum() / right.float().sum()  # a 0-dim tensor


COLOURS = ("red", "green", "blue", "yellow", "purple", "pink", "cyan", "black")


def swap_by_regex(caption):
    import re
    found = [m for m in re.finditer(r"\b(" + "|".join(COLOURS) + r")\b", caption)]
    if len(found) != 2 or found[0].group() == found[1].group():
        return None
    first, second = found
    return (caption[:first.start()] + second.group() + caption[first.end():second.start()] + first.group()
            + caption[second.end():])


CORRECT = {
    ch6.check_effective_robustness: [robustness_by_polyfit, robustness_by_lstsq],
    ch6.check_interpolate_weights: [interpolate_by_lerp, interpolate_by_sum],
    ch6.check_attack_success_rate: [success_by_loop, success_by_mask],
    ch6.check_swap_colours: [swap_by_regex],
}


@pytest.mark.parametrize("check,fn", [(check, fn) for check, fns in CORRECT.items() for fn in fns],
                         ids=lambda x: getattr(x, "__name__", ""))
def test_correct_solutions_pass_for_any_seed(check, fn, capsys):
    assert_passes(check, fn, capsys, trials=12)


# -- the references agree with first principles -------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(slope=st.floats(0.5, 2.0), intercept=st.floats(-2.0, 1.0), offset=st.floats(-1.0, 1.0),
       seed=st.integers(0, 999))
def test_a_model_on_the_baseline_line_has_no_effective_robustness(slope, intercept, offset, seed):
    """Baselines exactly on a logit line: the line is recovered, and a model shifted off it by `offset` logits
    has the effective robustness that moving its accuracy by that much gives."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.empty(5, dtype=torch.float64).uniform_(-1.0, 2.5, generator=generator)
    ids, shifted = torch.sigmoid(x), torch.sigmoid(slope * x + intercept)
    fit = fit_baseline(ids, shifted)
    assert fit.slope == pytest.approx(slope, abs=1e-6) and fit.intercept == pytest.approx(intercept, abs=1e-6)
    model_x = 1.0
    on_line = float(torch.sigmoid(torch.tensor(slope * model_x + intercept)))
    off_line = float(torch.sigmoid(torch.tensor(slope * model_x + intercept + offset)))
    got = ch6.reference_effective_robustness(ids, shifted, float(torch.sigmoid(torch.tensor(model_x))), off_line)
    assert got == pytest.approx(off_line - on_line, abs=1e-6)


def test_interpolation_reference_ends_at_its_inputs_and_copies_counters():
    generator = torch.Generator().manual_seed(0)
    a, b = ch6._state_dict(generator, counters=True, scale=1.0)
    for alpha, end in ((0.0, a), (1.0, b)):
        mixed = ch6.reference_interpolate_weights(a, b, alpha)
        assert all(torch.equal(mixed[k], end[k]) for k in a)
    half = ch6.reference_interpolate_weights(a, b, 0.5)
    torch.testing.assert_close(half["head.weight"], (a["head.weight"] + b["head.weight"]) / 2)
    assert half["visual.bn.num_batches_tracked"] == b["visual.bn.num_batches_tracked"]
    assert ch6.reference_interpolate_weights(a, b, 0.49)["visual.bn.num_batches_tracked"] == \
        a["visual.bn.num_batches_tracked"]


def test_success_rate_reference_counts_flips_among_the_correct():
    # pair = colour * 8 + shape; image 0 correct and flipped to colour 2, image 1 correct and not flipped,
    # image 2 wrong when clean (its flip does not count)
    labels, clean = torch.tensor([0, 9, 17]), torch.tensor([0, 9, 3])
    attacked, written = torch.tensor([16 + 5, 10, 40]), torch.tensor([2, 3, 5])
    assert ch6.reference_attack_success_rate(labels, clean, attacked, written) == pytest.approx(0.5)


@pytest.mark.parametrize("caption,swapped", [
    ("a red circle left of a blue square", "a blue circle left of a red square"),
    ("a purple hexagon under a pink box", "a pink hexagon under a purple box"),
    ("a green star above a green heart", None), ("a photo of a small red circle", None),
    ("there are three black hexagons", None)])
def test_swap_reference_on_hand_made_captions(caption, swapped):
    assert ch6.reference_swap_colours(caption) == swapped


# -- typical mistakes ------------------------------------------------------------------------

def _robustness(scale, sign=1.0, units="accuracy"):
    def fn(bid, bsh, mid, msh):
        x, y = scale(bid.numpy()), scale(bsh.numpy())
        slope, intercept = np.polyfit(x, y, 1)
        line = slope * scale(np.float64(mid)) + intercept
        if units == "logit":
            return sign * (scale(np.float64(msh)) - line)
        return sign * (msh - (1 / (1 + np.exp(-line)) if scale is not _raw else line))
    return fn


def _raw(p):
    return p


def _logit(p):
    return np.log(p / (1 - p))


def _mix_floats_only(mix_int):
    def fn(a, b, alpha):
        return {k: (1 - alpha) * v + alpha * b[k] if v.is_floating_point() else mix_int(v, b[k], alpha)
                for k, v in a.items()}
    return fn


def _in_place(a, b, alpha):
    for key, value in a.items():
        if value.is_floating_point():
            value.mul_(1 - alpha).add_(alpha * b[key])
    return interpolate_by_lerp(a, b, 0.0)


WRONG = [
    ("raw accuracies", ch6.check_effective_robustness, _robustness(_raw), "logit-scaled"),
    ("logit units", ch6.check_effective_robustness, _robustness(_logit, units="logit"), "accuracy units"),
    ("sign", ch6.check_effective_robustness, _robustness(_logit, sign=-1.0), "*minus*"),
    ("own drop", ch6.check_effective_robustness, lambda bid, bsh, mid, msh: msh - mid, "own drop"),
    ("polyfit order", ch6.check_effective_robustness,
     lambda bid, bsh, mid, msh: (lambda c: msh - 1 / (1 + np.exp(-(c[1] * _logit(mid) + c[0]))))(
         np.polyfit(_logit(bid.numpy()), _logit(bsh.numpy()), 1)), "slope first"),
    ("reverse regression", ch6.check_effective_robustness,
     lambda bid, bsh, mid, msh: (lambda c: msh - 1 / (1 + np.exp(-((_logit(mid) - c[1]) / c[0]))))(
         np.polyfit(_logit(bsh.numpy()), _logit(bid.numpy()), 1)), "not the reverse"),
    ("alpha reversed", ch6.check_interpolate_weights,
     lambda a, b, t: {k: torch.lerp(b[k], v, t) if v.is_floating_point() else (v if t < 0.5 else b[k]).clone()
                      for k, v in a.items()},
     "other way round"),
    ("counter mixed", ch6.check_interpolate_weights,
     _mix_floats_only(lambda x, y, t: torch.round((1 - t) * x + t * y).long()), "no meaningful mixture"),
    ("counter as float", ch6.check_interpolate_weights,
     _mix_floats_only(lambda x, y, t: (1 - t) * x + t * y), "no meaningful mixture"),
    ("lerp on a counter", ch6.check_interpolate_weights,
     lambda a, b, t: {k: torch.lerp(v, b[k], t) for k, v in a.items()}, "treat them apart"),
    ("counter from a", ch6.check_interpolate_weights, _mix_floats_only(lambda x, y, t: x.clone()), "not always from a"),
    ("counter from b", ch6.check_interpolate_weights, _mix_floats_only(lambda x, y, t: y.clone()), "not always from b"),
    ("weights only", ch6.check_interpolate_weights,
     lambda a, b, t: {k: torch.lerp(v, b[k], t) if k.endswith("weight") else
                      (v if t < 0.5 or v.is_floating_point() else b[k]).clone() for k, v in a.items()},
     "biases and buffers"),
    ("any change", ch6.check_attack_success_rate,
     lambda y, c, a, w: ((a != y) & (c == y)).sum().item() / (c == y).sum().item(), "every changed prediction"),
    ("over all images", ch6.check_attack_success_rate,
     lambda y, c, a, w: ((a // 8 == w) & (c == y)).double().mean().item(), "not by all images"),
    ("not only the correct", ch6.check_attack_success_rate,
     lambda y, c, a, w: (a // 8 == w).double().mean().item(), "Count only the images classified correctly"),
    ("modulo", ch6.check_attack_success_rate,
     lambda y, c, a, w: ((a % 8 == w) & (c == y)).sum().item() / (c == y).sum().item(), "not % len(SHAPES)"),
    ("pair against colour", ch6.check_attack_success_rate,
     lambda y, c, a, w: ((a == w) & (c == y)).sum().item() / (c == y).sum().item(), "*colour* of the attacked"),
    ("percent", ch6.check_attack_success_rate, lambda y, c, a, w: 100 * success_by_loop(y, c, a, w), "percentage"),
    ("shapes swapped", ch6.check_swap_colours, lambda c: ch6.swap_attributes(c, "shape"), "not the shapes"),
    ("caption as its own negative", ch6.check_swap_colours, lambda c: swap_by_regex(c) or c, "return None"),
    ("replace twice", ch6.check_swap_colours, ch6._replace_twice, "at their positions at once"),
    ("double spaces", ch6.check_swap_colours,
     lambda c: None if swap_by_regex(c) is None else "  ".join(swap_by_regex(c).split()), "single spaces"),
]


@pytest.mark.parametrize("label,check,fn,hint", WRONG, ids=[f"{w[1].__name__}-{w[0]}" for w in WRONG])
def test_typical_mistakes_fail_with_their_own_hint_only(label, check, fn, hint, capsys):
    assert_fails_with_hint(check, fn, hint, capsys, seeds=SEEDS)


def test_an_input_changed_in_place_is_refused():
    result = ch6.check_interpolate_weights(_in_place, seed=0, verbose=False)
    assert not result and "in place" in result.message


def test_a_result_that_is_not_a_state_dict_or_caption_is_explained():
    listed = ch6.check_interpolate_weights(lambda a, b, t: list(a.values()), seed=0, verbose=False)
    assert not listed and "returned a list" in listed.message
    fewer = ch6.check_interpolate_weights(lambda a, b, t: {"head.bias": a["head.bias"]}, seed=0, verbose=False)
    assert not fewer and "is missing" in fewer.message
    words = ch6.check_swap_colours(lambda c: c.split(), seed=0, verbose=False)
    assert not words and "returned a list" in words.message
    vector = ch6.check_effective_robustness(lambda *args: torch.zeros(3), seed=0, verbose=False)
    assert not vector and "returned a tensor of shape (3,)" in vector.message


def test_an_unimplemented_stub_gets_told_what_to_do():
    def swap_colours(caption):
        raise NotImplementedError("your code here")
    result = ch6.check_swap_colours(swap_colours, seed=0, verbose=False)
    assert not result and "NotImplementedError" in result.message and "Replace" in result.message


@pytest.mark.parametrize("check", [ch6.check_effective_robustness, ch6.check_interpolate_weights,
                                   ch6.check_attack_success_rate, ch6.check_swap_colours])
def test_checks_reject_bad_arguments(check):
    with pytest.raises(TypeError, match="fn: expected a function"):
        check(0.5)
    with pytest.raises(ValueError, match="trials"):
        check(lambda *args: None, trials=0)


# -- the prediction and the diagnosis (Exercises 2 and 4) ------------------------------------

def test_the_chapter_lists_six_exercises_in_book_order():
    assert [(e.name, e.kind) for e in ch6.EXERCISES] == [
        ("effective_robustness", "implement"), ("rotation_accuracy", "predict"), ("interpolate_weights", "implement"),
        ("reading_or_covering", "diagnose"), ("attack_success_rate", "implement"), ("swap_colours", "implement")]


def test_a_quarter_turn_spares_the_symmetric_shapes_and_loses_the_others():
    facts = ch6._rotation_facts()
    turned, clean = facts["turned_by_shape"], facts["clean_by_shape"]
    for shape in ("square", "cross"):  # four-fold symmetric: the same picture
        assert turned[shape] == pytest.approx(clean[shape], abs=0.02)
    for shape in ("heart", "diamond"):  # on their side: a view never seen
        assert turned[shape] < 0.1
    assert facts["turned_colour"] > 0.98 and facts["clean"] - facts["turned"] > 0.3


def test_the_blank_label_does_most_of_the_damage():
    facts = ch6._reading_facts()
    assert ch6.measure_reading_or_covering() == "b"
    assert facts["success"] < 0.05 < 0.25 < facts["broken"]
    assert facts["blank"] > 0.6 * facts["broken"]


@pytest.mark.parametrize("check,answer", [(ch6.check_rotation_accuracy, 0.55),
                                          (ch6.check_reading_or_covering, "B ")])
def test_a_right_answer_passes_and_the_feedback_fits_the_column(check, answer, capsys):
    result = check(answer)
    printed = capsys.readouterr().out
    assert result and printed.startswith("✅") and wrap_feedback(result.message) in printed
    assert max(len(line) for line in printed.splitlines()) <= 88


@pytest.mark.parametrize("check,answer,shown", [(ch6.check_rotation_accuracy, 0.97, "outside"),
                                                (ch6.check_rotation_accuracy, 1 / 64, "outside"),
                                                (ch6.check_reading_or_covering, "a", "The experiment shows (b)"),
                                                (ch6.check_reading_or_covering, "c", "The experiment shows (b)")])
def test_a_wrong_answer_fails_with_the_measurement(check, answer, shown):
    result = check(answer, verbose=False)
    assert not result and shown in result.message


def test_a_percentage_is_told_to_be_a_fraction():
    result = ch6.check_rotation_accuracy(56, verbose=False)
    assert not result and "fraction between 0 and 1" in result.message
    assert "fraction" not in ch6.check_rotation_accuracy(0.9, verbose=False).message


@pytest.mark.parametrize("check,what", [(ch6.check_rotation_accuracy, "write your prediction"),
                                        (ch6.check_reading_or_covering, "write your answer")])
def test_no_answer_yet_is_a_reminder_not_an_error(check, what, capsys):
    result = check(None)
    assert not result and what in result.message and what in capsys.readouterr().out
    assert not check(None, verbose=False) and capsys.readouterr().out == ""


def test_the_new_checks_name_bad_answers():
    with pytest.raises(ValueError, match="answer"):
        ch6.check_reading_or_covering("d")
    with pytest.raises(TypeError, match="answer"):
        ch6.check_reading_or_covering(2)
    with pytest.raises(TypeError, match="prediction"):
        ch6.check_rotation_accuracy("half")
    with pytest.raises(ValueError, match="prediction"):
        ch6.check_rotation_accuracy(float("inf"))
