"""Tests of clip_tutorial.exercises.ch2: correct solutions pass, typical mistakes fail with the right hint."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clip_tutorial.exercises.core import wrap_feedback
from clip_tutorial.exercises import CheckResult, ch2
from clip_tutorial.objectives.loss import clip_loss
from clip_tutorial.model import CLIP, CLIPConfig, VisionTransformer

SEEDS = [0, 1]


# -- correct solutions, written independently of the references ------------------------------

def patchify_reshape(images, p):
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def patchify_loops(images, p):
    b, c, h, w = images.shape
    rows = [images[:, :, i:i + p, j:j + p].reshape(b, -1) for i in range(0, h, p) for j in range(0, w, p)]
    return torch.stack(rows, dim=1)


def mask_loops(n):
    mask = torch.zeros(n, n)
    for i in range(n):
        for j in range(i + 1, n):
            mask[i, j] = float("-inf")
    return mask


def mask_where(n):
    allowed = torch.ones(n, n, dtype=torch.bool).tril()
    return torch.where(allowed, 0.0, -math.inf)


def gradient_formula(logits):
    n = logits.shape[0]
    eye = torch.eye(n, dtype=logits.dtype)
    return ((logits.softmax(1) - eye) + (logits.softmax(0) - eye)) / (2 * n)


def gradient_autograd(logits):
    logits = logits.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(clip_loss(logits), logits)
    return grad


def pool_gather(hidden, tokens):
    index = tokens.argmax(dim=-1)[:, None, None].expand(-1, 1, hidden.shape[-1])
    return hidden.gather(1, index)[:, 0]


CORRECT = [
    (ch2.check_patchify, patchify_reshape),
    (ch2.check_patchify, patchify_loops),
    (ch2.check_causal_mask, mask_loops),
    (ch2.check_causal_mask, mask_where),
    (ch2.check_loss_gradient, gradient_formula),
    (ch2.check_loss_gradient, gradient_autograd),
    (ch2.check_eot_pooling, pool_gather),
]


@pytest.mark.parametrize("seed", SEEDS + [None])
@pytest.mark.parametrize("check,fn", CORRECT, ids=lambda x: getattr(x, "__name__", ""))
def test_correct_solutions_pass(check, fn, seed, capsys):
    result = check(fn, seed=seed, trials=8)
    assert isinstance(result, CheckResult) and result.passed, result.message
    assert result.message.startswith("✅")
    assert capsys.readouterr().out.strip() == wrap_feedback(result.message)


# -- the references agree with the model ------------------------------------------------------

@pytest.mark.parametrize("patch_size, resolution", [(4, 16), (8, 32), (16, 32)])
def test_patches_times_conv_weight_equal_the_vit_patch_embedding(patch_size, resolution):
    torch.manual_seed(patch_size)
    vit = VisionTransformer(resolution, patch_size, width=24, layers=1, heads=2, output_dim=8)
    images = torch.randn(3, 3, resolution, resolution)
    expected = vit.conv1(images).flatten(2).transpose(1, 2)
    got = ch2.reference_patchify(images, patch_size) @ vit.conv1.weight.flatten(1).T
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(patchify_loops(images, patch_size), ch2.reference_patchify(images, patch_size))


def test_causal_mask_reference_is_the_models_mask():
    config = CLIPConfig(embed_dim=16, vision_width=32, transformer_width=32, vocab_size=30, context_length=9,
                        vision_layers=1, transformer_layers=1)
    assert torch.equal(ch2.reference_causal_mask(9), CLIP(config).attn_mask)
    assert torch.equal(ch2.reference_causal_mask(5), mask_loops(5))


def test_eot_pooling_reference_is_what_the_text_tower_reads():
    torch.manual_seed(0)
    config = CLIPConfig(embed_dim=16, vision_width=32, transformer_width=32, vocab_size=30, context_length=8,
                        vision_layers=1, transformer_layers=1)
    model = CLIP(config).eval()
    tokens = torch.tensor([[28, 5, 7, 29, 0, 0, 0, 0], [28, 29, 0, 0, 0, 0, 0, 0], [28, 3, 4, 5, 6, 7, 8, 29]])
    with torch.no_grad():
        x = model.token_embedding(tokens) + model.positional_embedding
        hidden = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
        got = ch2.reference_eot_pooling(hidden, tokens) @ model.text_projection
        torch.testing.assert_close(got, model.encode_text(tokens), atol=1e-6, rtol=1e-6)


# -- typical mistakes ------------------------------------------------------------------------

def _grid(x, p):
    return x.unfold(2, p, p).unfold(3, p, p)


def _flat(x):
    return x.reshape(x.shape[0], x.shape[1] * x.shape[2], -1)


def _eye(x):
    return torch.eye(len(x), dtype=x.dtype)


WRONG = [
    ("channels last", ch2.check_patchify, lambda x, p: _flat(_grid(x, p).permute(0, 2, 3, 4, 5, 1)), "channel first"),
    ("column order", ch2.check_patchify, lambda x, p: _flat(_grid(x, p).permute(0, 3, 2, 1, 4, 5)), "column by column"),
    ("transposed patch", ch2.check_patchify, lambda x, p: _flat(_grid(x, p).permute(0, 2, 3, 1, 5, 4)),
     "swapped height and width"),
    ("plain reshape", ch2.check_patchify, lambda x, p: x.reshape(x.shape[0], -1, 3 * p * p), "plain reshape"),
    ("unfold no transpose", ch2.check_patchify, lambda x, p: F.unfold(x, p, stride=p), "transpose(1, 2)"),
    ("diagonal masked", ch2.check_causal_mask, lambda n: torch.full((n, n), -math.inf).triu(0), "diagonal must stay 0"),
    ("past masked", ch2.check_causal_mask, lambda n: mask_loops(n).T, "masked the past"),
    ("boolean", ch2.check_causal_mask, lambda n: torch.ones(n, n, dtype=torch.bool).triu(1), "boolean"),
    ("0/1", ch2.check_causal_mask, lambda n: torch.ones(n, n).tril(), "multiplicative"),
    ("finite", ch2.check_causal_mask, lambda n: torch.full((n, n), -1e9).triu(1), "float('-inf')"),
    ("no 1/N", ch2.check_loss_gradient, lambda x: (x.softmax(1) + x.softmax(0) - 2 * _eye(x)) / 2, "batch size N"),
    ("no /2", ch2.check_loss_gradient, lambda x: (x.softmax(1) + x.softmax(0) - 2 * _eye(x)) / len(x), "divide by 2"),
    ("one way", ch2.check_loss_gradient, lambda x: (x.softmax(1) - _eye(x)) / len(x), "only one direction"),
    ("sign", ch2.check_loss_gradient, lambda x: -gradient_formula(x), "sign is flipped"),
    ("not transposed back", ch2.check_loss_gradient,
     lambda x: (x.softmax(1) + x.T.softmax(1) - 2 * _eye(x)) / (2 * len(x)), "transposed back"),
    ("log-softmax", ch2.check_loss_gradient,
     lambda x: (x.log_softmax(1) + x.log_softmax(0) - 2 * _eye(x)) / (2 * len(x)), "log-probabilities"),
    ("last position", ch2.check_eot_pooling, lambda h, t: h[:, -1], "padding"),
    ("first position", ch2.check_eot_pooling, lambda h, t: h[:, 0], "class token"),
    ("mean", ch2.check_eot_pooling, lambda h, t: h.mean(dim=1), "does not average"),
    ("broadcast index", ch2.check_eot_pooling, lambda h, t: h[:, t.argmax(-1)], "torch.arange"),
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("label,check,fn,hint", WRONG, ids=[f"{w[1].__name__}-{w[0]}" for w in WRONG])
def test_typical_mistakes_fail_with_their_hint(label, check, fn, hint, seed, capsys):
    result = check(fn, seed=seed)
    assert not result and result.message.startswith("❌")
    assert "💡 Hint:" in result.message and hint in result.message, result.message
    assert capsys.readouterr().out.strip() == wrap_feedback(result.message)


def test_a_scaled_gradient_is_reported_as_a_factor():
    result = ch2.check_loss_gradient(lambda x: 3 * gradient_formula(x), seed=0, verbose=False)
    assert not result and "3 times the expected" in result.message


def test_an_unimplemented_stub_gets_told_what_to_do():
    def patchify(images, patch_size):
        raise NotImplementedError("your code here")
    result = ch2.check_patchify(patchify, seed=0, verbose=False)
    assert not result and "NotImplementedError" in result.message and "Replace" in result.message


def test_verbose_false_prints_nothing(capsys):
    assert ch2.check_causal_mask(mask_where, verbose=False)
    assert not ch2.check_causal_mask(lambda n: torch.zeros(n, n), verbose=False)
    assert capsys.readouterr().out == ""


# -- bad arguments -----------------------------------------------------------------------------

@pytest.mark.parametrize("check", [ch2.check_patchify, ch2.check_causal_mask, ch2.check_loss_gradient,
                                   ch2.check_eot_pooling])
def test_checks_reject_bad_arguments(check):
    with pytest.raises(TypeError, match="fn: expected a function"):
        check(torch.zeros(3))
    with pytest.raises(ValueError, match="trials"):
        check(lambda *args: None, trials=0)


def test_references_reject_bad_inputs():
    with pytest.raises(ValueError, match="divisible by patch_size"):
        ch2.reference_patchify(torch.zeros(1, 3, 10, 8), 4)
    with pytest.raises(ValueError, match="images"):
        ch2.reference_patchify(torch.zeros(3, 8, 8), 4)
    for bad in (0, 2.0, True):
        with pytest.raises(TypeError, match="patch_size"):
            ch2.reference_patchify(torch.zeros(1, 3, 8, 8), bad)
    for bad in (0, -3, 4.0):
        with pytest.raises(TypeError, match="n: expected a positive int"):
            ch2.reference_causal_mask(bad)
    with pytest.raises(ValueError, match="tokens"):
        ch2.reference_eot_pooling(torch.zeros(2, 5, 4), torch.zeros(2, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="hidden"):
        ch2.reference_eot_pooling(torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.long))


# -- the "predict" and "diagnose" exercises ------------------------------------------------------

def test_the_exercise_list_is_in_book_order_with_reasoning_exercises():
    keys = [exercise.key for exercise in ch2.EXERCISES]
    assert keys == ["ch2.patchify", "ch2.vit_b32_tokens", "ch2.causal_mask", "ch2.reversed_mask",
                    "ch2.loss_gradient", "ch2.eot_pooling"]
    assert sum(exercise.kind in ("predict", "diagnose") for exercise in ch2.EXERCISES) >= 2


def test_the_token_count_is_measured_from_the_model():
    from clip_tutorial import get_config
    config = get_config("ViT-B/32")
    assert ch2._measure_vit_b32_tokens() == (config.image_resolution // config.vision_patch_size) ** 2 + 1


@pytest.mark.parametrize("prediction, passes", [(50, True), (50.0, True), (torch.tensor(50), True),
                                                (49, False), (51, False), (197, False)])
def test_token_prediction_is_judged_exactly(prediction, passes, capsys):
    result = ch2.check_vit_b32_tokens(prediction)
    assert bool(result) is passes
    assert "class token" in result.message, "the explanation is shown either way"
    assert capsys.readouterr().out.strip() == wrap_feedback(result.message)


def test_an_unwritten_prediction_or_answer_is_told_to_write_one_first(capsys):
    for check in (ch2.check_vit_b32_tokens, ch2.check_reversed_mask):
        result = check(None)
        assert not result and "first" in result.message and result.message.startswith("❌")
    assert capsys.readouterr().out.count("❌") == 2


def test_token_prediction_rejects_a_non_number():
    with pytest.raises(TypeError, match="prediction"):
        ch2.check_vit_b32_tokens("fifty", verbose=False)
    with pytest.raises(TypeError, match="prediction"):
        ch2.check_vit_b32_tokens([50], verbose=False)


def test_the_reversed_mask_is_the_transpose_of_the_right_one_with_the_diagonal_kept():
    for n in (1, 4, 9):
        broken, right = ch2.reversed_causal_mask(n), ch2.reference_causal_mask(n)
        assert torch.equal(broken, right.T)
        assert (broken.diagonal() == 0).all()


def test_the_reversed_mask_experiment_finds_same_length_captions_collide():
    assert ch2._measure_reversed_mask() == "b"


@pytest.mark.parametrize("answer, passes", [("b", True), (" B ", True), ("a", False), ("c", False)])
def test_reversed_mask_diagnosis(answer, passes):
    result = ch2.check_reversed_mask(answer, verbose=False)
    assert bool(result) is passes
    if not passes:
        assert "The experiment shows (b)" in result.message
    assert "NaN" in result.message or "position" in result.message


def test_reversed_mask_rejects_bad_answers():
    with pytest.raises(ValueError, match="answer"):
        ch2.check_reversed_mask("d", verbose=False)
    with pytest.raises(TypeError, match="answer"):
        ch2.check_reversed_mask(2, verbose=False)


def test_the_diagnosis_experiment_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ch2._measure_reversed_mask()
    assert torch.equal(torch.rand(3), expected)
