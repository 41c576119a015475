"""Tests of the training loop: schedule, weight-decay groups, clamping, determinism, errors."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import make_tiny_clip

from clip_tutorial.model import MAX_LOGIT_SCALE
from clip_tutorial.train import TrainConfig, lr_at, param_groups, train_clip


def _data(n: int = 96, seed: int = 0, context_length: int = 16):
    """Random normalised images with one distinct random caption each."""
    g = torch.Generator().manual_seed(seed)
    model, tokenizer = make_tiny_clip(context_length)
    images = torch.randn(n, 3, 32, 32, generator=g)
    tokens = torch.randint(2, tokenizer.sot_id, (n, context_length), generator=g)
    tokens[:, 0], tokens[:, -1] = tokenizer.sot_id, tokenizer.eot_id
    return images, tokens


def test_schedule_warms_up_linearly_then_follows_a_cosine_to_zero():
    config = TrainConfig(steps=110, warmup_steps=10, lr=1e-3)
    lrs = [lr_at(s, config) for s in range(config.steps)]
    assert lrs[:10] == pytest.approx([1e-3 * (s + 1) / 10 for s in range(10)])
    assert lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])), "decay must be monotone"
    assert lr_at(10 + 50, config) == pytest.approx(0.5e-3)  # half-way through the cosine
    assert lr_at(config.steps, config) == pytest.approx(0.0, abs=1e-12)


def test_param_groups_decay_only_matrices():
    model, _ = make_tiny_clip()
    decay, no_decay = param_groups(model, 0.2)
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0
    ids = [id(p) for p in decay["params"]] + [id(p) for p in no_decay["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()), "every parameter in exactly one group"
    named = dict(model.named_parameters())
    no_decay_ids = {id(p) for p in no_decay["params"]}
    for name in ("logit_scale", "ln_final.weight", "ln_final.bias", "visual.class_embedding",
                 "transformer.resblocks.0.attn.in_proj_bias"):
        assert id(named[name]) in no_decay_ids, name
    for name in ("visual.conv1.weight", "text_projection", "token_embedding.weight"):
        assert id(named[name]) not in no_decay_ids, name


def test_training_lowers_the_loss_and_logs_every_step():
    images, tokens = _data()
    model, _ = make_tiny_clip()
    config = TrainConfig(steps=60, batch_size=32, lr=3e-3, warmup_steps=5)
    history = train_clip(model, images, tokens, config, progress=False)
    assert history.steps == list(range(1, 61))
    assert len(history.loss) == len(history.temperature) == len(history.lr) == 60
    assert history.loss[0] > math.log(32) - 0.3  # an untrained model cannot beat guessing by much
    assert sum(history.loss[-10:]) / 10 < 0.5 * history.loss[0]
    assert history.lr == pytest.approx([lr_at(s, config) for s in range(60)])
    assert not model.training


def test_same_seed_same_run_and_different_seed_different_run():
    images, tokens = _data()
    runs = []
    for seed in (0, 0, 1):
        model, _ = make_tiny_clip(seed=5)
        runs.append(train_clip(model, images, tokens, TrainConfig(steps=8, batch_size=32, warmup_steps=2, seed=seed),
                               progress=False).loss)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_logit_scale_is_clamped_at_100():
    images, tokens = _data()
    model, _ = make_tiny_clip()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(MAX_LOGIT_SCALE) + 2.0)
    history = train_clip(model, images, tokens, TrainConfig(steps=2, batch_size=32, warmup_steps=1), progress=False)
    assert model.logit_scale.item() <= math.log(MAX_LOGIT_SCALE) + 1e-6
    assert min(history.temperature) >= 1 / MAX_LOGIT_SCALE - 1e-6


def test_evaluation_callback_runs_and_its_time_is_excluded():
    images, tokens = _data()
    model, _ = make_tiny_clip()
    calls = []

    def evaluate(m):
        calls.append(m.training)
        return {"score": 1.0}

    history = train_clip(model, images, tokens, TrainConfig(steps=6, batch_size=32, warmup_steps=1),
                         eval_fn=evaluate, eval_every=3, progress=False)
    assert [e["step"] for e in history.evals] == [3, 6]
    assert calls == [False, False], "the model is evaluated in eval mode"


def test_nan_loss_names_the_step():
    images, tokens = _data()
    images[:] = float("nan")
    model, _ = make_tiny_clip()
    with pytest.raises(FloatingPointError, match="step 1"):
        train_clip(model, images, tokens, TrainConfig(steps=3, batch_size=32, warmup_steps=1), progress=False)


@pytest.mark.parametrize("kwargs, field", [
    ({"steps": 0}, "steps"), ({"batch_size": -1}, "batch_size"), ({"lr": 0.0}, "lr"),
    ({"warmup_steps": 20, "steps": 10}, "warmup_steps"), ({"weight_decay": -0.1}, "weight_decay"),
    ({"grad_clip": 0.0}, "grad_clip"),
])
def test_bad_train_config(kwargs, field):
    with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
        TrainConfig(**kwargs)


def test_bad_training_data():
    images, tokens = _data()
    model, _ = make_tiny_clip()
    with pytest.raises(ValueError, match="one caption per image"):
        train_clip(model, images, tokens[:-1], TrainConfig(steps=1, batch_size=8, warmup_steps=1), progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        train_clip(model, images[:4], tokens[:4], TrainConfig(steps=1, batch_size=8, warmup_steps=1), progress=False)
    with pytest.raises(TypeError, match="model"):
        train_clip(torch.nn.Linear(2, 2), images, tokens, TrainConfig(steps=1, warmup_steps=1), progress=False)
    with pytest.raises(TypeError, match="config"):
        train_clip(model, images, tokens, {"steps": 1}, progress=False)
