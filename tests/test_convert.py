"""The converters against independent references: ``transformers.CLIPModel`` and open_clip's towers.

Nothing is downloaded: every Hugging Face model is built from a config with random weights, and
open_clip's modules are loaded from the installed wheel by file path (``reference_impl``).
Equivalence is measured on the model outputs (embeddings and logits, fp32, <= 1e-5 max abs), so a
wrong key, a missing transpose or a q/k/v mix-up fails the tests.
"""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from reference_impl import open_clip_module
from test_model import _random_text

from clip_tutorial.weights.convert import (
    config_from_state_dict,
    export_hf,
    from_hf,
    from_hf_state_dict,
    from_openai_state_dict,
    hf_config,
    to_hf,
    to_hf_state_dict,
    to_openai_state_dict,
)
from clip_tutorial.model import CLIP, CLIPConfig, get_config, list_configs

transformers = pytest.importorskip("transformers")

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


def _random_hf(config: CLIPConfig, seed: int, attn: str = "sdpa"):
    torch.manual_seed(seed)
    return _perturb_(transformers.CLIPModel._from_config(hf_config(config), attn_implementation=attn))


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


def _pooled(output) -> torch.Tensor:
    """``get_*_features`` returns a tensor in transformers 4.x and an output object in 5.x."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _assert_same_outputs(ours: CLIP, hf, config: CLIPConfig, seed: int) -> None:
    for columns in (None, max(1, config.context_length - 3)):  # full context and shorter texts
        images, text = _inputs(config, seed, columns)
        mask = torch.ones_like(text)
        with torch.no_grad():
            expected = hf(input_ids=text, pixel_values=images, attention_mask=mask)
            image_features, text_features = ours.encode_image(images), ours.encode_text(text)
            logits_per_image, logits_per_text = ours(images, text)
            hf_image = _pooled(hf.get_image_features(pixel_values=images))
            hf_text = _pooled(hf.get_text_features(input_ids=text, attention_mask=mask))
        assert image_features.shape == (4, config.embed_dim) and text_features.shape == (5, config.embed_dim)
        torch.testing.assert_close(image_features, hf_image, atol=1e-5, rtol=0)
        torch.testing.assert_close(text_features, hf_text, atol=1e-5, rtol=0)
        assert logits_per_image.shape == (4, 5) and logits_per_text.shape == (5, 4)
        torch.testing.assert_close(logits_per_image, expected.logits_per_image, atol=1e-5, rtol=0)
        torch.testing.assert_close(logits_per_text, expected.logits_per_text, atol=1e-5, rtol=0)
        # The logit scale is really used: the logits are not bare cosines.
        assert logits_per_image.abs().max() > 1.5


# --------------------------------------------------------------------------------------------------
# Hugging Face, both directions
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CASES))
def test_hf_to_ours_computes_the_same(name):
    config = CASES[name]
    attn = "eager" if name in ("gelu_mlp2", "explicit_eot") else "sdpa"  # both of transformers' attentions
    hf = _random_hf(config, seed=len(name), attn=attn)
    assert hf.config._attn_implementation == attn
    ours = from_hf(hf)
    assert ours.config.replace(eot_token_id=config.eot_token_id) == config
    _assert_same_outputs(ours, hf, config, seed=1)


@pytest.mark.parametrize("name", sorted(CASES))
def test_ours_to_hf_computes_the_same(name):
    config = CASES[name]
    ours = _random_ours(config, seed=10 + len(name))
    hf = to_hf(ours)
    assert isinstance(hf, transformers.CLIPModel) and not hf.training
    assert hf.config.text_config.eos_token_id == (config.eot_token_id or config.vocab_size - 1)
    assert hf.config.text_config.hidden_act == ("quick_gelu" if config.quick_gelu else "gelu")
    _assert_same_outputs(ours, hf, config, seed=2)


@pytest.mark.parametrize("name", sorted(CASES))
def test_hf_state_dict_round_trip_is_exact(name):
    config = CASES[name]
    ours = _random_ours(config, seed=20)
    back = from_hf_state_dict(to_hf_state_dict(ours), config)
    for key, value in ours.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_hf_split_of_packed_attention_and_transposes():
    config = CASES["quick_gelu"]
    ours = _random_ours(config, seed=21)
    hf = to_hf_state_dict(ours)
    packed = ours.transformer.resblocks[1].attn.in_proj_weight
    w = config.transformer_width
    for i, n in enumerate("qkv"):
        assert torch.equal(hf[f"text_model.encoder.layers.1.self_attn.{n}_proj.weight"], packed[i * w:(i + 1) * w])
    assert torch.equal(hf["visual_projection.weight"], ours.visual.proj.t())
    assert torch.equal(hf["text_projection.weight"], ours.text_projection.t())
    assert torch.equal(hf["vision_model.pre_layrnorm.weight"], ours.visual.ln_pre.weight)
    assert set(hf) == set(transformers.CLIPModel(hf_config(config)).state_dict())


def test_from_hf_state_dict_ignores_position_ids_buffers():
    config = CASES["gelu_mlp2"]
    state = to_hf_state_dict(_random_ours(config, seed=22))
    state["text_model.embeddings.position_ids"] = torch.arange(config.context_length)[None]
    state["vision_model.embeddings.position_ids"] = torch.arange(config.num_patches + 1)[None]
    assert from_hf_state_dict(state, config).config == config


def test_export_hf_folder_loads_with_from_pretrained(tmp_path):
    config = CASES["patch4_gelu"]
    ours = _random_ours(config, seed=23)
    folder = export_hf(ours, tmp_path / "hf")
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert not list(folder.glob("*.bin"))  # safetensors, no pickle
    assert json.loads((folder / "config.json").read_text())["model_type"] == "clip"
    loaded = transformers.CLIPModel.from_pretrained(folder).eval()
    _assert_same_outputs(ours, loaded, config, seed=3)
    _assert_same_outputs(from_hf(loaded), loaded, config, seed=4)


def test_official_hf_config_sizes():
    hf = hf_config(get_config("ViT-B/32"))
    assert (hf.projection_dim, hf.vision_config.hidden_size, hf.vision_config.num_attention_heads) == (512, 768, 12)
    assert (hf.vision_config.patch_size, hf.vision_config.image_size, hf.text_config.hidden_size) == (32, 224, 512)
    assert hf.text_config.eos_token_id == 49407 and hf.text_config.max_position_embeddings == 77
    assert hf.text_config.intermediate_size == 2048 and hf.vision_config.intermediate_size == 3072
    with torch.device("meta"):
        hf_model = transformers.CLIPModel(hf)
    assert sum(p.numel() for p in hf_model.parameters()) == 151_277_313


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
    config = config_from_state_dict(state, transformer_heads=6, quick_gelu=False)
    assert config == CASES["gelu_mlp2"]


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


def test_hf_state_dict_with_wrong_keys_is_rejected():
    config = CASES["explicit_eot"]
    state = to_hf_state_dict(_random_ours(config, seed=42))
    del state["text_model.encoder.layers.0.self_attn.k_proj.weight"]
    state["text_model.encoder.layers.0.self_attn.qkv.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys: text_model.*k_proj.weight.*unexpected keys: .*qkv.weight"):
        from_hf_state_dict(state, config)


def test_resnet_has_no_hugging_face_counterpart(tmp_path):
    model = _random_ours(RESNET, seed=43)
    for convert in (lambda: hf_config(RESNET), lambda: to_hf(model), lambda: to_hf_state_dict(model),
                    lambda: export_hf(model, tmp_path), lambda: from_hf_state_dict({}, RESNET)):
        with pytest.raises(ValueError, match="ResNet"):
            convert()


def test_bad_arguments():
    with pytest.raises(TypeError, match="model"):
        to_openai_state_dict(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="config"):
        hf_config({"embed_dim": 4})
    with pytest.raises(TypeError, match="hf_model"):
        from_hf(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="eot_token_id=2"):
        hf_config(CASES["explicit_eot"].replace(eot_token_id=2))
