"""Every page of the table of contents, in both editions, opened in Chromium, as a reader meets it.

Each page is opened once (``reports``); each test reads one aspect of it and lists every defect
it finds, with the section it is in. Pages are named as in the served book: ``chapters/...`` in
English, ``zh/chapters/...`` in Chinese (``bb.EDITIONS``).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from browser_tests import book_browser as bb

EDITIONS = bb.editions()
PAGES = [page for edition in EDITIONS for page in edition.pages()]
# With the pages Sphinx adds around the table of contents: checked for errors, images and links too.
SITE_PAGES = [page for edition in EDITIONS for page in edition.site_pages()]
WIDGET_PAGES = [d for d in PAGES if bb.uses_ipywidgets(d)]
CHINESE = next(e for e in bb.EDITIONS if e.name == "zh")


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
    _assert_none(docname, bb.launch_defects(reports[docname]))


@pytest.mark.parametrize("docname", PAGES)
def test_cjk_characters_have_a_font(reports, docname: str) -> None:
    _assert_none(docname, bb.glyph_defects(reports[docname]) + bb.untranslated_defects(reports[docname]))


@pytest.mark.parametrize("docname", SITE_PAGES)
def test_language_switch_leads_to_the_same_page(reports, book_html: Path, book_url: str, docname: str) -> None:
    _assert_none(docname, bb.edition_switch_defects(reports[docname], book_html, book_url))


@pytest.mark.skipif(CHINESE not in EDITIONS, reason="no Chinese edition (zh/) in the checkout")
@pytest.mark.parametrize("docname", ["intro", "chapters/ch2/03_contrastive_maths", "appendix/glossary", "search"])
def test_following_the_switch_twice_returns_to_the_page(reader: bb.Reader, docname: str) -> None:
    """A reader clicks the switch on an English page, then on the Chinese page it opened."""
    reached = reader.follow_switch(docname, times=2)
    expected = [(f"{docname}.html", "en"), (f"{CHINESE.prefix}{docname}.html", CHINESE.lang), (f"{docname}.html", "en")]
    assert reached == expected, f"{docname}: the switch led through {reached}, expected {expected}"


@pytest.mark.parametrize("docname", SITE_PAGES)
def test_screenshot_saved(reports, docname: str) -> None:
    shot = reports[docname].screenshot
    assert shot is not None and shot.is_file(), f"{docname}: no screenshot"
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{shot} is not a PNG"
    width = int.from_bytes(header[16:20], "big")
    assert width == bb.VIEWPORT["width"], f"{shot}: {width} px wide"


@pytest.mark.parametrize("docname", PAGES)
def test_each_edition_shows_its_own_drawing_of_every_figure(book_html: Path, docname: str) -> None:
    _assert_none(docname, bb.figure_defects(book_html, docname))


@pytest.mark.parametrize("docname", WIDGET_PAGES)
def test_widget_page_shows_its_static_figure(reports, docname: str) -> None:
    _assert_none(docname, bb.widget_fallback_defects(reports[docname]))


@pytest.mark.parametrize("edition", EDITIONS, ids=lambda e: e.name)
def test_the_checks_have_something_to_check(reports, book_html: Path, edition: bb.Edition) -> None:
    """Guards against a selector that finds nothing: the book has maths, widgets, Chinese and notebooks."""
    maths_page = f"{edition.prefix}chapters/ch2/03_contrastive_maths"
    assert {f"{edition.prefix}{d}" for d in ("chapters/ch1/05_applications_and_impact",
                                             "chapters/ch2/03_contrastive_maths",
                                             "chapters/ch5/02_search_engine")} <= set(WIDGET_PAGES)
    maths = reports[maths_page].probe["math"]
    assert maths["nodes"] > 10 and maths["typeset"] == maths["nodes"], maths
    glossary = reports[f"{edition.prefix}appendix/glossary"].probe["glyphs"]
    assert glossary["checked"] > 50, "the glossary's Chinese terms were not found"
    if edition.lang.startswith("zh"):  # a whole page in Chinese, not a few terms
        glyphs = reports[maths_page].probe["glyphs"]
        assert glyphs["inArticle"] > 1000 and glyphs["checked"] > 300, glyphs
    colab = [link for link in reports[maths_page].probe["links"]
             if "dropdown-launch-buttons" in link["menu"].split() and "colab" in link["href"]]
    assert len(colab) == 1 and colab[0]["href"].endswith(f"/blob/main/{maths_page}.ipynb"), colab
    outputs = reports[maths_page].probe["outputs"]
    assert len(outputs) > 5 and sum(o["loadedImages"] for o in outputs) > 2
    assert len(bb.output_figures(book_html / f"{maths_page}.html")) > 2


@pytest.mark.parametrize("term", ["temperature", "InfoNCE", "tokenizer"])
def test_search_finds_book_terms(reader, term: str) -> None:
    titles = reader.search(term)
    assert titles, f"the search page lists no page for {term!r}"


# Sphinx splits Chinese text into words with jieba (a development extra); the Latin words of the
# Chinese pages (names, terms, code) are indexed as in English.
@pytest.mark.skipif(CHINESE not in EDITIONS, reason="no Chinese edition (zh/) in the checkout")
@pytest.mark.parametrize("term", ["InfoNCE", "SigLIP", "softmax", "温度", "嵌入"])
def test_chinese_search_finds_book_terms(reader, term: str) -> None:
    titles = reader.search(term, edition=CHINESE)
    assert titles, f"the Chinese search page ({CHINESE.prefix}search.html) lists no page for {term!r}"
