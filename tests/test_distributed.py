"""CLIP's loss across processes: two gloo processes must reproduce one process on the whole batch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from clip_tutorial.objectives.distributed import (all_reduce_mean, average_gradients, barrier, broadcast_parameters, cleanup,
                                       distributed_clip_loss, gather_features, is_distributed, rank_and_world,
                                       setup_distributed)
from clip_tutorial.objectives.loss import clip_loss
from conftest import make_tiny_clip

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[1]
LOCAL_BATCH = 4  # pairs per process; the reference sees 2 * LOCAL_BATCH


def _features(seed: int = 0, n: int = 6, d: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.nn.functional.normalize(torch.randn(n, d, generator=generator), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(n, d, generator=generator), dim=-1)
    return images, texts


# ---------------------------------------------------------------- one process: no group at all
def test_single_process_is_identity_and_plain_clip_loss() -> None:
    assert not is_distributed() and rank_and_world() == (0, 1)
    images, texts = _features()
    all_images, all_texts = gather_features(images, texts)
    assert all_images is images and all_texts is texts
    expected = clip_loss(10.0 * images @ texts.t())
    for local_loss in (False, True):
        got = distributed_clip_loss(images, texts, torch.tensor(10.0), local_loss=local_loss)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(distributed_clip_loss(images, texts, 10.0), expected, rtol=0, atol=0)
    value = torch.tensor(3.5, requires_grad=True)
    assert all_reduce_mean(value).item() == 3.5 and not all_reduce_mean(value).requires_grad
    cleanup()  # a no-op without a group


def test_gradient_flows_to_logit_scale_and_features() -> None:
    images, texts = _features(seed=1)
    images.requires_grad_(True)
    scale = torch.tensor(5.0, requires_grad=True)
    distributed_clip_loss(images, texts, scale).backward()
    assert images.grad is not None and scale.grad is not None and images.grad.abs().sum() > 0


@pytest.mark.parametrize("args, error, match", [
    ((torch.ones(4, 8), torch.ones(3, 8)), ValueError, "same"),
    ((torch.ones(4, 8), torch.ones(4, 6)), ValueError, "same"),
    ((torch.ones(4, 8, 1), torch.ones(4, 8, 1)), ValueError, "image_features"),
    ((torch.ones(0, 8), torch.ones(0, 8)), ValueError, "image_features: .* with at least one element"),
    ((torch.ones(4, 8, dtype=torch.long), torch.ones(4, 8)), TypeError, "floating-point"),
    (([[1.0]], torch.ones(1, 1)), TypeError, "image_features"),
])
def test_bad_features(args: tuple, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        gather_features(*args)
    with pytest.raises(error, match=match):
        distributed_clip_loss(*args, logit_scale=1.0)


def test_bad_scale_and_flag() -> None:
    images, texts = _features()
    with pytest.raises(ValueError, match="logit_scale"):
        distributed_clip_loss(images, texts, torch.ones(2))
    with pytest.raises(TypeError, match="logit_scale"):
        distributed_clip_loss(images, texts, "10")
    with pytest.raises(TypeError, match="local_loss"):
        distributed_clip_loss(images, texts, 1.0, local_loss="yes")
    with pytest.raises(TypeError, match="value"):
        all_reduce_mean(1.0)


def test_training_helpers_do_nothing_in_one_process_and_check_their_arguments() -> None:
    """Chapter 3.4's helpers for train_clip; their multi-process behaviour is tested in test_train_ddp.py."""
    model = torch.nn.Linear(3, 2)
    model(torch.ones(1, 3)).sum().backward()
    weights, grads = model.weight.detach().clone(), model.weight.grad.clone()
    broadcast_parameters(model)
    average_gradients(model)
    barrier()
    assert torch.equal(model.weight, weights) and torch.equal(model.weight.grad, grads)
    for helper in (broadcast_parameters, average_gradients):
        with pytest.raises(TypeError, match="model"):
            helper(model.weight)
    with pytest.raises(ValueError, match="src"):
        broadcast_parameters(model, src=1)


def test_setup_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="backend"):
        setup_distributed("tcp")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(RuntimeError, match="torchrun") as info:
        setup_distributed("gloo")
    assert "WORLD_SIZE" in str(info.value) and "'RANK'" not in str(info.value)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="nccl"):
            setup_distributed("nccl")
    assert not is_distributed()


def test_group_of_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real gloo group with a single process: setup works, the gather is the identity."""
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(name, value)
    try:
        assert setup_distributed("gloo") == (0, 1, torch.device("cpu"))
        assert is_distributed() and rank_and_world() == (0, 1)
        assert setup_distributed() == (0, 1, torch.device("cpu"))  # joining twice describes the group
        images, texts = _features()
        assert gather_features(images, texts)[0] is images
        torch.testing.assert_close(distributed_clip_loss(images, texts, 3.0, local_loss=True),
                                   clip_loss(3.0 * images @ texts.t()), rtol=0, atol=0)
    finally:
        cleanup()
    assert not is_distributed()


# ---------------------------------------------------------------- two processes against one
@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    """Run the worker on 2 gloo processes once; return the reference and both ranks' results."""
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available")
    tmp = tmp_path_factory.mktemp("ddp")
    model, tokenizer = make_tiny_clip(context_length=16, seed=0)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2 * LOCAL_BATCH, 3, 32, 32, generator=generator)
    colours, shapes = ["red", "green", "blue", "yellow"], ["circle", "square"]
    tokens = tokenizer([f"a photo of a {c} {s}" for c in colours for s in shapes])
    torch.save({"state_dict": model.state_dict(), "images": images, "tokens": tokens}, tmp / "inputs.pt")

    # The reference: one process, the whole batch of 2 * LOCAL_BATCH pairs.
    loss = clip_loss(*model(images, tokens))
    loss.backward()
    reference = {"loss": loss.detach(), **{name: p.grad.clone() for name, p in model.named_parameters()}}
    with torch.no_grad():
        reference["image_features"] = model.encode_image(images, normalize=True)
        reference["text_features"] = model.encode_text(tokens, normalize=True)

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
               str(WORKER), str(tmp / "inputs.pt"), str(tmp)]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"torchrun failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(2)]
    return reference, ranks


@pytest.mark.parametrize("local_loss", [False, True])
def test_two_processes_match_one(two_process_run: tuple[dict, list], local_loss: bool) -> None:
    reference, ranks = two_process_run
    tag = f"local_loss={local_loss}"
    names = [key[len(f"{tag}/grad/"):] for key in ranks[0] if key.startswith(f"{tag}/grad/")]
    assert set(names) == set(reference) - {"loss", "image_features", "text_features"}
    for rank, results in enumerate(ranks):
        assert int(results["world_size"]) == 2
        # The mean of the per-process losses is the whole batch's loss; without local_loss every
        # process even holds it itself.
        torch.testing.assert_close(results[f"{tag}/mean_loss"], reference["loss"], rtol=1e-5, atol=1e-6)
        if not local_loss:
            torch.testing.assert_close(results[f"{tag}/loss"], reference["loss"], rtol=1e-5, atol=1e-6)
        for name in names:
            torch.testing.assert_close(results[f"{tag}/grad/{name}"], reference[name], rtol=1e-5, atol=1e-6,
                                       msg=lambda m, n=name, r=rank: f"rank {r}, gradient of {n}: {m}")
        # The gather returns every process's features in rank order.
        torch.testing.assert_close(results[f"{tag}/all_image_features"], reference["image_features"],
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(results[f"{tag}/all_text_features"], reference["text_features"],
                                   rtol=1e-5, atol=1e-6)
    if local_loss:  # each process's own share differs, and the two shares average to the global loss
        losses = [float(results[f"{tag}/loss"]) for results in ranks]
        assert losses[0] != losses[1]


def test_uneven_local_batches_raise_on_every_process(two_process_run: tuple[dict, list]) -> None:
    _, ranks = two_process_run
    assert all(bool(results["uneven_raised"]) for results in ranks)


# ---------------------------------------------------------------- SigLIP's ring (Chapter 7.1)
_SIGLIP_WORKER = '''
import sys
import torch
import torch.nn.functional as F
from clip_tutorial.objectives.distributed import all_reduce_mean, cleanup, setup_distributed
from clip_tutorial.objectives.distributed_siglip import distributed_siglip_loss

rank, world, _ = setup_distributed("gloo")
generator = torch.Generator().manual_seed(0)
batch = int(sys.argv[2])
images = F.normalize(torch.randn(world * batch, 8, generator=generator, dtype=torch.float64), dim=-1)
texts = F.normalize(torch.randn(world * batch, 8, generator=generator, dtype=torch.float64), dim=-1)
mine = slice(rank * batch, (rank + 1) * batch)
my_images, my_texts = images[mine].clone().requires_grad_(True), texts[mine].clone().requires_grad_(True)
scale = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
bias = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
loss = distributed_siglip_loss(my_images, my_texts, scale, bias)
loss.backward()
try:  # one process with a different local batch: every process must raise, none may hang
    distributed_siglip_loss(my_images[: 1 + (rank == 0)].detach(), my_texts[: 1 + (rank == 0)].detach(), 7.0, -3.0)
    uneven = False
except ValueError:
    uneven = True
torch.save({"loss": loss.detach(), "mean_loss": all_reduce_mean(loss), "images_grad": my_images.grad,
            "texts_grad": my_texts.grad, "scale_grad": scale.grad, "bias_grad": bias.grad,
            "uneven_raised": torch.tensor(uneven)}, f"{sys.argv[1]}/rank{rank}.pt")
cleanup()
'''
SIGLIP_LOCAL_BATCH = 3


def test_siglip_single_process_equals_siglip_loss() -> None:
    from clip_tutorial.objectives.distributed_siglip import distributed_siglip_loss
    from clip_tutorial.objectives.loss import siglip_loss
    images, texts = _features(seed=2)
    scale, bias = torch.tensor(7.0, requires_grad=True), torch.tensor(-3.0, requires_grad=True)
    got = distributed_siglip_loss(images, texts, scale, bias)
    torch.testing.assert_close(got, siglip_loss(7.0 * images @ texts.t() - 3.0), rtol=0, atol=0)
    got.backward()
    assert scale.grad is not None and bias.grad is not None
    for bad, error in (((images, texts, torch.ones(2), 0.0), ValueError), ((images, texts, 1.0, "b"), TypeError),
                       ((images, texts[:3], 1.0, 0.0), ValueError)):
        with pytest.raises(error):
            distributed_siglip_loss(*bad)


@pytest.mark.parametrize("world", [2, 3])
def test_siglip_ring_matches_one_process(world: int, tmp_path: Path) -> None:
    """W gloo processes passing text chunks round a ring reproduce the single-process loss and gradients."""
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available")
    from clip_tutorial.objectives.loss import siglip_loss
    worker = tmp_path / "siglip_worker.py"
    worker.write_text(_SIGLIP_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world}", "--standalone",
               str(worker), str(tmp_path), str(SIGLIP_LOCAL_BATCH)]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"torchrun failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
    # The reference: the same global batch on one process.
    generator = torch.Generator().manual_seed(0)
    n = world * SIGLIP_LOCAL_BATCH
    images = torch.nn.functional.normalize(torch.randn(n, 8, generator=generator, dtype=torch.float64), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(n, 8, generator=generator, dtype=torch.float64), dim=-1)
    images.requires_grad_(True)
    texts.requires_grad_(True)
    scale = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    loss = siglip_loss(scale * images @ texts.t() + bias)
    loss.backward()
    for rank, results in enumerate(ranks):
        torch.testing.assert_close(results["mean_loss"], loss.detach(), rtol=1e-12, atol=0)
        mine = slice(rank * SIGLIP_LOCAL_BATCH, (rank + 1) * SIGLIP_LOCAL_BATCH)
        # Each process's feature gradients are W times its share of dL (gradient averaging divides by W).
        torch.testing.assert_close(results["images_grad"] / world, images.grad[mine], rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(results["texts_grad"] / world, texts.grad[mine], rtol=1e-10, atol=1e-14)
        assert bool(results["uneven_raised"])
    for name, reference in (("scale_grad", scale.grad), ("bias_grad", bias.grad)):
        mean = sum(results[name] for results in ranks) / world
        torch.testing.assert_close(mean, reference, rtol=1e-10, atol=1e-14)
    shares = [float(results["loss"]) for results in ranks]
    assert len(set(shares)) == world, "each process returns its own share, not the global loss"
