"""Choosing a device, seeding every random number generator, and the notebook setup.

Explained in Chapter 1 (the setup cell that opens every notebook).
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from .version import __version__

__all__ = ["get_device", "seed_everything", "setup_notebook"]


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


def setup_notebook(seed: int = 0, verbose: bool = True) -> torch.device:
    """Prepare a notebook: pick the device, seed everything, and set readable figure defaults.

    This is what the first code cell of every notebook in the book calls.

    Args:
        seed: the seed passed to :func:`seed_everything`.
        verbose: print the device and library versions.

    Returns:
        The device chosen by :func:`get_device`.
    """
    device = get_device()
    seed_everything(seed)
    try:
        import matplotlib

        matplotlib.rcParams.update({"figure.dpi": 100, "axes.titlesize": 11, "axes.labelsize": 10})
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        pass
    if verbose:
        print(f"clip_tutorial {__version__} | torch {torch.__version__} | device: {device} | seed: {seed}")
    return device
