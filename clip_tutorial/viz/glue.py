"""Numbers that the book's prose quotes, glued from the cell that computes them.

A notebook computes a figure, then calls :func:`glue` with a name; the page's text writes
``{glue:text}`name``` where the figure belongs, and the book build pastes it there (MyST-NB's
glue). So no number in the text is typed by hand, and a change in the computation changes the
text with it. Outside the book build (Colab, a plain Jupyter) MyST-NB may be missing: the figure
is then printed under the cell instead, so the reader still sees it.

Explained in Chapter 1 ("CLIP in a minute").
"""
from __future__ import annotations

from typing import Any

from clip_tutorial.core.checks import check_type

__all__ = ["glue"]


def glue(name: str, value: Any, fmt: str = "") -> str:
    """Make ``value`` available to the page's text as ``{glue:text}`name```, formatted with ``fmt``.

    Args:
        name: the key the text uses; letters, digits and underscores, unique within the page.
        value: the figure (a number, a string, anything ``format`` accepts).
        fmt: a format spec such as ``".1%"`` or ``",d"``; empty for ``str(value)``.

    Returns:
        The text that the page will show, e.g. ``"97.4%"``.

    Raises:
        TypeError: if ``name`` or ``fmt`` is not a string.
        ValueError: if ``name`` is not an identifier, or ``fmt`` does not apply to ``value``.
    """
    check_type("name", name, str)
    check_type("fmt", fmt, str)
    if not name.isidentifier():
        raise ValueError(f"name: expected letters, digits and underscores (an identifier), got {name!r}")
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()  # a 0-d tensor or array formats like the number it holds
    try:
        text = format(value, fmt)
    except (TypeError, ValueError) as err:
        raise ValueError(f"fmt: {fmt!r} does not apply to a {type(value).__name__} ({err})") from None
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        print(f"{name} = {text}")
    else:
        # Glued as a str: MyST-NB reads the plain-text form back with ast.literal_eval, which takes
        # the quotes off a str but would turn bare text such as 20,000 into the tuple (20, 0).
        myst_glue(name, text, display=False)
    return text
