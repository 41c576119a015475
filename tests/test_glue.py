"""clip_tutorial.glue: the text a page shows is exactly the formatted figure."""
from __future__ import annotations

import pytest
import torch

from clip_tutorial import glue


@pytest.mark.parametrize("value, fmt, expected", [
    (20_000, ",d", "20,000"), (49408, ",d", "49,408"), (0.9734, ".1%", "97.3%"), (torch.tensor(0.5), ".2f", "0.50"),
    ("cyan heart", "", "cyan heart"), ("it's 3 × 3", "", "it's 3 × 3"), (1e-5, ".0e", "1e-05"),
])
def test_the_page_shows_the_formatted_figure(value, fmt, expected, monkeypatch):
    pytest.importorskip("myst_nb")
    import myst_nb
    from myst_nb.core.variables import format_plain_text

    published = []
    monkeypatch.setattr(myst_nb, "glue", lambda name, variable, display=True: published.append((name, variable)))
    assert glue("figure", value, fmt) == expected
    (name, variable), = published
    # MyST-NB stores repr() as text/plain and pastes format_plain_text of it with the default spec.
    assert name == "figure" and format_plain_text(repr(variable), "") == expected


def test_glue_prints_the_figure_without_myst_nb(monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_myst(name, *args, **kwargs):
        if name.startswith("myst_nb"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_myst)
    assert glue("acc", 0.5, ".0%") == "50%"
    assert capsys.readouterr().out == "acc = 50%\n"


@pytest.mark.parametrize("args, error", [((3, 1.0), TypeError), (("a b", 1.0), ValueError),
                                         (("x", "text", ".2f"), ValueError), (("x", 1.0, 2), TypeError)])
def test_glue_names_bad_arguments(args, error):
    with pytest.raises(error, match="name|fmt"):
        glue(*args)
