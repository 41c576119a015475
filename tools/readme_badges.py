#!/usr/bin/env python3
"""The README's "Open in Colab" links, one block per edition: a badge for the first notebook and one line per chapter.

Every link is built from the edition's ``_config.yml`` (``repository.url``, ``repository.branch``,
``repository.path_to_book`` and ``launch_buttons.colab_url``), the one place the book configures where it lives,
and the notebooks are taken in the order of its ``_toc.yml``, numbered as the book numbers them. The English
edition is the book at the repository root, the Chinese one the book in ``zh/`` (``zh/_config.yml``,
``zh/_toc.yml``), whose titles and chapter names are Chinese. Each block goes between two marker lines of
``README.md``::

    <!-- colab-links: start -->
    <!-- colab-links: end -->
    <!-- colab-links-zh: start -->
    <!-- colab-links-zh: end -->

Usage::

    python tools/readme_badges.py            # print the blocks
    python tools/readme_badges.py --check    # exit 1 if a block of README.md differs or is missing
    python tools/readme_badges.py --write    # rewrite README.md's blocks
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
_GITHUB = re.compile(r"^https://github\.com/(?P<owner>[^/\s]+)/(?P<repo>[^/\s]+?)(?:\.git)?/?$")


@dataclass(frozen=True)
class Edition:
    """One edition of the book: where it is, where its block goes in README.md and the words of its lines.

    ``folder`` is the book's folder relative to the repository root (``""`` for the root itself) and must be its
    ``repository.path_to_book``. ``start_line`` and ``chapter_line`` are :meth:`str.format` templates: the first
    takes the first notebook's ``number`` and ``title``, the second a chapter's ``number``, ``title`` and
    ``links``.
    """

    name: str
    folder: str
    start: str
    end: str
    badge_alt: str
    start_line: str
    chapter_line: str


ENGLISH = Edition(
    name="English",
    folder="",
    start="<!-- colab-links: start -->",
    end="<!-- colab-links: end -->",
    badge_alt="Open In Colab",
    start_line="Start with {number}, *{title}*, in Colab.",
    chapter_line="- Chapter {number}, {title}: {links}",
)
CHINESE = Edition(
    name="Chinese",
    folder="zh",
    start="<!-- colab-links-zh: start -->",
    end="<!-- colab-links-zh: end -->",
    badge_alt="在 Colab 中打开",
    start_line="从 {number} *{title}* 开始，在 Colab 中打开。",
    chapter_line="- 第 {number} 章 {title}: {links}",
)
EDITIONS = (ENGLISH, CHINESE)


@dataclass(frozen=True)
class Page:
    """One notebook of the book: its number (``"1.1"``), its title and its path from the book's folder."""

    number: str
    title: str
    path: str


@dataclass(frozen=True)
class Chapter:
    """One numbered chapter of the book: its number, its title in the table of contents and its notebooks."""

    number: int
    title: str
    pages: list[Page]


def _read_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _sources(edition: Edition) -> str:
    """The files an edition's links come from, as README messages name them."""
    prefix = f"{edition.folder}/" if edition.folder else ""
    return f"{prefix}_config.yml and {prefix}_toc.yml"


def colab_base(root: Path = ROOT, edition: Edition = ENGLISH) -> str:
    """``{colab_url}/github/{owner}/{repo}/blob/{branch}[/{path_to_book}]``, from the edition's ``_config.yml``.

    ``root`` is the repository root; the edition's book is ``root / edition.folder``, and its
    ``repository.path_to_book`` must name that folder, or the links would open other files than the book's.
    """
    path = root / edition.folder / "_config.yml"
    config = _read_yaml(path)
    repository = config.get("repository") or {}
    url = str(repository.get("url", "")).strip()
    match = _GITHUB.match(url)
    if not match:
        raise ValueError(f"{path}: repository.url must be a GitHub repository "
                         f"(https://github.com/OWNER/REPO) for Colab to open its notebooks, got {url!r}")
    book = str(repository.get("path_to_book") or "").strip().strip("/")
    if book != edition.folder:
        raise ValueError(f"{path}: repository.path_to_book is {book!r}, but the {edition.name} edition's book is "
                         f"in {edition.folder or '.'!r} of the repository")
    branch = str(repository.get("branch") or "main")
    colab = str((config.get("launch_buttons") or {}).get("colab_url") or "https://colab.research.google.com")
    base = f"{colab.rstrip('/')}/github/{match['owner']}/{match['repo']}/blob/{branch}"
    return f"{base}/{book}" if book else base


def notebook_title(path: Path) -> str:
    """The text of the notebook's first level-1 heading."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    raise ValueError(f"{path}: no level-1 heading")


def chapters(root: Path = ROOT, edition: Edition = ENGLISH) -> list[Chapter]:
    """The numbered chapters of the edition's ``_toc.yml`` and their notebook pages, in the book's order and
    numbering; page paths are relative to the edition's folder."""
    book = root / edition.folder
    toc = _read_yaml(book / "_toc.yml")
    found = []
    for part in toc.get("parts", []):
        if not part.get("numbered"):
            continue
        for entry in part.get("chapters", []):
            number = len(found) + 1
            pages = []
            for index, section in enumerate(entry.get("sections", []), start=1):
                path = book / f"{section['file']}.ipynb"
                if path.is_file():
                    pages.append(Page(f"{number}.{index}", notebook_title(path), f"{section['file']}.ipynb"))
            found.append(Chapter(number, str(entry.get("title") or entry["file"]), pages))
    if not found or not found[0].pages:
        raise ValueError(f"{book / '_toc.yml'}: no numbered chapter with notebooks")
    return found


def _title(text: str) -> str:
    """``text`` as a Markdown link title (shown on hover): backslashes and double quotes escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def block(root: Path = ROOT, edition: Edition = ENGLISH) -> str:
    """The edition's lines between its markers, markers included."""
    base = colab_base(root, edition)
    book = chapters(root, edition)
    first = book[0].pages[0]
    lines = [
        edition.start,
        f"[![{edition.badge_alt}]({BADGE})]({base}/{first.path}) "
        + edition.start_line.format(number=first.number, title=first.title),
        "",
    ]
    for chapter in book:
        links = " · ".join(f'[{p.number}]({base}/{p.path} "{_title(p.title)}")' for p in chapter.pages)
        lines.append(edition.chapter_line.format(number=chapter.number, title=chapter.title, links=links))
    lines.append(edition.end)
    return "\n".join(lines)


def _span(text: str, edition: Edition) -> tuple[int, int]:
    """Where the edition's block is in ``text``: from its start marker to the end of its end marker."""
    if text.count(edition.start) != 1 or text.count(edition.end) != 1 \
            or text.index(edition.start) > text.index(edition.end):
        raise ValueError(f"README.md must hold one {edition.start!r} line followed by one {edition.end!r} line, "
                         f"between which python tools/readme_badges.py --write puts the {edition.name} edition's "
                         "Colab links")
    return text.index(edition.start), text.index(edition.end) + len(edition.end)


def replace_block(text: str, new_block: str, edition: Edition = ENGLISH) -> str:
    """``text`` with the part from the edition's start marker to its end marker replaced by ``new_block``."""
    start, end = _span(text, edition)
    return text[:start] + new_block + text[end:]


def current_block(text: str, edition: Edition = ENGLISH) -> str:
    """The edition's block that ``text`` holds now, markers included."""
    start, end = _span(text, edition)
    return text[start:end]


def stale_editions(text: str, root: Path = ROOT) -> list[Edition]:
    """The editions whose block in the README ``text`` differs from what their configuration makes.

    Raises :class:`ValueError` when an edition's markers are missing, repeated or out of order.
    """
    return [edition for edition in EDITIONS if current_block(text, edition) != block(root, edition)]


def updated_readme(text: str, root: Path = ROOT) -> str:
    """The README ``text`` with every edition's block rewritten."""
    for edition in EDITIONS:
        text = replace_block(text, block(root, edition), edition)
    return text


def main(argv: list[str] | None = None, root: Path = ROOT) -> int:
    """Print, check (``--check``) or rewrite (``--write``) the Colab links of ``root / "README.md"``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if a block of README.md differs or is missing")
    mode.add_argument("--write", action="store_true", help="rewrite README.md's blocks")
    args = parser.parse_args(argv)
    if not (args.check or args.write):
        print("\n\n".join(block(root, edition) for edition in EDITIONS))
        return 0
    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8")
    try:
        stale = stale_editions(text, root)
    except ValueError as error:
        print(f"{readme}: {error}", file=sys.stderr)
        return 1
    if args.check:
        for edition in stale:
            print(f"{readme}: the {edition.name} edition's Colab links differ from {_sources(edition)}; "
                  "run python tools/readme_badges.py --write", file=sys.stderr)
        if stale:
            return 1
        print(f"{readme}: the Colab links are up to date")
        return 0
    if stale:
        readme.write_text(updated_readme(text, root), encoding="utf-8")
        print(f"{readme}: Colab links written ({', '.join(edition.name for edition in stale)})")
    else:
        print(f"{readme}: already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
