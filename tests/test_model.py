"""The model against references: torch's attention, OpenAI's layout and sizes, and Hugging Face's CLIPModel.

Every reference here is independent of the code under test: ``torch.nn.MultiheadAttention``, the key
set and parameter counts of OpenAI's released checkpoints, or a formula written out in the test.
The comparison with ``transformers.CLIPModel`` lives in ``test_hf.py``, beside the Hugging Face converters.
"""
from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from clip_tutorial.model import (
    CLIP,
    MAX_LOGIT_SCALE,
    CLIPConfig,
    LayerNorm,
    MultiheadAttention,
    QuickGELU,
    causal_mask,
    get_config,
    list_configs,
)

# A small config used by the tests that only need "some" model.
SMALL = CLIPConfig(
    embed_dim=24, image_resolution=16, vision_layers=2, vision_width=32, vision_patch_size=8, vision_heads=4,
    context_length=10, vocab_size=40, transformer_width=32, transformer_heads=4, transformer_layers=2,
)


def _small_model(seed: int = 0, config: CLIPConfig = SMALL) -> CLIP:
    torch.manual_seed(seed)
    model = CLIP(config).eval()
    # Perturb every bias and LayerNorm so that no parameter is trivially 0 or 1.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
            elif ("ln_" in name) and name.endswith("weight"):
                p.normal_(1.0, 0.2)
    return model


def _random_text(generator: torch.Generator, batch: int, vocab_size: int, context_length: int,
                 columns: int | None = None, eot_id: int | None = None,
                 lengths: list[int] | None = None) -> tuple[torch.Tensor, list[int]]:
    """Rows of ``[sot?, random ids..., eot, 0, 0, ...]`` with the end token the only highest id.

    Returns the ids and the position of the end token in each row.
    """
    columns = context_length if columns is None else columns
    eot = vocab_size - 1 if eot_id is None else eot_id
    text = torch.zeros(batch, columns, dtype=torch.long)
    positions = []
    for row in range(batch):
        n = lengths[row] if lengths is not None else int(torch.randint(1, columns + 1, (1,), generator=generator))
        body = torch.randint(1, vocab_size - 1, (n - 1,), generator=generator)  # never the highest id
        if eot_id is not None:
            body[body == eot] = 1
        text[row, : n - 1] = body
        text[row, n - 1] = eot
        positions.append(n - 1)
    return text, positions


# --------------------------------------------------------------------------------------------------
# Attention against torch.nn.MultiheadAttention
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("width,heads", [(8, 1), (32, 4), (48, 3), (64, 8), (96, 12)])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "causal"])
def test_attention_matches_torch_multihead_attention(width, heads, masked):
    torch.manual_seed(width * 100 + heads + masked)
    ours = MultiheadAttention(width, heads)
    ref = torch.nn.MultiheadAttention(width, heads, batch_first=True)
    with torch.no_grad():
        # Fresh random weights and biases everywhere (torch zero-initialises the biases).
        ref.in_proj_weight.normal_(0, width**-0.5)
        ref.in_proj_bias.normal_(0, 0.5)
        ref.out_proj.weight.normal_(0, width**-0.5)
        ref.out_proj.bias.normal_(0, 0.5)
        ours.in_proj_weight.copy_(ref.in_proj_weight)
        ours.in_proj_bias.copy_(ref.in_proj_bias)
        ours.out_proj.weight.copy_(ref.out_proj.weight)
        ours.out_proj.bias.copy_(ref.out_proj.bias)
    ref.eval()
    ours.eval()
    tokens = 7
    x = torch.randn(3, tokens, width)
    mask = causal_mask(tokens) if masked else None
    expected, _ = ref(x, x, x, attn_mask=mask, need_weights=False)
    got = ours(x, attn_mask=mask)
    assert got.shape == (3, tokens, width)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_causal_mask_is_minus_inf_strictly_above_the_diagonal():
    mask = causal_mask(5)
    for i in range(5):
        for j in range(5):
            if j > i:
                assert mask[i, j] == -math.inf
            else:
                assert mask[i, j] == 0.0


def test_causal_attention_does_not_look_ahead():
    torch.manual_seed(1)
    attn = MultiheadAttention(16, 2).eval()
    x = torch.randn(2, 6, 16)
    y = x.clone()
    y[:, 4:] = torch.randn(2, 2, 16)  # change the future of tokens 0..3
    mask = causal_mask(6)
    out_x, out_y = attn(x, attn_mask=mask), attn(y, attn_mask=mask)
    torch.testing.assert_close(out_x[:, :4], out_y[:, :4], atol=1e-6, rtol=0)
    assert (out_x[:, 4:] - out_y[:, 4:]).abs().max() > 1e-3


def test_boolean_mask_is_refused_or_honoured():
    # torch's convention for a boolean mask is True = "may not attend". Casting it to an additive
    # float mask (0.0 / 1.0) would silently drop the masking, so it must either raise or mask.
    torch.manual_seed(2)
    ours = MultiheadAttention(16, 2).eval()
    ref = torch.nn.MultiheadAttention(16, 2, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_bias.normal_(0, 0.5)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 5, 16)
    blocked = torch.ones(5, 5, dtype=torch.bool).triu(1)
    try:
        got = ours(x, attn_mask=blocked)
    except (TypeError, ValueError) as err:
        assert "attn_mask" in str(err)
        return
    expected, _ = ref(x, x, x, attn_mask=blocked, need_weights=False)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_attention_rejects_width_not_divisible_by_heads():
    with pytest.raises(ValueError, match="heads"):
        MultiheadAttention(10, 3)


# --------------------------------------------------------------------------------------------------
# OpenAI's layout and sizes
# --------------------------------------------------------------------------------------------------

_BLOCK_KEYS = (
    "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
    "ln_1.weight", "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
    "ln_2.weight", "ln_2.bias",
)


def _openai_vit_keys(vision_layers: int, text_layers: int) -> set[str]:
    """The keys of OpenAI's released ViT state dicts, minus the three scalar metadata entries."""
    keys = {
        "positional_embedding", "text_projection", "logit_scale",
        "visual.class_embedding", "visual.positional_embedding", "visual.proj", "visual.conv1.weight",
        "visual.ln_pre.weight", "visual.ln_pre.bias", "visual.ln_post.weight", "visual.ln_post.bias",
        "token_embedding.weight", "ln_final.weight", "ln_final.bias",
    }
    keys |= {f"visual.transformer.resblocks.{i}.{k}" for i in range(vision_layers) for k in _BLOCK_KEYS}
    keys |= {f"transformer.resblocks.{i}.{k}" for i in range(text_layers) for k in _BLOCK_KEYS}
    return keys


@functools.lru_cache(maxsize=None)
def _meta_model(name: str) -> CLIP:
    with torch.device("meta"):
        return CLIP(get_config(name))


def test_vit_b32_state_dict_keys_match_openai():
    state = _meta_model("ViT-B/32").state_dict()
    expected = _openai_vit_keys(12, 12)
    assert set(state) == expected, (
        f"missing {sorted(expected - set(state))[:10]}, unexpected {sorted(set(state) - expected)[:10]}"
    )


def test_vit_b32_shapes_match_openai():
    state = _meta_model("ViT-B/32").state_dict()
    expected_shapes = {
        "visual.positional_embedding": (50, 768),
        "visual.class_embedding": (768,),
        "visual.conv1.weight": (768, 3, 32, 32),
        "visual.proj": (768, 512),
        "visual.transformer.resblocks.0.attn.in_proj_weight": (3 * 768, 768),
        "visual.transformer.resblocks.11.mlp.c_fc.weight": (4 * 768, 768),
        "visual.transformer.resblocks.11.mlp.c_proj.weight": (768, 4 * 768),
        "text_projection": (512, 512),
        "positional_embedding": (77, 512),
        "token_embedding.weight": (49408, 512),
        "transformer.resblocks.0.attn.in_proj_weight": (3 * 512, 512),
        "transformer.resblocks.0.attn.out_proj.weight": (512, 512),
        "ln_final.weight": (512,),
        "logit_scale": (),
    }
    for key, shape in expected_shapes.items():
        assert tuple(state[key].shape) == shape, key


def test_vit_l14_336_shapes_match_openai():
    state = _meta_model("ViT-L/14@336").state_dict()
    assert set(state) == _openai_vit_keys(24, 12)
    assert tuple(state["visual.positional_embedding"].shape) == (577, 1024)
    assert tuple(state["visual.conv1.weight"].shape) == (1024, 3, 14, 14)
    assert tuple(state["visual.proj"].shape) == (1024, 768)
    assert tuple(state["text_projection"].shape) == (768, 768)


@pytest.mark.parametrize("name,count", [
    ("ViT-B/32", 151_277_313),
    ("ViT-B/16", 149_620_737),
    ("ViT-L/14", 427_616_513),
    ("ViT-L/14@336", 427_944_193),
])
def test_parameter_counts_match_official_figures(name, count):
    model = _meta_model(name)
    assert sum(p.numel() for p in model.parameters()) == count
    assert model.num_parameters() == count


def test_official_configs_use_openai_head_rule():
    # OpenAI's ViTs use width // 64 heads: 12 for width 768, 16 for width 1024.
    assert get_config("ViT-B/32").num_vision_heads == 12
    assert get_config("ViT-L/14").num_vision_heads == 16
    assert get_config("ViT-L/14@336").num_patches == 24 * 24


# --------------------------------------------------------------------------------------------------
# The building blocks
# --------------------------------------------------------------------------------------------------

def test_layernorm_bf16_is_fp32_layernorm_then_cast():
    torch.manual_seed(2)
    ln = LayerNorm(96)
    with torch.no_grad():
        ln.weight.normal_(1.0, 0.3)
        ln.bias.normal_(0.0, 0.3)
    x32 = torch.randn(4, 5, 96) * 3 + 1.5
    x = x32.to(torch.bfloat16)
    out = ln(x)
    assert out.dtype == torch.bfloat16
    reference = F.layer_norm(x.float(), (96,), ln.weight.detach(), ln.bias.detach(), 1e-5)
    # Within one bf16 rounding of the fp32 result (8 bits of mantissa: relative step 2**-8).
    err = (out.float() - reference).abs()
    assert bool((err <= reference.abs() * 2**-8 + 1e-6).all()), float(err.max())
    # And, as a pure cast of the fp32 result, exactly the bf16 rounding of it.
    assert torch.equal(out, reference.to(torch.bfloat16))


def test_layernorm_fp32_matches_torch_layer_norm():
    torch.manual_seed(3)
    ln, ref = LayerNorm(20), torch.nn.LayerNorm(20)
    with torch.no_grad():
        ref.weight.normal_(1.0, 0.3)
        ref.bias.normal_(0.0, 0.3)
    ln.load_state_dict(ref.state_dict())
    x = torch.randn(7, 20)
    torch.testing.assert_close(ln(x), ref(x), atol=1e-6, rtol=0)


def test_quick_gelu_formula():
    x = torch.linspace(-8, 8, 1001)
    expected = x * (1.0 / (1.0 + torch.exp(-1.702 * x)))
    torch.testing.assert_close(QuickGELU()(x), expected, atol=1e-6, rtol=0)
    # It approximates GELU (the largest gap is about 0.02).
    assert (QuickGELU()(x) - F.gelu(x)).abs().max() < 0.025


def test_quick_gelu_is_the_same_with_and_without_autograd():
    torch.manual_seed(5)
    x = torch.randn(64, 33) * 4
    before = x.clone()
    with torch.inference_mode():
        fast = QuickGELU()(x)  # the in-place path
    leaf = x.clone().requires_grad_(True)
    slow = QuickGELU()(leaf)
    assert torch.equal(fast, slow.detach()), "the two paths must agree bit for bit"
    assert torch.equal(x, before), "QuickGELU must not modify its input"
    slow.sum().backward()
    s = torch.sigmoid(1.702 * before)
    torch.testing.assert_close(leaf.grad, s + 1.702 * before * s * (1 - s), atol=1e-5, rtol=1e-5)


def test_mlp_activation_follows_config():
    assert isinstance(CLIP(SMALL).transformer.resblocks[0].mlp.gelu, QuickGELU)
    exact = CLIP(SMALL.replace(quick_gelu=False))
    assert isinstance(exact.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)
    assert isinstance(exact.visual.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)


def test_openai_text_initialisation():
    torch.manual_seed(4)
    width, layers = 256, 3
    model = CLIP(CLIPConfig(context_length=64, vocab_size=512, transformer_width=width, transformer_heads=4,
                            transformer_layers=layers))

    def close(t: torch.Tensor, std: float) -> None:
        assert abs(t.detach().std().item() - std) < 0.05 * std, (t.std().item(), std)
        assert abs(t.detach().mean().item()) < 0.05 * std

    block = model.transformer.resblocks[0]
    close(block.attn.in_proj_weight, width**-0.5)
    close(block.attn.out_proj.weight, width**-0.5 * (2 * layers) ** -0.5)
    close(block.mlp.c_fc.weight, (2 * width) ** -0.5)
    close(block.mlp.c_proj.weight, width**-0.5 * (2 * layers) ** -0.5)
    close(model.token_embedding.weight, 0.02)
    close(model.positional_embedding, 0.01)
    close(model.text_projection, width**-0.5)


# --------------------------------------------------------------------------------------------------
# Text pooling, batch independence
# --------------------------------------------------------------------------------------------------

def test_tokens_after_the_end_token_do_not_matter():
    model = _small_model(5)
    g = torch.Generator().manual_seed(5)
    text, positions = _random_text(g, 6, SMALL.vocab_size, SMALL.context_length,
                                   lengths=[2, 3, 5, 7, 9, 4])
    changed = text.clone()
    for row, pos in enumerate(positions):
        n = SMALL.context_length - pos - 1
        changed[row, pos + 1:] = torch.randint(0, SMALL.vocab_size - 1, (n,), generator=g)  # below the end id
    assert not torch.equal(changed, text)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(changed), model.encode_text(text), atol=1e-6, rtol=0)


def test_tokens_before_the_end_token_matter():
    model = _small_model(6)
    g = torch.Generator().manual_seed(6)
    text, positions = _random_text(g, 4, SMALL.vocab_size, SMALL.context_length, lengths=[3, 5, 8, 10])
    with torch.no_grad():
        base = model.encode_text(text)
        for row, pos in enumerate(positions):
            for j in range(pos):  # every position up to the end token influences the pooled feature
                changed = text.clone()
                changed[row, j] = (text[row, j] % (SMALL.vocab_size - 2)) + 1
                assert changed[row, j] != text[row, j]
                diff = (model.encode_text(changed)[row] - base[row]).abs().max()
                assert diff > 1e-4, (row, j)


def test_pooling_at_highest_id_matches_truncated_text():
    # Cutting each text right after its end token (the end is then the last token) changes nothing.
    model = _small_model(7)
    g = torch.Generator().manual_seed(7)
    text, positions = _random_text(g, 5, SMALL.vocab_size, SMALL.context_length, lengths=[1, 4, 6, 10, 2])
    with torch.no_grad():
        batch = model.encode_text(text)
        for row, pos in enumerate(positions):
            alone = model.encode_text(text[row: row + 1, : pos + 1])
            torch.testing.assert_close(batch[row: row + 1], alone, atol=1e-5, rtol=0)


def test_image_features_are_independent_of_the_batch():
    model = _small_model(8)
    images = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        batch = model.encode_image(images)
        for i in range(5):
            torch.testing.assert_close(batch[i: i + 1], model.encode_image(images[i: i + 1]), atol=1e-5, rtol=0)


def test_normalize_flag_gives_unit_vectors():
    model = _small_model(9)
    g = torch.Generator().manual_seed(9)
    images = torch.randn(3, 3, 16, 16, generator=g)
    text, _ = _random_text(g, 3, SMALL.vocab_size, SMALL.context_length)
    with torch.no_grad():
        for raw, unit in ((model.encode_image(images), model.encode_image(images, normalize=True)),
                          (model.encode_text(text), model.encode_text(text, normalize=True))):
            torch.testing.assert_close(unit.norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
            torch.testing.assert_close(unit, raw / raw.norm(dim=-1, keepdim=True), atol=1e-6, rtol=0)


def test_int32_text_and_float64_images_are_accepted():
    model = _small_model(14)
    g = torch.Generator().manual_seed(14)
    images = torch.randn(2, 3, 16, 16, generator=g)
    text, _ = _random_text(g, 3, SMALL.vocab_size, SMALL.context_length)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(text.int()), model.encode_text(text), atol=0, rtol=0)
        torch.testing.assert_close(model.encode_image(images.double()), model.encode_image(images), atol=0, rtol=0)


def test_bfloat16_model_runs_and_stays_close_to_float32():
    model = _small_model(15)
    g = torch.Generator().manual_seed(15)
    images = torch.randn(3, 3, 16, 16, generator=g)
    text, _ = _random_text(g, 3, SMALL.vocab_size, SMALL.context_length)
    half = _small_model(15).to(torch.bfloat16)
    assert half.dtype == torch.bfloat16
    with torch.no_grad():
        expected = model(images, text).logits_per_image
        got = half(images, text).logits_per_image
    assert got.dtype == torch.bfloat16
    # Logits are about +-14; bf16 keeps ~3 significant digits, a real bug moves them by whole units.
    torch.testing.assert_close(got.float(), expected, atol=0.25, rtol=0)


# --------------------------------------------------------------------------------------------------
# The logit scale and the forward pass
# --------------------------------------------------------------------------------------------------

def _by_hand(model: CLIP, images: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    img = model.encode_image(images)
    txt = model.encode_text(text)
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    return scale * img @ txt.t()


def test_initial_logit_scale_is_one_over_0_07():
    model = CLIP(SMALL)
    assert abs(model.logit_scale.exp().item() - 1 / 0.07) < 1e-5
    assert abs(model.logit_scale_value().item() - 1 / 0.07) < 1e-5


def test_forward_logits_are_scaled_cosines():
    model = _small_model(10)
    g = torch.Generator().manual_seed(10)
    images = torch.randn(3, 3, 16, 16, generator=g)
    text, _ = _random_text(g, 4, SMALL.vocab_size, SMALL.context_length)
    with torch.no_grad():
        out = model(images, text)
        expected = _by_hand(model, images, text, 1 / 0.07)
    assert out.logits_per_image.shape == (3, 4)
    torch.testing.assert_close(out.logits_per_image, expected, atol=1e-5, rtol=0)
    assert torch.equal(out.logits_per_text, out.logits_per_image.t())
    # A plain tuple too.
    logits_per_image, logits_per_text = out
    assert torch.equal(logits_per_image, out[0]) and torch.equal(logits_per_text, out[1])


def test_forward_does_not_clamp_the_logit_scale_as_in_openais_code():
    """OpenAI's forward multiplies by exp(logit_scale) as it is; only training clips the parameter."""
    model = _small_model(11)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    g = torch.Generator().manual_seed(11)
    images = torch.randn(3, 3, 16, 16, generator=g)
    text, _ = _random_text(g, 3, SMALL.vocab_size, SMALL.context_length)
    with torch.no_grad():
        out = model(images, text)
        expected = _by_hand(model, images, text, 1000.0)
    assert MAX_LOGIT_SCALE == 100.0
    assert abs(model.logit_scale_value().item() - 1000.0) < 1e-3
    torch.testing.assert_close(out.logits_per_image, expected, atol=1e-4, rtol=1e-5)
    assert out.logits_per_image.abs().max() > 100.0


def test_logit_scale_gets_a_gradient_below_the_clamp():
    model = _small_model(12)
    g = torch.Generator().manual_seed(12)
    images = torch.randn(2, 3, 16, 16, generator=g)
    text, _ = _random_text(g, 2, SMALL.vocab_size, SMALL.context_length)
    logits_per_image, _ = model(images, text)
    logits_per_image.sum().backward()
    assert model.logit_scale.grad is not None and model.logit_scale.grad.abs() > 0
    # d/ds of sum(exp(s) * cos) = exp(s) * sum(cos) = sum(logits).
    torch.testing.assert_close(model.logit_scale.grad, logits_per_image.detach().sum(), atol=1e-4, rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(13)
    return CLIP(SMALL).eval()


def test_channels_last_images_hint_at_permute(small_model):
    with pytest.raises(ValueError, match=r"images.*permute"):
        small_model.encode_image(torch.randn(2, 16, 16, 3))


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 3, 16, 8), (2, 1, 16, 16), (2, 4, 16, 16),
                                   (3, 16, 16), (1, 2, 3, 16, 16)])
def test_images_of_wrong_shape(small_model, shape):
    with pytest.raises(ValueError, match="images"):
        small_model.encode_image(torch.randn(*shape))


def test_uint8_images(small_model):
    with pytest.raises(TypeError, match="images"):
        small_model.encode_image(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))


def test_empty_image_batch(small_model):
    with pytest.raises(ValueError, match="images"):
        small_model.encode_image(torch.zeros(0, 3, 16, 16))


def test_images_not_a_tensor(small_model):
    with pytest.raises(TypeError, match="images"):
        small_model.encode_image([[0.0]])


@pytest.mark.parametrize("bad", [
    torch.tensor([[0, 5, 40]]),  # id == vocab_size
    torch.tensor([[0, -1, 39]]),  # negative id
    torch.zeros(2, SMALL.context_length + 1, dtype=torch.long),  # over-long
    torch.zeros(3, dtype=torch.long),  # 1-D
    torch.zeros(0, 4, dtype=torch.long),  # empty batch
    torch.zeros(2, 3, 4, dtype=torch.long),  # 3-D
], ids=["id_too_high", "negative_id", "too_long", "one_d", "empty", "three_d"])
def test_bad_text_values(small_model, bad):
    with pytest.raises(ValueError, match="text"):
        small_model.encode_text(bad)


def test_float_text(small_model):
    with pytest.raises(TypeError, match="text"):
        small_model.encode_text(torch.zeros(2, 4))


def test_text_not_a_tensor(small_model):
    with pytest.raises(TypeError, match="text"):
        small_model.encode_text([[1, 2, 3]])


def test_forward_checks_both_inputs(small_model):
    text = torch.tensor([[38, 5, 39]])
    with pytest.raises(ValueError, match="images"):
        small_model(torch.randn(1, 16, 16, 3), text)
    with pytest.raises(ValueError, match="text"):
        small_model(torch.randn(1, 3, 16, 16), text + 5)


@pytest.mark.parametrize("field", [
    "embed_dim", "image_resolution", "vision_layers", "vision_width", "vision_patch_size", "context_length",
    "vocab_size", "transformer_width", "transformer_heads", "transformer_layers",
])
@pytest.mark.parametrize("value, error", [(0, ValueError), (-8, ValueError), (1.5, TypeError), (True, TypeError),
                                          ("8", TypeError)])
def test_config_rejects_non_positive_int_fields(field, value, error):
    with pytest.raises(error, match=rf"^CLIPConfig\.{field}: expected a"):
        CLIPConfig(**{field: value})


def test_config_resolution_must_be_divisible_by_patch():
    with pytest.raises(ValueError, match="image_resolution"):
        CLIPConfig(image_resolution=30, vision_patch_size=8)


def test_config_width_must_be_divisible_by_heads():
    with pytest.raises(ValueError, match="vision_width"):
        CLIPConfig(vision_width=64, vision_heads=3)
    with pytest.raises(ValueError, match="transformer_width"):
        CLIPConfig(transformer_width=64, transformer_heads=3)


@pytest.mark.parametrize("value, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)])
def test_config_rejects_bad_vision_heads(value, error):
    # None means "width // 64"; anything else must be a positive int (0 used to divide by zero).
    with pytest.raises(error, match="vision_heads"):
        CLIPConfig(vision_width=64, vision_heads=value)


@pytest.mark.parametrize("value", [0, -1.0, "4"])
def test_config_rejects_bad_mlp_ratio(value):
    with pytest.raises((ValueError, TypeError), match="mlp_ratio"):
        CLIPConfig(mlp_ratio=value)


def test_config_eot_token_in_vocabulary():
    with pytest.raises(ValueError, match="eot_token_id"):
        CLIPConfig(vocab_size=10, eot_token_id=10)
    with pytest.raises(ValueError, match="eot_token_id"):
        CLIPConfig(vocab_size=10, eot_token_id=-1)


def test_get_config_unknown_name_lists_the_names():
    with pytest.raises(ValueError, match=r"name.*ViT-B/32") as info:
        get_config("nope")
    for name in list_configs():
        assert name in str(info.value)


def test_get_config_overrides_are_validated():
    assert get_config("tiny", embed_dim=32).embed_dim == 32
    with pytest.raises(ValueError, match="not_a_field"):
        get_config("tiny", not_a_field=1)
    with pytest.raises(ValueError, match="embed_dim"):
        get_config("tiny", embed_dim=0)


def test_config_dict_round_trip():
    config = SMALL.replace(mlp_ratio=2.0, quick_gelu=False, eot_token_id=3)
    assert CLIPConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="data"):
        CLIPConfig.from_dict({**config.to_dict(), "extra": 1})
    with pytest.raises(TypeError, match="data"):
        CLIPConfig.from_dict([("embed_dim", 4)])


def test_clip_requires_a_config():
    with pytest.raises(TypeError, match="config"):
        CLIP({"embed_dim": 64})


@pytest.mark.parametrize("scale", [255.0, -255.0])
def test_unnormalised_pixels_rejected(small_model, scale):
    # 0-255 pixels passed as floats would give a silently wrong embedding; the model says so instead.
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * scale
    with pytest.raises(ValueError, match=r"images: expected normalised pixels"):
        small_model.encode_image(images)


def test_normalised_pixels_accepted(small_model):
    from clip_tutorial.data import MEAN, STD

    pixels = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    normalised = (pixels - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    assert small_model.encode_image(normalised).shape == (2, small_model.config.embed_dim)


def test_pixels_that_require_grad_pass_the_range_check_quietly(small_model):
    # Optimising pixels against CLIP (Chapter 5.6) feeds inputs that require grad; the range check must
    # neither warn about converting them to Python numbers nor cut the gradient.
    import warnings

    pixels = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5)).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        features = small_model.encode_image(pixels)
    features.sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0


def test_encode_image_on_the_meta_device():
    # Counting FLOPs or shapes on the meta device must not trip over the pixel-range check.
    with torch.device("meta"):
        model = CLIP(get_config("ViT-B/32"))
        features = model.encode_image(torch.empty(2, 3, 224, 224))
    assert features.shape == (2, 512) and features.is_meta
