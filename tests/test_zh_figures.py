"""The Chinese figures (_ext/zh_figures.py): a figure drawn again with its words in Chinese, put back
as it was, with a report of what could not be translated or drawn, and each edition keeping its own.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from docutils import nodes  # noqa: E402
from PIL import Image  # noqa: E402
from repo_files import load_module  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


zh_glue = load_module("_ext/zh_glue.py", "_ext_zh_glue")
zh_figures = load_module("_ext/zh_figures.py", "_ext_zh_figures")

TABLE = zh_glue.GlueTable.from_mapping({
    "texts": {"training step": "训练步数", "accuracy": "准确率", "zero-shot": "零样本", "linear probe": "线性探针",
              "What the model saw": "模型看到的内容", "short": "短", "tofu": "\ue000",
              "a crimson circle": "a crimson circle", "$\\tau$ scale": "$\\tau$ 缩放"},
    "phrases": [{"en": r"loss at step (\d+)", "zh": r"第 \1 步的损失"},
                {"en": r"long", "zh": "一个非常非常非常非常非常非常非常非常长的标题"}],
    "keep": ["CLIP"],
}, data_words=["red", "circle", "a"])


def _print_png(fig, **kwargs) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=60, **kwargs)
    return buffer.getvalue()


pytestmark = pytest.mark.usefixtures("close_figures")


@pytest.fixture(scope="module")
def cjk_font():
    try:
        zh_figures.add_cjk_fonts()
    except RuntimeError as err:
        pytest.skip(str(err))


def _figure():
    fig, (left, right) = plt.subplots(1, 2, figsize=(6, 3))
    left.plot([1, 2, 3], [0.2, 0.5, 0.9], label="CLIP")
    left.set_xlabel("training step")
    left.set_ylabel("accuracy")
    left.set_title("loss at step 300")
    left.legend()
    right.bar([0, 1], [0.6, 0.4])
    right.set_xticks([0, 1], ["zero-shot", "linear probe"])
    right.set_title("$\\tau$ = 0.07")
    fig.suptitle("What the model saw")
    return fig


def _all_texts(fig) -> list[str]:
    fig.canvas.draw()
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


def test_translate_a_wrapped_caption_as_one_line_then_line_by_line():
    assert zh_figures.translate(TABLE, "training\nstep") == "训练步数"
    assert zh_figures.translate(TABLE, "accuracy\nloss at step 3") == "准确率\n第 3 步的损失"
    assert zh_figures.translate(TABLE, "a red\ncircle") == "a red\ncircle"  # data stays
    assert zh_figures.translate(TABLE, "  ") == "  "


def test_english_left_ignores_mathematics_and_kept_words():
    assert zh_figures.english_left(TABLE, "$\\tau$ = 0.07, CLIP, a red circle") == []
    assert zh_figures.english_left(TABLE, "temperature $\\tau$") == ["temperature"]


def test_the_chinese_drawing_has_every_word_translated_and_the_figure_is_put_back(cjk_font):
    fig = _figure()
    english = _print_png(fig)
    texts_before = _all_texts(fig)
    seen = {}

    def print_png(figure):
        seen["texts"] = _all_texts(figure)
        return _print_png(figure)

    png, report = zh_figures.chinese_png(fig, TABLE, print_png, english)
    assert set(report) == {*zh_figures.REPORTED, "seconds"} and report["seconds"] > 0
    assert not any(report[kind] for kind in zh_figures.REPORTED), report
    for chinese in ("训练步数", "准确率", "第 300 步的损失", "模型看到的内容", "零样本", "线性探针", "CLIP"):
        assert chinese in seen["texts"]
    assert "$\\tau$ = 0.07" in seen["texts"]
    assert not {"training step", "accuracy", "zero-shot", "linear probe"} & set(seen["texts"])
    assert png != english
    # put back: the same texts, and the English drawing again byte for byte
    assert _all_texts(fig) == texts_before
    assert _print_png(fig) == english


def test_the_png_says_what_it_is_and_which_english_png_it_replaces(cjk_font):
    fig = _figure()
    english = _print_png(fig)
    png, report = zh_figures.chinese_png(fig, TABLE, _print_png, english)
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        chunks = dict(image.text)
    assert chunks[zh_figures.EDITION_KEY] == "zh"
    assert chunks[zh_figures.REPLACES_KEY] == hashlib.sha256(english).hexdigest()
    assert json.loads(chunks[zh_figures.REPORT_KEY]) == report


def test_english_left_in_a_figure_is_reported(cjk_font):
    fig = _figure()
    fig.axes[1].set_xlabel("model")
    fig.axes[1].set_xticks([0, 1], ["zero-shot", "fine-tuned"])
    _, report = zh_figures.chinese_png(fig, TABLE, _print_png, b"")
    assert set(report["english"]) == {"model", "fine-tuned"}


def test_a_character_no_font_draws_is_reported(cjk_font):
    fig, ax = plt.subplots()
    ax.set_title("tofu")
    _, report = zh_figures.chinese_png(fig, TABLE, _print_png, b"")
    assert report["missing_glyphs"] and "missing from font" in report["missing_glyphs"][0]
    ax.set_title("short")
    _, control = zh_figures.chinese_png(fig, TABLE, _print_png, b"")
    assert control["missing_glyphs"] == []


@pytest.mark.parametrize("word, overlaps", [("long", True), ("short", False)])
def test_texts_that_overlap_only_in_chinese_are_reported(cjk_font, word, overlaps):
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.text(0.05, 0.5, word, transform=ax.transAxes)
    ax.text(0.5, 0.5, "CLIP", transform=ax.transAxes)
    _, report = zh_figures.chinese_png(fig, TABLE, _print_png, b"")
    assert bool(report["overlaps"]) is overlaps


def test_text_chunks_round_trip_and_leave_a_valid_png(tmp_path):
    fig, _ = plt.subplots()
    png = zh_figures.with_text_chunks(_print_png(fig), {"key": "value", "other": '{"a": 1}'})
    path = tmp_path / "x.png"
    path.write_bytes(png)
    assert {"key": "value", "other": '{"a": 1}'}.items() <= zh_figures.text_chunks(path).items()
    with Image.open(path) as image:
        image.load()  # the chunks' checksums are right, or Pillow refuses
    (tmp_path / "y.png").write_text("not a picture")
    assert zh_figures.text_chunks(tmp_path / "y.png") == {}


# -- each edition keeps its own drawings ---------------------------------------------------------


def _page(tmp_path: Path, pngs: list[bytes]) -> tuple[nodes.document, list[str]]:
    """A page with a cell whose outputs are these PNGs, as myst-nb writes them: a file named by its
    SHA-256, and in the cell's output container a bundle of each output's representations (the PNG,
    and the text that stands in for it where images cannot be shown), from which one is chosen later."""
    from docutils.utils import new_document

    doctree = new_document("page")
    output = nodes.container(classes=["cell_output"])
    output += nodes.literal_block("printed", "printed")
    names = []
    for index, png in enumerate(pngs):
        name = hashlib.sha256(png).hexdigest() + ".png"
        (tmp_path / name).write_bytes(png)
        bundle = nodes.container(nb_element="mime_bundle")
        bundle += nodes.container("", nodes.image(uri=name), mime_type="image/png")
        bundle += nodes.container("", nodes.literal_block(f"<figure {index}>", f"<figure {index}>"),
                                  mime_type="text/plain")
        output += bundle
        names.append(name)
    doctree += output
    return doctree, names


def _texts_left(doctree) -> list[str]:
    return [block.astext() for block in doctree.findall(nodes.literal_block)]


def _app(tmp_path: Path, edition: str) -> SimpleNamespace:
    env = SimpleNamespace(docname="page", relfn2path=lambda uri, docname: (uri, str(tmp_path / uri)))
    return SimpleNamespace(config=SimpleNamespace(figures_edition=edition), env=env)


def _images(doctree) -> list[str]:
    return [image["uri"] for image in doctree.findall(nodes.image)]


@pytest.fixture
def pair(cjk_font):
    fig = _figure()
    english = _print_png(fig)
    chinese, _ = zh_figures.chinese_png(fig, TABLE, _print_png, english)
    return english, chinese


def test_the_english_edition_drops_the_chinese_drawings(tmp_path, pair):
    doctree, (zh_name, en_name) = _page(tmp_path, [pair[1], pair[0]])
    zh_figures.choose_figures(_app(tmp_path, "en"), doctree)
    assert _images(doctree) == [en_name]
    # the Chinese output went whole (no text left to stand in for it); the cell's other outputs stay
    assert _texts_left(doctree) == ["printed", "<figure 1>"]


def test_the_chinese_edition_shows_the_chinese_drawing_in_place_of_the_english(tmp_path, pair, caplog):
    doctree, (zh_name, en_name) = _page(tmp_path, [pair[1], pair[0]])
    with caplog.at_level(logging.WARNING):
        zh_figures.choose_figures(_app(tmp_path, "zh"), doctree)
    assert _images(doctree) == [zh_name]
    assert _texts_left(doctree) == ["printed", "<figure 0>"]
    assert not caplog.records


def test_the_chinese_edition_warns_of_a_figure_without_chinese_drawing(tmp_path, pair, caplog):
    doctree, _ = _page(tmp_path, [pair[0]])
    with caplog.at_level(logging.WARNING):
        zh_figures.choose_figures(_app(tmp_path, "zh"), doctree)
    assert any("no Chinese drawing" in record.getMessage() for record in caplog.records)


def test_the_chinese_edition_warns_of_english_left_in_a_drawing(tmp_path, cjk_font, caplog):
    fig = _figure()
    fig.axes[0].set_xlabel("epochs")
    english = _print_png(fig)
    chinese, _ = zh_figures.chinese_png(fig, TABLE, _print_png, english)
    doctree, _ = _page(tmp_path, [chinese, english])
    with caplog.at_level(logging.WARNING):
        zh_figures.choose_figures(_app(tmp_path, "zh"), doctree)
    messages = [record.getMessage() for record in caplog.records]
    assert any("keeps English words" in m and "epochs" in m for m in messages), messages


def test_the_books_table_reads_and_its_chinese_keeps_no_english():
    table = zh_glue.load_table(ROOT / "zh" / "figure_text.yml")
    assert {"clip", "shapesworld"} <= table.keep
    for english, chinese in table.texts.items():
        if chinese != english:  # an entry equal to its English stays English on purpose
            assert zh_figures.english_left(table, chinese) == [], (english, chinese)
    verbatim = [english for english, chinese in table.texts.items() if chinese == english]
    assert len(verbatim) < 10, verbatim  # what a model read, not a way around the check
    for pattern, chinese in table.phrases:
        assert zh_figures.english_left(table, chinese) == [], (pattern.pattern, chinese)


def test_a_drawing_that_fails_is_marked_and_reported(tmp_path, cjk_font, caplog):
    fig = _figure()
    english = _print_png(fig)
    failed = zh_figures.failed_png(english, ValueError("no luck"))
    doctree, (zh_name, en_name) = _page(tmp_path, [failed, english])
    with caplog.at_level(logging.WARNING):
        zh_figures.choose_figures(_app(tmp_path, "zh"), doctree)
    assert _images(doctree) == [zh_name]
    assert any("could not be drawn" in r.getMessage() and "ValueError: no luck" in r.getMessage()
               for r in caplog.records)


def test_tick_formatters_that_return_numbers_are_left_alone(cjk_font):
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, pos: int(x * 10)))
    english = _print_png(fig)
    png, report = zh_figures.chinese_png(fig, TABLE, _print_png, english)
    assert report["english"] == [] and png


def test_exact_texts_come_before_phrases_and_templates_break_lines():
    table = zh_glue.GlueTable.from_mapping({
        "texts": {"seed 0": "第一个种子"},
        "phrases": [{"en": r"seed (\d+)", "zh": r"种子 \1"},
                    {"en": r"true: (.+)\nCNN: (.+)", "zh": r"真实：\1\n卷积网络：\2"}]})
    assert table.render("seed 0") == "第一个种子"
    assert table.render("seed 7") == "种子 7"
    assert table.render("true: seed 3\nCNN: seed 0") == "真实：种子 3\n卷积网络：第一个种子"
    with pytest.raises(ValueError, match="texts"):
        zh_glue.GlueTable.from_mapping({"texts": ["accuracy"]})


def test_a_text_listed_as_itself_stays_english_and_chinese_beside_mathematics_is_reported(cjk_font):
    fig, (left, right) = plt.subplots(1, 2)
    left.set_title("a crimson circle")  # a query the model read, English on purpose
    right.set_title("$\\tau$ scale")
    _, report = zh_figures.chinese_png(fig, TABLE, _print_png, b"")
    assert report["english"] == []
    assert report["math"] == ["$\\tau$ 缩放"]
    right.set_title("a crimson square")  # not listed: its unknown word is reported
    _, report = zh_figures.chinese_png(fig, TABLE, _print_png, b"")
    assert report["english"] == ["a crimson square"] and report["math"] == []


def test_text_chunks_refuse_what_is_not_a_png_or_not_latin_1():
    fig, _ = plt.subplots()
    png = _print_png(fig)
    with pytest.raises(ValueError, match="png: expected the bytes of a whole PNG"):
        zh_figures.with_text_chunks(b"GIF89a not a png", {"key": "value"})
    with pytest.raises(ValueError, match="png: expected the bytes of a whole PNG"):
        zh_figures.with_text_chunks(png[:100], {"key": "value"})
    with pytest.raises(ValueError, match="chunks: expected Latin-1"):
        zh_figures.with_text_chunks(png, {"report": "准确率"})


def test_load_module_refuses_a_file_that_is_not_python():
    with pytest.raises(ValueError, match="relative_path: expected a Python file"):
        load_module("zh/figure_text.yml", "_not_python")
