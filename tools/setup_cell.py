#!/usr/bin/env python3
"""The setup cell that opens every notebook of the book: print it, check it, stamp it.

The first code cell of every notebook is the same few lines. In Colab they install
``clip_tutorial`` from the book's repository; anywhere else the package is already
installed and the cell only picks the device and seeds the random number generators.

The repository URL inside the cell is not written here: it is read from
``repository.url`` in ``_config.yml``, the one place the book configures it.

Usage::

    python tools/setup_cell.py                 # print the canonical cell
    python tools/setup_cell.py --check         # exit 1 if any notebook's first code cell differs
    python tools/setup_cell.py --fix           # rewrite the first code cell where it differs
    python tools/setup_cell.py --check a.ipynb # only these notebooks
    python tools/setup_cell.py --new chapters/ch2/01_x.ipynb --title "Title"  # a new notebook

``--fix`` replaces the first code cell when it already is a setup cell (it calls
``setup_notebook``); otherwise it inserts the setup cell before the first code cell.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]

SETUP_CELL_TEMPLATE = """\
# Setup: in Colab, install clip_tutorial from the book's repository; elsewhere it is already installed.
import sys
if "google.colab" in sys.modules:
    %pip install -q "clip-tutorial @ git+{repository_url}"
import clip_tutorial
device = clip_tutorial.setup_notebook(seed=0)"""

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def repository_url(root: Path = ROOT) -> str:
    """Return ``repository.url`` from the book's ``_config.yml`` (without a trailing slash)."""
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    try:
        url = config["repository"]["url"]
    except (KeyError, TypeError) as err:
        raise SystemExit(f"{root / '_config.yml'}: repository.url is not set") from err
    return str(url).rstrip("/")


def canonical_setup_cell(root: Path = ROOT) -> str:
    """Return the exact source of the setup cell, built from the configured repository URL."""
    return SETUP_CELL_TEMPLATE.format(repository_url=repository_url(root))


def book_notebooks(root: Path = ROOT) -> list[Path]:
    """Every notebook under ``chapters/``, sorted, checkpoints left out."""
    return sorted(
        p for p in (root / "chapters").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
    )


def first_code_cell(nb) -> tuple[int, object] | tuple[None, None]:
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            return index, cell
    return None, None


def _is_setup_cell(source: str) -> bool:
    return "setup_notebook(" in source


def check(paths: list[Path], cell: str) -> list[str]:
    """Return one message per notebook whose first code cell is not ``cell``."""
    problems = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        _, code = first_code_cell(nb)
        if code is None:
            problems.append(f"{path}: has no code cell")
        elif code.source != cell:
            problems.append(f"{path}: first code cell is not the setup cell")
    return problems


def fix(path: Path, cell: str) -> bool:
    """Make the first code cell of ``path`` the setup cell; return True if the file changed."""
    nb = nbformat.read(path, as_version=4)
    index, code = first_code_cell(nb)
    if code is not None and code.source == cell:
        return False
    if code is not None and _is_setup_cell(code.source):
        code.source = cell
        code.outputs = []
        code.execution_count = None
    else:
        new_cell = nbformat.v4.new_code_cell(cell)
        if (nb.nbformat, nb.nbformat_minor) < (4, 5):
            new_cell.pop("id", None)  # cell ids exist from nbformat 4.5 on
        position = index if index is not None else len(nb.cells)
        nb.cells.insert(position, new_cell)
    nbformat.write(nb, path)
    return True


def new_notebook(path: Path, title: str, cell: str) -> None:
    """Write a new notebook: a level-1 title, then the setup cell."""
    if path.exists():
        raise SystemExit(f"{path} already exists")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}"), nbformat.v4.new_code_cell(cell)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="report notebooks whose setup cell differs")
    mode.add_argument("--fix", action="store_true", help="rewrite setup cells that differ")
    mode.add_argument("--new", metavar="PATH", type=Path, help="create a new notebook at PATH")
    parser.add_argument("--title", help="title of the notebook made by --new")
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks (default: all under chapters/)")
    args = parser.parse_args(argv)

    cell = canonical_setup_cell()
    if args.new:
        if not args.title:
            parser.error("--new needs --title")
        new_notebook(args.new, args.title, cell)
        print(f"created {args.new}")
        return 0
    if not (args.check or args.fix):
        print(cell)
        return 0

    paths = args.notebooks or book_notebooks()
    if args.check:
        problems = check(paths, cell)
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(paths) - len(problems)}/{len(paths)} notebooks have the setup cell")
        return 1 if problems else 0
    changed = [p for p in paths if fix(p, cell)]
    for path in changed:
        print(f"fixed {path}")
    print(f"{len(changed)} of {len(paths)} notebooks changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
