"""Hugging Face's format against an independent reference: ``transformers.CLIPModel``.

Nothing is downloaded: every Hugging Face model is built from a config with random weights.
Equivalence is measured on the model outputs (embeddings and logits, fp32, <= 1e-5 max abs), so a
wrong key, a missing transpose or a q/k/v mix-up fails the tests.
"""
from __future__ import annotations

import json

import pytest
import torch
from test_convert import CASES, RESNET, _inputs, _perturb_, _random_ours

from clip_tutorial.model import CLIP, CLIPConfig, get_config
from clip_tutorial.weights.hf import export_hf, from_hf, from_hf_state_dict, hf_config, to_hf, to_hf_state_dict

transformers = pytest.importorskip("transformers")


def _random_hf(config: CLIPConfig, seed: int, attn: str = "sdpa"):
    torch.manual_seed(seed)
    return _perturb_(transformers.CLIPModel._from_config(hf_config(config), attn_implementation=attn))


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
# Refusals
# --------------------------------------------------------------------------------------------------

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
    with pytest.raises(TypeError, match="config"):
        hf_config({"embed_dim": 4})
    with pytest.raises(TypeError, match="hf_model"):
        from_hf(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="eot_token_id=2"):
        hf_config(CASES["explicit_eot"].replace(eot_token_id=2))
