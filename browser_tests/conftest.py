"""Fixtures of the browser check of the built book (``make book-check``).

These tests read a built book in headless Chromium, as a reader would. They need the built book
(``make book``), Debian's chromium and fonts-noto-cjk, and the local stand-ins of the CDN
scripts (``make browser-deps``); ``make book-check`` sees to the last two.

Environment:
    BOOK_CHECK_HTML: the built book to read (default ``_build/html``).
    BOOK_CHECK_ASSETS: the unpacked stand-in packages (default ``.venv/book-check-assets``).
    BOOK_CHECK_SCREENSHOTS: where every page's screenshot goes (default ``_build/screenshots``).
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browser_tests import book_browser as bb

STATS_KEY = pytest.StashKey[dict[str, Any]]()


def _book_folder() -> Path:
    return Path(os.environ.get("BOOK_CHECK_HTML", bb.ROOT / "_build" / "html")).resolve()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[STATS_KEY] = {"pages": {}, "start": time.perf_counter()}


@pytest.fixture(scope="session")
def book_html() -> Path:
    """The built book, with an HTML file for every page of the table of contents of every edition."""
    folder = _book_folder()
    missing = [d for e in bb.editions() for d in e.pages() if not (folder / f"{d}.html").is_file()]
    if not (folder / "index.html").is_file() or missing:
        pytest.fail(f"{folder} is not a built book (missing: index.html or {len(missing)} page(s): {missing[:5]}): "
                    "run `make book`", pytrace=False)
    return folder


@pytest.fixture(scope="session")
def assets() -> Path:
    """The unpacked stand-ins of the CDN packages."""
    folder = Path(os.environ.get("BOOK_CHECK_ASSETS", bb.ROOT / ".venv" / "book-check-assets")).resolve()
    missing = bb.missing_assets(folder)
    if missing:
        pytest.fail(f"no local copy of {missing} in {folder}: run `make browser-deps`", pytrace=False)
    return folder


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """An emptied folder for this run's screenshots."""
    folder = Path(os.environ.get("BOOK_CHECK_SCREENSHOTS", bb.ROOT / "_build" / "screenshots")).resolve()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="session")
def playwright() -> Iterator[Any]:
    """Playwright's synchronous API, started once."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    with sync_api.sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright: Any) -> Iterator[Any]:
    """Headless Chromium with the machine's fonts."""
    browser = bb.launch_browser(playwright)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def book_url(book_html: Path) -> Iterator[str]:
    """The book, served on 127.0.0.1 for the whole session."""
    with bb.serve(book_html) as url:
        yield url


@pytest.fixture(scope="session")
def reader(browser: Any, book_url: str, assets: Path, screenshots: Path) -> bb.Reader:
    """Opens pages of the served book."""
    return bb.Reader(browser, book_url, assets, screenshots)


class Reports:
    """Each page is opened once; every check reads the same report."""

    def __init__(self, reader: bb.Reader, stats: dict[str, Any]) -> None:
        self.reader = reader
        self.stats = stats
        self._cache: dict[str, bb.PageReport] = {}

    def __getitem__(self, docname: str) -> bb.PageReport:
        if docname not in self._cache:
            report = self.reader.visit(docname)
            self._cache[docname] = report
            self.stats["pages"][docname] = report
        return self._cache[docname]


@pytest.fixture(scope="session")
def reports(reader: bb.Reader, pytestconfig: pytest.Config) -> Reports:
    """The report of any page of the book, by document name."""
    return Reports(reader, pytestconfig.stash[STATS_KEY])


def _newer(docname: str, html: Path) -> bool:
    try:
        return bb.source_of(docname).stat().st_mtime > html.stat().st_mtime
    except FileNotFoundError:  # search, genindex: made by Sphinx, no source
        return False


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    stats = config.stash.get(STATS_KEY, None)
    if not stats or not stats["pages"]:
        return
    pages: dict[str, bb.PageReport] = stats["pages"]
    images = sum(len(r.probe["images"]) for r in pages.values())
    broken = sum(not i["ok"] for r in pages.values() for i in r.probe["images"])
    shots = [r.screenshot for r in pages.values() if r.screenshot and r.screenshot.is_file()]
    maths = sum(r.probe["math"]["typeset"] for r in pages.values())
    glyphs = sum(r.probe["glyphs"]["checked"] for r in pages.values())
    glyphs_found = sum(r.probe["glyphs"]["found"] for r in pages.values())
    per_edition = {e.name: sum(bb.edition_of(d)[0] == e for d in pages) for e in bb.EDITIONS}
    widgets = sum(len(r.probe["widgets"]) for r in pages.values())
    links = sum(len(r.probe["links"]) for r in pages.values())
    unchecked = sorted({u for r in pages.values() for u in r.unchecked_integrity})
    slowest = max(pages.values(), key=lambda r: r.seconds)
    write = terminalreporter.write_line
    terminalreporter.section("book check")
    write(f"pages opened: {len(pages)} ({', '.join(f'{n} {k}' for k, n in per_edition.items() if n)}); "
          f"images: {images} ({broken} not loading); maths typeset: {maths}; widgets: {widgets}; links: {links}; "
          f"CJK characters checked: {glyphs} (of {glyphs_found} distinct per page and font)")
    if shots:
        write(f"screenshots: {len(shots)} in {shots[0].parent}")
    write(f"time: {time.perf_counter() - stats['start']:.1f} s in all, "
          f"{sum(r.seconds for r in pages.values()):.1f} s opening pages (slowest: {slowest.docname}, "
          f"{slowest.seconds:.1f} s)")
    book = _book_folder()
    stale = [d for d in pages if (book / f"{d}.html").is_file() and _newer(d, book / f"{d}.html")]
    if stale:
        write(f"stale: {len(stale)} page(s) whose source changed after the build ({', '.join(stale[:6])}): "
              "run `make book` to check what readers will get")
    if unchecked:
        write("integrity hashes not checked (the local stand-in is another build of the same release): "
              + ", ".join(unchecked))
