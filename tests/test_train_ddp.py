"""``train_clip`` under torchrun: 2 gloo processes with B pairs each must train like 1 process with 2B.

One torchrun launch (starting the processes and importing torch dominates the time) runs
``tests/train_ddp_worker.py``, which trains with the book's ``train_clip`` (without and with the
random-crop augmentation, then resumes the cropped run from a state saved by rank 0) and then
runs the command line ``python -m clip_tutorial.train`` in the same two processes. The reference
is ``train_clip`` in this process, without any process group, on the whole batch.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from clip_tutorial.weights.checkpoints import load_checkpoint
from clip_tutorial.objectives.distributed import shard_batch
from clip_tutorial.objectives.loss import clip_loss
from clip_tutorial.train import TrainConfig, train_clip
from conftest import make_tiny_clip

WORKER = Path(__file__).with_name("train_ddp_worker.py")
ROOT = Path(__file__).resolve().parents[1]
CONFIG = TrainConfig(steps=5, batch_size=16, lr=3e-3, warmup_steps=1)  # global batch 16: 8 pairs per process
CROP_SCALE = (0.4, 1.0)
N_PAIRS = 40  # 2.5 global batches: the 5 steps cross two epoch boundaries (fresh permutations)
CLI_ARGS = ["--recipe", "ch1-demo", "--steps", "2", "--n-train", "256", "--device", "cpu", "--no-progress"]
# Measured (torch 2.13, CPU): per-step losses differ from one process by at most 4.8e-7 and final weights by
# 1.1e-5 after 5 AdamW steps. The weights' figure is float rounding amplified by Adam in the text attention's key
# bias, whose true gradient is zero (softmax ignores a constant added to every key): Adam divides that rounding
# noise by its own tiny running scale. One process that merely encodes its batch in two halves already moves that
# bias by 5.6e-6. A real bug (wrong rows, wrong labels, weights not broadcast) moves losses by 1e-3 or more.
LOSS_ATOL, WEIGHT_ATOL = 1e-5, 1e-4


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    model, tokenizer = make_tiny_clip(context_length=12)
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(N_PAIRS, 3, 32, 32, generator=generator)
    tokens = torch.randint(2, tokenizer.sot_id, (N_PAIRS, 12), generator=generator)
    tokens[:, 0], tokens[:, -1] = tokenizer.sot_id, tokenizer.eot_id
    return images, tokens


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Launch the worker once on 2 processes; return both ranks' results and the reference runs."""
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available")
    tmp = tmp_path_factory.mktemp("train_ddp")
    images, tokens = _data()
    torch.save({"images": images, "tokens": tokens, "config": asdict(CONFIG), "crop_scale": list(CROP_SCALE)},
               tmp / "inputs.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
               str(WORKER), str(tmp / "inputs.pt"), str(tmp), *CLI_ARGS, "--out", str(tmp / "cli")]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"torchrun failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    reference = {}
    for tag, crop_scale in (("plain", None), ("crop", CROP_SCALE)):
        model, _ = make_tiny_clip(context_length=12, seed=100)  # rank 0's initial weights
        config = TrainConfig(**{**asdict(CONFIG), "crop_scale": crop_scale})
        history = train_clip(model, images, tokens, config, progress=False)
        reference[tag] = {"loss": torch.tensor(history.loss, dtype=torch.float64), "weights": model.state_dict()}
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(2)]
    return {"ranks": ranks, "reference": reference, "tmp": tmp, "stdout": done.stdout}


def _weights(results: dict, tag: str) -> dict[str, torch.Tensor]:
    prefix = f"{tag}/weights/"
    return {key[len(prefix):]: value for key, value in results.items() if key.startswith(prefix)}


@pytest.mark.parametrize("tag", ["plain", "crop"])
def test_two_processes_train_like_one_process_on_the_whole_batch(runs: dict, tag: str) -> None:
    reference = runs["reference"][tag]
    for rank, results in enumerate(runs["ranks"]):
        assert int(results["world_size"]) == 2
        losses = results[f"{tag}/loss"]
        assert losses.shape == (CONFIG.steps,)
        loss_diff = float((losses - reference["loss"]).abs().max())
        assert loss_diff <= LOSS_ATOL, f"rank {rank}, {tag}: per-step losses differ by {loss_diff:.2e}"
        weights = _weights(results, tag)
        assert weights.keys() == reference["weights"].keys()
        weight_diff = max(float((weights[k] - v).abs().max()) for k, v in reference["weights"].items())
        assert weight_diff <= WEIGHT_ATOL, f"rank {rank}, {tag}: final weights differ by {weight_diff:.2e}"
        print(f"rank {rank} {tag}: max |loss diff| {loss_diff:.2e}, max |weight diff| {weight_diff:.2e}")
    # Identical gradients and identical steps: the two processes hold bit-for-bit the same model and history.
    first, second = runs["ranks"]
    assert torch.equal(first[f"{tag}/loss"], second[f"{tag}/loss"])
    assert all(torch.equal(v, _weights(second, tag)[k]) for k, v in _weights(first, tag).items())


def test_averaged_gradients_are_the_whole_batch_gradient(runs: dict) -> None:
    model, _ = make_tiny_clip(context_length=12, seed=100)
    images, tokens = _data()
    n = CONFIG.batch_size
    clip_loss(*model(images[:n], tokens[:n])).backward()
    # Measured: at most 1.7e-6 apart (token_embedding sums many rows); summing instead of averaging would double them.
    for rank, results in enumerate(runs["ranks"]):
        for name, parameter in model.named_parameters():
            torch.testing.assert_close(results[f"grad/{name}"], parameter.grad, rtol=1e-4, atol=1e-5,
                                       msg=lambda m, n=name, r=rank: f"rank {r}, gradient of {n}: {m}")


def test_the_weights_moved_and_the_crops_mattered(runs: dict) -> None:
    """Guards against a vacuous match: training changed the weights, and cropping changed the run."""
    start, _ = make_tiny_clip(context_length=12, seed=100)
    plain, crop = _weights(runs["ranks"][0], "plain"), _weights(runs["ranks"][0], "crop")
    moved = max(float((plain[k] - v).abs().max()) for k, v in start.state_dict().items())
    assert moved > 1e-3, moved
    assert max(float((plain[k] - crop[k]).abs().max()) for k in plain) > 1e-3


def test_resuming_a_two_process_run_from_rank_0s_state_is_bit_exact(runs: dict) -> None:
    states = sorted(path.name for path in (runs["tmp"] / "states").glob("*.json"))
    assert states == ["step-000002.json", "step-000004.json", "step-000005.json"]
    for results in runs["ranks"]:
        assert torch.equal(results["resumed/loss"], results["crop/loss"])
        resumed = _weights(results, "resumed")
        assert all(torch.equal(v, resumed[k]) for k, v in _weights(results, "crop").items())


def test_a_batch_that_the_processes_cannot_split_is_refused(runs: dict) -> None:
    assert all(bool(results["indivisible_raised"]) for results in runs["ranks"])


def test_shard_batch_splits_in_rank_order() -> None:
    batch = torch.arange(12)
    assert torch.equal(torch.cat([shard_batch(batch, r, 3) for r in range(3)]), batch)
    assert shard_batch(batch) is batch  # no process group: the whole batch
    with pytest.raises(ValueError, match="world_size=5"):
        shard_batch(batch, 0, 5)
    with pytest.raises(ValueError, match="rank"):
        shard_batch(batch, 3, 3)
    with pytest.raises(TypeError, match="batch"):
        shard_batch([1, 2], 0, 1)


def test_the_command_line_under_torchrun_saves_one_model_from_rank_0(runs: dict) -> None:
    tmp = runs["tmp"]
    assert [(tmp / f"cli_rank{r}.txt").read_text() for r in range(2)] == ["0", "0"]
    assert runs["stdout"].count("saved ") == 1 and "[trained on 2 processes]" in runs["stdout"]
    out = tmp / "cli"
    assert sorted(p.name for p in out.iterdir()) == ["history.json", "model.json", "model.safetensors"]
    card = json.loads((out / "model.json").read_text())["metadata"]
    assert card["world_size"] == 2 and card["steps"] == 2 and card["recipe"] == "ch1-demo"
    assert card["recipe_settings"]["n_train"] == 256
    assert card["command"].startswith("torchrun --nproc_per_node=2 -m clip_tutorial.train --recipe ch1-demo")
    history = json.loads((out / "history.json").read_text())
    assert history["steps"] == [1, 2] and card["final_loss"] == history["loss"][-1]
    checkpoint = load_checkpoint(out / "model")  # the SHA-256 is checked on loading
    assert checkpoint.model.config.image_resolution == 32 and checkpoint.metadata["world_size"] == 2
