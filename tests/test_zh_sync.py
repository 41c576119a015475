"""tools/zh_sync.py: the checks that keep a Chinese notebook in step with its English original."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import zh_sync  # noqa: E402

CHINESE = sorted((ROOT / "zh" / "chapters").rglob("*.ipynb"))
CHINESE_PAGES = [zh_sync.zh_path(page) for page in zh_sync.english_pages() if zh_sync.zh_path(page).exists()]


def _english() -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("# A title\n\nSome text."),
                      nbformat.v4.new_code_cell("x = 1 + 1\nprint(x)"),
                      nbformat.v4.new_markdown_cell("More text with {glue:text}`x`.")]
    return notebook


def _book(tmp_path: Path) -> tuple[Path, Path]:
    english = tmp_path / "chapters" / "ch1" / "01_a.ipynb"
    english.parent.mkdir(parents=True)
    nbformat.write(_english(), english)
    chinese = zh_sync.zh_path(english, tmp_path)
    chinese.parent.mkdir(parents=True)
    return english, chinese


def _translated(english: nbformat.NotebookNode) -> nbformat.NotebookNode:
    chinese = zh_sync.start(english)
    chinese.cells[0].source = "# 标题\n\n一些文字。"
    chinese.cells[2].source = "更多文字，{glue:text}`x`。"
    zh_sync.stamp(english, chinese)
    return chinese


def test_a_translated_and_stamped_notebook_has_no_problems(tmp_path):
    english, chinese = _book(tmp_path)
    nbformat.write(_translated(_english()), chinese)
    assert zh_sync.report(tmp_path) == []


def test_a_started_notebook_is_unstamped_until_translated():
    chinese = zh_sync.start(_english())
    assert chinese.cells[1].source == _english().cells[1].source
    assert zh_sync.problems(_english(), chinese) == ["cell 0: not stamped as translated",
                                                     "cell 2: not stamped as translated"]
    zh_sync.stamp(_english(), chinese, cells=[2])
    assert zh_sync.problems(_english(), chinese) == ["cell 0: not stamped as translated"]


def test_a_changed_english_text_makes_its_translation_stale(tmp_path):
    english_path, chinese_path = _book(tmp_path)
    nbformat.write(_translated(_english()), chinese_path)
    edited = _english()
    edited.cells[2].source += " A new sentence."
    nbformat.write(edited, english_path)
    assert zh_sync.report(tmp_path) == [
        "zh/chapters/ch1/01_a.ipynb: cell 2: stale, the English text changed since it was translated"]
    chinese = nbformat.read(chinese_path, as_version=4)
    zh_sync.stamp(edited, chinese, cells=[2])  # revisited
    nbformat.write(chinese, chinese_path)
    assert zh_sync.report(tmp_path) == []


def test_a_changed_code_cell_is_reported_and_copied_across(tmp_path):
    english_path, chinese_path = _book(tmp_path)
    chinese = _translated(_english())
    edited = _english()
    edited.cells[1].source = "x = 2 + 2\nprint(x)"
    assert zh_sync.problems(edited, chinese) == ["cell 1: code differs from the English cell (run --copy-code)"]
    assert zh_sync.copy_code(edited, chinese) == 1
    assert chinese.cells[1].source == edited.cells[1].source
    assert chinese.cells[0].source.startswith("# 标题")  # the translation is kept
    assert zh_sync.problems(edited, chinese) == []


def test_changed_cell_metadata_or_kernel_is_reported_and_copied_across():
    # the book build reuses the English outputs only when code, cell metadata and kernel all match
    chinese = _translated(_english())
    edited = _english()
    edited.cells[1].metadata["tags"] = ["hide-input"]
    edited.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    assert zh_sync.problems(edited, chinese) == [
        "kernelspec differs from the English notebook's (run --copy-code)",
        "cell 1: code cell metadata differs from the English cell's (run --copy-code)"]
    assert zh_sync.copy_code(edited, chinese) == 2
    assert chinese.cells[1].metadata == {"tags": ["hide-input"]} and chinese.metadata["kernelspec"]["name"] == "python3"
    assert zh_sync.problems(edited, chinese) == []


def test_a_different_structure_is_reported_once_and_blocks_copying():
    chinese = _translated(_english())
    longer = _english()
    longer.cells.append(nbformat.v4.new_code_cell("y = 3"))
    [problem] = zh_sync.problems(longer, chinese)
    assert problem.startswith("structure: English has 4 cells")
    with pytest.raises(ValueError, match="cell structure"):
        zh_sync.copy_code(longer, chinese)
    with pytest.raises(ValueError, match="cell structure"):
        zh_sync.stamp(longer, chinese)
    with pytest.raises(ValueError, match="cells: expected indices of markdown cells, got 1"):
        zh_sync.stamp(_english(), chinese, cells=[1])


def test_missing_and_orphaned_pages_are_reported(tmp_path):
    english_path, chinese_path = _book(tmp_path)
    assert zh_sync.report(tmp_path) == [
        "zh/chapters/ch1/01_a.ipynb: missing (start it with --new chapters/ch1/01_a.ipynb)"]
    nbformat.write(_translated(_english()), chinese_path)
    orphan = tmp_path / "zh" / "chapters" / "ch1" / "02_gone.ipynb"
    nbformat.write(_translated(_english()), orphan)
    assert zh_sync.report(tmp_path) == [
        "zh/chapters/ch1/02_gone.ipynb: no English notebook at chapters/ch1/02_gone.ipynb"]


def test_a_translation_must_keep_every_glued_number_and_citation():
    chinese = _translated(_english())
    chinese.cells[2].source = "更多文字，其值为 2。"  # the glued number typed in by hand
    assert zh_sync.problems(_english(), chinese) == [
        "cell 2: glue or cite roles differ: missing [('glue:text', 'x')], extra []"]


@pytest.mark.parametrize("path", CHINESE, ids=[str(p.relative_to(ROOT)) for p in CHINESE])
def test_every_chinese_notebook_is_in_step_with_its_english_one(path):
    english = ROOT / path.relative_to(ROOT / "zh")
    assert english.exists(), f"{path.relative_to(ROOT)} has no English notebook"
    assert zh_sync.problems(nbformat.read(english, as_version=4), nbformat.read(path, as_version=4)) == []
    title = nbformat.read(path, as_version=4).cells[0].source.splitlines()[0]
    assert title.startswith("# ") and any("\u4e00" <= ch <= "\u9fff" for ch in title), title


def test_a_markdown_page_is_stamped_as_a_whole_and_goes_stale_when_the_english_changes():
    english = "# Chapter 1\n\nSome text with {glue:text}`x` and {cite:p}`radford2021clip`.\n"
    chinese = "# 第 1 章\n\n一些文字，{glue:text}`x`，{cite:p}`radford2021clip`。\n"
    assert zh_sync.page_problem(english, chinese) == "not stamped as translated"
    stamped = zh_sync.stamp_page(english, chinese)
    assert stamped.endswith(chinese) and zh_sync.page_problem(english, stamped) is None
    assert zh_sync.stamp_page(english, stamped) == stamped  # stamping again replaces the stamp
    assert zh_sync.page_problem(english + "More.\n", stamped) == "stale, the English page changed since it was translated"
    lost = zh_sync.stamp_page(english, chinese.replace("{glue:text}`x`", "2"))
    assert zh_sync.page_problem(english, lost) == "glue or cite roles differ from the English page"


@pytest.mark.parametrize("path", CHINESE_PAGES, ids=[str(p.relative_to(ROOT)) for p in CHINESE_PAGES])
def test_every_chinese_markdown_page_is_in_step_with_its_english_one(path):
    english = ROOT / path.relative_to(ROOT / "zh")
    text = path.read_text(encoding="utf-8")
    assert zh_sync.page_problem(english.read_text(encoding="utf-8"), text) is None
    assert any("\u4e00" <= ch <= "\u9fff" for ch in text)
