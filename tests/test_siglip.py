"""SigLIP (Chapter 7.1): the sigmoid loss, its gradient, the logit bias and the "siglip" training loop."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clip_tutorial.model import CLIP, CLIPConfig
from clip_tutorial.objectives.loss import clip_loss, siglip_loss, siglip_loss_gradient
from clip_tutorial.train.config import TrainConfig, param_groups
from clip_tutorial.train.loop import train_clip
from clip_tutorial.weights.checkpoints import load_checkpoint, save_checkpoint
from reference_impl import open_clip_module

SIGLIP = dict(init_logit_scale=math.log(10), init_logit_bias=-10.0)
#: A model small enough to train a few steps in well under a second.
SMALL = CLIPConfig(embed_dim=16, image_resolution=16, vision_layers=1, vision_width=32, vision_patch_size=8,
                   context_length=8, vocab_size=32, transformer_width=32, transformer_heads=2, transformer_layers=1)


def _features(n: int, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=-1),
            F.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=-1))


def _brute_force(logits: torch.Tensor) -> float:
    """The paper's formula written as a double loop over pairs, in Python floats."""
    n = logits.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            label = 1.0 if i == j else -1.0
            total += math.log(1 + math.exp(-label * float(logits[i, j])))  # -log sigmoid(label * z)
    return total / n


@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_siglip_loss_matches_the_double_loop(n: int) -> None:
    images, texts = _features(n, seed=n)
    logits = 10 * images @ texts.t() - 10
    assert siglip_loss(logits).item() == pytest.approx(_brute_force(logits), rel=1e-12)


def test_siglip_loss_matches_open_clip() -> None:
    reference = open_clip_module("loss").SigLipLoss()
    images, texts = _features(12, seed=3)
    scale, bias = torch.tensor(7.5, dtype=torch.float64), torch.tensor(-4.0, dtype=torch.float64)
    expected = reference(images, texts, scale, bias)
    torch.testing.assert_close(siglip_loss(scale * images @ texts.t() + bias), expected, rtol=1e-12, atol=0)


def test_siglip_loss_at_initialisation_and_limits() -> None:
    # All cosines 0 at init: every logit is b = -10. N positives cost softplus(10) each, N(N-1)
    # negatives softplus(-10) each, the sum divided by N.
    n = 4
    logits = torch.full((n, n), -10.0, dtype=torch.float64)
    expected = (n * math.log1p(math.exp(10)) + n * (n - 1) * math.log1p(math.exp(-10))) / n
    assert siglip_loss(logits).item() == pytest.approx(expected, rel=1e-12)
    perfect = torch.where(torch.eye(n, dtype=torch.bool), 50.0, -50.0).double()
    assert siglip_loss(perfect).item() < 1e-20  # every pair confidently right: the loss vanishes
    assert siglip_loss(-perfect).item() == pytest.approx(50.0 * n, rel=1e-12)  # all wrong: n * 50 per row / n


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_siglip_gradient_matches_autograd(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(7, 7, generator=generator, dtype=torch.float64) * 5).requires_grad_(True)
    siglip_loss(logits).backward()
    torch.testing.assert_close(siglip_loss_gradient(logits.detach()), logits.grad, rtol=1e-12, atol=1e-15)


def test_siglip_gradient_is_entrywise_unlike_clip() -> None:
    # Changing one off-diagonal logit changes only that entry of SigLIP's gradient; CLIP's softmax
    # couples it to its whole row and column.
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(5, 5, generator=generator, dtype=torch.float64)
    moved = logits.clone()
    moved[1, 3] += 2.0
    siglip_changed = (siglip_loss_gradient(moved) != siglip_loss_gradient(logits)).nonzero().tolist()
    assert siglip_changed == [[1, 3]]
    from clip_tutorial.objectives.loss import clip_loss_gradient
    assert (clip_loss_gradient(moved) != clip_loss_gradient(logits)).sum() > 1


@pytest.mark.parametrize("bad, error", [(torch.ones(3, 4), ValueError), (torch.ones(3, 3, dtype=torch.long), TypeError),
                                        (torch.ones(0, 0), ValueError), ("logits", TypeError)])
def test_siglip_bad_input(bad: object, error: type) -> None:
    for function in (siglip_loss, siglip_loss_gradient):
        with pytest.raises(error, match="logits"):
            function(bad)


# ---------------------------------------------------------------- the model's logit bias
def test_default_config_has_no_bias_and_clip_initial_scale() -> None:
    model = CLIP(CLIPConfig())
    assert model.logit_bias is None and "logit_bias" not in model.state_dict()
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert CLIPConfig().init_logit_scale is None and CLIPConfig().init_logit_bias is None


def test_siglip_initialisation_and_forward_adds_the_bias() -> None:
    torch.manual_seed(0)
    model = CLIP(CLIPConfig(**SIGLIP)).eval()
    assert model.logit_scale_value().item() == pytest.approx(10.0)
    assert model.logit_bias.item() == -10.0 and isinstance(model.logit_bias, torch.nn.Parameter)
    images, tokens = torch.randn(3, 3, 32, 32), torch.randint(1, 100, (3, 16))
    with torch.no_grad():
        logits, transposed = model(images, tokens)
        cosines = model.encode_image(images, normalize=True) @ model.encode_text(tokens, normalize=True).t()
    torch.testing.assert_close(logits, 10 * cosines - 10)
    torch.testing.assert_close(transposed, logits.t())
    assert any(p is model.logit_bias for group in param_groups(model, 0.1) if group["weight_decay"] == 0
               for p in group["params"]), "the bias is trained without weight decay, like the scale"


def test_config_with_bias_round_trips(tmp_path) -> None:
    config = CLIPConfig(**SIGLIP)
    assert CLIPConfig.from_dict(config.to_dict()) == config
    legacy = {k: v for k, v in CLIPConfig().to_dict().items() if not k.startswith("init_logit")}
    assert CLIPConfig.from_dict(legacy) == CLIPConfig(), "dicts written before the fields existed still load"
    torch.manual_seed(1)
    model = CLIP(config)
    with torch.no_grad():
        model.logit_bias.fill_(-3.25)
    save_checkpoint(model, tmp_path / "siglip")
    loaded = load_checkpoint(tmp_path / "siglip").model
    assert loaded.config == config and loaded.logit_bias.item() == -3.25


@pytest.mark.parametrize("field, value, error", [("init_logit_bias", "x", TypeError),
                                                 ("init_logit_bias", math.nan, ValueError),
                                                 ("init_logit_scale", math.inf, ValueError)])
def test_config_rejects_bad_initial_values(field: str, value: object, error: type) -> None:
    with pytest.raises(error, match=f"CLIPConfig.{field}"):
        CLIPConfig(**{field: value})


# ---------------------------------------------------------------- training with loss="siglip"
def _data(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=generator), torch.randint(1, 32, (n, 8), generator=generator)


def test_siglip_training_matches_a_hand_written_step() -> None:
    images, tokens = _data(8)
    config = TrainConfig(steps=1, batch_size=8, warmup_steps=0, lr=1e-3, loss="siglip")
    torch.manual_seed(2)
    model = CLIP(SMALL.replace(**SIGLIP))
    reference = CLIP(SMALL.replace(**SIGLIP))
    reference.load_state_dict(model.state_dict())
    history = train_clip(model, images, tokens, config, progress=False)
    # by hand: the same batch order, SigLIP's loss, clipping and one AdamW step
    index = torch.randperm(8, generator=torch.Generator().manual_seed(config.seed))
    reference.train()
    optimizer = torch.optim.AdamW(param_groups(reference, config.weight_decay), lr=config.lr, betas=config.betas,
                                  eps=config.eps)
    logits, _ = reference(images[index], tokens[index])
    loss = siglip_loss(logits)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(reference.parameters(), config.grad_clip)
    optimizer.step()
    assert history.loss == [loss.item()]
    for (name, got), want in zip(model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(got, want, rtol=0, atol=0, msg=name)
    assert model.logit_bias.item() != -10.0, "the bias is trained"


def test_siglip_training_lowers_the_loss() -> None:
    images, tokens = _data(32)
    torch.manual_seed(3)
    model = CLIP(SMALL.replace(**SIGLIP))
    history = train_clip(model, images, tokens, TrainConfig(steps=20, batch_size=16, warmup_steps=2, lr=5e-3,
                                                            loss="siglip"), progress=False)
    assert history.loss[-1] < 0.5 * history.loss[0]


def test_siglip_needs_a_bias_and_refuses_hard_negatives() -> None:
    images, tokens = _data(8)
    with pytest.raises(ValueError, match="logit_bias"):
        train_clip(CLIP(SMALL), images, tokens, TrainConfig(steps=1, batch_size=8, warmup_steps=0,
                                                                  loss="siglip"), progress=False)
    with pytest.raises(ValueError, match="negatives"):
        train_clip(CLIP(SMALL.replace(**SIGLIP)), images, tokens, TrainConfig(steps=1, batch_size=8, warmup_steps=0,
                                                                          loss="siglip"),
                   progress=False, negatives=tokens)


def test_clip_loss_path_is_unchanged_by_the_new_options() -> None:
    """loss='clip' without a lock trains exactly as the pre-Chapter-7 loop: checked against a hand-written loop."""
    images, tokens = _data(24)
    config = TrainConfig(steps=4, batch_size=8, warmup_steps=1, lr=2e-3)
    torch.manual_seed(5)
    model = CLIP(SMALL)
    reference = CLIP(SMALL)
    reference.load_state_dict(model.state_dict())
    train_clip(model, images, tokens, config, progress=False)
    from clip_tutorial.model import MAX_LOGIT_SCALE
    from clip_tutorial.train.config import lr_at
    reference.train()
    optimizer = torch.optim.AdamW(param_groups(reference, config.weight_decay), lr=config.lr, betas=config.betas,
                                  eps=config.eps)
    generator, order, cursor = torch.Generator().manual_seed(config.seed), torch.empty(0, dtype=torch.long), 0
    for step in range(config.steps):
        if cursor + config.batch_size > len(order):
            order, cursor = torch.randperm(len(images), generator=generator), 0
        index, cursor = order[cursor: cursor + config.batch_size], cursor + config.batch_size
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        loss = clip_loss(reference(images[index], tokens[index])[0])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), config.grad_clip)
        optimizer.step()
        with torch.no_grad():
            reference.logit_scale.clamp_(0, math.log(MAX_LOGIT_SCALE))
    for (name, got), want in zip(model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(got, want, rtol=0, atol=0, msg=name)
