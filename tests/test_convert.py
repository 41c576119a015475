"""OpenAI's format against an independent reference: open_clip's own image and text towers.

Nothing is downloaded: every model has random weights, and open_clip's modules are loaded from
the installed wheel by file path (``reference_impl``). Equivalence is measured on the model
outputs (embeddings and logits, fp32, <= 1e-5 max abs), so a wrong key or a wrong size fails the
tests. The random models here (``CASES``, ``RESNET``, ``_random_ours``) are shared by
``test_architecture.py`` and ``test_hf.py``.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from reference_impl import open_clip_module
from test_model import _random_text

from clip_tutorial.model import CLIP, CLIPConfig
from clip_tutorial.weights.architecture import config_from_state_dict
from clip_tutorial.weights.convert import from_openai_state_dict, to_openai_state_dict


# No projection is square (embed_dim differs from both widths); depths, heads, patches, activations vary.
CASES = {
    "quick_gelu": CLIPConfig(
        embed_dim=24, image_resolution=32, vision_layers=2, vision_width=48, vision_patch_size=8, vision_heads=3,
        context_length=12, vocab_size=50, transformer_width=32, transformer_heads=4, transformer_layers=2,
        quick_gelu=True,
    ),
    "gelu_mlp2": CLIPConfig(
        embed_dim=40, image_resolution=28, vision_layers=1, vision_width=64, vision_patch_size=7, vision_heads=None,
        context_length=9, vocab_size=37, transformer_width=48, transformer_heads=6, transformer_layers=3,
        mlp_ratio=2.0, quick_gelu=False,
    ),
    "explicit_eot": CLIPConfig(
        embed_dim=16, image_resolution=24, vision_layers=3, vision_width=32, vision_patch_size=12, vision_heads=2,
        context_length=8, vocab_size=30, transformer_width=40, transformer_heads=5, transformer_layers=1,
        quick_gelu=True, eot_token_id=3,
    ),
    "patch4_gelu": CLIPConfig(
        embed_dim=20, image_resolution=20, vision_layers=2, vision_width=24, vision_patch_size=4, vision_heads=2,
        context_length=11, vocab_size=45, transformer_width=28, transformer_heads=7, transformer_layers=2,
        quick_gelu=False, eot_token_id=44,
    ),
}
# A small ResNet CLIP (four stages, 32x total stride): OpenAI format only.
RESNET = CLIPConfig(embed_dim=24, image_resolution=32, vision_layers=(1, 2, 1, 1), vision_width=8,
                    vision_patch_size=None, vision_heads=4, context_length=10, vocab_size=40,
                    transformer_width=32, transformer_heads=4, transformer_layers=2)
LOGIT_SCALE = math.log(1 / 0.07) + 0.37  # below the clamp and not the default


def _perturb_(model: torch.nn.Module) -> torch.nn.Module:
    """Random biases and norm gains, and a non-default logit scale, so nothing is trivially 0 or 1."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
            elif any(n in name for n in ("norm", "layrnorm", "ln_", "bn")) and name.endswith("weight"):
                p.normal_(1.0, 0.2)
        model.logit_scale.fill_(LOGIT_SCALE)
    return model.eval()


def _random_ours(config: CLIPConfig, seed: int) -> CLIP:
    torch.manual_seed(seed)
    return _perturb_(CLIP(config))


def _inputs(config: CLIPConfig, seed: int, columns: int | None = None):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(4, 3, config.image_resolution, config.image_resolution, generator=g)
    columns = config.context_length if columns is None else columns
    lengths = [columns, 1, max(1, columns // 2), max(1, columns - 2), 2]
    text, positions = _random_text(g, 5, config.vocab_size, config.context_length, columns=columns,
                                   eot_id=config.eot_token_id, lengths=lengths)
    if config.eot_token_id is not None:
        # Ids above the end token after it: only pooling at the right id finds the right position.
        for row, pos in enumerate(positions):
            text[row, pos + 1:] = config.vocab_size - 1
    return images, text


# --------------------------------------------------------------------------------------------------
# OpenAI / open_clip format
# --------------------------------------------------------------------------------------------------

def _open_clip_towers(config: CLIPConfig):
    """open_clip's own image and text towers with the config's sizes (QuickGELU, argmax pooling)."""
    oc = open_clip_module("transformer")
    act = oc.QuickGELU if config.quick_gelu else torch.nn.GELU
    if config.is_resnet:
        visual = open_clip_module("modified_resnet").ModifiedResNet(
            config.vision_layers, config.embed_dim, config.num_vision_heads, config.image_resolution,
            config.vision_width)
    else:
        visual = oc.VisionTransformer(config.image_resolution, config.vision_patch_size, config.vision_width,
                                      config.vision_layers, config.num_vision_heads, config.mlp_ratio,
                                      output_dim=config.embed_dim, act_layer=act)
    text = oc.TextTransformer(config.context_length, config.vocab_size, config.transformer_width,
                              config.transformer_heads, config.transformer_layers, config.mlp_ratio,
                              output_dim=config.embed_dim, act_layer=act)
    return visual.eval(), text.eval()


@pytest.mark.parametrize("config", [CASES["quick_gelu"], CASES["gelu_mlp2"], RESNET], ids=["vit", "vit_gelu", "resnet"])
def test_openai_state_dict_loads_into_open_clip_and_back(config):
    ours = _random_ours(config, seed=30)
    state = to_openai_state_dict(ours)
    visual, text = _open_clip_towers(config)
    visual.load_state_dict({k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")})
    text.load_state_dict({k: v for k, v in state.items() if not k.startswith("visual.") and k != "logit_scale"})
    images, tokens = _inputs(config, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_image(images), visual(images), atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.encode_text(tokens), text(tokens), atol=1e-5, rtol=0)
    # And back: OpenAI's file layout (module. prefix, metadata scalars, fp16) loads into the same model.
    openai_file = {f"module.{k}": v.half() if v.is_floating_point() else v for k, v in state.items()}
    openai_file.update(input_resolution=torch.tensor(config.image_resolution),
                       context_length=torch.tensor(config.context_length), vocab_size=torch.tensor(config.vocab_size))
    heads = dict(transformer_heads=config.transformer_heads, vision_heads=config.vision_heads,
                 quick_gelu=config.quick_gelu)
    back = from_openai_state_dict(openai_file, config_from_state_dict(openai_file, **heads))
    assert back.config == config and back.dtype == torch.float32 and not back.training
    with torch.no_grad():
        torch.testing.assert_close(back(images, tokens).logits_per_image,
                                   copy.deepcopy(ours).half().float()(images, tokens).logits_per_image, atol=1e-5, rtol=0)


def test_openai_round_trip_is_exact():
    for config in (CASES["explicit_eot"], RESNET):
        ours = _random_ours(config, seed=31)
        back = from_openai_state_dict(to_openai_state_dict(ours), config)
        for key, value in ours.state_dict().items():
            assert torch.equal(back.state_dict()[key], value), key


# --------------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------------

def test_wrong_state_dict_lists_missing_unexpected_and_shapes():
    config = CASES["quick_gelu"]
    state = to_openai_state_dict(_random_ours(config, seed=40))
    del state["ln_final.bias"], state["visual.transformer.resblocks.1.mlp.c_fc.weight"]
    state["visual.head.weight"] = torch.zeros(3)
    state["text_projection"] = torch.zeros(config.transformer_width, config.embed_dim + 1)
    with pytest.raises(ValueError) as info:
        from_openai_state_dict(state, config)
    message = str(info.value)
    for fragment in ("state_dict", "2 missing keys", "ln_final.bias", "visual.transformer.resblocks.1.mlp.c_fc.weight",
                     "1 unexpected keys: visual.head.weight", "1 shape mismatches", "text_projection (expected (32, 24), got (32, 25))"):
        assert fragment in message, (fragment, message)


def test_partial_state_dict_message_is_capped_with_a_count():
    config = CASES["quick_gelu"]
    state = {k: v for k, v in to_openai_state_dict(_random_ours(config, seed=41)).items()
             if not k.startswith("transformer.resblocks.1.")}
    with pytest.raises(ValueError, match=r"12 missing keys: .*\(2 more\)"):
        from_openai_state_dict(state, config)


def test_state_dict_without_sizes_cannot_be_inferred():
    with pytest.raises(ValueError, match="missing keys.*text_projection"):
        from_openai_state_dict({"visual.proj": torch.zeros(2, 2)})
    with pytest.raises(TypeError, match="state_dict"):
        from_openai_state_dict([("visual.proj", torch.zeros(2, 2))])


def test_bad_arguments():
    with pytest.raises(TypeError, match="model"):
        to_openai_state_dict(torch.nn.Linear(2, 2))
