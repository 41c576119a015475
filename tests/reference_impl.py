"""Reference implementations for fidelity tests, loaded offline from installed wheels.

``open_clip_torch`` is installed without its dependencies (``make install`` does it), because
``import open_clip`` needs torchvision, which the CPU torch build here does not have. Its modules
are loaded from their files under a private package name, so the package ``__init__`` never runs;
``torchvision.ops.misc.FrozenBatchNorm2d``, imported by ``open_clip.utils`` but unused by the code
the tests call, is stubbed while they are imported when torchvision is missing.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest

_PACKAGE = "_open_clip_reference"


def open_clip_dir() -> Path:
    """Directory of the installed ``open_clip`` package (skips the test when it is missing)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("open_clip_torch is not installed (run `make install`)")
    return Path(list(spec.submodule_search_locations)[0])


def open_clip_module(name: str) -> types.ModuleType:
    """Import ``open_clip.<name>`` from its file, without running ``open_clip/__init__.py``."""
    if _PACKAGE not in sys.modules:
        package = types.ModuleType(_PACKAGE)
        package.__path__ = [str(open_clip_dir())]
        sys.modules[_PACKAGE] = package
    stubbed = _stub_torchvision() if importlib.util.find_spec("torchvision") is None else []
    try:
        return importlib.import_module(f"{_PACKAGE}.{name}")
    finally:  # never leave the stub behind: other libraries probe for torchvision
        for stub in stubbed:
            sys.modules.pop(stub, None)


def _stub_torchvision() -> list[str]:
    import torch

    class FrozenBatchNorm2d(torch.nn.Module):  # pragma: no cover - never called by the tests
        def __init__(self, *args, **kwargs):
            raise RuntimeError("torchvision stub: FrozenBatchNorm2d is not available")

    names = ["torchvision", "torchvision.ops", "torchvision.ops.misc"]
    modules = {n: types.ModuleType(n) for n in names}
    modules["torchvision.ops.misc"].FrozenBatchNorm2d = FrozenBatchNorm2d
    modules["torchvision"].ops = modules["torchvision.ops"]
    modules["torchvision.ops"].misc = modules["torchvision.ops.misc"]
    sys.modules.update(modules)
    return names


def official_vocab_path() -> Path:
    """The official CLIP BPE vocabulary as shipped inside the open_clip_torch wheel."""
    return open_clip_dir() / "bpe_simple_vocab_16e6.txt.gz"
