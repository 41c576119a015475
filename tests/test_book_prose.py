"""Checks of the book's prose: citations, typed numbers, glossary links, page openings and endings.

Fast: no notebook is executed. They read the real pages under chapters/ and appendix/.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from repo_files import load_module

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
NOTEBOOKS = sorted(p for p in CHAPTERS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
NB_IDS = [str(p.relative_to(ROOT)) for p in NOTEBOOKS]
PAGES = [ROOT / "intro.md", *sorted(CHAPTERS.rglob("*.md")), *sorted((ROOT / "appendix").glob("*.md")), *NOTEBOOKS]


TOOL = load_module("tools/prose_numbers.py", "_prose_numbers")
ALLOW = TOOL.load_allow_list()


def _markdown(path: Path) -> str:
    return "\n\n".join(TOOL.markdown_of(path))


def _cells(path: Path):
    return nbformat.read(path, as_version=4).cells


BIB_KEYS = set(re.findall(r"^@\w+\{([^,\s]+),", (ROOT / "references.bib").read_text(encoding="utf-8"), re.MULTILINE))
CITED = {path: [key.strip() for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", _markdown(path))
                for key in group.split(",")] for path in PAGES}

# -- references --------------------------------------------------------------------------


def test_the_bibliography_has_the_papers_the_book_builds_on():
    required = {"radford2021clip", "dosovitskiy2021vit", "vaswani2017attention", "he2016resnet", "he2019bagoftricks",
                "zhang2019antialiasing", "oord2018cpc", "zhang2022convirt", "jia2021align", "yao2022filip", "zhai2022lit",
                "zhai2023siglip", "ilharco2021openclip", "cherti2023scaling", "schuhmann2022laion5b", "ramesh2022unclip",
                "rombach2022ldm", "wortsman2022wiseft", "taori2020robustness", "fang2022data", "thrush2022winoground",
                "yuksekgonul2023aro", "goh2021multimodal", "sennrich2016bpe", "loshchilov2019adamw",
                "micikevicius2018mixed"}
    assert required <= BIB_KEYS, f"references.bib lacks {sorted(required - BIB_KEYS)}"


def test_every_entry_has_a_link():
    entries = re.split(r"^@", (ROOT / "references.bib").read_text(encoding="utf-8"), flags=re.MULTILINE)[1:]
    unlinked = [entry.split(",")[0] for entry in entries if not re.search(r"^\s*(url|doi)\s*=", entry, re.MULTILINE)]
    assert not unlinked, f"entries without a DOI or URL: {unlinked}"


@pytest.mark.parametrize("path", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_cited_key_is_in_the_bibliography(path):
    unknown = sorted(set(CITED[path]) - BIB_KEYS)
    assert not unknown, f"{path.name} cites keys that references.bib does not have: {unknown}"


def test_the_chapters_cite_the_papers():
    cited = {key for keys in CITED.values() for key in keys}
    assert "radford2021clip" in cited
    assert len(cited) >= 20, f"only {len(cited)} works are cited in the whole book"


def test_the_references_page_lists_the_bibliography():
    assert "```{bibliography}" in (ROOT / "appendix" / "references.md").read_text(encoding="utf-8")

# -- numbers in prose ---------------------------------------------------------------------


@pytest.mark.parametrize("path", TOOL.pages(ROOT), ids=lambda p: str(p.relative_to(ROOT)))
def test_numbers_in_prose_are_glued_or_cited(path):
    """A figure the page measures is glued; a paper's is cited; see tools/prose_numbers.py."""
    found = TOOL.findings(path, ALLOW)
    report = "\n".join(f"  {', '.join(numbers)}: {' '.join(sentence.split())[:160]}" for sentence, numbers in found)
    assert not found, f"typed numbers in prose (glue them, cite them, or allow-list a constant):\n{report}"


def test_the_number_heuristic_flags_typed_figures_and_spares_the_rest():
    flagged = TOOL.typed_numbers
    assert flagged("The model scores 97.4% on held-out pairs.", ALLOW) == ["97.4%"]
    assert flagged("We trained on 20,000 pairs.", ALLOW) == ["20,000"]
    assert flagged("CLIP saw 400 million pairs {cite:p}`radford2021clip`.", ALLOW) == []
    assert flagged("The model scores {glue:text}`acc` on held-out pairs.", ALLOW) == []
    assert flagged("ViT-B/32 and RN50x64 in fp16, see Chapter 3 and section 1.7 of 2021.", ALLOW) == []
    assert flagged("Its two towers meet in `embed_dim = 512` and $e^{4.6} = 100$.", ALLOW) == []
    assert flagged("ShapesWorld has 8 colours and 8 shapes.", ALLOW) == []

# -- cells that readers see -----------------------------------------------------------------


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NB_IDS)
def test_no_code_cell_is_without_code(path):
    """A cell holding only comments or blank lines shows the reader an empty box."""
    for index, cell in enumerate(_cells(path)):
        if cell.cell_type == "code":
            code = [line for line in cell.source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
            assert code, f"code cell {index} has no code: {cell.source[:80]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NB_IDS)
def test_code_fits_the_page_column(path):
    """Code lines wider than the column scroll sideways on the rendered page (the setup cell is shared)."""
    code = [cell for cell in _cells(path) if cell.cell_type == "code"][1:]
    wide = [line for cell in code for line in cell.source.splitlines() if len(line) > 88]
    assert not wide, f"code lines over 88 characters: {wide[:3]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NB_IDS)
def test_page_opens_with_what_you_will_learn_and_need(path):
    first = _cells(path)[0].source
    assert re.search(r"^:::\{admonition\} You will learn", first, re.MULTILINE), (
        "the title cell needs a ':::{admonition} You will learn' box")
    assert "**You need:**" in first, "the opening box says what the reader needs ('**You need:**')"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NB_IDS)
def test_page_ends_with_what_it_showed_in_numbers(path):
    cells = _cells(path)
    closing = [i for i, cell in enumerate(cells)
               if cell.cell_type == "markdown" and cell.source.lstrip().startswith("## What this page showed")]
    assert closing, "the page needs a closing '## What this page showed' section"
    index = closing[-1]
    assert not any(cell.cell_type == "code" for cell in cells[index + 1:]), "no code comes after the closing summary"
    assert "{glue:text}`" in cells[index].source, "the closing summary quotes the page's figures, glued"

# -- the glossary ----------------------------------------------------------------------------

GLOSSARY = (ROOT / "appendix" / "glossary.md").read_text(encoding="utf-8")
TERMS = {line.strip().lower() for block in re.findall(r"```\{glossary\}\n(.*?)```", GLOSSARY, re.DOTALL)
         for line in block.splitlines() if line.strip() and not line.startswith(" ")}


def test_the_glossary_is_a_sphinx_glossary_with_chinese_renderings():
    blocks = re.findall(r"```\{glossary\}\n(.*?)```", GLOSSARY, re.DOTALL)
    assert blocks and len(TERMS) >= 60
    definitions = [line for block in blocks for line in block.splitlines() if line.startswith("  ")]
    assert all(re.match(r"  \S[^·]* · \S", line) for line in definitions), "every entry reads '<中文> · <meaning>'"
    chinese = sum(bool(re.search(r"[\u4e00-\u9fff]", line.split(" · ")[0])) for line in definitions)
    assert chinese >= 0.9 * len(definitions), "most terms have a Chinese rendering (names such as QuickGELU stay as they are)"


@pytest.mark.parametrize("path", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_term_links_point_into_the_glossary(path):
    targets = [m.group(2) or m.group(1) for m in re.finditer(r"\{term\}`([^`<]+?)(?:\s*<([^>]+)>)?`", _markdown(path))]
    unknown = sorted({t.strip() for t in targets if t.strip().lower() not in TERMS})
    assert not unknown, f"{{term}} links to words the glossary does not define: {unknown}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NB_IDS)
def test_every_page_links_glossary_terms(path):
    assert "{term}`" in _markdown(path), "link the page's key terms to the glossary at first use ({term}`...`)"
