"""Choosing a device, seeding every random number generator, CPU threads, and the notebook setup.

Explained in Chapter 1 (the setup cell that opens every notebook).
"""
from __future__ import annotations

import math
import os
import random
from pathlib import Path

import numpy as np
import torch

from .version import __version__

__all__ = ["get_device", "seed_everything", "cpu_budget", "limit_threads", "setup_notebook"]

CGROUP_ROOT = Path("/sys/fs/cgroup")


def get_device(prefer: str | None = None) -> torch.device:
    """Return the best available device: CUDA, then Apple MPS, then the CPU.

    Args:
        prefer: force a device type ("cuda", "mps" or "cpu"). The environment variable
            ``CLIP_TUTORIAL_DEVICE`` does the same without changing code.

    Raises:
        ValueError: if ``prefer`` names an unknown device type or one that is not available.
    """
    prefer = prefer or os.environ.get("CLIP_TUTORIAL_DEVICE") or None
    if prefer is not None:
        if not isinstance(prefer, str) or prefer not in ("cuda", "mps", "cpu"):
            raise ValueError(f"prefer: expected 'cuda', 'mps' or 'cpu', got {prefer!r}")
        available = {
            "cuda": torch.cuda.is_available(),
            "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
            "cpu": True,
        }
        if not available[prefer]:
            raise ValueError(f"prefer: device {prefer!r} was requested but is not available on this machine")
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and PyTorch's random number generators.

    Returns a ``torch.Generator`` seeded with the same value, for code that wants its own stream.

    Raises:
        TypeError: if ``seed`` is not an integer.
        ValueError: if ``seed`` is negative.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected a non-negative int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _cgroup_quota(root: Path) -> float | None:
    """The CPU quota (in CPUs) of the control groups of this process and their ancestors, or None.

    Reads cgroup v2 (``cpu.max``: ``"<quota> <period>"`` or ``"max <period>"``) and cgroup v1
    (``cpu.cfs_quota_us`` and ``cpu.cfs_period_us``, quota -1 for none); the tightest quota wins.
    """
    folders: list[Path] = []
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, relative = parts
        relative = relative.strip().lstrip("/")
        if ".." in Path(relative).parts:  # a control group outside this namespace's view
            continue
        if controllers == "":  # cgroup v2
            folders.append(root / relative)
        elif "cpu" in controllers.split(","):  # cgroup v1
            for name in (controllers, "cpu", "cpu,cpuacct"):
                folders.append(root / name / relative)
    folders += [root, root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"]
    quotas: list[float] = []
    seen: set[Path] = set()
    for folder in folders:
        for current in (folder, *folder.parents):
            if current in seen or not current.is_relative_to(root):
                continue
            seen.add(current)
            try:
                if (current / "cpu.max").is_file():
                    quota, period = (current / "cpu.max").read_text(encoding="utf-8").split()[:2]
                    if quota != "max" and float(period) > 0:
                        quotas.append(float(quota) / float(period))
                elif (current / "cpu.cfs_quota_us").is_file():
                    quota = float((current / "cpu.cfs_quota_us").read_text(encoding="utf-8"))
                    period = float((current / "cpu.cfs_period_us").read_text(encoding="utf-8"))
                    if quota > 0 and period > 0:
                        quotas.append(quota / period)
            except (OSError, ValueError):
                continue
    return min(quotas) if quotas else None


def cpu_budget(cgroup_root: str | os.PathLike = CGROUP_ROOT) -> int:
    """The number of CPUs this process can actually use (at least 1).

    ``os.cpu_count()`` counts the machine's CPUs. A process may be allowed fewer: its CPU
    affinity (``taskset``, a container's ``--cpuset-cpus``) and its control group's CPU quota
    (a container's ``--cpus``, a batch job's limit) both cap it. This returns the smallest of
    the three, the quota rounded down.

    Args:
        cgroup_root: where the control-group file system is mounted.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(Path(cgroup_root))
    if quota is not None:
        cpus = min(cpus, math.floor(quota))
    return max(1, cpus)


def limit_threads(threads: int | None = None) -> int:
    """Cap PyTorch's CPU threads at ``threads`` (default :func:`cpu_budget`); never raise them.

    PyTorch starts one thread per CPU of the machine. When the process may use fewer CPUs
    (a container or job limited to two cores of a large machine), the extra threads take turns
    on the same cores and every parallel operation waits for the slowest. A count that is
    already at or below the cap (set by the user or by ``OMP_NUM_THREADS``) is kept.

    Args:
        threads: the most threads to use; ``None`` for :func:`cpu_budget`.

    Returns:
        The number of threads PyTorch now uses.

    Raises:
        TypeError: if ``threads`` is not an int or None.
        ValueError: if ``threads`` is smaller than 1.
    """
    if threads is None:
        threads = cpu_budget()
    elif isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads: expected a positive int or None, got {type(threads).__name__}")
    elif threads < 1:
        raise ValueError(f"threads: expected a positive int or None, got {threads}")
    if torch.get_num_threads() > threads:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def setup_notebook(seed: int = 0, verbose: bool = True) -> torch.device:
    """Prepare a notebook: pick the device, seed everything, fit the CPU threads, set figure defaults.

    This is what the first code cell of every notebook in the book calls. PyTorch's CPU threads
    are capped at the CPUs this process may use (:func:`limit_threads`), which changes nothing
    on a machine whose CPUs are all available.

    Args:
        seed: the seed passed to :func:`seed_everything`.
        verbose: print the device, the CPU threads and the library versions.

    Returns:
        The device chosen by :func:`get_device`.
    """
    device = get_device()
    seed_everything(seed)
    threads = limit_threads()
    try:
        import matplotlib

        matplotlib.rcParams.update({"figure.dpi": 100, "axes.titlesize": 11, "axes.labelsize": 10})
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        pass
    if verbose:
        print(f"clip_tutorial {__version__} | torch {torch.__version__} | device: {device} | "
              f"CPU threads: {threads} | seed: {seed}")
    return device
