"""Tests of clip_tutorial.exercises: correct solutions pass, typical mistakes fail with the right hint."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clip_tutorial.exercises import CheckResult, Hint, ch1, check_function
from clip_tutorial.model import CLIP, CLIPConfig

SEEDS = [0, 1, 2]


# -- correct solutions, written independently of the references ------------------------------

def cosine_rows(a, b):
    return (a / a.norm(dim=-1, keepdim=True)) @ (b / b.norm(dim=-1, keepdim=True)).T


def cosine_broadcast(a, b):
    return F.cosine_similarity(a[:, None, :], b[None, :, :], dim=-1)


def loss_manual(logits):
    diag = torch.arange(logits.shape[0])
    return -(logits.log_softmax(dim=1)[diag, diag].mean() + logits.log_softmax(dim=0)[diag, diag].mean()) / 2


def loss_ce(logits):
    labels = torch.arange(len(logits))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def predict(a, c):
    return cosine_rows(a, c).argmax(dim=1)


def predict_only_classes_normalised(a, c):  # normalising the images does not change a row's argmax
    return (a @ F.normalize(c, dim=-1).T).argmax(dim=-1)


def logits_exp(a, b, s):
    return s.exp() * cosine_rows(a, b)


def logits_broadcast(a, b, s):
    return torch.exp(s) * cosine_broadcast(a, b)


def logits_clamped(a, b, s):  # not OpenAI's forward pass: it does not clamp
    return s.exp().clamp(max=100.0) * cosine_rows(a, b)


CORRECT = [
    (ch1.check_cosine_similarity, cosine_rows),
    (ch1.check_cosine_similarity, cosine_broadcast),
    (ch1.check_contrastive_loss, loss_manual),
    (ch1.check_contrastive_loss, loss_ce),
    (ch1.check_zero_shot_predict, predict),
    (ch1.check_zero_shot_predict, predict_only_classes_normalised),
    (ch1.check_temperature_scaled_logits, logits_exp),
    (ch1.check_temperature_scaled_logits, logits_broadcast),
]


@pytest.mark.parametrize("seed", SEEDS + [None])
@pytest.mark.parametrize("check,fn", CORRECT, ids=lambda x: getattr(x, "__name__", ""))
def test_correct_solutions_pass(check, fn, seed, capsys):
    result = check(fn, seed=seed)
    assert isinstance(result, CheckResult) and result.passed and bool(result)
    assert result.message.startswith("✅")
    printed = capsys.readouterr().out
    assert printed.split() == result.message.split(), "prints its message (wrapped to the column)"
    assert all(len(line) <= 88 for line in printed.splitlines() if not line.startswith(" "))


@pytest.mark.parametrize("seed", SEEDS)
def test_references_match_independent_formulas(seed):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(7, 12, generator=g) * 3, torch.randn(5, 12, generator=g)
    torch.testing.assert_close(ch1.reference_cosine_similarity(a, b), cosine_broadcast(a, b), atol=1e-6, rtol=1e-6)
    assert torch.equal(ch1.reference_zero_shot_predict(a, b), cosine_broadcast(a, b).argmax(dim=1))
    logits = torch.randn(6, 6, generator=g) * 4
    torch.testing.assert_close(loss_ce(logits), loss_manual(logits), atol=1e-6, rtol=1e-6)


def test_temperature_reference_matches_the_model_where_training_keeps_the_scale():
    """The reference is OpenAI's forward, exp(logit_scale) with no clamp; training keeps the scale <= 100,
    and there the package's model gives the same logits."""
    torch.manual_seed(0)
    config = CLIPConfig(embed_dim=16, vision_width=32, transformer_width=32, vocab_size=30, context_length=8,
                        vision_layers=1, transformer_layers=1)
    model = CLIP(config).eval()
    images, text = torch.randn(3, 3, 32, 32), torch.randint(1, 30, (4, 8))
    for value in (math.log(1 / 0.07), 4.0, math.log(100.0)):
        with torch.no_grad():
            model.logit_scale.fill_(value)
            expected = model(images, text).logits_per_image
            got = ch1.reference_temperature_scaled_logits(model.encode_image(images), model.encode_text(text),
                                                          model.logit_scale)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# -- typical mistakes ------------------------------------------------------------------------

def _ce(x, reduction="mean"):
    return F.cross_entropy(x, torch.arange(len(x)), reduction=reduction)


WRONG = [
    ("unnormalised", ch1.check_cosine_similarity, lambda a, b: a @ b.T, "did not normalise"),
    ("one side", ch1.check_cosine_similarity, lambda a, b: F.normalize(a, dim=-1) @ b.T, "Only one of the two"),
    ("dim 0", ch1.check_cosine_similarity, lambda a, b: F.normalize(a, dim=0) @ F.normalize(b, dim=0).T, "wrong dimension"),
    ("squared", ch1.check_cosine_similarity,
     lambda a, b: (a / (a ** 2).sum(-1, keepdim=True)) @ (b / (b ** 2).sum(-1, keepdim=True)).T, "squared length"),
    ("text @ image", ch1.check_cosine_similarity, lambda a, b: cosine_rows(b, a), "Rows should be images"),
    ("no transpose", ch1.check_cosine_similarity, lambda a, b: a @ b, "transpose"),
    ("images only", ch1.check_contrastive_loss, lambda x: _ce(x), "only one direction"),
    ("texts only", ch1.check_contrastive_loss, lambda x: _ce(x.T), "only one direction"),
    ("no /2", ch1.check_contrastive_loss, lambda x: _ce(x) + _ce(x.T), "forgot to divide by 2"),
    ("precedence", ch1.check_contrastive_loss, lambda x: _ce(x) + _ce(x.T) / 2, "parentheses"),
    ("sum", ch1.check_contrastive_loss, lambda x: (_ce(x, "sum") + _ce(x.T, "sum")) / 2, "summed the losses"),
    ("sum no /2", ch1.check_contrastive_loss, lambda x: _ce(x, "sum") + _ce(x.T, "sum"), "summed the losses"),
    ("softmax", ch1.check_contrastive_loss, lambda x: (_ce(x.softmax(1)) + _ce(x.T.softmax(1))) / 2, "raw logits"),
    (".item()", ch1.check_contrastive_loss, lambda x: loss_ce(x).item(), ".item()"),
    ("detached", ch1.check_contrastive_loss, lambda x: torch.tensor(loss_ce(x).item()), "autograd graph"),
    ("argmax dim 0", ch1.check_zero_shot_predict, lambda a, c: cosine_rows(a, c).argmax(dim=0), "wrong dimension"),
    ("argmin", ch1.check_zero_shot_predict, lambda a, c: cosine_rows(a, c).argmin(dim=1), "argmax, not argmin"),
    ("unnormalised", ch1.check_zero_shot_predict, lambda a, c: (a @ c.T).argmax(dim=1), "Normalise the class text"),
    ("scores", ch1.check_zero_shot_predict, lambda a, c: cosine_rows(a, c), "returned the similarity scores"),
    ("float", ch1.check_zero_shot_predict, lambda a, c: predict(a, c).float(), "do not convert them to float"),
    ("no exp", ch1.check_temperature_scaled_logits, lambda a, b, s: s * cosine_rows(a, b), "logarithm"),
    ("clamped", ch1.check_temperature_scaled_logits, logits_clamped, "does not: it multiplies by"),
    ("clamp the log", ch1.check_temperature_scaled_logits,
     lambda a, b, s: s.clamp(max=math.log(100)).exp() * cosine_rows(a, b), "You clamped the scale at 100"),
    ("divided", ch1.check_temperature_scaled_logits,
     lambda a, b, s: cosine_rows(a, b) / s.exp(), "do not divide"),
    ("unnormalised", ch1.check_temperature_scaled_logits,
     lambda a, b, s: s.exp() * (a @ b.T), "Normalise the features"),
    ("transposed", ch1.check_temperature_scaled_logits,
     lambda a, b, s: logits_exp(b, a, s), "Rows should be images"),
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("label,check,fn,hint", WRONG, ids=[f"{w[1].__name__}-{w[0]}" for w in WRONG])
def test_typical_mistakes_fail_with_their_hint(label, check, fn, hint, seed, capsys):
    result = check(fn, seed=seed)
    assert not result and result.passed is False
    assert result.message.startswith("❌")
    assert hint in result.message, result.message
    assert "❌" in capsys.readouterr().out


def test_unrelated_wrong_result_gets_no_hint():
    result = ch1.check_cosine_similarity(lambda a, b: torch.zeros(len(a), len(b)), seed=0, verbose=False)
    assert not result and "Hint" not in result.message
    assert "values differ" in result.message


def test_exception_becomes_feedback():
    def stub(image_features, text_features):
        raise NotImplementedError("write your code here")

    result = ch1.check_cosine_similarity(stub, seed=0, verbose=False)
    assert not result
    assert "raised NotImplementedError: write your code here" in result.message
    assert "image_features of shape (4, 8)" in result.message
    assert 'raise NotImplementedError("write your code here")' in result.message  # the failing line

    result = ch1.check_contrastive_loss(lambda x: 1 / 0, seed=0, verbose=False)
    assert not result and "ZeroDivisionError" in result.message


def test_wrong_shape_names_both_shapes():
    result = ch1.check_cosine_similarity(lambda a, b: torch.zeros(3, 3), seed=0, verbose=False)
    assert not result and "shape (4, 6), got shape (3, 3)" in result.message
    result = ch1.check_contrastive_loss(lambda x: loss_ce(x).reshape(1), seed=0, verbose=False)
    assert "shape (), got shape (1,)" in result.message and "0-dim" in result.message


def test_edge_case_failure_is_reported_with_its_shape():
    result = ch1.check_cosine_similarity(lambda a, b: cosine_rows(a, b).squeeze(), seed=0, verbose=False)
    assert not result and "Trial 3 of 6" in result.message
    assert "image_features of shape (1, 8), text_features of shape (1, 8)" in result.message
    assert ".squeeze()" in result.message


def test_in_place_change_of_an_input_fails():
    def in_place(a, b):
        a /= a.norm(dim=-1, keepdim=True)
        return a @ F.normalize(b, dim=-1).T

    result = ch1.check_cosine_similarity(in_place, seed=0, verbose=False)
    assert not result and "changed its input image_features in place" in result.message


def test_result_object():
    good = ch1.check_cosine_similarity(cosine_rows, seed=0, verbose=False)
    bad = ch1.check_cosine_similarity(lambda a, b: a @ b.T, seed=0, verbose=False)
    assert bool(good) is True and bool(bad) is False
    assert repr(good) == "CheckResult(passed=True, name='cosine_similarity')"
    assert str(bad) == bad.message
    assert "✅" in good._repr_markdown_() and "❌" in bad._repr_markdown_()


def test_verbose_false_prints_nothing(capsys):
    ch1.check_zero_shot_predict(predict, seed=0, verbose=False)
    assert capsys.readouterr().out == ""


def test_not_a_function_is_a_type_error():
    with pytest.raises(TypeError, match="fn: expected a function, got a Tensor"):
        ch1.check_cosine_similarity(cosine_rows(torch.randn(2, 3), torch.randn(2, 3)))


# -- the general machinery -------------------------------------------------------------------

def _inputs(g, trial):
    return torch.randn(trial + 1, 4, generator=g), torch.randn(4, generator=g)


def _reference(x, w):
    return x @ w


def test_check_function_tolerances_and_messages():
    assert check_function(lambda x, w: x @ w + 1e-7, _reference, _inputs, seed=0, verbose=False)
    bad = check_function(lambda x, w: x @ w + 1e-3, _reference, _inputs, seed=0, verbose=False)
    assert not bad and "largest difference is 0.001" in bad.message and "Trial 1 of 5 (seed 0)" in bad.message
    assert "x of shape (1, 4), w of shape (4,)" in bad.message
    double = check_function(lambda x, w: 2 * (x @ w), _reference, _inputs, seed=0, verbose=False, trials=3)
    assert "2 times the expected" in double.message
    nan = check_function(lambda x, w: x @ w / 0 * 0, _reference, _inputs, seed=0, verbose=False)
    assert "NaN" in nan.message
    none = check_function(lambda x, w: None, _reference, _inputs, seed=0, verbose=False)
    assert "returned None" in none.message and "return" in none.message
    pair = check_function(lambda x, w: (x @ w, x), _reference, _inputs, seed=0, verbose=False)
    assert "tuple of 2 items" in pair.message
    ints = check_function(lambda x, w: (x @ w).round().int(), _reference, _inputs, seed=0, verbose=False)
    assert "Expected floating-point values" in ints.message


def test_check_function_integer_results():
    ref = lambda x, w: (x @ w > 0).long()  # noqa: E731
    assert check_function(lambda x, w: (x @ w > 0).long(), ref, _inputs, seed=1, verbose=False, name="sign")
    wrong = check_function(lambda x, w: (x @ w > 0).int(), ref, _inputs, seed=1, verbose=False, name="sign")
    assert "Expected dtype torch.int64, got dtype torch.int32" in wrong.message and "sign" in wrong.message


def test_inputs_are_fresh_and_seeds_reproducible():
    seen = []

    def make(g, trial):
        x = torch.randn(3, generator=g)
        seen.append(x)
        return (x,)

    check_function(lambda x: x, lambda x: x, make, trials=2, verbose=False)
    check_function(lambda x: x, lambda x: x, make, trials=2, verbose=False)
    assert not torch.equal(seen[0], seen[2])
    check_function(lambda x: x, lambda x: x, make, trials=2, seed=5, verbose=False)
    check_function(lambda x: x, lambda x: x, make, trials=2, seed=5, verbose=False)
    assert torch.equal(seen[4], seen[6]) and torch.equal(seen[5], seen[7])


def test_hints_and_their_validation():
    hints = [
        Hint("broken hint", detect=lambda got, expected, inputs: 1 / 0),
        Hint("you returned x @ w + 1", mistake=lambda x, w: x @ w + 1),
        Hint("boom", error_contains="boom"),
    ]
    result = check_function(lambda x, w: x @ w + 1, _reference, _inputs, hints=hints, seed=0, verbose=False)
    assert "you returned x @ w + 1" in result.message and "broken hint" not in result.message

    def explode(x, w):
        raise RuntimeError("boom!")

    result = check_function(explode, _reference, _inputs, hints=hints, seed=0, verbose=False)
    assert "RuntimeError: boom!" in result.message and "Hint: boom" in result.message
    with pytest.raises(ValueError, match="exactly one of mistake, detect, error_contains, got 0"):
        Hint("nothing")
    with pytest.raises(ValueError, match="got 2"):
        Hint("two", mistake=abs, error_contains="x")


def test_check_function_argument_errors():
    with pytest.raises(TypeError, match="user_fn: expected a function"):
        check_function(3, _reference, _inputs)
    with pytest.raises(TypeError, match="make_inputs: expected a function"):
        check_function(_reference, _reference, None)
    with pytest.raises(ValueError, match="trials: expected a positive int, got 0"):
        check_function(_reference, _reference, _inputs, trials=0)


# -- the "predict" and "diagnose" exercises ---------------------------------------------------

def test_untrained_loss_is_about_log_n_and_a_little_above():
    measured = ch1.measure_untrained_loss()
    assert measured == ch1.measure_untrained_loss(), "the experiment is deterministic"
    assert math.log(ch1.UNTRAINED_BATCH) < measured < math.log(ch1.UNTRAINED_BATCH) + 0.5, measured
    assert math.log(16) < ch1.measure_untrained_loss(batch_size=16, models=2) < math.log(64)


def test_untrained_loss_check_accepts_log_n_and_explains(capsys):
    result = ch1.check_untrained_loss(math.log(64))
    assert result and result.message.startswith("✅")
    assert "ln 64 = 4.16" in result.message and "nats" in result.message
    assert "✅" in capsys.readouterr().out
    for wrong in (0.0, 1.0, 64, math.log2(64), math.log(64) / 2):
        result = ch1.check_untrained_loss(wrong, verbose=False)
        assert not result and "outside" in result.message and "ln 64" in result.message, wrong
    assert ch1.check_untrained_loss(torch.tensor(4.2), verbose=False), "a one-element tensor is a number"


def test_untrained_loss_check_handles_no_answer_and_bad_input(capsys):
    result = ch1.check_untrained_loss(None)
    assert not result and "write your prediction" in result.message
    assert "write your prediction" in capsys.readouterr().out
    with pytest.raises(TypeError, match="prediction"):
        ch1.check_untrained_loss("four", verbose=False)
    with pytest.raises(ValueError, match="batch_size"):
        ch1.measure_untrained_loss(batch_size=1)
    with pytest.raises(ValueError, match="models"):
        ch1.measure_untrained_loss(models=0)


def test_shuffled_class_names_experiment_singles_out_the_order():
    results = ch1._shuffled_experiment()
    assert results["broken"] < 1 / 64, "a label mix-up scores below chance"
    assert max(results["a"], results["b"]) < 1 / 64, results
    assert results["c"] > 0.9, results
    assert ch1.measure_shuffled_class_names() == "c"


def test_shuffled_class_names_check(capsys):
    right = ch1.check_shuffled_class_names(" C ")
    assert right and "class_names()" in right.message
    wrong = ch1.check_shuffled_class_names("b", verbose=False)
    assert not wrong and "The experiment shows (c)" in wrong.message
    assert "another template" in wrong.message
    assert not ch1.check_shuffled_class_names(None, verbose=False)
    with pytest.raises(ValueError, match="answer"):
        ch1.check_shuffled_class_names("d", verbose=False)
    with pytest.raises(TypeError, match="answer"):
        ch1.check_shuffled_class_names(3, verbose=False)


def test_chapter_one_lists_its_exercises_in_book_order():
    keys = [exercise.key for exercise in ch1.EXERCISES]
    assert keys == ["ch1.cosine_similarity", "ch1.temperature_scaled_logits", "ch1.contrastive_loss",
                    "ch1.untrained_loss", "ch1.zero_shot_predict", "ch1.shuffled_class_names"]
    assert [e.kind for e in ch1.EXERCISES].count("implement") == 4
