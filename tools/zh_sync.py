#!/usr/bin/env python3
"""Keep the Chinese edition of a notebook in step with the English one.

The Chinese edition mirrors every English page under ``zh/``: ``chapters/ch1/01_x.ipynb`` is
translated in ``zh/chapters/ch1/01_x.ipynb`` and ``intro.md`` in ``zh/intro.md``. A Chinese notebook has the same cells as its English
notebook, in the same order and of the same types, and its code cells are byte-identical, so both
editions run the same experiments and glue the same numbers. Each Chinese markdown cell records in
its metadata (``cell.metadata["zh"]["source_sha256"]``) the SHA-256 of the English cell it
translates. When the English text changes, the recorded hash no longer matches and the cell is
*stale* until a translator revisits it and stamps it again. A Markdown page (the landing page, a
chapter's opening page, an appendix) is stamped as a whole: its first line is the comment
``<!-- zh_sync source_sha256=... -->`` with the hash of the English file it translates.

Usage::

    python tools/zh_sync.py                       # report missing pages, structure, code and stale cells; exit 1 if any
    python tools/zh_sync.py --copy-code           # copy every English code cell into its Chinese notebook
    python tools/zh_sync.py --new chapters/ch1/01_x.ipynb   # start a Chinese notebook: code copied, text still English
    python tools/zh_sync.py --stamp zh/chapters/ch1/01_x.ipynb --cells 0 3   # after translating cells 0 and 3
    python tools/zh_sync.py --stamp zh/intro.md   # a Markdown page, after translating all of it

``--stamp`` without ``--cells`` stamps every markdown cell of the notebook.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import re
import sys
from collections import Counter
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
ZH = "zh"
KEY = "source_sha256"
#: The roles whose targets a translation keeps: computed numbers and citations.
_KEPT = re.compile(r"\{(glue:text|glue|cite:p|cite:t|cite)\}`([^`]+)`")


def text_hash(source: str) -> str:
    """The SHA-256 (hex) of a cell's source text, as recorded in the Chinese cell."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def zh_path(english: Path, root: Path = ROOT) -> Path:
    """Where the Chinese edition of the English notebook ``english`` lives."""
    return root / ZH / english.resolve().relative_to(root.resolve())


_MD_STAMP = re.compile(r"\A<!-- zh_sync source_sha256=([0-9a-f]{64}) -->\n")


def english_pages(root: Path = ROOT) -> list[Path]:
    """Every English Markdown page of the book: the landing page, chapter openings, appendices, API."""
    pages = [root / "intro.md", root / "api.md", *sorted((root / "chapters").glob("*/index.md")),
             *sorted((root / "appendix").glob("*.md"))]
    return [page for page in pages if page.exists()]


def page_problem(english: str, chinese: str) -> str | None:
    """Why the Chinese Markdown page ``chinese`` is not an up-to-date translation of ``english``, or None."""
    stamp = _MD_STAMP.match(chinese)
    if stamp is None:
        return "not stamped as translated"
    if stamp.group(1) != text_hash(english):
        return "stale, the English page changed since it was translated"
    body = chinese[stamp.end():]
    if Counter(_KEPT.findall(english)) != Counter(_KEPT.findall(body)):
        return "glue or cite roles differ from the English page"
    return None


def stamp_page(english: str, chinese: str) -> str:
    """``chinese`` with its first line recording the hash of ``english`` (replacing an older stamp)."""
    return f"<!-- zh_sync source_sha256={text_hash(english)} -->\n" + _MD_STAMP.sub("", chinese, count=1)


def english_notebooks(root: Path = ROOT) -> list[Path]:
    """Every English notebook under ``chapters/``, sorted, checkpoints left out."""
    return sorted(p for p in (root / "chapters").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def recorded_hash(cell: nbformat.NotebookNode) -> str | None:
    """The hash of the English text a Chinese markdown cell was translated from, if stamped."""
    return cell.get("metadata", {}).get(ZH, {}).get(KEY)


def problems(english: nbformat.NotebookNode, chinese: nbformat.NotebookNode) -> list[str]:
    """What keeps ``chinese`` from being an up-to-date translation of ``english``; empty when none.

    A different number of cells, or cells of different types, is reported once (cell by cell
    comparisons would then mislead); otherwise a different kernelspec, every code cell whose source
    or metadata differs (the book build reuses the English outputs only for identical code cells
    and kernel), every markdown cell
    whose recorded hash is missing or no longer that of its English cell, and every markdown cell
    whose glued numbers or citations differ from its English cell's.
    """
    kinds_en = [cell.cell_type for cell in english.cells]
    kinds_zh = [cell.cell_type for cell in chinese.cells]
    if kinds_en != kinds_zh:
        return [f"structure: English has {len(kinds_en)} cells {kinds_en}, Chinese has {len(kinds_zh)} {kinds_zh}"]
    found = []
    if english.metadata.get("kernelspec") != chinese.metadata.get("kernelspec"):
        found.append("kernelspec differs from the English notebook's (run --copy-code)")
    for index, (en, zh) in enumerate(zip(english.cells, chinese.cells)):
        if en.cell_type == "code" and en.source != zh.source:
            found.append(f"cell {index}: code differs from the English cell (run --copy-code)")
        elif en.cell_type == "code" and en.metadata != zh.metadata:
            # the execution cache keys a notebook on its code cells with their metadata
            found.append(f"cell {index}: code cell metadata differs from the English cell's (run --copy-code)")
        elif en.cell_type == "markdown":
            recorded = recorded_hash(zh)
            if recorded is None:
                found.append(f"cell {index}: not stamped as translated")
            elif recorded != text_hash(en.source):
                found.append(f"cell {index}: stale, the English text changed since it was translated")
            elif (kept_en := Counter(_KEPT.findall(en.source))) != (kept_zh := Counter(_KEPT.findall(zh.source))):
                found.append(f"cell {index}: glue or cite roles differ: missing {sorted(kept_en - kept_zh)}, "
                             f"extra {sorted(kept_zh - kept_en)}")
    return found


def report(root: Path = ROOT) -> list[str]:
    """Every problem of the Chinese edition under ``root``, as ``path: problem`` lines."""
    lines = []
    english = english_notebooks(root)
    expected = {zh_path(path, root) for path in english}
    for path in english:
        target = zh_path(path, root)
        name = target.relative_to(root)
        if not target.exists():
            lines.append(f"{name}: missing (start it with --new {path.relative_to(root)})")
            continue
        lines += [f"{name}: {problem}" for problem in
                  problems(nbformat.read(path, as_version=4), nbformat.read(target, as_version=4))]
    for page in english_pages(root):
        target = zh_path(page, root)
        if not target.exists():
            lines.append(f"{target.relative_to(root)}: missing (start it with --new {page.relative_to(root)})")
        elif (problem := page_problem(page.read_text(encoding="utf-8"), target.read_text(encoding="utf-8"))):
            lines.append(f"{target.relative_to(root)}: {problem}")
    extra = sorted(p for p in (root / ZH / "chapters").rglob("*.ipynb") if p not in expected) \
        if (root / ZH / "chapters").is_dir() else []
    lines += [f"{p.relative_to(root)}: no English notebook at {p.relative_to(root / ZH)}" for p in extra]
    return lines


def _require_same_structure(english: nbformat.NotebookNode, chinese: nbformat.NotebookNode) -> None:
    if [c.cell_type for c in english.cells] != [c.cell_type for c in chinese.cells]:
        raise ValueError("chinese: expected the cell structure of the English notebook; fix the structure first")


def copy_code(english: nbformat.NotebookNode, chinese: nbformat.NotebookNode) -> int:
    """Copy every English code cell (source and metadata) and the kernelspec over the Chinese ones.

    The structures must be the same. Returns the number of cells (and kernelspec) changed.
    """
    _require_same_structure(english, chinese)
    changed = 0
    if english.metadata.get("kernelspec") != chinese.metadata.get("kernelspec"):
        chinese.metadata["kernelspec"] = copy.deepcopy(english.metadata.get("kernelspec"))
        changed += 1
    for en, zh in zip(english.cells, chinese.cells):
        if en.cell_type == "code" and (en.source != zh.source or en.metadata != zh.metadata):
            zh.source = en.source
            zh.metadata = copy.deepcopy(en.metadata)
            changed += 1
    return changed


def start(english: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A new Chinese notebook: the English cells copied, every markdown cell unstamped until translated."""
    chinese = copy.deepcopy(english)
    for cell in chinese.cells:
        cell.metadata.pop(ZH, None)
    return chinese


def stamp(english: nbformat.NotebookNode, chinese: nbformat.NotebookNode, cells: list[int] | None = None) -> int:
    """Record the English hash in the given markdown cells (all when ``None``); the number stamped.

    Raises:
        ValueError: if the structures differ, or a given index is not a markdown cell.
    """
    _require_same_structure(english, chinese)
    indices = [i for i, c in enumerate(english.cells) if c.cell_type == "markdown"] if cells is None else cells
    for index in indices:
        if not 0 <= index < len(english.cells) or english.cells[index].cell_type != "markdown":
            raise ValueError(f"cells: expected indices of markdown cells, got {index}")
        chinese.cells[index].metadata.setdefault(ZH, {})[KEY] = text_hash(english.cells[index].source)
    return len(indices)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copy-code", action="store_true")
    parser.add_argument("--new", type=Path, help="an English notebook to start a Chinese edition of")
    parser.add_argument("--stamp", type=Path, help="a Chinese notebook whose translated cells to stamp")
    parser.add_argument("--cells", type=int, nargs="+", help="with --stamp: the cells translated")
    args = parser.parse_args(argv)
    if args.new:
        english = (ROOT / args.new).resolve()
        target = zh_path(english)
        if target.exists():
            raise SystemExit(f"{target.relative_to(ROOT)} exists already")
        target.parent.mkdir(parents=True, exist_ok=True)
        if english.suffix == ".md":
            target.write_text(english.read_text(encoding="utf-8"), encoding="utf-8")
        else:
            nbformat.write(start(nbformat.read(english, as_version=4)), target)
        print(f"wrote {target.relative_to(ROOT)}: translate its markdown cells, then --stamp it")
        return 0
    if args.stamp:
        target = (ROOT / args.stamp).resolve()
        english = ROOT / target.relative_to((ROOT / ZH).resolve())
        if target.suffix == ".md":
            target.write_text(stamp_page(english.read_text(encoding="utf-8"), target.read_text(encoding="utf-8")),
                              encoding="utf-8")
            print(f"stamped {target.relative_to(ROOT)}")
            return 0
        chinese = nbformat.read(target, as_version=4)
        count = stamp(nbformat.read(english, as_version=4), chinese, args.cells)
        nbformat.write(chinese, target)
        print(f"stamped {count} cells of {target.relative_to(ROOT)}")
        return 0
    if args.copy_code:
        for path in english_notebooks():
            target = zh_path(path)
            if target.exists():
                chinese = nbformat.read(target, as_version=4)
                if copy_code(nbformat.read(path, as_version=4), chinese):
                    nbformat.write(chinese, target)
                    print(f"updated code cells of {target.relative_to(ROOT)}")
        return 0
    lines = report()
    print("\n".join(lines) if lines else "the Chinese edition is in step with the English one")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
