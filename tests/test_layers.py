"""The package's architecture, checked: layers, no cycles, no private names across modules, a light root.

``clip_tutorial`` is a house of layers (see the docstring of ``clip_tutorial/__init__.py``). The order is
declared once, in ``LAYERS`` below; a module may import from its own layer and from the layers below it.
The imports are read from the source with :mod:`ast` (nothing is imported), including imports inside
functions; relative imports are resolved. Every check is also run on a small bad package written to a
temporary folder, so that each one is shown to fail when it should.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "clip_tutorial"

# The layers, bottom to top, in the order the book introduces them. ``clip_tutorial.<layer>`` and everything
# under it belongs to that layer; ``cli`` is the top, with the root ``__init__`` beside it.
LAYERS = ("core", "text", "data", "model", "objectives", "evaluation", "weights", "train", "generate", "apps",
          "viz", "exercises", "cli")
# Modules whose place is not their folder: ``python -m clip_tutorial.train`` runs ``train/__main__.py``,
# an entry script that calls the command line, so it stands at the top with it.
TOP_MODULES = ("", "cli", "train.__main__")
# What ``import clip_tutorial`` must not load: the root imports its names lazily (PEP 562).
HEAVY = ("matplotlib", "sklearn", "scipy", "ipywidgets", "transformers")


# -- reading the imports ---------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One imported thing: the module it comes from, the name taken from it (None for ``import x``)."""

    importer: str
    target: str  # the package module the import runs (the longest known prefix)
    name: str | None  # for ``from target import name`` when ``name`` is not itself a module
    line: int
    attribute: bool = False  # not an import: ``module.name`` read from a module the importer imported

    def __str__(self) -> str:
        if self.attribute:
            return f"uses {self.target}.{self.name} (line {self.line})"
        what = f"from {self.target} import {self.name}" if self.name else f"import {self.target}"
        return f"{what} (line {self.line})"


def module_files(package_dir: Path) -> dict[str, Path]:
    """Every module of the package under ``package_dir``, by dotted name (``pkg.sub.mod``; ``pkg.sub`` for its ``__init__``)."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _resolve(module: str, is_package: bool, level: int, relative: str | None) -> str:
    """The absolute name of ``from <level dots><relative> import ...`` written in ``module``."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(base) - 1:
        raise ValueError(f"{module}: relative import beyond the top-level package")
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([relative] if relative else []))


def _known(name: str, known: set[str]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package, or None for an outside module."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return None


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for the expression ``a.b.c`` (names and attributes only), else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def read_imports(package_dir: Path) -> dict[str, list[Import]]:
    """Every import of a package module by every module of the package under ``package_dir`` (``__future__`` aside).

    Also listed, marked ``attribute``: every ``module.name`` read through a name that an import bound to a
    package module (``from pkg import mod`` then ``mod.name``), since that reaches into the module as an
    import would.
    """
    files = module_files(package_dir)
    known = set(files)
    result: dict[str, list[Import]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        found = []
        bound: dict[str, str] = {}  # local name -> the package module an import bound it to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _known(alias.name, known)
                    if target:
                        found.append(Import(module, target, None, node.lineno))
                        local = alias.asname or alias.name.split(".")[0]
                        bound[local] = alias.name if alias.asname else local
            elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
                source = (_resolve(module, is_package, node.level, node.module) if node.level
                          else node.module or "")
                if _known(source, known) is None:
                    continue
                for alias in node.names:
                    if f"{source}.{alias.name}" in known:  # ``from pkg import submodule``
                        found.append(Import(module, f"{source}.{alias.name}", None, node.lineno))
                        bound[alias.asname or alias.name] = f"{source}.{alias.name}"
                    else:
                        found.append(Import(module, _known(source, known), alias.name, node.lineno))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and (owner := _dotted(node.value)):
                head, _, rest = owner.partition(".")
                if head in bound and (full := ".".join(filter(None, [bound[head], rest]))) in known:
                    found.append(Import(module, full, node.attr, node.lineno, attribute=True))
        result[module] = sorted(found, key=lambda imp: (imp.line, imp.attribute))
    return result


# -- the checks (each returns its complaints; an empty list means all is well) ----------


def layer_of(module: str, package: str = "clip_tutorial") -> str | None:
    """The layer a module belongs to, or None if it lies outside every declared layer."""
    inner = module.removeprefix(package).removeprefix(".")
    if inner in TOP_MODULES:
        return LAYERS[-1]
    head = inner.split(".")[0]
    return head if head in LAYERS[:-1] else None


def unplaced_modules(modules: list[str], package: str = "clip_tutorial") -> list[str]:
    """Modules that belong to no declared layer."""
    return [
        f"{m} belongs to no layer: move it into one of the layer packages ({', '.join(LAYERS[:-1])}), "
        f"or, for a new layer, add it to LAYERS in tests/test_layers.py at its place in the order"
        for m in modules if layer_of(m, package) is None
    ]


def upward_imports(imports: dict[str, list[Import]], package: str = "clip_tutorial") -> list[str]:
    """Imports from a higher layer than the importer's."""
    problems = []
    for module, found in imports.items():
        low = layer_of(module, package)
        for imp in found:
            high = layer_of(imp.target, package)
            if low is None or high is None or imp.attribute:  # an attribute's module is imported already
                continue  # reported by unplaced_modules
            if LAYERS.index(high) > LAYERS.index(low):
                problems.append(f"{module} (layer {low}) imports from the higher layer {high}: {imp}")
    return problems


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    """One cycle, as a path ``a -> b -> a``, for every group of modules that import each other in a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)

    cycles = []
    for group in groups:
        start = min(group)
        if len(group) == 1 and start not in graph.get(start, ()):
            continue
        # Shortest way from ``start`` back to itself, inside the group (breadth first).
        members, came_from, frontier = set(group), {}, [start]
        while start not in came_from:
            following = []
            for node in frontier:
                for nxt in sorted(graph.get(node, ())):
                    if nxt in members and nxt not in came_from:
                        came_from[nxt] = node
                        following.append(nxt)
            frontier = following
        path, node = [start], came_from[start]
        while node != start:
            path.append(node)
            node = came_from[node]
        cycles.append(" -> ".join([start, *reversed(path[1:]), start]))
    return cycles


def import_graph(imports: dict[str, list[Import]]) -> dict[str, set[str]]:
    """Module -> the package modules it imports (itself excluded)."""
    return {m: {imp.target for imp in found if imp.target != m} for m, found in imports.items()}


def private_imports(imports: dict[str, list[Import]]) -> list[str]:
    """Imports (or uses through an imported module) of a ``_private`` name or module that another module defines."""
    problems = []
    for module, found in imports.items():
        for imp in found:
            if imp.target == module:
                continue
            last = imp.name or imp.target.rsplit(".", 1)[-1]
            private_name = last.startswith("_") and not (last.startswith("__") and last.endswith("__"))
            if private_name:
                problems.append(f"{module} reaches the private name {last!r} of {imp.target}: {imp} "
                                f"(make it public there, or move the code that needs it)")
    return problems


def heavy_modules_loaded(statement: str, heavy: tuple[str, ...], path: list[Path]) -> list[str]:
    """Which of ``heavy`` a fresh interpreter holds in ``sys.modules`` after running ``statement``."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(set(sys.modules) & set({list(heavy)!r}))))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=path[0], env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- the package itself -------------------------------------------------------------------

IMPORTS = read_imports(PACKAGE)


def test_the_package_has_modules_and_imports():
    assert {"clip_tutorial", "clip_tutorial.cli", "clip_tutorial.model.clip"} <= set(IMPORTS)
    assert any(imp.target == "clip_tutorial.model.config" for imp in IMPORTS["clip_tutorial.model"])


def test_every_module_belongs_to_a_layer():
    problems = unplaced_modules(sorted(IMPORTS))
    assert not problems, "\n".join(problems)


def test_no_module_imports_from_a_higher_layer():
    problems = upward_imports(IMPORTS)
    assert not problems, "\n".join(problems)


def test_no_import_cycles():
    cycles = import_cycles(import_graph(IMPORTS))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_module_imports_a_private_name_of_another():
    problems = private_imports(IMPORTS)
    assert not problems, "\n".join(problems)


def test_importing_the_package_loads_nothing_heavy():
    loaded = heavy_modules_loaded("import clip_tutorial", HEAVY, [ROOT])
    assert not loaded, f"`import clip_tutorial` loads {loaded}; import them where they are used, not at the root"


# -- the checks fail when they should: a small bad package ----------------------------------

_BAD_PACKAGE = {
    "__init__.py": "import fakeheavy\n",
    "cli.py": "from clip_tutorial.apps import tool\n",
    "core/__init__.py": "from .device import get_device\n",
    "core/device.py": "from __future__ import annotations\n\ndef get_device():\n    return 'cpu'\n",
    "model/__init__.py": "from .clip import CLIP\n",
    "model/clip.py": ("import torch\nfrom ..core import device\n\n"
                      "class CLIP:\n    def encode(self):\n        from clip_tutorial.train.loop import fit\n"),
    "train/__init__.py": "",
    "train/__main__.py": "from clip_tutorial.cli import main\n",
    "train/loop.py": ("from ..model import CLIP\nfrom clip_tutorial.model.clip import _helper\n"
                      "import clip_tutorial.core.device\nfrom ..core import device as dev\n\n"
                      "def fit():\n    return dev._cache, clip_tutorial.core.device._default, dev.get_device()\n"),
    "apps/__init__.py": "from . import tool\n",
    "apps/tool.py": "from clip_tutorial.apps import VERSION\nfrom . import _secret\n",
    "apps/_secret.py": "",
    "misc.py": "from clip_tutorial.core.device import get_device\n",
}


@pytest.fixture(scope="module")
def bad_package(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    for name, text in _BAD_PACKAGE.items():
        path = root / "clip_tutorial" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / "fakeheavy.py").write_text("", encoding="utf-8")
    (root / "fakelight.py").write_text("", encoding="utf-8")
    return root / "clip_tutorial"


def test_reading_resolves_relative_and_function_level_imports(bad_package):
    imports = read_imports(bad_package)
    clip = imports["clip_tutorial.model.clip"]
    assert [(i.target, i.name) for i in clip] == [("clip_tutorial.core.device", None),
                                                  ("clip_tutorial.train.loop", "fit")]
    assert imports["clip_tutorial.core.device"] == []  # __future__ and outside modules are not package imports
    assert [(i.target, i.name) for i in imports["clip_tutorial.model"]] == [("clip_tutorial.model.clip", "CLIP")]


def test_a_module_outside_the_layers_is_reported(bad_package):
    problems = unplaced_modules(sorted(read_imports(bad_package)))
    assert len(problems) == 1 and problems[0].startswith("clip_tutorial.misc belongs to no layer")
    assert "add it to LAYERS" in problems[0]


def test_an_upward_import_is_reported_with_both_layers(bad_package):
    problems = upward_imports(read_imports(bad_package))
    assert problems == ["clip_tutorial.model.clip (layer model) imports from the higher layer train: "
                        "from clip_tutorial.train.loop import fit (line 6)"]
    # the entry script may import the command line, which may import every layer
    assert layer_of("clip_tutorial.train.__main__") == layer_of("clip_tutorial") == "cli"


def test_a_cycle_is_reported_as_a_path(bad_package):
    cycles = import_cycles(import_graph(read_imports(bad_package)))
    assert cycles == ["clip_tutorial.apps -> clip_tutorial.apps.tool -> clip_tutorial.apps",
                      "clip_tutorial.model -> clip_tutorial.model.clip -> clip_tutorial.train.loop -> "
                      "clip_tutorial.model"]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}) == ["a -> b -> c -> a"]
    assert import_cycles({"a": {"a"}}) == ["a -> a"]
    assert import_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_a_private_import_is_reported(bad_package):
    problems = private_imports(read_imports(bad_package))
    assert [p.split(" (make")[0] for p in problems] == [
        "clip_tutorial.apps.tool reaches the private name '_secret' of clip_tutorial.apps._secret: "
        "import clip_tutorial.apps._secret (line 2)",
        "clip_tutorial.train.loop reaches the private name '_helper' of clip_tutorial.model.clip: "
        "from clip_tutorial.model.clip import _helper (line 2)",
        "clip_tutorial.train.loop reaches the private name '_cache' of clip_tutorial.core.device: "
        "uses clip_tutorial.core.device._cache (line 7)",
        "clip_tutorial.train.loop reaches the private name '_default' of clip_tutorial.core.device: "
        "uses clip_tutorial.core.device._default (line 7)",
    ]


def test_a_heavy_import_at_the_root_is_reported(bad_package):
    loaded = heavy_modules_loaded("import clip_tutorial", ("fakeheavy", "fakelight"), [bad_package.parent])
    assert loaded == ["fakeheavy"]
