#!/usr/bin/env python3
"""The README's "Open in Colab" links: a badge for the first notebook and one line per chapter.

Every link is built from ``_config.yml`` (``repository.url``, ``repository.branch`` and
``launch_buttons.colab_url``), the one place the book configures where it lives, and the notebooks are taken
in the order of ``_toc.yml``, numbered as the book numbers them. The links go between two marker lines of
``README.md``::

    <!-- colab-links: start -->
    <!-- colab-links: end -->

Usage::

    python tools/readme_badges.py            # print the block
    python tools/readme_badges.py --check    # exit 1 if README.md's block differs
    python tools/readme_badges.py --write    # rewrite README.md's block
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
START = "<!-- colab-links: start -->"
END = "<!-- colab-links: end -->"
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
_GITHUB = re.compile(r"^https://github\.com/(?P<owner>[^/\s]+)/(?P<repo>[^/\s]+?)(?:\.git)?/?$")


@dataclass(frozen=True)
class Page:
    """One notebook of the book: its number (``"1.1"``), its title and its path from the root."""

    number: str
    title: str
    path: str


@dataclass(frozen=True)
class Chapter:
    number: int
    title: str
    pages: list[Page]


def _read_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def colab_base(root: Path = ROOT) -> str:
    """``{colab_url}/github/{owner}/{repo}/blob/{branch}``, from ``_config.yml``."""
    config = _read_yaml(root / "_config.yml")
    repository = config.get("repository") or {}
    url = str(repository.get("url", "")).strip()
    match = _GITHUB.match(url)
    if not match:
        raise ValueError(f"{root / '_config.yml'}: repository.url must be a GitHub repository "
                         f"(https://github.com/OWNER/REPO) for Colab to open its notebooks, got {url!r}")
    branch = str(repository.get("branch") or "main")
    colab = str((config.get("launch_buttons") or {}).get("colab_url") or "https://colab.research.google.com")
    return f"{colab.rstrip('/')}/github/{match['owner']}/{match['repo']}/blob/{branch}"


def notebook_title(path: Path) -> str:
    """The text of the notebook's first level-1 heading."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    raise ValueError(f"{path}: no level-1 heading")


def chapters(root: Path = ROOT) -> list[Chapter]:
    """The numbered chapters of ``_toc.yml`` and their notebook pages, in the book's order and numbering."""
    toc = _read_yaml(root / "_toc.yml")
    found = []
    for part in toc.get("parts", []):
        if not part.get("numbered"):
            continue
        for entry in part.get("chapters", []):
            number = len(found) + 1
            pages = []
            for index, section in enumerate(entry.get("sections", []), start=1):
                path = root / f"{section['file']}.ipynb"
                if path.is_file():
                    pages.append(Page(f"{number}.{index}", notebook_title(path), f"{section['file']}.ipynb"))
            found.append(Chapter(number, str(entry.get("title") or entry["file"]), pages))
    if not found or not found[0].pages:
        raise ValueError(f"{root / '_toc.yml'}: no numbered chapter with notebooks")
    return found


def _title(text: str) -> str:
    """``text`` as a Markdown link title (shown on hover): backslashes and double quotes escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def block(root: Path = ROOT) -> str:
    """The lines between the markers, markers included."""
    base = colab_base(root)
    book = chapters(root)
    first = book[0].pages[0]
    lines = [
        START,
        f"[![Open In Colab]({BADGE})]({base}/{first.path}) "
        f"Start with {first.number}, *{first.title}*, in Colab.",
        "",
    ]
    for chapter in book:
        links = " · ".join(f'[{p.number}]({base}/{p.path} "{_title(p.title)}")' for p in chapter.pages)
        lines.append(f"- Chapter {chapter.number}, {chapter.title}: {links}")
    lines.append(END)
    return "\n".join(lines)


def replace_block(text: str, new_block: str) -> str:
    """``text`` with the part from the start marker to the end marker replaced by ``new_block``."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"README.md must hold one {START!r} line followed by one {END!r} line")
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    return before + new_block + after


def current_block(text: str) -> str:
    """The block that ``text`` holds now, markers included."""
    start = text.index(START)
    return text[start:text.index(END) + len(END)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if README.md's block differs")
    mode.add_argument("--write", action="store_true", help="rewrite README.md's block")
    args = parser.parse_args(argv)
    wanted = block()
    if not (args.check or args.write):
        print(wanted)
        return 0
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    updated = replace_block(text, wanted)
    if args.check:
        if updated != text:
            print(f"{readme}: the Colab links differ from _config.yml and _toc.yml; "
                  "run python tools/readme_badges.py --write", file=sys.stderr)
            return 1
        print(f"{readme}: the Colab links are up to date")
        return 0
    if updated != text:
        readme.write_text(updated, encoding="utf-8")
        print(f"{readme}: Colab links written")
    else:
        print(f"{readme}: already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
