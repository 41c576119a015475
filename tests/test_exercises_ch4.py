"""Tests of clip_tutorial.exercises.ch4: right answers pass, typical mistakes get their hint, bad input is named.

Also the short offline reason that Chapter 4.2 prints when the released weights cannot be downloaded.
"""
from __future__ import annotations

import dataclasses
import math
import re
import socket
import urllib.error

import pytest
import torch

from clip_tutorial.exercises.core import wrap_feedback
from clip_tutorial.weights import pretrained
from clip_tutorial.exercises import ch4, registry
from clip_tutorial.model import CLIP, CLIPConfig, get_config, list_configs
from clip_tutorial.weights.hf import hf_config, to_hf_state_dict
from exercise_harness import assert_fails_with_hint, assert_passes

# -- correct solutions, written independently of the references ------------------------------

_BLOCK = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
          "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
_FIXED = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight",
          "logit_scale": "logit_scale", "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
          "visual.class_embedding": "vision_model.embeddings.class_embedding",
          "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
          "positional_embedding": "text_model.embeddings.position_embedding.weight",
          "token_embedding.weight": "text_model.embeddings.token_embedding.weight"}


def hf_name_regex(key):
    if key in _FIXED:
        return _FIXED[key]
    block = re.fullmatch(r"(visual\.)?transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)", key)
    if block:
        tower = "vision_model" if block.group(1) else "text_model"
        return f"{tower}.encoder.layers.{block.group(2)}.{_BLOCK[block.group(3)]}.{block.group(4)}"
    norm, kind = key.rsplit(".", 1)
    return {"visual.ln_pre": "vision_model.pre_layrnorm", "visual.ln_post": "vision_model.post_layernorm",
            "ln_final": "text_model.final_layer_norm"}[norm] + "." + kind


def count_by_walking_a_real_model(config):
    return sum(p.numel() for p in CLIP(config).parameters())


def count_as_tensor(config):
    return torch.tensor(ch4._count(config))  # a one-element tensor is a number too


def crop_by_integer_maths(width, height, size):
    def offset(spare):  # round half to even without floats
        half, odd = divmod(spare, 2)
        return half + (odd and half % 2)
    return [offset(width - size), offset(height - size)]  # a list is accepted as well as a tuple


def test_the_chapter_lists_seven_exercises_four_of_them_reasoning():
    listed = registry.exercises("ch4")
    assert [e.key for e in listed] == ["ch4.hf_name", "ch4.count_parameters", "ch4.quick_gelu_gap",
                                       "ch4.forgot_transpose", "ch4.swapped_qk", "ch4.crop_offsets", "ch4.fp16_error"]
    assert sum(e.kind in ("predict", "diagnose") for e in listed) == 4


@pytest.mark.parametrize("check, fn, trials", [
    (ch4.check_hf_name, hf_name_regex, 30),
    (ch4.check_count_parameters, count_by_walking_a_real_model, 6),
    (ch4.check_count_parameters, count_as_tensor, 10),
    (ch4.check_crop_offsets, crop_by_integer_maths, 40),
])
def test_correct_solutions_pass(check, fn, trials, capsys):
    assert_passes(check, fn, capsys, trials)


# -- the references ------------------------------------------------------------------------

def test_reference_hf_name_agrees_with_the_converter_on_every_key_of_vit_b32():
    config = get_config("ViT-B/32")
    with torch.device("meta"):
        model = CLIP(config)
    hf_keys = set(to_hf_state_dict(model))
    renamed = {ch4.reference_hf_name(k) for k in model.state_dict() if ".attn.in_proj_" not in k}
    assert renamed <= hf_keys and len(hf_keys - renamed) == 6 * (config.vision_layers + config.transformer_layers)


@pytest.mark.parametrize("key, error, match", [
    ("transformer.resblocks.0.attn.in_proj_weight", ValueError, "split"),
    ("visual.layer1.0.conv1.weight", ValueError, "expected a parameter name"),
    (3, TypeError, "string"),
])
def test_reference_hf_name_names_what_it_cannot_rename(key, error, match):
    with pytest.raises(error, match=match):
        ch4.reference_hf_name(key)


@pytest.mark.parametrize("name", [n for n in list_configs() if not get_config(n).is_resnet])
def test_the_formula_and_the_reference_count_agree_on_every_official_vit(name):
    assert ch4._count(get_config(name)) == ch4.reference_count_parameters(get_config(name))


def test_reference_count_refuses_a_resnet():
    with pytest.raises(TypeError, match="vision transformer"):
        ch4.reference_count_parameters(get_config("RN50"))


def test_reference_crop_offsets_is_read_off_center_crop():
    assert ch4.reference_crop_offsets(224, 262, 224) == (0, 19)
    assert ch4.reference_crop_offsets(227, 224, 224) == (2, 0)  # 1.5 rounds to 2
    assert ch4.reference_crop_offsets(225, 224, 224) == (0, 0)  # 0.5 rounds to 0
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        size, dw, dh = (int(x) for x in torch.randint(1, 90, (3,), generator=g))
        assert ch4.reference_crop_offsets(size + dw, size + dh, size) == (round(dw / 2), round(dh / 2))
    with pytest.raises(ValueError, match="size"):
        ch4.reference_crop_offsets(10, 10, 0)


# -- hints for the usual mistakes -------------------------------------------------------------

def _hf_name_with(old, new):
    return lambda key: hf_name_regex(key).replace(old, new)


def projections_without_weight(key):
    name = hf_name_regex(key)
    return name.removesuffix(".weight") if key in ("visual.proj", "text_projection") else name


@pytest.mark.parametrize("fn, hint", [
    (_hf_name_with("pre_layrnorm", "pre_layernorm"), "pre_layrnorm` (sic"),
    (lambda k: hf_name_regex(k.replace("ln_1", "LN").replace("ln_2", "ln_1").replace("LN", "ln_2")), "`layer_norm1`"),
    (lambda k: hf_name_regex(k.replace("c_fc", "CFC").replace("c_proj", "c_fc").replace("CFC", "c_proj")), "`mlp.fc1`"),
    (lambda k: hf_name_regex(k).replace("text_model", "vision_model"),
     "`vision_model.` or `text_model.`"),
    (lambda k: hf_name_regex(k).split(".", 1)[1] if "resblocks" in k else hf_name_regex(k),
     "`vision_model.` or `text_model.`"),
    (lambda k: hf_name_regex(k).replace("encoder.layers", "transformer.resblocks"), "`transformer.resblocks.N`"),
    (_hf_name_with("self_attn", "attn"), "`self_attn`"),
    (projections_without_weight,
     "`nn.Linear` layers"),
    (_hf_name_with("position_embedding.weight", "positional_embedding"), "`nn.Embedding`"),
    (lambda k: k, "unchanged"),
    (lambda k: None, "Return the new name"),
])
def test_hf_name_hints(fn, hint, capsys):
    assert_fails_with_hint(ch4.check_hf_name, fn, hint, capsys)


def test_hf_name_failure_shows_the_whole_key(capsys):
    result = ch4.check_hf_name(_hf_name_with("self_attn", "attn"), seed=0, verbose=False)
    assert "key 'visual.transformer.resblocks.3.attn.out_proj.weight'." in result.message.replace("\n", " ")


@pytest.mark.parametrize("mistake, hint", [
    (dict(biases=False), "Count the biases"),
    (dict(norms=False), "gain and a bias"),
    (dict(class_token=1), "class token"),
    (dict(class_token=0), "class token"),
    (dict(conv_bias=True), "`conv1` has no bias"),
    (dict(logit_scale=False), "`logit_scale`"),
    (dict(packed=1), "packs the queries"),
    (dict(mlp_ratio=4.0), "mlp_ratio"),
    (dict(projections=False), "two projections"),
])
def test_count_parameters_hints(mistake, hint, capsys):
    assert_fails_with_hint(ch4.check_count_parameters, lambda c: ch4._count(c, **mistake), hint, capsys)


def test_count_parameters_failure_describes_the_config(capsys):
    result = ch4.check_count_parameters(lambda c: ch4._count(c, logit_scale=False), seed=0, verbose=False)
    assert "image 32 px in 8-px patches (4 x 4)" in result.message.replace("\n", " ")
    assert "CLIPConfig(" not in result.message and "Expected 231169, got 231168." in result.message


def test_printed_feedback_fits_the_column(capsys):
    for check, fn in ((ch4.check_hf_name, lambda k: k), (ch4.check_count_parameters, lambda c: 0),
                      (ch4.check_crop_offsets, lambda w, h, s: (0, 0))):
        check(fn, seed=0)
        assert all(len(line) <= 88 for line in capsys.readouterr().out.splitlines())
    for check, answer in ((ch4.check_quick_gelu_gap, 0.5), (ch4.check_forgot_transpose, "a"),
                          (ch4.check_swapped_qk, "c"), (ch4.check_fp16_error, 1.0)):
        check(answer)
        assert all(len(line) <= 88 for line in capsys.readouterr().out.splitlines())


@pytest.mark.parametrize("fn, hint", [
    (lambda w, h, s: ((w - s) // 2, (h - s) // 2), "ties to the even one"),
    (lambda w, h, s: (int((w - s) / 2 + 0.5), int((h - s) / 2 + 0.5)), "not always up"),
    (lambda w, h, s: (math.ceil((w - s) / 2), math.ceil((h - s) / 2)), "not always up"),
    (lambda w, h, s: (round((h - s) / 2), round((w - s) / 2)), "Return (left, top)"),
    (lambda w, h, s: (w - s, h - s), "The crop is centred"),
    (lambda w, h, s: ((w - s) / 2, (h - s) / 2), "whole pixels"),
    (lambda w, h, s: (round((w - s) / 2), round((h - s) / 2), 0, 0), "not the whole crop box"),
])
def test_crop_offsets_hints(fn, hint, capsys):
    assert_fails_with_hint(ch4.check_crop_offsets, fn, hint, capsys)


# -- predictions and diagnoses ----------------------------------------------------------------

def test_the_experiments_measure_what_the_solutions_derive():
    assert ch4._measure_forgot_transpose() == "b"
    assert ch4._measure_swapped_qk() == "b"
    assert ch4._measure_quick_gelu_gap() == pytest.approx(0.0203, abs=2e-4)
    assert ch4._measure_fp16_error() == pytest.approx(2 ** -11, rel=0.01)


@pytest.mark.parametrize("check, near, far", [
    (ch4.check_quick_gelu_gap, 0.02, 0.005),
    (ch4.check_fp16_error, 5e-4, 2 ** -10),  # the spacing (machine epsilon) is not the rounding error
])
def test_estimates_pass_near_and_fail_far(check, near, far, capsys):
    assert check(near)
    assert not check(far)
    out = capsys.readouterr().out
    assert "✅" in out and "❌" in out and "experiment measured" in out


@pytest.mark.parametrize("check", [ch4.check_forgot_transpose, ch4.check_swapped_qk])
def test_choices_accept_the_measured_letter_only(check):
    assert check(" B ", verbose=False)
    for wrong in "acd":
        result = check(wrong, verbose=False)
        assert not result and "The experiment shows (b)" in result.message


@pytest.mark.parametrize("check", [ch4.check_quick_gelu_gap, ch4.check_forgot_transpose, ch4.check_swapped_qk,
                                   ch4.check_fp16_error])
def test_none_asks_for_an_answer_without_raising(check, capsys):
    result = check(None)
    assert not result and "first" in result.message
    assert capsys.readouterr().out.strip() == wrap_feedback(result.message)


@pytest.mark.parametrize("check, answer, error, match", [
    (ch4.check_quick_gelu_gap, "0.02", TypeError, "prediction"),
    (ch4.check_fp16_error, [1e-3, 2e-3], TypeError, "prediction"),
    (ch4.check_fp16_error, math.nan, ValueError, "finite"),
    (ch4.check_forgot_transpose, "e", ValueError, "answer"),
    (ch4.check_swapped_qk, 2, TypeError, "answer"),
])
def test_bad_answers_are_named(check, answer, error, match):
    with pytest.raises(error, match=match):
        check(answer, verbose=False)


@pytest.mark.parametrize("check", [ch4.check_hf_name, ch4.check_count_parameters, ch4.check_crop_offsets])
def test_implement_checks_want_the_function_itself(check):
    with pytest.raises(TypeError, match="pass the function itself"):
        check("visual.proj")


def test_the_buggy_converter_loads_into_transformers_and_gives_other_outputs():
    transformers = pytest.importorskip("transformers")
    model = ch4._random_biases(ch4._seeded(ch4._NO_SQUARE, 1), 2)
    hf = transformers.CLIPModel(hf_config(model.config)).eval()
    hf.load_state_dict(ch4.buggy_to_hf_state_dict(model), strict=True)  # no error: every shape fits
    images, texts = ch4._inputs(model.config, 0)
    with torch.no_grad():
        theirs = hf.get_image_features(pixel_values=images)
        theirs = theirs if isinstance(theirs, torch.Tensor) else theirs.pooler_output
        assert (theirs - model.encode_image(images)).abs().max() > 1e-3


def test_the_shown_converters_differ_from_the_right_one_only_where_the_exercise_says():
    model = ch4._seeded(ch4._NO_SQUARE, 3)
    right = to_hf_state_dict(model)
    buggy = ch4.buggy_to_hf_state_dict(model)
    differ = sorted(k for k in right if not torch.equal(right[k], buggy[k]))
    assert differ and all(re.search(r"self_attn\.[qk]_proj\.(weight|bias)$", k) for k in differ)
    square = dataclasses.replace(ch4._NO_SQUARE, transformer_width=24, transformer_heads=4)
    model = ch4._seeded(square, 4)
    right, untransposed = to_hf_state_dict(model), ch4.transposeless_hf_state_dict(model)
    assert sorted(k for k in right if not torch.equal(right[k], untransposed[k])) == [
        "text_projection.weight", "visual_projection.weight"]


def test_checks_are_fast():
    import time
    for exercise in registry.exercises("ch4"):
        registry.verify_solution(exercise.key)  # warm up (the first meta-device model is slow to build)
        start = time.perf_counter()
        registry.verify_solution(exercise.key)
        assert time.perf_counter() - start < 5, exercise.key


# -- the offline reason of load_pretrained (Chapter 4.2 prints it) ------------------------------

@pytest.mark.parametrize("error, words", [
    (urllib.error.URLError(socket.gaierror(-2, "Name or service not known")), "could not be resolved"),
    (urllib.error.URLError("[Errno -3] Temporary failure in name resolution"), "could not be resolved"),
    (urllib.error.URLError(TimeoutError("timed out")), "did not answer within 3 s"),
    (ConnectionRefusedError(111, "Connection refused"), "connection to the server failed"),
    (urllib.error.HTTPError("https://x", 404, "Not Found", {}, None), "HTTP status 404"),
])
def test_offline_reason_is_one_short_line_without_paths(error, words, tmp_path, monkeypatch):
    def fail(url, dest, timeout):
        raise error

    monkeypatch.setattr(pretrained, "_fetch", fail)
    with pytest.raises(pretrained.PretrainedUnavailableError) as info:
        pretrained.download_verified("https://example.invalid/w.pt", tmp_path / "w.pt", "0" * 64, timeout=3)
    reason = info.value.reason
    assert words in reason and len(reason) < 88 and "\n" not in reason
    assert str(tmp_path) not in reason and "Errno" not in reason and "://" not in reason
    assert str(tmp_path) in str(info.value)  # the full message still says where to put the file


def test_offline_reason_of_a_missing_local_file(tmp_path):
    with pytest.raises(pretrained.PretrainedUnavailableError) as info:
        pretrained.download_verified((tmp_path / "nope.pt").as_uri(), tmp_path / "dest.pt", "0" * 64)
    assert info.value.reason == "the file to download does not exist"
