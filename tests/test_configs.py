"""The official configurations, their exact parameter counts, and FLOP counts checked against hand formulas.

References, all independent of the code under test: the parameter counts of OpenAI's nine released
checkpoints; open_clip's model-config JSON files shipped in its wheel; FLOP formulas written out
here from the architecture; and open_clip's published model-profile table (docs/model_profile.csv),
whose GFLOPs also count 2 FLOPs per multiply-accumulate.
"""
from __future__ import annotations

import json

import pytest
import torch
from reference_impl import open_clip_dir

from clip_tutorial.model import CLIP, CONFIGS, CLIPConfig, get_config
from clip_tutorial.model.config import OFFICIAL_MODELS
from clip_tutorial.model.stats import (
    ModelSummary,
    count_flops,
    count_parameters,
    format_model_table,
    model_summary,
    model_table,
)

OFFICIAL_PARAMETERS = {
    "RN50": 102_007_137, "RN101": 119_688_033, "RN50x4": 178_300_601, "RN50x16": 290_979_217,
    "RN50x64": 623_258_305, "ViT-B/32": 151_277_313, "ViT-B/16": 149_620_737, "ViT-L/14": 427_616_513,
    "ViT-L/14@336": 427_944_193,
}

#: open_clip's docs/model_profile.csv: (image GFLOPs, text GFLOPs), rounded to two decimals there.
OPEN_CLIP_PROFILE = {
    "RN50": (12.22, 5.96), "RN101": (19.54, 5.96), "RN50x4": (42.56, 9.27), "RN50x16": (149.39, 13.30),
    "RN50x64": (529.11, 23.55), "ViT-B/32": (8.82, 5.96), "ViT-B/16": (35.13, 5.96), "ViT-L/14": (162.03, 13.30),
    "ViT-L/14@336": (381.92, 13.30),
}


def test_official_model_list():
    assert OFFICIAL_MODELS == tuple(OFFICIAL_PARAMETERS)
    assert all(name in CONFIGS for name in OFFICIAL_MODELS)


@pytest.mark.parametrize("name", OFFICIAL_MODELS)
def test_parameter_counts_equal_official_figures(name):
    with torch.device("meta"):
        model = CLIP(get_config(name))
    # Parameters only: BatchNorm running statistics are buffers and are not counted in the figures.
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMETERS[name]
    assert count_parameters(name) == OFFICIAL_PARAMETERS[name]
    assert count_parameters(name, "image") + count_parameters(name, "text") + 1 == OFFICIAL_PARAMETERS[name]


@pytest.mark.parametrize("name", OFFICIAL_MODELS)
def test_official_configs_equal_open_clip_json(name):
    file = name.replace("/", "-").replace("@336", "-336") + ".json"
    data = json.loads((open_clip_dir() / "model_configs" / file).read_text())
    config, vision, text = get_config(name), data["vision_cfg"], data["text_cfg"]
    layers = vision["layers"]
    assert config.embed_dim == data["embed_dim"]
    assert config.image_resolution == vision["image_size"]
    assert config.vision_layers == (tuple(layers) if isinstance(layers, list) else layers)
    assert config.vision_width == vision["width"]
    assert config.vision_patch_size == vision.get("patch_size")
    # open_clip's head rule: width * 32 // 64 for a ResNet, width // 64 for a ViT.
    assert config.num_vision_heads == (vision["width"] * 32 // 64 if config.is_resnet else vision["width"] // 64)
    assert (config.context_length, config.vocab_size) == (text["context_length"], text["vocab_size"]) == (77, 49408)
    assert (config.transformer_width, config.transformer_heads, config.transformer_layers) == (
        text["width"], text["heads"], text["layers"])
    assert config.quick_gelu, "every OpenAI model was trained with QuickGELU"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_config_json_round_trip(name):
    config = get_config(name)
    text = json.dumps(config.to_dict())
    again = CLIPConfig.from_dict(json.loads(text))
    assert again == config and hash(again) == hash(config)
    assert type(again.vision_layers) is type(config.vision_layers)


# ----------------------------------------------------------------------------------------------
# FLOPs: hand formulas (2 FLOPs per multiply-accumulate; matrix products and convolutions only)
# ----------------------------------------------------------------------------------------------

def _block_flops(tokens: int, width: int, mlp_ratio: float = 4.0) -> int:
    hidden = int(width * mlp_ratio)
    qkv = 2 * tokens * width * 3 * width
    attention = 2 * (2 * tokens * tokens * width)  # q k^T and weights @ v, summed over heads
    out = 2 * tokens * width * width
    mlp = 2 * (2 * tokens * width * hidden)
    return qkv + attention + out + mlp


def _vit_image_flops(c: CLIPConfig) -> int:
    patches = (c.image_resolution // c.vision_patch_size) ** 2
    conv = 2 * patches * 3 * c.vision_patch_size**2 * c.vision_width
    blocks = c.vision_layers * _block_flops(patches + 1, c.vision_width, c.mlp_ratio)
    return conv + blocks + 2 * c.vision_width * c.embed_dim


def _text_flops(c: CLIPConfig) -> int:
    blocks = c.transformer_layers * _block_flops(c.context_length, c.transformer_width, c.mlp_ratio)
    return blocks + 2 * c.transformer_width * c.embed_dim  # projection of the end-of-text token only


def _conv(cin: int, cout: int, kernel: int, side: int) -> int:
    return 2 * cin * cout * kernel * kernel * side * side


def _resnet_image_flops(c: CLIPConfig, all_queries: bool = False) -> int:
    w, side = c.vision_width, c.image_resolution // 2
    total = _conv(3, w // 2, 3, side) + _conv(w // 2, w // 2, 3, side) + _conv(w // 2, w, 3, side)
    side //= 2
    inplanes = w
    for stage, blocks in enumerate(c.vision_layers):
        planes = w * 2**stage
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            total += _conv(inplanes, planes, 1, side) + _conv(planes, planes, 3, side)
            side //= stride
            total += _conv(planes, 4 * planes, 1, side)
            if stride > 1 or inplanes != 4 * planes:
                total += _conv(inplanes, 4 * planes, 1, side)
            inplanes = 4 * planes
    channels, tokens = 32 * w, (c.image_resolution // 32) ** 2 + 1
    queries = tokens if all_queries else 1  # our pool asks only the mean token's query
    total += 2 * queries * channels * channels + 2 * 2 * tokens * channels * channels  # q, then k and v
    total += 2 * 2 * queries * tokens * channels  # scores and weighted values, over all heads
    return total + 2 * queries * channels * c.embed_dim  # c_proj


TINY_VIT = CLIPConfig(embed_dim=24, image_resolution=32, vision_layers=3, vision_width=32, vision_patch_size=8,
                      vision_heads=4, context_length=12, vocab_size=50, transformer_width=48,
                      transformer_heads=3, transformer_layers=3, mlp_ratio=2.0)
TINY_RN = CLIPConfig(embed_dim=20, image_resolution=64, vision_layers=(2, 3, 1, 2), vision_width=16,
                     vision_patch_size=None, context_length=9, vocab_size=50, transformer_width=32,
                     transformer_heads=4, transformer_layers=2)


@pytest.mark.parametrize("direct", [False, True], ids=["extrapolated", "direct"])
def test_flops_equal_hand_formulas(direct):
    assert count_flops(TINY_VIT, "image", direct=direct) == _vit_image_flops(TINY_VIT)
    assert count_flops(TINY_VIT, "text", direct=direct) == _text_flops(TINY_VIT)
    assert count_flops(TINY_RN, "image", direct=direct) == _resnet_image_flops(TINY_RN)
    assert count_flops(TINY_RN, "text", direct=direct) == _text_flops(TINY_RN)


def test_flops_of_a_model_equal_those_of_its_config():
    model = CLIP(TINY_VIT)
    assert count_flops(model, "image") == count_flops(TINY_VIT, "image")
    assert count_flops("tiny", "text") == _text_flops(get_config("tiny"))


@pytest.mark.parametrize("name", OFFICIAL_MODELS)
def test_official_flops_match_hand_formulas_and_open_clip_profile(name):
    config = get_config(name)
    image, text = count_flops(name, "image"), count_flops(name, "text")
    assert text == _text_flops(config)
    if config.is_resnet:
        assert image == _resnet_image_flops(config)
        # open_clip (like OpenAI's code) computes the pool's attention for every token, then keeps one.
        reference_image = _resnet_image_flops(config, all_queries=True)
    else:
        assert image == _vit_image_flops(config)
        reference_image = image
    profile_image, profile_text = OPEN_CLIP_PROFILE[name]
    assert round(reference_image / 1e9, 2) == pytest.approx(profile_image, abs=0.011)
    assert round(text / 1e9, 2) == pytest.approx(profile_text, abs=0.011)


def test_parameter_towers_sum_to_total_for_a_live_model():
    model = CLIP(TINY_RN)
    image, text = count_parameters(model, "image"), count_parameters(model, "text")
    assert image == sum(p.numel() for p in model.visual.parameters())
    assert image + text + model.logit_scale.numel() == count_parameters(model) == model.num_parameters()
    assert count_parameters(TINY_RN) == count_parameters(model)


def test_model_table_rows():
    rows = model_table()
    assert [r.name for r in rows] == list(OFFICIAL_MODELS)
    for row in rows:
        assert isinstance(row, ModelSummary)
        assert row.params_total == OFFICIAL_PARAMETERS[row.name] == row.params_image + row.params_text + 1
        assert row.gflops_image == count_flops(row.name, "image") / 1e9
        assert (row.vision_patch_size is None) == (row.vision_type == "resnet")
        assert row.context_length == 77 and row.vocab_size == 49408
    rn50 = rows[0].to_dict()
    assert rn50["vision_layers"] == (3, 4, 6, 3) and rn50["vision_heads"] == 32 and rn50["image_tokens"] == 49
    table = format_model_table(rows)
    assert table.count("\n") == len(rows) + 1 and "| RN50x64 | ResNet | 1024 | 448 | 3-15-36-10 |" in table
    custom = model_summary(TINY_VIT)
    assert custom.name == "custom" and custom.params_total == count_parameters(TINY_VIT)
    assert model_summary(TINY_VIT, name="mine").name == "mine"


def test_stats_reject_bad_arguments():
    with pytest.raises(ValueError, match="tower"):
        count_flops("tiny", "audio")
    with pytest.raises(ValueError, match="tower"):
        count_parameters("tiny", "both")
    with pytest.raises(ValueError, match="model_or_config"):
        count_parameters("RN51")
    with pytest.raises(TypeError, match="model_or_config"):
        count_flops(3)
    with pytest.raises(TypeError, match="names"):
        model_table("RN50")
    with pytest.raises(ValueError, match="name_or_config"):
        model_summary("ViT-H/14")
