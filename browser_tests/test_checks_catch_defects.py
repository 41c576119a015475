"""The browser checks can fail: each one catches a defect planted in a copy of a real page.

The copy of the book lies in a temporary folder (links to the real files, and one rewritten
page, Chapter 2.3, which has maths, images, a widget and a Colab button; for the language switch,
a second copy with the Chinese Chapter 2.3 rewritten).
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browser_tests import book_browser as bb

PAGE = "chapters/ch2/03_contrastive_maths"
CONFIG = bb.load_config()
CHINESE = next(e for e in bb.EDITIONS if e.name == "zh")
ZH_PAGE = f"{CHINESE.prefix}{PAGE}"
needs_chinese = pytest.mark.skipif(CHINESE not in bb.editions(), reason="no Chinese edition (zh/) in the checkout")


def _mirror(src: Path, dst: Path, replaced: str) -> None:
    """Link every file of ``src`` into ``dst``, except ``replaced`` (a relative path), left to write."""
    dst.mkdir(parents=True)
    parts = Path(replaced).parts
    for entry in src.iterdir():
        if entry.name == parts[0] and len(parts) > 1:
            _mirror(entry, dst / entry.name, str(Path(*parts[1:])))
        elif entry.name != parts[0]:
            (dst / entry.name).symlink_to(entry.resolve())


def _plant(text: str, old: str, new: str, count: int = 1) -> str:
    assert old in text, f"the page no longer contains {old[:60]!r}: update the planted defect"
    return text.replace(old, new, count)


def break_page(text: str) -> str:
    """Chapter 2.3 with one defect of every kind the checks look for."""
    # after the page's title, inside its first section (MathJax typesets $$...$$ by itself, but a
    # single-dollar formula that the Markdown parser missed stays raw)
    heading_end = text.index("</h1>", text.index('<span class="section-number">')) + len("</h1>")
    planted = ('<p>Planted: the temperature $\\tau = 0.07$ here, <span class="math notranslate nohighlight">'
               '\\(x^2^3\\)</span>, <span class="math notranslate nohighlight">\\(\\plantedundefined\\)</span>, <a href="../ch1/no_such_page.html">a lost page</a> and '
               '<a href="#no-such-anchor">a lost anchor</a>.</p>')
    text = text[:heading_end] + planted + text[heading_end:]
    text = _plant(text, "</body>", '<script>throw new Error("planted error")</script></body>')
    text = _plant(text, '<div class="cell_output docutils container">',
                  '<div class="cell_output docutils container">'
                  '<div class="output traceback highlight-ipythontb notranslate"><pre>'
                  'Traceback (most recent call last):\nValueError: planted</pre></div>'
                  '<div class="output text_plain highlight-myst-ansi notranslate"><pre>'
                  '&lt;Figure size 640x480 with 1 Axes&gt;</pre></div>')
    # The static figure of the temperature explorer: its cell's image no longer loads.
    figure_cell = re.search(r"temperature_figure</span><span class=\"p\">\(.*?<img [^>]*src=\"([^\"]+)\"", text, re.S)
    assert figure_cell, "no temperature_figure cell with an image: update the planted defect"
    text = text.replace(figure_cell.group(1), figure_cell.group(1).replace(".png", "-missing.png"))
    view = re.search(r'("model_id": ")([0-9a-f]+)(")', text)
    assert view, "no widget view on the page: update the planted defect"
    text = text.replace(view.group(0), f"{view.group(1)}0000planted0000{view.group(3)}", 1)
    good = bb.launch_url(PAGE, CONFIG)
    return _plant(text, good, good.replace("03_contrastive_maths", "03_old_name"))


@pytest.fixture(scope="module")
def broken_report(book_html: Path, browser: Any, assets: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> bb.PageReport:
    folder = tmp_path_factory.mktemp("broken-book") / "html"
    _mirror(book_html, folder, f"{PAGE}.html")
    (folder / f"{PAGE}.html").write_text(break_page((book_html / f"{PAGE}.html").read_text(encoding="utf-8")),
                                         encoding="utf-8")
    with bb.serve(folder) as url:
        report = bb.Reader(browser, url, assets, None).visit(PAGE)
        report.links = bb.link_defects(report, folder, url)  # type: ignore[attr-defined]
    return report


def _expect(defects: list[str], *needles: str) -> None:
    for needle in needles:
        assert any(needle in d for d in defects), f"no defect mentions {needle!r}: {defects}"


def test_console_check_catches_an_error_and_a_missing_file(broken_report: bb.PageReport) -> None:
    _expect(bb.console_defects(broken_report), "planted error", "failed request: 404", "-missing.png")


def test_image_check_catches_a_missing_image(broken_report: bb.PageReport) -> None:
    _expect(bb.image_defects(broken_report), "-missing.png")


def test_output_check_catches_traceback_repr_and_stateless_widget(broken_report: bb.PageReport) -> None:
    _expect(bb.output_defects(broken_report), "traceback output", "a traceback", "an object repr",
            "0000planted0000 has no saved state")


def test_maths_check_catches_raw_tex_and_a_tex_error(broken_report: bb.PageReport) -> None:
    _expect(bb.maths_defects(broken_report), "raw TeX left in the text", "TeX error: Double exponent",
            "does not know, drawn in red: '\\\\plantedundefined'")


def test_link_check_catches_a_lost_page_and_anchor(broken_report: bb.PageReport) -> None:
    _expect(broken_report.links, "no file chapters/ch1/no_such_page.html",  # type: ignore[attr-defined]
            "no anchor #no-such-anchor")


def test_launch_check_catches_a_wrong_notebook_path(broken_report: bb.PageReport) -> None:
    _expect(bb.launch_defects(broken_report, CONFIG), "03_old_name.ipynb")


def test_fallback_check_catches_a_missing_static_figure(broken_report: bb.PageReport) -> None:
    _expect(bb.widget_fallback_defects(broken_report), "shows no static figure from temperature_figure")


def break_switch(text: str) -> str:
    """The Chinese Chapter 2.3 with its language switch broken every way the check looks for."""
    switch = re.search(r'<a class="btn btn-sm edition-switch" href="([^"]+)"[^>]*>.*?</a>', text, re.S)
    assert switch, "no language switch (a.edition-switch) on the page: update the planted defect"
    # the switch leads to a page that is not there, and a second one to another (existing) page
    broken = switch.group(0).replace(switch.group(1), switch.group(1).replace("03_contrastive_maths", "03_old_name"))
    second = switch.group(0).replace(switch.group(1), "../../../intro.html")
    text = text.replace(switch.group(0), broken + second, 1)
    text, removed = re.subn(r'\s*<link rel="alternate" hreflang="en" href="[^"]*"\s*/?>', "", text)
    assert removed == 1, f"{removed} <link rel=alternate hreflang=en> on the page: update the planted defect"
    # and a bar fixed over the top of the window hides the switches
    text = _plant(text, "</body>", '<div class="planted-bar" style="position: fixed; top: 0; left: 0; right: 0; '
                                   'height: 200px; z-index: 10000; background: #fff"></div></body>')
    return _plant(text, '<html lang="zh-CN"', '<html lang="en"')


@pytest.fixture(scope="module")
def broken_book(book_html: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The book with the Chinese Chapter 2.3's language switch broken."""
    folder = tmp_path_factory.mktemp("broken-switch") / "html"
    _mirror(book_html, folder, f"{ZH_PAGE}.html")
    (folder / f"{ZH_PAGE}.html").write_text(break_switch((book_html / f"{ZH_PAGE}.html").read_text(encoding="utf-8")),
                                            encoding="utf-8")
    return folder


@needs_chinese
def test_switch_check_catches_a_missing_target_a_second_switch_a_hidden_one_and_a_wrong_lang(
        broken_book: Path, browser: Any, assets: Path) -> None:
    with bb.serve(broken_book) as url:
        report = bb.Reader(browser, url, assets, None).visit(ZH_PAGE)
        defects = bb.edition_switch_defects(report, broken_book, url)
    _expect(defects, "2 language switches", "leads nowhere: no file chapters/ch2/03_old_name.html",
            "leads to intro.html, not to the same page in the en edition, chapters/ch2/03_contrastive_maths.html",
            "is partly hidden: div.planted-bar lies over it",
            '<html lang="en">, expected "zh-CN"', '<link rel="alternate" hreflang="en"> in the head: []')


@needs_chinese
def test_a_reader_cannot_follow_a_hidden_switch(broken_book: Path, browser: Any, assets: Path) -> None:
    with bb.serve(broken_book) as url, pytest.raises(Exception, match="planted-bar.*intercepts pointer events"):
        bb.Reader(browser, url, assets, None).follow_switch(ZH_PAGE, times=1, timeout_ms=3000)


def test_untranslated_check_catches_an_english_page_in_the_chinese_edition(broken_report: bb.PageReport) -> None:
    assert broken_report.probe["glyphs"]["inArticle"] == 0, "Chapter 2.3 now shows Chinese: plant another page"
    _expect(bb.untranslated_defects(dataclasses.replace(broken_report, docname=ZH_PAGE)),
            "no Chinese character in the article")
    assert bb.untranslated_defects(broken_report) == []  # an English page may well have no Chinese


@pytest.fixture(scope="module")
def browser_without_cjk_fonts(playwright: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Chromium that sees only the DejaVu fonts, as on a machine without fonts-noto-cjk."""
    folder = tmp_path_factory.mktemp("fonts")
    conf = folder / "fonts.conf"
    conf.write_text('<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">\n'
                    f"<fontconfig><dir>/usr/share/fonts/truetype/dejavu</dir><cachedir>{folder}/cache</cachedir>"
                    "</fontconfig>\n", encoding="utf-8")
    browser = bb.launch_browser(playwright, env={**os.environ, "FONTCONFIG_FILE": str(conf)})
    yield browser
    browser.close()


def test_glyph_check_catches_tofu_without_cjk_fonts(browser_without_cjk_fonts: Any, book_url: str,
                                                     assets: Path) -> None:
    report = bb.Reader(browser_without_cjk_fonts, book_url, assets, None).visit("appendix/glossary")
    _expect(bb.glyph_defects(report), "CJK characters drawn as empty boxes")


@needs_chinese
def test_glyph_check_catches_tofu_on_a_chinese_page_when_sampling(browser_without_cjk_fonts: Any, book_url: str,
                                                                  assets: Path) -> None:
    """On a page with more characters than it draws, the check still reaches every font."""
    report = bb.Reader(browser_without_cjk_fonts, book_url, assets, None, max_glyphs=100).visit(ZH_PAGE)
    glyphs = report.probe["glyphs"]
    assert glyphs["checked"] < glyphs["found"], glyphs
    _expect(bb.glyph_defects(report), "CJK characters drawn as empty boxes")
    fonts_with_tofu = {t["css"] for t in glyphs["tofu"]}
    assert glyphs["fonts"] >= 2 and len(fonts_with_tofu) == glyphs["fonts"], (fonts_with_tofu, glyphs["fonts"])


def test_search_check_can_find_nothing(reader: bb.Reader) -> None:
    assert reader.search("qqzzxxplantednonword") == []


def _figure_png(title: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1))
    ax.set_title(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=40)
    plt.close(fig)
    return buffer.getvalue()


def _figure_site(folder: Path, english: list[bytes], chinese: list[bytes]) -> Path:
    """A two-page site, ``page`` and ``zh/page``, whose cell outputs show these PNGs."""
    import hashlib

    for prefix, pngs in (("", english), (CHINESE.prefix, chinese)):
        images = folder / prefix / "_images"
        images.mkdir(parents=True, exist_ok=True)
        tags = []
        for png in pngs:
            name = hashlib.sha256(png).hexdigest() + ".png"
            (images / name).write_bytes(png)
            tags.append(f'<img alt="x" src="_images/{name}" />')
        (folder / prefix / "page.html").write_text("<div class=\"cell_output\">" + "".join(tags) + "</div>")
    return folder


def test_figure_check_catches_english_drawings_in_chinese_and_the_reverse(tmp_path: Path) -> None:
    import hashlib

    figures = bb._zh_figures()
    one, two = _figure_png("one"), _figure_png("two")

    def chinese(png: bytes) -> bytes:
        return figures.with_text_chunks(png, {figures.EDITION_KEY: "zh",
                                              figures.REPLACES_KEY: hashlib.sha256(png).hexdigest()})

    good = _figure_site(tmp_path / "good", [one, two], [chinese(one), chinese(two)])
    assert bb.figure_defects(good, "page") == [] and bb.figure_defects(good, f"{CHINESE.prefix}page") == []
    english_left = _figure_site(tmp_path / "a", [one, two], [chinese(one), two])
    _expect(bb.figure_defects(english_left, f"{CHINESE.prefix}page"), "figure 2", "is not drawn in Chinese")
    swapped = _figure_site(tmp_path / "b", [one, two], [chinese(two), chinese(one)])
    _expect(bb.figure_defects(swapped, f"{CHINESE.prefix}page"), "figure 1", "not the Chinese drawing")
    missing = _figure_site(tmp_path / "c", [one, two], [chinese(one)])
    _expect(bb.figure_defects(missing, f"{CHINESE.prefix}page"), "1 figures, its English page 2")
    reverse = _figure_site(tmp_path / "d", [one, chinese(two)], [chinese(one), chinese(two)])
    _expect(bb.figure_defects(reverse, "page"), "figure 2", "is a Chinese drawing")
