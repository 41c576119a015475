"""Every page of the table of contents, opened in Chromium, as a reader meets it.

Each page is opened once (``reports``); each test reads one aspect of it and lists every defect
it finds, with the section it is in.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from browser_tests import book_browser as bb

PAGES = bb.toc_pages()
# Pages Sphinx adds around the table of contents: checked for errors, images and links too.
SITE_PAGES = PAGES + ["search", "genindex", "py-modindex"]
CONFIG = bb.load_config()
WIDGET_PAGES = [d for d in PAGES if bb.uses_ipywidgets(d)]


def _assert_none(docname: str, defects: list[str]) -> None:
    if defects:
        pytest.fail(f"{docname}: {len(defects)} defect(s)\n  " + "\n  ".join(defects), pytrace=False)


@pytest.mark.parametrize("docname", SITE_PAGES)
def test_no_console_errors_or_failed_requests(reports, docname: str) -> None:
    _assert_none(docname, bb.console_defects(reports[docname]))


@pytest.mark.parametrize("docname", SITE_PAGES)
def test_every_image_loads(reports, docname: str) -> None:
    _assert_none(docname, bb.image_defects(reports[docname]))


@pytest.mark.parametrize("docname", PAGES)
def test_cell_outputs_are_clean(reports, docname: str) -> None:
    _assert_none(docname, bb.output_defects(reports[docname]))


@pytest.mark.parametrize("docname", PAGES)
def test_maths_is_typeset(reports, docname: str) -> None:
    _assert_none(docname, bb.maths_defects(reports[docname]))


@pytest.mark.parametrize("docname", SITE_PAGES)
def test_internal_links_resolve(reports, book_html: Path, book_url: str, docname: str) -> None:
    _assert_none(docname, bb.link_defects(reports[docname], book_html, book_url))


@pytest.mark.parametrize("docname", PAGES)
def test_launch_and_source_buttons(reports, docname: str) -> None:
    _assert_none(docname, bb.launch_defects(reports[docname], CONFIG))


@pytest.mark.parametrize("docname", PAGES)
def test_cjk_characters_have_a_font(reports, docname: str) -> None:
    _assert_none(docname, bb.glyph_defects(reports[docname]))


@pytest.mark.parametrize("docname", SITE_PAGES)
def test_screenshot_saved(reports, docname: str) -> None:
    shot = reports[docname].screenshot
    assert shot is not None and shot.is_file(), f"{docname}: no screenshot"
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{shot} is not a PNG"
    width = int.from_bytes(header[16:20], "big")
    assert width == bb.VIEWPORT["width"], f"{shot}: {width} px wide"


@pytest.mark.parametrize("docname", WIDGET_PAGES)
def test_widget_page_shows_its_static_figure(reports, docname: str) -> None:
    _assert_none(docname, bb.widget_fallback_defects(reports[docname]))


def test_the_checks_have_something_to_check(reports) -> None:
    """Guards against a selector that finds nothing: the book has maths, widgets, Chinese and notebooks."""
    assert {"chapters/ch1/05_applications_and_impact", "chapters/ch2/03_contrastive_maths",
            "chapters/ch5/02_search_engine"} <= set(WIDGET_PAGES)
    maths = reports["chapters/ch2/03_contrastive_maths"].probe["math"]
    assert maths["nodes"] > 10 and maths["typeset"] == maths["nodes"], maths
    glossary = reports["appendix/glossary"].probe["glyphs"]
    assert glossary["checked"] > 50, "the glossary's Chinese terms were not found"
    colab = [link for link in reports["chapters/ch2/03_contrastive_maths"].probe["links"]
             if link["title"] == "Launch on Colab"]
    assert len(colab) == 1, colab
    outputs = reports["chapters/ch2/03_contrastive_maths"].probe["outputs"]
    assert len(outputs) > 5 and sum(o["loadedImages"] for o in outputs) > 2


@pytest.mark.parametrize("term", ["temperature", "InfoNCE", "tokenizer"])
def test_search_finds_book_terms(reader, term: str) -> None:
    titles = reader.search(term)
    assert titles, f"the search page lists no page for {term!r}"
