"""The repository's Python files that are not in a package (tools under ``tools/``, the book's Sphinx
extensions under ``_ext/``), imported by path for the tests."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_module(relative_path: str, name: str) -> ModuleType:
    """The file ``relative_path`` (from the repository's root) imported as the module ``name``.

    The module is registered in ``sys.modules`` before it runs, where a dataclass defined in it
    looks itself up.
    """
    spec = importlib.util.spec_from_file_location(name, ROOT / relative_path)
    if spec is None or spec.loader is None:
        raise ValueError(f"relative_path: expected a Python file in the repository, got {relative_path!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
