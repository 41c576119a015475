"""A link on every page to the same page in the book's other edition (English and 中文).

The two editions are two Sphinx projects with the same page names: the English book in
``_build/html`` and the Chinese one in ``_build/html/zh`` (``tools/build_book.py`` builds both).
Each edition's ``_config.yml`` says where the other one lives, relative to its own root:

``edition_other_root``
    ``"zh/"`` in the English edition, ``"../"`` in the Chinese one.
``edition_other_label``, ``edition_other_lang``
    the link's text and the other edition's language tag (``"中文"``/``"zh-CN"``, ``"English"``/``"en"``).

Every page of the table of contents, and the search, index and module-index pages, gets a button
in the bar above the article (``templates/edition-switch.html``, placed by ``static/editions.css``) and a
``<link rel="alternate" hreflang=...>`` in its head. The browser check follows every button.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

_TEMPLATES = Path(__file__).parent / "templates"
_STATIC = Path(__file__).parent / "static"
# Pages that Sphinx writes in both editions without a source file.
GENERATED_PAGES = frozenset({"search", "genindex", "py-modindex"})
TEMPLATE = "edition-switch.html"


def counterpart_href(pagename: str, other_root: str, suffix: str = ".html") -> str:
    """The address of ``pagename`` in the other edition, relative to ``pagename`` in this one.

    Args:
        pagename: Sphinx's page name, e.g. ``"chapters/ch1/02_why_clip"``.
        other_root: the other edition's root relative to this edition's root (``"zh/"`` or ``"../"``).
        suffix: the pages' file suffix.

    Returns:
        e.g. ``"../../zh/chapters/ch1/02_why_clip.html"`` from the English page.

    Raises:
        ValueError: if ``other_root`` is empty or does not end with ``/``.
    """
    if not other_root or not other_root.endswith("/"):
        raise ValueError(f"other_root: expected a folder ending with '/', got {other_root!r}")
    return "../" * pagename.count("/") + other_root + pagename + suffix


def _page_context(app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    root = app.config.edition_other_root
    if not root or not (pagename in app.env.found_docs or pagename in GENERATED_PAGES):
        return
    href = counterpart_href(pagename, root, app.builder.out_suffix)
    lang = app.config.edition_other_lang
    context["edition_switch"] = {"href": href, "label": app.config.edition_other_label, "lang": lang}
    context["metatags"] = context.get("metatags", "") + (
        f'\n    <link rel="alternate" hreflang="{lang}" href="{href}" />')


def _add_button(app: Any, config: Any) -> None:
    config.templates_path.append(str(_TEMPLATES))
    if str(_STATIC) not in config.html_static_path:
        config.html_static_path.append(str(_STATIC))
    options = config.html_theme_options
    end = options.get("article_header_end", ["article-header-buttons.html"])
    if isinstance(end, str):
        end = [item.strip() for item in end.split(",") if item.strip()]
    if TEMPLATE not in end:
        options["article_header_end"] = [TEMPLATE, *end]


def setup(app: Any) -> dict[str, Any]:
    """Register the configuration values and the button."""
    app.add_config_value("edition_other_root", "", "html")
    app.add_config_value("edition_other_label", "", "html")
    app.add_config_value("edition_other_lang", "", "html")
    app.connect("config-inited", _add_button)
    app.add_css_file("editions.css")
    app.connect("html-page-context", _page_context)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
