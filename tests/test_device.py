"""Device choice, seeding, CPU threads and the notebook setup cell."""
from __future__ import annotations

import io
import os
import random

import numpy as np
import pytest
import torch

import clip_tutorial
import clip_tutorial.core.device as device_module
from clip_tutorial.core.device import cpu_budget, get_device, limit_threads, seed_everything, setup_notebook

ENV = "CLIP_TUTORIAL_DEVICE"


@pytest.fixture
def no_accelerator(monkeypatch):
    """A machine with neither CUDA nor MPS, whatever this one has, and no device override."""
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if getattr(torch.backends, "mps", None) is not None:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch):
    """A machine that reports CUDA (no CUDA call is made: torch.device('cuda') is only a name)."""
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.fixture
def restore_rcparams():
    matplotlib = pytest.importorskip("matplotlib")
    saved = matplotlib.rcParams.copy()
    yield
    matplotlib.rcParams.update(saved)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_get_device_is_cpu_here(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    assert get_device() == torch.device("cpu")


def test_get_device_falls_back_to_cpu(no_accelerator):
    device = get_device()
    assert isinstance(device, torch.device) and device.type == "cpu"


def test_get_device_prefers_cuda_when_available(fake_cuda):
    assert get_device() == torch.device("cuda")
    assert get_device(prefer="cpu") == torch.device("cpu")


def test_prefer_cpu(no_accelerator):
    assert get_device(prefer="cpu") == torch.device("cpu")


@pytest.mark.parametrize("kind", ["cuda", "mps"])
def test_prefer_unavailable_device_raises(no_accelerator, kind):
    with pytest.raises(ValueError, match="prefer") as info:
        get_device(prefer=kind)
    assert kind in str(info.value)


@pytest.mark.parametrize("kind", ["tpu", "CPU", "gpu", "cuda:0", 3])
def test_prefer_unknown_device_raises(no_accelerator, kind):
    with pytest.raises(ValueError, match="prefer"):
        get_device(prefer=kind)


def test_env_var_is_honoured(fake_cuda, monkeypatch):
    monkeypatch.setenv(ENV, "cpu")
    assert get_device() == torch.device("cpu")


def test_env_var_unavailable_or_unknown_raises(no_accelerator, monkeypatch):
    monkeypatch.setenv(ENV, "cuda")
    with pytest.raises(ValueError, match="prefer"):
        get_device()
    monkeypatch.setenv(ENV, "abacus")
    with pytest.raises(ValueError, match="prefer"):
        get_device()


def test_explicit_prefer_beats_env_var(no_accelerator, monkeypatch):
    monkeypatch.setenv(ENV, "cuda")
    assert get_device(prefer="cpu") == torch.device("cpu")


def test_empty_env_var_is_ignored(no_accelerator, monkeypatch):
    monkeypatch.setenv(ENV, "")
    assert get_device() == torch.device("cpu")


def _draws() -> tuple[float, np.ndarray, torch.Tensor]:
    return random.random(), np.random.rand(3), torch.rand(3)


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**32 + 5, np.int64(7)])
def test_seed_everything_repeats_draws(seed):
    generator = seed_everything(seed)
    first = _draws()
    first_own = torch.rand(3, generator=generator)
    again = seed_everything(seed)
    second = _draws()
    assert first[0] == second[0]
    assert np.array_equal(first[1], second[1])
    assert torch.equal(first[2], second[2])
    assert isinstance(again, torch.Generator)
    assert torch.equal(first_own, torch.rand(3, generator=again))


def test_seed_everything_different_seeds_differ():
    seed_everything(1)
    a = _draws()
    seed_everything(2)
    b = _draws()
    assert a[0] != b[0]
    assert not np.array_equal(a[1], b[1])
    assert not torch.equal(a[2], b[2])


def test_seed_everything_matches_the_libraries_own_seeding():
    seed_everything(42)
    ours = _draws()
    random.seed(42)
    np.random.seed(42)
    torch.manual_seed(42)
    theirs = _draws()
    assert ours[0] == theirs[0]
    assert np.array_equal(ours[1], theirs[1])
    assert torch.equal(ours[2], theirs[2])


@pytest.mark.parametrize("seed", [1.5, "3", None, True, [1]])
def test_seed_everything_rejects_non_integers(seed):
    with pytest.raises(TypeError, match="seed"):
        seed_everything(seed)


@pytest.mark.parametrize("seed", [-1, np.int32(-5)])
def test_seed_everything_rejects_negative(seed):
    with pytest.raises(ValueError, match="seed"):
        seed_everything(seed)


def test_setup_notebook_prints_and_returns_the_device(no_accelerator, restore_rcparams, capsys):
    device = setup_notebook(seed=3)
    assert device == torch.device("cpu")
    out = capsys.readouterr().out
    assert "device: cpu" in out
    assert clip_tutorial.__version__ in out
    assert torch.__version__ in out
    assert "seed: 3" in out


def test_setup_notebook_seeds_everything(no_accelerator, restore_rcparams, capsys):
    setup_notebook(seed=11, verbose=False)
    after_setup = _draws()
    seed_everything(11)
    assert torch.equal(after_setup[2], _draws()[2])
    assert capsys.readouterr().out == ""


def test_setup_notebook_honours_env_var(fake_cuda, restore_rcparams, monkeypatch, capsys):
    monkeypatch.setenv(ENV, "cpu")
    assert setup_notebook() == torch.device("cpu")
    assert "device: cpu" in capsys.readouterr().out


# -- CPU threads ------------------------------------------------------------------------------


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def eight_cpus(monkeypatch):
    """A process allowed on eight CPUs, whatever this machine has."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_cpu_budget_without_quota_is_the_affinity(tmp_path, eight_cpus):
    assert cpu_budget(tmp_path) == 8
    _write(tmp_path / "cpu.max", "max 100000\n")  # cgroup v2: no limit
    assert cpu_budget(tmp_path) == 8


@pytest.mark.parametrize("quota, expected", [("200000 100000", 2), ("150000 100000", 1), ("50000 100000", 1),
                                             ("1600000 100000", 8), ("300000 50000", 6)])
def test_cpu_budget_follows_a_cgroup_v2_quota(tmp_path, eight_cpus, quota, expected):
    _write(tmp_path / "cpu.max", quota + "\n")
    assert cpu_budget(tmp_path) == expected


def test_cpu_budget_follows_a_cgroup_v1_quota(tmp_path, eight_cpus):
    _write(tmp_path / "cpu" / "cpu.cfs_quota_us", "300000\n")
    _write(tmp_path / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert cpu_budget(tmp_path) == 3
    _write(tmp_path / "cpu" / "cpu.cfs_quota_us", "-1\n")  # v1: no limit
    assert cpu_budget(tmp_path) == 8


def test_cpu_budget_follows_the_affinity(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    _write(tmp_path / "cpu.max", "400000 100000\n")
    assert cpu_budget(tmp_path) == 1


def test_cpu_budget_ignores_unreadable_files(tmp_path, eight_cpus):
    _write(tmp_path / "cpu.max", "garbage\n")
    assert cpu_budget(tmp_path) == 8


def test_cpu_budget_of_this_process_is_within_its_cpus():
    assert 1 <= cpu_budget() <= (os.cpu_count() or 1)


def test_limit_threads_lowers_but_never_raises(restore_threads):
    torch.set_num_threads(2)
    assert limit_threads(1) == 1 == torch.get_num_threads()
    assert limit_threads(4) == 1  # a count the user chose below the cap is kept
    torch.set_num_threads(3)
    assert limit_threads(3) == 3


def test_limit_threads_defaults_to_the_cpu_budget(restore_threads, monkeypatch):
    monkeypatch.setattr(device_module, "cpu_budget", lambda: 1)
    torch.set_num_threads(2)
    assert limit_threads() == 1


@pytest.mark.parametrize("threads, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError), ("2", TypeError),
                                            (True, TypeError)])
def test_limit_threads_rejects_bad_counts(restore_threads, threads, error):
    with pytest.raises(error, match="threads"):
        limit_threads(threads)


def test_setup_notebook_caps_the_threads_and_says_so(no_accelerator, restore_rcparams, restore_threads,
                                                     monkeypatch, capsys):
    monkeypatch.setattr(device_module, "cpu_budget", lambda: 1)
    torch.set_num_threads(2)
    setup_notebook(seed=0)
    assert torch.get_num_threads() == 1
    assert "CPU threads: 1" in capsys.readouterr().out


def test_progress_bar_is_off_when_disabled_or_when_tqdm_disable_is_set(monkeypatch):
    from clip_tutorial.core.progress import progress_bar

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert not progress_bar(range(3), enabled=True, file=io.StringIO()).disable
    assert progress_bar(range(3), enabled=False).disable
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress_bar(range(3), enabled=True).disable
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert not progress_bar(range(3), enabled=True, file=io.StringIO()).disable
