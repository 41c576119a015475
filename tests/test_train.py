"""Tests of the training loop: schedule, weight-decay groups, clipping, clamping, precision, determinism,
checkpoint and resume, errors."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from conftest import make_tiny_clip
from torch.optim.optimizer import register_optimizer_step_pre_hook

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
    ({"grad_clip": 0.0}, "grad_clip"), ({"crop_scale": (0.0, 1.0)}, "crop_scale"),
    ({"crop_scale": (0.6, 0.5)}, "crop_scale"), ({"crop_scale": (0.5, 1.5)}, "crop_scale"),
    ({"crop_scale": (-0.2, 0.5)}, "crop_scale"),
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


# --- Chapter 3.2: mixed precision, clipping, decay groups, divergence errors, checkpoint and resume ---

def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_bf16_autocast_runs_on_the_cpu_and_stays_close_to_fp32():
    images, tokens = _data()
    runs = {}
    for precision in ("fp32", "bf16"):
        model, _ = make_tiny_clip(seed=3)
        config = TrainConfig(steps=4, batch_size=32, warmup_steps=1, lr=1e-3, precision=precision)
        runs[precision] = (train_clip(model, images, tokens, config, progress=False).loss, model)
    fp32, bf16 = runs["fp32"][0], runs["bf16"][0]
    assert fp32 != bf16, "bf16 must really compute in lower precision"
    assert bf16 == pytest.approx(fp32, abs=0.05), (fp32, bf16)
    assert all(p.dtype == torch.float32 for p in runs["bf16"][1].parameters()), "master weights stay fp32"


def test_fp16_is_refused_on_the_cpu_with_a_clear_error():
    images, tokens = _data()
    model, _ = make_tiny_clip()
    with pytest.raises(ValueError, match=r"'fp16' needs a CUDA GPU.*bf16"):
        train_clip(model, images, tokens, TrainConfig(steps=1, batch_size=32, warmup_steps=1, precision="fp16"),
                   device="cpu", progress=False)


def test_bad_precision_is_refused():
    with pytest.raises(ValueError, match=r"TrainConfig.precision.*'fp8'"):
        TrainConfig(precision="fp8")


def _optimizer_spy():
    """Record, just before every optimiser step, the global gradient norm and the parameter groups."""
    seen = []

    def before_step(optimizer, args, kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        seen.append((float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))),
                     [(g["weight_decay"], {id(p) for p in g["params"]}) for g in optimizer.param_groups]))

    handle = register_optimizer_step_pre_hook(before_step)
    return seen, handle


@pytest.mark.parametrize("grad_clip", [0.05, None])
def test_gradients_are_clipped_before_the_step(grad_clip):
    images, tokens = _data()
    model, _ = make_tiny_clip()
    seen, handle = _optimizer_spy()
    try:
        train_clip(model, images, tokens, TrainConfig(steps=3, batch_size=32, warmup_steps=1, grad_clip=grad_clip),
                   progress=False)
    finally:
        handle.remove()
    norms = [norm for norm, _ in seen]
    assert len(norms) == 3
    if grad_clip is None:
        assert min(norms) > 0.05, f"an untrained model's gradients are larger than the clip used here: {norms}"
    else:
        assert max(norms) == pytest.approx(grad_clip, rel=1e-4), norms


def test_the_optimiser_decays_matrices_only():
    images, tokens = _data()
    model, _ = make_tiny_clip()
    seen, handle = _optimizer_spy()
    try:
        train_clip(model, images, tokens, TrainConfig(steps=1, batch_size=32, warmup_steps=1, weight_decay=0.3),
                   progress=False)
    finally:
        handle.remove()
    groups = dict(seen[0][1])
    assert set(groups) == {0.3, 0.0}
    named = dict(model.named_parameters())
    assert id(named["logit_scale"]) in groups[0.0] and id(named["ln_final.bias"]) in groups[0.0]
    assert id(named["text_projection"]) in groups[0.3] and id(named["visual.conv1.weight"]) in groups[0.3]


def test_a_diverging_loss_names_the_step_the_learning_rate_and_the_causes():
    images, tokens = _data()
    model, _ = make_tiny_clip()

    def poison(m):  # after step 2 a weight turns into NaN, so step 3's loss is NaN
        with torch.no_grad():
            m.text_projection[0, 0] = float("nan")
        return {}

    config = TrainConfig(steps=5, batch_size=32, warmup_steps=4, lr=1e-3)
    with pytest.raises(FloatingPointError) as info:
        train_clip(model, images, tokens, config, eval_fn=poison, eval_every=2, progress=False)
    message = str(info.value)
    assert "step 3" in message and f"learning rate {lr_at(2, config):.3g}" in message, message
    for cause in ("learning rate too high", "fp16 overflow", "bad inputs"):
        assert cause in message, message


class _Stop(Exception):
    pass


def test_resuming_gives_bit_for_bit_the_weights_of_an_uninterrupted_run(tmp_path):
    from clip_tutorial.train.state import latest_training_state

    images, tokens = _data()
    config = TrainConfig(steps=10, batch_size=32, warmup_steps=2, lr=3e-3)  # 3 batches an epoch
    straight, _ = make_tiny_clip(seed=5)
    full = train_clip(straight, images, tokens, config, progress=False)

    def stop_at_8(m):  # evaluated at steps 4 and 8; interrupts the run at step 8
        if calls:
            raise _Stop
        calls.append(1)
        return {}

    calls = []
    interrupted, _ = make_tiny_clip(seed=5)
    with pytest.raises(_Stop):  # stops at step 8, before its state is saved: the latest is step 4 (mid-epoch)
        train_clip(interrupted, images, tokens, config, eval_fn=stop_at_8, eval_every=4, progress=False,
                   checkpoint_every=4, checkpoint_dir=tmp_path)
    assert latest_training_state(tmp_path).name == "step-000004"
    resumed, _ = make_tiny_clip(seed=99)  # different initial weights: all must come from the saved state
    history = train_clip(resumed, images, tokens, config, progress=False, resume_from=tmp_path)
    for name, value in _weights(straight).items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert history.loss == full.loss and history.steps == full.steps and history.lr == full.lr


def test_resuming_with_another_config_or_from_a_corrupted_state_is_refused(tmp_path):
    images, tokens = _data()
    config = TrainConfig(steps=2, batch_size=32, warmup_steps=1)
    model, _ = make_tiny_clip()
    train_clip(model, images, tokens, config, progress=False, checkpoint_every=1, checkpoint_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-000001.json", "step-000001.safetensors", "step-000002.json", "step-000002.safetensors"]
    with pytest.raises(ValueError, match=r"another config.*lr \(given 0.002, saved 0.001\)"):
        train_clip(model, images, tokens, TrainConfig(steps=2, batch_size=32, warmup_steps=1, lr=2e-3),
                   progress=False, resume_from=tmp_path / "step-000001")
    weights = tmp_path / "step-000001.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted"):
        train_clip(model, images, tokens, config, progress=False, resume_from=tmp_path / "step-000001.json")
    with pytest.raises(FileNotFoundError, match="resume_from"):
        train_clip(model, images, tokens, config, progress=False, resume_from=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="checkpoint_every"):
        train_clip(model, images, tokens, config, progress=False, checkpoint_every=1)


# --- Chapters 3.1 and 3.2: the random resized crop inside the training loop ---

def _encoded_images(model):
    """Wrap ``model.encode_image`` so that every batch it receives is recorded."""
    seen, encode = [], model.encode_image

    def spy(images, normalize=False):
        seen.append(images.detach().clone())
        return encode(images, normalize=normalize)

    model.encode_image = spy
    return seen


def test_crop_scale_is_stored_as_a_tuple_and_must_be_a_pair():
    assert TrainConfig(crop_scale=[0.5, 1]).crop_scale == (0.5, 1.0)
    assert TrainConfig().crop_scale is None
    with pytest.raises(TypeError, match="TrainConfig.crop_scale"):
        TrainConfig(crop_scale=0.5)


def test_crops_change_the_batches_exactly_as_random_resized_crop_draws_them():
    from clip_tutorial.data.augment import random_resized_crop
    from clip_tutorial.train.loop import _CROP_SEED_OFFSET

    images, tokens = _data()
    batches = {}
    for crop_scale in (None, (0.3, 0.6)):
        model, _ = make_tiny_clip(seed=1)
        batches[crop_scale] = _encoded_images(model)
        train_clip(model, images, tokens, TrainConfig(steps=2, batch_size=32, warmup_steps=1, seed=4,
                                                      crop_scale=crop_scale), progress=False)
    # The order of the pairs does not depend on the crops: the first epoch's permutation of seed 4.
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(4))
    crops = torch.Generator().manual_seed(4 + _CROP_SEED_OFFSET)
    for step in range(2):
        originals = images[order[32 * step: 32 * (step + 1)]]
        assert torch.equal(batches[None][step], originals)
        cropped = batches[(0.3, 0.6)][step]
        assert cropped.shape == originals.shape
        assert (cropped - originals).abs().amax(dim=(1, 2, 3)).min() > 0.1  # every image was changed
        expected = random_resized_crop(originals, scale=(0.3, 0.6), generator=crops)
        assert torch.equal(cropped, expected)


def test_resuming_a_cropped_run_gives_bit_for_bit_the_weights_of_an_uninterrupted_run(tmp_path):
    images, tokens = _data()
    config = TrainConfig(steps=6, batch_size=32, warmup_steps=2, lr=3e-3, crop_scale=(0.5, 1.0))
    straight, _ = make_tiny_clip(seed=5)
    full = train_clip(straight, images, tokens, config, progress=False, checkpoint_every=4, checkpoint_dir=tmp_path)
    uncropped, _ = make_tiny_clip(seed=5)
    train_clip(uncropped, images, tokens, replace(config, crop_scale=None), progress=False)
    assert not torch.equal(uncropped.visual.conv1.weight, straight.visual.conv1.weight)
    resumed, _ = make_tiny_clip(seed=99)
    history = train_clip(resumed, images, tokens, config, progress=False, resume_from=tmp_path / "step-000004")
    for name, value in _weights(straight).items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert history.loss == full.loss
    with pytest.raises(ValueError, match="crop_scale"):  # a state saved with crops cannot resume a run without
        train_clip(resumed, images, tokens, replace(config, crop_scale=None), progress=False,
                   resume_from=tmp_path / "step-000004")
