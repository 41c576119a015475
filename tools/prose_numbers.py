#!/usr/bin/env python3
"""Find numbers typed into the book's prose that should come from a computation.

A figure that a page measures must reach its text through ``{glue:text}`name``` (see
``clip_tutorial.viz.glue.glue``); a figure from a paper carries a ``{cite}`` in the same sentence.
This tool reads the markdown of every notebook and chapter overview page and lists each sentence
holding a number that is neither. It ignores what is not prose: code, maths, roles, link targets,
HTML, and numbers that are part of a name (``ViT-B/32``, ``RN50x64``, ``fp16``).

A number in prose is accepted when it

- is glued (it is then not in the markdown at all),
- stands in a sentence that cites its source with ``{cite}``, ``{cite:p}`` or ``{cite:t}``,
- is a single digit (a count of structural things: "two towers", "4 exercises"),
- is a year, or a reference such as "Chapter 3", "section 1.7", "Exercise 2", or
- matches a pattern of the allow-list ``tools/prose_numbers_allow.yml``, each with its reason.

Usage::

    python tools/prose_numbers.py                 # every page; exit 1 if any sentence is flagged
    python tools/prose_numbers.py chapters/ch1/01_clip_in_60_seconds.ipynb
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
ALLOW_FILE = ROOT / "tools" / "prose_numbers_allow.yml"

_CITE = re.compile(r"\{cite(?::[a-z]+)?\}`[^`]+`")
_NOT_PROSE = [
    re.compile(r"```.*?```", re.DOTALL),        # fenced code and directives written with backticks
    re.compile(r"^:::.*$", re.MULTILINE),         # colon-fence directive lines
    re.compile(r"^\s*:[\w-]+:.*$", re.MULTILINE),  # directive options
    re.compile(r"\$\$.*?\$\$", re.DOTALL),       # display maths
    re.compile(r"\\begin\{(\w+\*?)\}.*?\\end\{\1\}", re.DOTALL),
    re.compile(r"(?<!\\)\$[^$\n]+?(?<!\\)\$"),   # inline maths
    re.compile(r"\{[\w:-]+\}`[^`]*`"),            # roles: glue, cite, term, ref, doc, ...
    re.compile(r"`[^`\n]*`"),                     # inline code
    re.compile(r"<!--.*?-->", re.DOTALL),        # comments
    re.compile(r"<[^>\n]+>"),                     # HTML tags
    re.compile(r"\]\([^)\s]*\)"),                 # link targets
    re.compile(r"https?://\S+"),
    re.compile(r"\((?:[\w-]+/)*[\w.-]+\.(?:ipynb|md)(?:#[\w-]*)?\)"),
]
_REFERENCE = re.compile(
    r"\b(?:[Cc]hapters?|[Ss]ections?|[Ee]xercises?|[Ff]igures?|[Tt]ables?|[Ee]quations?|[Pp]arts?|[Pp]ages?|[Aa]ppendix)"
    r"\s+\d+(?:\.\d+)*(?:\s*(?:[–-]|and|or|,)\s*\d+(?:\.\d+)*)*")
_YEAR = re.compile(r"(?<![\d.,])(?:19|20)\d\d(?![\d.,]\d)")
# A number that stands on its own, not inside a name such as ViT-B/32, RN50x64, fp16 or L2.
_NUMBER = re.compile(r"(?<![\w./\\@×-])[-−+]?\d[\d,]*(?:\.\d+)?(?:\s*%)?(?![\w/])")
_BREAKS = re.compile(r"\n\s*\n|\n(?=\s*(?:[-*+]|\d+\.)\s)|\n(?=\s*\|)|(?<=[.!?:])\s+(?=[A-Z*_(\[])")


def load_allow_list(path: Path = ALLOW_FILE) -> list[re.Pattern[str]]:
    """The allow-list's patterns; every entry needs a ``pattern`` and a ``reason``."""
    entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    patterns = []
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("pattern") or not entry.get("reason"):
            raise ValueError(f"{path}: every entry needs a pattern and a reason, got {entry!r}")
        patterns.append(re.compile(entry["pattern"]))
    return patterns


def sentences(markdown: str) -> list[str]:
    """The markdown cut into sentences, list items and table rows."""
    return [s.strip() for s in _BREAKS.split(markdown) if s and s.strip()]


def typed_numbers(sentence: str, allow: list[re.Pattern[str]]) -> list[str]:
    """The numbers in ``sentence`` that are neither glued, cited, allowed nor part of a name."""
    if _CITE.search(sentence):
        return []
    text = sentence
    for pattern in (*_NOT_PROSE, _REFERENCE, _YEAR, *allow):
        text = pattern.sub(" ", text)
    found = []
    for match in _NUMBER.finditer(text):
        token = match.group().strip()
        digits = token.lstrip("-−+")
        if re.fullmatch(r"\d", digits):  # a single digit, without decimals or a percent sign
            continue
        found.append(token)
    return found


def markdown_of(path: Path) -> list[str]:
    """The markdown of a page: each markdown cell of a notebook, or the whole of a .md file."""
    if path.suffix == ".ipynb":
        nb = nbformat.read(path, as_version=4)
        return [cell.source for cell in nb.cells if cell.cell_type == "markdown"]
    return [path.read_text(encoding="utf-8")]


def pages(root: Path = ROOT) -> list[Path]:
    """Every page that the check reads: the notebooks and overview pages under ``chapters/``."""
    return sorted(p for p in (root / "chapters").rglob("*") if p.suffix in (".ipynb", ".md")
                  and ".ipynb_checkpoints" not in p.parts)


def findings(path: Path, allow: list[re.Pattern[str]]) -> list[tuple[str, list[str]]]:
    """``(sentence, numbers)`` for every sentence of ``path`` with typed numbers."""
    out = []
    for block in markdown_of(path):
        for sentence in sentences(block):
            numbers = typed_numbers(sentence, allow)
            if numbers:
                out.append((sentence, numbers))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="pages to check (default: every page)")
    args = parser.parse_args(argv)
    allow = load_allow_list()
    bad = 0
    for path in args.paths or pages():
        for sentence, numbers in findings(path.resolve(), allow):
            bad += 1
            where = path.resolve().relative_to(ROOT)
            print(f"{where}: {', '.join(numbers)}\n    {' '.join(sentence.split())[:300]}")
    print(f"{bad} sentence(s) with typed numbers", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
