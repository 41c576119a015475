"""Foundations: the device and seeding, the package version. Nothing here imports the rest of the package.

Explained in Chapter 1.1 (the setup cell).
"""
from .version import __version__
from .device import cpu_budget, get_device, limit_threads, seed_everything, setup_notebook

__all__ = ["__version__", "get_device", "seed_everything", "cpu_budget", "limit_threads", "setup_notebook"]
