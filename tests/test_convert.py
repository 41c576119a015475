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
import warnings

import pytest
import torch
from reference_impl import open_clip_module
from test_model import _random_text

from clip_tutorial.weights.convert import (
    OPEN_CLIP_ARCHITECTURES,
    config_facts,
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
