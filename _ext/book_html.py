"""Fixes to the HTML pages that the book's tools write, found by reading the pages in a browser.

* Sphinx 7.4 puts sphinx-thebe's inline configuration script into every page twice, and the second
  copy throws "Identifier 'THEBE_JS_URL' has already been declared": each page keeps one copy.
* The widget manager that shows the saved widgets typesets their labels with MathJax 2's
  ``MathJax.Hub.Queue``, while the book loads MathJax 3, so a page with a widget and maths threw a
  ``TypeError``: ``mathjax2_shim.js`` answers that call with MathJax 3's ``typesetPromise``.

``browser_tests/`` checks both (no console error on any page).

A third fix is for the build's time, not the pages: Sphinx's Chinese search indexer keeps every
Latin word it has seen in a list and looks each new word up in it, which made indexing the
Chinese edition quadratic (370 s of a 550 s profiled build). :class:`TermSet` gives it the same
lookups in a set.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

_STATIC = Path(__file__).parent / "static"


def _dedupe_scripts(app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    """Keep the first of identical script entries (same file, or same inline body) in a page's context."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple[Any, Any]] = set()
    kept = []
    for script in scripts:
        # an inline script has no file: Sphinx records that as None or as "", for the same script
        key = (getattr(script, "filename", script) or None,
               tuple(sorted((getattr(script, "attributes", None) or {}).items())))
        if key in seen:
            continue
        seen.add(key)
        kept.append(script)
    scripts[:] = kept


class TermSet(set):
    """A set that also answers ``extend``, the one list method Sphinx's Chinese indexer uses on its terms."""

    def extend(self, terms: Any) -> None:
        """Add ``terms``, as ``list.extend`` would (order and repeats do not matter to a lookup)."""
        self.update(terms)


def fast_latin_terms(language: Any) -> None:
    """Give a search language that keeps a ``latin_terms`` list (Chinese) a :class:`TermSet` instead."""
    terms = getattr(language, "latin_terms", None)
    if isinstance(terms, list):
        language.latin_terms = TermSet(terms)


def _fast_search_index(app: Any, doctree: Any, docname: str) -> None:
    indexer = getattr(app.builder, "indexer", None)
    if indexer is not None:
        fast_latin_terms(indexer.lang)


def _add_static(app: Any) -> None:
    if str(_STATIC) not in app.config.html_static_path:
        app.config.html_static_path.append(str(_STATIC))


def setup(app: Any) -> dict[str, Any]:
    """Register the fixes with Sphinx."""
    app.connect("builder-inited", _add_static)
    # after MathJax's own deferred script (priority 500), before the page's widgets are drawn
    app.add_js_file("mathjax2_shim.js", loading_method="defer", priority=900)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    # before each page is indexed (the indexer exists once writing starts)
    app.connect("doctree-resolved", _fast_search_index)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
