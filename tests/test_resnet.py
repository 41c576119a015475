"""The ResNet image tower against open_clip's ``ModifiedResNet`` (OpenAI's code), with the same weights.

open_clip's modules are loaded from the installed wheel by file path (see ``reference_impl``); they
are an independent implementation of OpenAI's layout. Every comparison copies one state dict into
the other with ``strict=True`` (so the key sets must be equal), randomises BatchNorm statistics and
affine parameters first (a fresh BN is the identity and ``bn3.weight`` starts at zero, which would
hide bugs), and runs both in eval mode in float32.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from reference_impl import open_clip_module

from clip_tutorial.weights.checkpoints import load_checkpoint, save_checkpoint
from clip_tutorial.model import CLIP, AttentionPool2d, Bottleneck, CLIPConfig, ModifiedResNet

TOL = 1e-5


@pytest.fixture(scope="module")
def ref():
    return open_clip_module("modified_resnet")


def _randomise_(module: torch.nn.Module, seed: int) -> None:
    """Give every BN non-trivial statistics and affine parameters, and every bias a non-zero value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 1.5 + 0.5)
            elif name.endswith("running_mean") or name.endswith("bias"):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)
            elif ".bn" in f".{name}" or "downsample.1" in name:  # BN weights (bn3 starts at zero)
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.8 + 0.6)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max())


RESNETS = [  # (layers, width, heads, output_dim, resolution)
    ((1, 1, 1, 1), 16, 4, 12, 64),
    ((2, 1, 3, 1), 32, 8, 20, 96),
    ((1, 2, 1, 2), 24, 12, 16, 32),
    ((3, 1, 1, 1), 16, 1, 8, 128),
    ((1, 1, 2, 1), 8, 2, 40, 64),
]


@pytest.mark.parametrize("layers,width,heads,output_dim,resolution", RESNETS)
def test_modified_resnet_matches_open_clip(ref, layers, width, heads, output_dim, resolution):
    torch.manual_seed(sum(layers) * 1000 + width)
    ours = ModifiedResNet(layers, output_dim, heads, input_resolution=resolution, width=width).eval()
    theirs = ref.ModifiedResNet(list(layers), output_dim, heads, image_size=resolution, width=width).eval()
    _randomise_(ours, seed=width + resolution)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(3, 3, resolution, resolution)
    with torch.no_grad():
        expected = theirs(x.clone())
        got = ours(x.clone())
    assert got.shape == (3, output_dim)
    assert expected.abs().max() > 0.1, "the comparison must not be trivial"
    assert _max_diff(got, expected) <= TOL


@pytest.mark.parametrize("spacial,embed,heads,output_dim", [(2, 16, 4, 8), (3, 32, 8, None), (7, 64, 1, 24), (1, 12, 3, 5)])
def test_attention_pool_matches_open_clip(ref, spacial, embed, heads, output_dim):
    torch.manual_seed(spacial * 100 + embed)
    ours = AttentionPool2d(spacial, embed, heads, output_dim)
    theirs = ref.AttentionPool2d(spacial, embed, heads, output_dim)
    _randomise_(ours, seed=embed)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(4, embed, spacial, spacial)
    with torch.no_grad():
        assert _max_diff(ours(x), theirs(x)) <= TOL


@pytest.mark.parametrize("inplanes,planes,stride", [(16, 4, 1), (8, 4, 2), (16, 8, 2), (12, 3, 1), (20, 5, 3)])
def test_bottleneck_matches_open_clip(ref, inplanes, planes, stride):
    torch.manual_seed(inplanes + planes + stride)
    ours = Bottleneck(inplanes, planes, stride).eval()
    theirs = ref.Bottleneck(inplanes, planes, stride).eval()
    _randomise_(ours, seed=inplanes)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, inplanes, 12, 12)
    with torch.no_grad():
        got, expected = ours(x.clone()), theirs(x.clone())
    assert got.shape == (2, planes * 4, 12 // stride, 12 // stride)
    assert _max_diff(got, expected) <= TOL
    assert (ours.downsample is None) == (stride == 1 and inplanes == planes * 4)


def test_resnet_in_training_mode_matches_open_clip(ref):
    # Training mode uses batch statistics and updates the running ones: both must agree too.
    torch.manual_seed(3)
    ours = ModifiedResNet((1, 2, 1, 1), 16, 4, input_resolution=64, width=16).train()
    theirs = ref.ModifiedResNet([1, 2, 1, 1], 16, 4, image_size=64, width=16).train()
    _randomise_(ours, seed=3)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(4, 3, 64, 64)
    got, expected = ours(x.clone()), theirs(x.clone())
    assert _max_diff(got, expected) <= TOL
    got.sum().backward()
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=TOL), name


def test_clip_resnet_state_dict_keys_follow_openai(ref):
    config = CLIPConfig(embed_dim=16, image_resolution=64, vision_layers=(1, 2, 1, 1), vision_width=16,
                        vision_patch_size=None, context_length=8, vocab_size=30, transformer_width=32,
                        transformer_heads=4, transformer_layers=1)
    model = CLIP(config)
    visual = ref.ModifiedResNet([1, 2, 1, 1], 16, config.num_vision_heads, image_size=64, width=16)
    keys = set(model.state_dict())
    assert {k for k in keys if k.startswith("visual.")} == {f"visual.{k}" for k in visual.state_dict()}
    # A few keys as they appear in OpenAI's released RN checkpoints.
    for key in ("visual.conv1.weight", "visual.bn3.running_var", "visual.layer1.0.downsample.0.weight",
                "visual.layer1.0.downsample.1.running_mean", "visual.layer2.1.bn3.weight",
                "visual.attnpool.positional_embedding", "visual.attnpool.c_proj.bias"):
        assert key in keys, key
    assert model.state_dict()["visual.attnpool.positional_embedding"].shape == (2 * 2 + 1, 16 * 32)
    assert model.visual.attnpool.c_proj.out_features == config.embed_dim


def test_openai_initialisation():
    torch.manual_seed(0)
    model = ModifiedResNet((2, 1, 1, 2), output_dim=64, heads=8, input_resolution=64, width=32)
    blocks = [b for stage in (model.layer1, model.layer2, model.layer3, model.layer4) for b in stage]
    assert len(blocks) == 6 and all(torch.count_nonzero(b.bn3.weight) == 0 for b in blocks)
    assert torch.all(model.bn3.weight == 1), "the stem's bn3 is not a residual branch and keeps weight 1"
    std = 1024**-0.5  # in_features of the projections is width * 32
    for name in ("q_proj", "k_proj", "v_proj", "c_proj"):
        weight = getattr(model.attnpool, name).weight.detach()
        assert abs(float(weight.std()) / std - 1) < 0.03, name  # 65k+ samples: a 3% band is > 7 sigma
        assert abs(float(weight.mean())) < 5 * std / math.sqrt(weight.numel())
    # Zeroed bn3 makes a block without a downsample the identity on non-negative inputs.
    block = model.layer1[1].eval()
    x = torch.rand(2, 128, 8, 8)
    with torch.no_grad():
        assert torch.equal(block(x), x)
    # init_openai_ re-draws the projections and re-zeroes bn3.
    with torch.no_grad():
        blocks[0].bn3.weight.fill_(1.0)
    before = model.attnpool.q_proj.weight.clone()
    model.init_openai_()
    assert torch.count_nonzero(blocks[0].bn3.weight) == 0
    assert not torch.equal(before, model.attnpool.q_proj.weight)


SMALL_RN = CLIPConfig(embed_dim=24, image_resolution=64, vision_layers=(1, 1, 2, 1), vision_width=16,
                      vision_patch_size=None, context_length=10, vocab_size=40, transformer_width=32,
                      transformer_heads=4, transformer_layers=2)


def test_clip_with_resnet_encodes_images_and_text(ref):
    torch.manual_seed(0)
    model = CLIP(SMALL_RN).eval()
    assert isinstance(model.visual, ModifiedResNet) and model.config.is_resnet
    assert SMALL_RN.num_vision_heads == 16 * 32 // 64
    _randomise_(model.visual, seed=1)
    images = torch.randn(3, 3, 64, 64)
    text = torch.randint(1, 39, (2, 10))
    text[:, -1] = 39
    with torch.no_grad():
        image_features = model.encode_image(images)
        text_features = model.encode_text(text, normalize=True)
        logits_per_image, logits_per_text = model(images, text)
        reference = ref.ModifiedResNet([1, 1, 2, 1], 24, 8, image_size=64, width=16).eval()
        reference.load_state_dict(model.visual.state_dict(), strict=True)
        expected = reference(images)
    assert image_features.shape == (3, 24) and text_features.shape == (2, 24)
    assert _max_diff(image_features, expected) <= TOL
    assert logits_per_image.shape == (3, 2) and torch.equal(logits_per_text, logits_per_image.t())
    scale = model.logit_scale_value()
    assert torch.allclose(logits_per_image, scale * torch.nn.functional.normalize(expected, dim=-1) @ text_features.t(),
                          atol=1e-4)
    # Training mode: one backward pass reaches every parameter of both towers.
    model.train()
    loss = model(images, text).logits_per_image.logsumexp(-1).mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    with pytest.raises(ValueError, match="images"):
        model.encode_image(torch.randn(1, 3, 32, 32))


def test_resnet_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    model = CLIP(SMALL_RN).eval()
    _randomise_(model.visual, seed=2)
    save_checkpoint(model, tmp_path / "rn")
    stored = json.loads((tmp_path / "rn.json").read_text())["config"]
    assert stored["vision_layers"] == [1, 1, 2, 1] and stored["vision_patch_size"] is None
    loaded = load_checkpoint(tmp_path / "rn", config=SMALL_RN)
    assert loaded.config == SMALL_RN and loaded.config.vision_layers == (1, 1, 2, 1)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.model.encode_image(images), model.encode_image(images))


@pytest.mark.parametrize("kwargs,error,argument", [
    (dict(layers=(1, 1, 1)), ValueError, "layers"),
    (dict(layers=(1, 0, 1, 1)), ValueError, r"layers\[1\]"),
    (dict(layers="1111"), TypeError, "layers"),
    (dict(input_resolution=48), ValueError, "input_resolution"),
    (dict(width=15), ValueError, "width"),
    (dict(heads=3), ValueError, "num_heads"),
    (dict(output_dim=0), ValueError, "output_dim"),
])
def test_modified_resnet_rejects_bad_arguments(kwargs, error, argument):
    args = dict(layers=(1, 1, 1, 1), output_dim=8, heads=4, input_resolution=64, width=16) | kwargs
    with pytest.raises(error, match=argument):
        ModifiedResNet(**args)


def test_attention_pool_rejects_wrong_feature_map():
    pool = AttentionPool2d(2, 16, 4)
    with pytest.raises(ValueError, match="2x2 feature map, got 3x3"):
        pool(torch.randn(1, 16, 3, 3))
    with pytest.raises(ValueError, match="num_heads"):
        AttentionPool2d(2, 16, 5)
    with pytest.raises(ValueError, match="stride"):
        Bottleneck(8, 2, stride=0)


@pytest.mark.parametrize("changes,error,field", [
    (dict(vision_layers=(1, 1, 1)), ValueError, "vision_layers"),
    (dict(vision_layers=(1, 1, 1, 0)), ValueError, r"vision_layers\[3\]"),
    (dict(vision_layers=(1, 1, 1.5, 1)), TypeError, r"vision_layers\[2\]"),
    (dict(vision_layers=(1, True, 1, 1)), TypeError, r"vision_layers\[1\]"),
    (dict(image_resolution=48), ValueError, "image_resolution"),
    (dict(vision_width=15), ValueError, "vision_width"),
    (dict(vision_heads=7), ValueError, "vision_width"),
    (dict(vision_patch_size=0), ValueError, "vision_patch_size"),
])
def test_resnet_config_rejects_bad_values(changes, error, field):
    with pytest.raises(error, match=field):
        SMALL_RN.replace(**changes)


def test_config_conventions():
    assert SMALL_RN.is_resnet and SMALL_RN.vision_type == "resnet" and SMALL_RN.num_patches == 4
    assert CLIPConfig(vision_layers=[1, 2, 3, 4], image_resolution=64).vision_layers == (1, 2, 3, 4)
    vit = CLIPConfig()
    assert not vit.is_resnet and vit.vision_type == "vit"
    with pytest.raises(TypeError, match=r"vision_patch_size: expected a positive int \(None only for a ResNet\)"):
        CLIPConfig(vision_patch_size=None)
    assert CLIPConfig.from_dict(json.loads(json.dumps(SMALL_RN.to_dict()))) == SMALL_RN
