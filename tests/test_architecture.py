"""What the tensors tell and what a name or a config must state, against open_clip's own CLIP.

``clip_tutorial.weights.architecture`` reads the sizes off a state dict and takes the head counts
from what it is told; ``clip_tutorial.weights.configs`` reads that from a model name or a config.
A wrong head count changes no tensor shape, so the reference is open_clip's CLIP built from the
same config (random weights, loaded from the installed wheel by file path): the logits must agree
to 1e-5, and the ones computed with OpenAI's rule must not.
"""
from __future__ import annotations

import json
import warnings

import pytest
import torch
from reference_impl import open_clip_module
from test_convert import CASES, _inputs, _perturb_, _random_ours

from clip_tutorial.model import CLIP, CLIPConfig, get_config, list_configs
from clip_tutorial.weights.architecture import config_from_state_dict
from clip_tutorial.weights.configs import OPEN_CLIP_ARCHITECTURES, config_facts
from clip_tutorial.weights.convert import from_openai_state_dict, to_openai_state_dict
from clip_tutorial.weights.hf import hf_config


# --------------------------------------------------------------------------------------------------
# Sizes: what the tensors show
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list_configs())
def test_config_from_state_dict_recovers_official_configs(name):
    with torch.device("meta"):
        state = CLIP(get_config(name)).state_dict()
    expected = get_config(name)
    inferred = config_from_state_dict(state)
    if name == "tiny":  # a state dict cannot tell the head count; OpenAI's rule is width // 64
        inferred = config_from_state_dict(state, transformer_heads=expected.transformer_heads)
    assert inferred == expected


def test_config_from_state_dict_reads_mlp_ratio_and_overrides():
    state = to_openai_state_dict(_random_ours(CASES["gelu_mlp2"], seed=32))
    # The image tower's width 64 is no OpenAI model's, so its head count must be stated (None: width // 64).
    config = config_from_state_dict(state, transformer_heads=6, vision_heads=None, quick_gelu=False)
    assert config == CASES["gelu_mlp2"]


# --------------------------------------------------------------------------------------------------
# Head counts: what no tensor shape shows
# --------------------------------------------------------------------------------------------------

# Two open_clip models whose heads are not 64 wide. OpenAI's rule (width // 64) gives the second the
# head counts of neither tower: 2 and 1 heads instead of 4 and 3; 5 instead of 4 for the ViT-H-14 shape.
HEAD32 = {"embed_dim": 24, "vision_cfg": {"image_size": 32, "layers": 2, "width": 128, "head_width": 32, "patch_size": 8},
          "text_cfg": {"context_length": 12, "vocab_size": 50, "width": 96, "heads": 3, "layers": 2}}
# ViT-H-14's head widths (vision 80, text 64) at a small size, GELU as open_clip's plain ViT-H-14.
H14_LIKE = {"embed_dim": 24, "vision_cfg": {"image_size": 32, "layers": 2, "width": 320, "head_width": 80, "patch_size": 8},
            "text_cfg": {"context_length": 12, "vocab_size": 50, "width": 128, "heads": 2, "layers": 2}}


def _open_clip_model(cfg: dict, seed: int):
    """open_clip's own CLIP built from an open_clip model config, random weights: the reference."""
    torch.manual_seed(seed)
    oc = open_clip_module("model")
    return _perturb_(oc.CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], quick_gelu=cfg.get("quick_gelu", False)))


def _logit_error(reference, ours: CLIP, seed: int) -> float:
    """Max |our logits - open_clip's| on random images and texts."""
    images, text = _inputs(ours.config, seed)
    with torch.no_grad():
        image_features, text_features, scale = reference(images, text)
        expected = scale * image_features @ text_features.t()
        assert expected.abs().max() > 1.0  # a meaningful scale: not all near zero
        return (ours(images, text).logits_per_image - expected).abs().max().item()


@pytest.mark.parametrize("cfg", [HEAD32, H14_LIKE], ids=["head_width_32", "vit_h14_like"])
def test_head_counts_no_shape_shows_change_every_output(cfg):
    reference = _open_clip_model(cfg, seed=50)
    state = reference.state_dict()  # open_clip's names are OpenAI's
    # Before: the head counts were inferred by OpenAI's rule. Spelled out here, it loads without complaint ...
    rule = dict(vision_heads=None, transformer_heads=max(1, cfg["text_cfg"]["width"] // 64), quick_gelu=False)
    guessed = from_openai_state_dict(state, **rule)
    assert guessed.config.num_vision_heads != cfg["vision_cfg"]["width"] // cfg["vision_cfg"]["head_width"]
    # ... and computes something else: logits off by 0.3 to 3.4 here, 10^4 times the tolerance below.
    assert _logit_error(reference, guessed, seed=6) > 0.1
    # Now: without a word about the heads, these widths (no OpenAI model's) are refused.
    with pytest.raises(ValueError, match=r"cannot tell the number of attention heads: vision_heads=\d.*vision_heads="):
        from_openai_state_dict(state, quick_gelu=False)
    # Told by the open_clip config (a dict or its JSON file), or by the head sizes: the same outputs.
    vision = cfg["vision_cfg"]["width"] // cfg["vision_cfg"]["head_width"]
    told = [from_openai_state_dict(state, cfg),
            from_openai_state_dict(state, vision_head_width=cfg["vision_cfg"]["head_width"],
                                   transformer_heads=cfg["text_cfg"]["heads"], quick_gelu=False),
            from_openai_state_dict(state, vision_heads=vision, transformer_head_width=32 if cfg is HEAD32 else 64,
                                   quick_gelu=False)]
    for model in told:
        assert model.config.num_vision_heads == vision and model.config.transformer_heads == cfg["text_cfg"]["heads"]
        assert _logit_error(reference, model, seed=6) <= 1e-5


def test_open_clip_name_and_json_file_state_the_heads(tmp_path):
    reference = _open_clip_model(H14_LIKE, seed=51)
    assert OPEN_CLIP_ARCHITECTURES["ViT-H-14"] == (80, 64, False)
    assert OPEN_CLIP_ARCHITECTURES["ViT-H-14-quickgelu"] == (80, 64, True)
    by_name = from_openai_state_dict(reference.state_dict(), "ViT-H-14")
    assert (by_name.config.num_vision_heads, by_name.config.quick_gelu) == (4, False)
    assert _logit_error(reference, by_name, seed=7) <= 1e-5
    path = tmp_path / "ViT-H-14-small.json"
    path.write_text(json.dumps({"model_cfg": H14_LIKE, "preprocess_cfg": {}}))  # the hub's open_clip_config.json
    assert _logit_error(reference, from_openai_state_dict(reference.state_dict(), path), seed=7) <= 1e-5


def test_config_facts_of_the_real_open_clip_configs():
    # Copied from open_clip's model_configs: ViT-H-14.json, ViT-bigG-14-quickgelu.json, RN50.json.
    h14 = {"embed_dim": 1024, "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80,
                                             "patch_size": 14},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24}}
    facts = config_facts(h14)
    assert facts["vision_head_width"] == 80 and facts["transformer_heads"] == 16 and facts["quick_gelu"] is False
    with torch.device("meta"):
        fields = {k: v for k, v in facts.items() if k != "vision_head_width"}
        state = CLIP(CLIPConfig(**fields, vision_heads=16)).state_dict()
    config = config_from_state_dict(state, **facts)
    assert (config.num_vision_heads, config.transformer_heads, config.vision_width) == (16, 16, 1280)
    big_g = {"embed_dim": 1280, "quick_gelu": True,
             "vision_cfg": {"image_size": 224, "layers": 48, "width": 1664, "head_width": 104, "mlp_ratio": 4.9231,
                            "patch_size": 14},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1280, "heads": 20, "layers": 32}}
    with pytest.raises(ValueError, match="different MLP ratios.*one mlp_ratio"):
        config_facts(big_g)
    rn50 = {"embed_dim": 1024,
            "vision_cfg": {"image_size": 224, "layers": [3, 4, 6, 3], "width": 64, "patch_size": None},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}}
    expected = {k: v for k, v in get_config("RN50").to_dict().items() if k != "vision_heads"}
    expected.update(vision_layers=(3, 4, 6, 3), vision_head_width=64, quick_gelu=False)  # no quick_gelu: GELU
    assert config_facts(rn50) == expected


def test_hugging_face_config_dict_states_the_heads():
    pytest.importorskip("transformers")
    config = CASES["quick_gelu"]  # 3 vision heads of width 16, 4 text heads of width 8
    facts = config_facts(hf_config(config).to_dict())
    assert CLIPConfig(**facts) == config.replace(eot_token_id=None)
    state = to_openai_state_dict(_random_ours(config, seed=52))
    assert from_openai_state_dict(state, hf_config(config).to_dict()).config == config.replace(eot_token_id=None)


def test_openai_widths_assume_the_rule_with_a_warning():
    # OpenAI's widths (768 and 512) in sizes no released model has: the rule, said aloud.
    config = CLIPConfig(embed_dim=32, image_resolution=64, vision_layers=1, vision_width=768, vision_patch_size=32,
                        context_length=8, vocab_size=20, transformer_width=512, transformer_heads=8,
                        transformer_layers=1)
    with torch.device("meta"):
        state = CLIP(config).state_dict()
    with pytest.warns(UserWarning, match=r"assumed OpenAI's rule.*vision_heads=12.*transformer_heads=8"):
        assert config_from_state_dict(state) == config
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a released model's sizes: no warning
        with torch.device("meta"):
            official = CLIP(get_config("ViT-B/16")).state_dict()
        assert config_from_state_dict(official) == get_config("ViT-B/16")
    with pytest.warns(UserWarning, match="assumed OpenAI's QuickGELU"):
        from_openai_state_dict(to_openai_state_dict(_random_ours(CASES["gelu_mlp2"], seed=53)), vision_heads=None,
                               transformer_heads=6)


def test_refusals_of_configs_that_do_not_fit():
    state = _open_clip_model(HEAD32, seed=54).state_dict()
    wider = {**HEAD32, "vision_cfg": {**HEAD32["vision_cfg"], "width": 256}}
    with pytest.raises(ValueError, match=r"differing fields: vision_width \(config 256, tensors 128\)"):
        from_openai_state_dict(state, wider)
    layer_scale = {**HEAD32, "vision_cfg": {**HEAD32["vision_cfg"], "ls_init_value": 1e-5},
                   "text_cfg": {**HEAD32["text_cfg"], "hf_model_name": "roberta-base"}}
    with pytest.raises(ValueError, match=r"does not implement: vision_cfg.ls_init_value=1e-05, text_cfg.hf_model_name"):
        from_openai_state_dict(state, layer_scale)
    with pytest.raises(ValueError, match=r"vision_head_width: expected a positive int dividing .* 128, got 48"):
        from_openai_state_dict(state, vision_head_width=48, transformer_heads=3)
    with pytest.raises(ValueError, match=r"vision_heads: expected 4 heads"):
        from_openai_state_dict(state, vision_head_width=32, vision_heads=2, transformer_heads=3)
    with pytest.raises(ValueError, match=r"config: expected an OpenAI model name .*got 'ViT-Z-99'"):
        from_openai_state_dict(state, "ViT-Z-99")
    with pytest.raises(TypeError, match="config: expected a CLIPConfig, a model name"):
        from_openai_state_dict(state, 12)
    with pytest.raises(ValueError, match=r"model_type 'clip'\), got model_type 'siglip'"):
        config_facts({"model_type": "siglip", "text_config": {}, "vision_config": {}})
    with pytest.raises(ValueError, match="unknown field"):
        config_from_state_dict(state, vision_head=32)
