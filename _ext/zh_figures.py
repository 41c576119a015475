"""Figures in Chinese for the Chinese edition, drawn by the same execution that draws the English ones.

Both editions show the outputs of one execution of the shared code cells (``tools/build_book.py``),
so a figure's words cannot come from the code. Instead, while the book is built, every kernel
loads this module at start-up (:func:`install`, from an IPython start-up file that the build
writes) and each matplotlib figure a cell shows is drawn twice: as the cell drew it, and once
more with its words in Chinese. The second drawing is a display output of its own, a PNG whose
text chunks say that it is the Chinese figure, which English PNG it stands for (its SHA-256) and
what went wrong while translating (English words left, characters without a glyph, words that
now overlap). :func:`setup`, the Sphinx side loaded by both editions, then keeps on each page
the figures of its own edition, and in the Chinese edition turns every problem into a warning,
which fails the build: a figure without a Chinese drawing, or with English left in it.

Words are translated by ``zh/figure_text.yml``, read like ``zh/glue_text.yml`` (``_ext/zh_glue.py``):
exact ``texts``, then ``phrases`` (regular expressions), then lists; ShapesWorld's own words
(English captions are its data) and ``keep`` stay. Titles, axis labels, legends, annotations and
tick labels are translated; mathematics (``$...$``) is left alone. Chinese characters are drawn
with Noto Sans CJK SC (Debian's ``fonts-noto-cjk``), every other character with the figure's own font.

Without the build (nbval, Colab, a reader's Jupyter) nothing is installed and figures are drawn
once, in English.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import struct
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EDITION_KEY = "clip-tutorial-edition"
REPLACES_KEY = "clip-tutorial-replaces"
REPORT_KEY = "clip-tutorial-report"
CJK_FAMILY = "Noto Sans CJK SC"
# What a drawing's report lists, and how the Chinese edition words each problem.
REPORTED = {
    "english": "keeps English words (add its Chinese to zh/figure_text.yml)",
    "math": "has Chinese in a text with mathematics ($...$), drawn without a CJK font",
    "overlaps": "has texts that overlap in Chinese only",
    "missing_glyphs": "has characters that no font draws",
    "error": "could not be drawn",
}
_MATH = re.compile(r"(?<!\\)\$.*?(?<!\\)\$")
_CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")


# -- translating one figure ------------------------------------------------------------------


def translate(table: Any, text: str) -> str:
    """``text`` in Chinese by ``table`` (a ``zh_glue.GlueTable``): whole, else its lines joined, else line by line.

    A caption wrapped over several lines is looked up as one line first, so the table holds one
    entry per sentence; its Chinese may carry its own line breaks.
    """
    if not text.strip():
        return text
    whole = table.render(text)
    if whole != text or "\n" not in text:
        return whole
    joined = " ".join(line.strip() for line in text.split("\n"))
    chinese = table.render(joined)
    if chinese != joined:
        return chinese
    return "\n".join(table.render(line) for line in text.split("\n"))


def english_left(table: Any, text: str) -> list[str]:
    """The English words of ``text`` that the Chinese figure may not keep (mathematics is not words)."""
    return table.english_left(_MATH.sub(" ", text))


def _ticks_formatter(inner: Any, render: Callable[[str], str]) -> Any:
    from matplotlib.ticker import Formatter

    class ChineseTicks(Formatter):
        """``inner``'s tick labels, translated."""

        def __call__(self, x: float, pos: int | None = None) -> str:
            return render(inner(x, pos))

        def format_ticks(self, values: Any) -> list[str]:
            return [render(label) for label in inner.format_ticks(values)]

        def get_offset(self) -> str:
            return render(inner.get_offset())

        def set_locs(self, locs: Any) -> None:
            inner.set_locs(locs)

        def format_data_short(self, value: float) -> str:
            return inner.format_data_short(value)

    return ChineseTicks()


def _axes(fig: Any) -> list[Any]:
    return [axis for ax in fig.axes for axis in (ax.xaxis, ax.yaxis, getattr(ax, "zaxis", None)) if axis is not None]


def _texts(fig: Any) -> list[Any]:
    from matplotlib.text import Text

    ticks = {id(label) for axis in _axes(fig) for label in axis.get_ticklabels(which="both")}
    return [t for t in fig.findobj(Text) if id(t) not in ticks and t.get_visible() and t.get_text().strip()]


def _extents(fig: Any, texts: list[Any]) -> list[Any]:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in texts]


def _overlapping(boxes: list[Any]) -> set[tuple[int, int]]:
    pairs = set()
    for i, a in enumerate(boxes):
        for j in range(i + 1, len(boxes)):
            b = boxes[j]
            if min(a.x1, b.x1) - max(a.x0, b.x0) > 1 and min(a.y1, b.y1) - max(a.y0, b.y0) > 1:
                pairs.add((i, j))
    return pairs


def _with_cjk(families: list[str]) -> list[str]:
    return [family for family in families if family != CJK_FAMILY] + [CJK_FAMILY]


@contextmanager
def chinese_words(fig: Any, table: Any, report: dict[str, list[str]]) -> Iterator[None]:
    """Within the block, ``fig`` has its words in Chinese and falls back to :data:`CJK_FAMILY` for CJK glyphs.

    Everything is put back on leaving: texts, tick formatters, fonts. Problems go into ``report``:
    ``"english"`` (texts that keep English words), ``"math"`` (Chinese in a text with mathematics,
    which matplotlib draws with its maths fonts only) and ``"overlaps"`` (pairs of texts that overlap
    in Chinese but not in English). A text that ``table.texts`` maps to itself stays English on purpose.
    """
    import matplotlib as mpl

    def render(text: str) -> str:
        if not isinstance(text, str):  # a formatter of the figure's may return a number
            return text
        if table.texts.get(text) == text:  # listed as itself: English on purpose (what a model read)
            return text
        chinese = translate(table, text)
        if english_left(table, chinese) and text not in report["english"]:
            report["english"].append(text)
        if _MATH.search(chinese) and _CJK.search(chinese) and chinese not in report["math"]:
            report["math"].append(chinese)  # mathtext draws the whole text, without a CJK font
        return chinese

    texts = _texts(fig)
    before = _overlapping(_extents(fig, texts))
    saved_texts = [(t, t.get_text(), t.get_fontfamily()) for t in texts]
    # tick labels are written at each drawing, and new ticks copy the first one's font
    tick_labels = [label for axis in _axes(fig) for tick in (*axis.majorTicks, *axis.minorTicks)
                   for label in (tick.label1, tick.label2)]
    saved_fonts = [(label, label.get_fontfamily()) for label in tick_labels]
    saved_axes = [(axis, axis.get_major_formatter(), axis.get_minor_formatter(),
                   axis.isDefault_majfmt, axis.isDefault_minfmt) for axis in _axes(fig)]
    try:
        with mpl.rc_context({"font.family": _with_cjk(mpl.rcParams["font.family"])}):
            for text, original, family in saved_texts:
                text.set_text(render(original))
                text.set_fontfamily(_with_cjk(family))
            for label, family in saved_fonts:
                label.set_fontfamily(_with_cjk(family))
            for axis, major, minor, _, _ in saved_axes:
                axis.set_major_formatter(_ticks_formatter(major, render))
                axis.set_minor_formatter(_ticks_formatter(minor, render))
            after = _overlapping(_extents(fig, texts))
            report["overlaps"].extend(f"{texts[i].get_text()!r} / {texts[j].get_text()!r}"
                                      for i, j in sorted(after - before))
            yield
    finally:
        for text, original, family in saved_texts:
            text.set_text(original)
            text.set_fontfamily(family)
        for label, family in saved_fonts:
            label.set_fontfamily(family)
        for axis, major, minor, default_major, default_minor in saved_axes:
            axis.set_major_formatter(major)
            axis.set_minor_formatter(minor)
            axis.isDefault_majfmt, axis.isDefault_minfmt = default_major, default_minor


def chinese_png(fig: Any, table: Any, print_png: Callable[[Any], Any], english_png: bytes) -> tuple[bytes, dict]:
    """``fig`` drawn by ``print_png`` with its words in Chinese, as PNG bytes, and the report of problems.

    The PNG's text chunks carry :data:`EDITION_KEY` (``"zh"``), :data:`REPLACES_KEY` (the SHA-256
    of ``english_png``) and :data:`REPORT_KEY` (the report as JSON): ``english``, ``math`` and
    ``overlaps`` (see :func:`chinese_words`), ``missing_glyphs`` (matplotlib's warnings about
    characters no font can draw) and ``seconds``, the time this drawing took.
    """
    start = time.perf_counter()
    report: dict[str, Any] = {kind: [] for kind in REPORTED}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with chinese_words(fig, table, report):
            png = _as_bytes(print_png(fig))
    report["missing_glyphs"] = sorted({str(w.message) for w in caught if "missing from font" in str(w.message)})
    report["seconds"] = round(time.perf_counter() - start, 4)  # what the Chinese drawing cost the build
    return _marked(png, english_png, report), report


def _marked(png: bytes, english_png: bytes, report: dict[str, Any]) -> bytes:
    """``png`` with the text chunks that make it the Chinese drawing of ``english_png``."""
    return with_text_chunks(png, {EDITION_KEY: "zh", REPLACES_KEY: hashlib.sha256(english_png).hexdigest(),
                                  REPORT_KEY: json.dumps(report, ensure_ascii=True)})


def with_text_chunks(png: bytes, chunks: dict[str, str]) -> bytes:
    """``png`` with a ``tEXt`` chunk per item of ``chunks`` (Latin-1 keys and values) before its end.

    Raises:
        ValueError: if ``png`` is not a whole PNG, or a key or value is not Latin-1 text.
    """
    if not png.startswith(b"\x89PNG\r\n\x1a\n") or b"IEND" not in png:
        raise ValueError(f"png: expected the bytes of a whole PNG file, got {png[:16]!r}...")
    end = png.rindex(b"IEND") - 4
    extra = b""
    for key, value in chunks.items():
        try:
            body = b"tEXt" + key.encode("latin-1") + b"\0" + value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"chunks: expected Latin-1 keys and values, got {key!r}: {value[:40]!r}") from None
        extra += struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    return png[:end] + extra + png[end:]


def failed_png(english_png: bytes, error: BaseException) -> bytes:
    """The English PNG, marked as the Chinese drawing that could not be made, with the error in its report."""
    report = {kind: [] for kind in REPORTED} | {"error": [f"{type(error).__name__}: {error}"]}
    return _marked(english_png, english_png, report)


def text_chunks(png: str | Path | bytes) -> dict[str, str]:
    """The ``tEXt`` chunks of a PNG, given as bytes or as a path ({} if it is not a PNG)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(png) if isinstance(png, bytes) else png) as image:
            return dict(getattr(image, "text", {}) or {})
    except OSError:
        return {}


def _as_bytes(png: Any) -> bytes:
    if isinstance(png, tuple):
        png = png[0]
    return base64.b64decode(png) if isinstance(png, str) else bytes(png)


# -- the kernel: every figure shown is shown twice ---------------------------------------------


def add_cjk_fonts() -> None:
    """Make matplotlib know the system's Noto CJK fonts (installed after its font cache was built)."""
    from matplotlib import font_manager

    if any(font.name == CJK_FAMILY for font in font_manager.fontManager.ttflist):
        return
    for path in font_manager.findSystemFonts():
        if "NotoSansCJK" in Path(path).name:
            font_manager.fontManager.addfont(path)
    if not any(font.name == CJK_FAMILY for font in font_manager.fontManager.ttflist):
        raise RuntimeError(f"the Chinese figures need the font {CJK_FAMILY}: sudo apt-get install fonts-noto-cjk")


def install(table_path: str | Path, shell: Any = None) -> None:
    """From now on, each figure ``shell`` displays is followed by its Chinese drawing (see the module's text)."""
    from IPython import get_ipython
    from IPython.core.formatters import PNGFormatter
    from IPython.display import publish_display_data
    from matplotlib.figure import Figure
    from zh_glue import load_table

    shell = shell or get_ipython()
    table = load_table(Path(table_path))
    add_cjk_fonts()

    class BilingualPNG(PNGFormatter):
        """PNGs of figures, each followed by a display of the figure in Chinese."""

        def __call__(self, obj: Any) -> Any:
            data = super().__call__(obj)
            if data is None or not isinstance(obj, Figure):
                return data
            english = _as_bytes(data)
            try:
                png, _ = chinese_png(obj, table, self.lookup(obj), english)
            except Exception as err:  # noqa: BLE001 - the cell goes on; the Chinese edition reports it
                png = failed_png(english, err)
            # published now, so before the English PNG that this call returns
            publish_display_data({"image/png": base64.b64encode(png).decode("ascii"),
                                  "text/plain": "<the next figure, in Chinese>"},
                                 metadata={EDITION_KEY: "zh"})
            return data

    old = shell.display_formatter.formatters["image/png"]
    new = BilingualPNG(parent=shell.display_formatter)
    new.type_printers.update(old.type_printers)
    new.deferred_printers.update(old.deferred_printers)
    new.singleton_printers.update(old.singleton_printers)
    shell.display_formatter.formatters["image/png"] = new


def startup_script(ext_dir: Path, table_path: Path) -> str:
    """The IPython start-up file that calls :func:`install` in every kernel of the book's build."""
    return (
        "# Written by tools/build_book.py: the Chinese figures (_ext/zh_figures.py).\n"
        "import sys\n"
        f"sys.path.insert(0, {str(ext_dir)!r})\n"
        "try:\n"
        "    import zh_figures\n"
        f"    zh_figures.install({str(table_path)!r})\n"
        "finally:\n"
        f"    sys.path.remove({str(ext_dir)!r})\n"
        "    del sys\n"
    )


# -- the book: each edition keeps its own figures ----------------------------------------------


def _output_images(doctree: Any) -> Iterator[Any]:
    from docutils import nodes

    for image in list(doctree.findall(nodes.image)):
        parent = image.parent
        while parent is not None and "cell_output" not in parent.get("classes", []):
            parent = parent.parent
        if parent is not None and str(image.get("uri", "")).endswith(".png"):
            yield image


def _remove(image: Any) -> None:
    """Remove the cell output that shows ``image``: myst-nb's bundle of its representations (the PNG, and
    the text that would stand in for it), else the image's branch below the cell's output container."""
    node = image
    while (node.parent is not None and node.get("nb_element") != "mime_bundle"
           and "cell_output" not in node.parent.get("classes", [])):
        node = node.parent
    node.parent.remove(node)


def choose_figures(app: Any, doctree: Any) -> None:
    """Keep the figures of this edition (``figures_edition``) on the page just read; in Chinese, warn of problems."""
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    chinese = app.config.figures_edition == "zh"
    found = []
    for image in _output_images(doctree):
        path = Path(app.env.relfn2path(image["uri"], app.env.docname)[1])
        found.append((image, path, text_chunks(path)))
    replaced = {chunks[REPLACES_KEY] for _, _, chunks in found if chunks.get(EDITION_KEY) == "zh"}
    for image, path, chunks in found:
        if chunks.get(EDITION_KEY) == "zh":
            if not chinese:
                _remove(image)
                continue
            report = json.loads(chunks.get(REPORT_KEY, "{}"))
            for kind, what in REPORTED.items():
                if report.get(kind):
                    logger.warning(f"a figure in Chinese {what}: {report[kind]}", location=image)
        elif chinese and hashlib.sha256(path.read_bytes()).hexdigest() in replaced:
            _remove(image)
        elif chinese:
            logger.warning("a figure has no Chinese drawing: build the book with tools/build_book.py, "
                           "whose kernels draw one (_ext/zh_figures.py)", location=image)


def setup(app: Any) -> dict[str, Any]:
    """Register ``figures_edition`` (``"en"`` or ``"zh"``) and the choice of figures, before images are collected."""
    app.add_config_value("figures_edition", "en", "env")
    app.connect("doctree-read", choose_figures, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
