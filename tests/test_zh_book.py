"""The Chinese edition as a book: its table of contents and configuration mirror the English ones,
its notebooks can share the English outputs, glued English phrases are shown in Chinese, and
every page links to the same page in the other edition.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import yaml
from repo_files import load_module

ROOT = Path(__file__).resolve().parents[1]
ZH = ROOT / "zh"


zh_glue = load_module("_ext/zh_glue.py", "_ext_zh_glue")
editions = load_module("_ext/editions.py", "_ext_editions")


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _toc_entries(node: object) -> list[tuple[str, str]]:
    """(key, value) of every ``file``, ``caption`` and ``numbered`` in a toc, in order."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("file", "root", "format", "numbered"):
                found.append((key, str(value)))
            found += _toc_entries(value)
    elif isinstance(node, list):
        for item in node:
            found += _toc_entries(item)
    return found


def _has_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


# -- the table of contents and the configuration ------------------------------------------------


def test_the_chinese_toc_lists_the_same_pages_in_the_same_order():
    english, chinese = _yaml(ROOT / "_toc.yml"), _yaml(ZH / "_toc.yml")
    assert _toc_entries(chinese) == _toc_entries(english)
    for part_en, part_zh in zip(english["parts"], chinese["parts"], strict=True):
        assert _has_chinese(part_zh["caption"]), part_zh["caption"]
        for chapter_en, chapter_zh in zip(part_en["chapters"], part_zh["chapters"], strict=True):
            assert ("title" in chapter_en) == ("title" in chapter_zh), chapter_zh["file"]
            if "title" in chapter_zh:
                assert _has_chinese(chapter_zh["title"]), chapter_zh


def test_every_page_of_the_chinese_toc_exists():
    files = [value for key, value in _toc_entries(_yaml(ZH / "_toc.yml")) if key in ("file", "root")]
    missing = [f for f in files if not any((ZH / f"{f}{suffix}").is_file() for suffix in (".md", ".ipynb"))]
    assert not missing and len(files) == 55, (missing, len(files))


# Keys of zh/_config.yml that differ from ../_config.yml, and why (the file says so too).
DIFFERENT = {
    ("title",): "the Chinese title",
    ("exclude_patterns",): "the English list names the English folders",
    ("bibtex_bibfiles",): "the same file, seen from zh/",
    ("execute", "cache"): "the English build's cache",
    ("repository", "path_to_book"): "Colab and edit buttons open zh/...",
    ("sphinx", "local_extensions"): "the same extensions from ../_ext, and zh_glue",
    ("sphinx", "config", "language"): "Sphinx's words in Chinese",
    ("sphinx", "config", "edition_other_root"): "the other edition",
    ("sphinx", "config", "edition_other_label"): "the other edition",
    ("sphinx", "config", "edition_other_lang"): "the other edition",
    ("sphinx", "config", "zh_glue_table"): "the Chinese renderings of glued phrases",
    ("sphinx", "config", "figures_edition"): "the pages keep the figures drawn in Chinese",
}


def _flatten(node: object, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    if isinstance(node, dict):
        flat: dict[tuple[str, ...], object] = {}
        for key, value in node.items():
            flat.update(_flatten(value, (*prefix, str(key))))
        return flat
    return {prefix: node}


def test_the_chinese_configuration_differs_from_the_english_only_where_it_must():
    english, chinese = _flatten(_yaml(ROOT / "_config.yml")), _flatten(_yaml(ZH / "_config.yml"))
    differing = {key for key in english.keys() | chinese.keys() if english.get(key) != chinese.get(key)}
    unexplained = sorted(key for key in differing if not any(key[:n] in DIFFERENT for n in range(1, len(key) + 1)))
    assert not unexplained, unexplained
    assert chinese[("execute", "execute_notebooks")] == english[("execute", "execute_notebooks")] == "cache"
    assert chinese[("execute", "cache")] == "_build/.jupyter_cache"  # where the English build puts it
    assert chinese[("repository", "path_to_book")] == "zh"
    assert set(_yaml(ZH / "_config.yml")["sphinx"]["local_extensions"]) == \
        set(_yaml(ROOT / "_config.yml")["sphinx"]["local_extensions"]) | {"zh_glue"}
    assert "zh" in _yaml(ROOT / "_config.yml")["exclude_patterns"]


# -- why nbval runs the English notebooks only --------------------------------------------------

# A code cell that names a path relative to its own folder, or moves the working directory,
# would behave differently in zh/chapters/ than in chapters/.
LOCATION_DEPENDENT = re.compile(r"""["'](\.{1,2}/|chapters/|zh/|data/|_build/)|%cd\b|os\.chdir|Path\.cwd|getcwd""")
ENGLISH_NOTEBOOKS = sorted((ROOT / "chapters").rglob("*.ipynb"))


@pytest.mark.parametrize("path", ENGLISH_NOTEBOOKS, ids=[p.stem for p in ENGLISH_NOTEBOOKS])
def test_no_code_cell_depends_on_the_notebooks_folder(path):
    """With identical code, kernel and cell metadata (tests/test_zh_sync.py) and no dependence on the
    folder, a Chinese notebook runs exactly as its English one: nbval runs the English ones only."""
    cells = nbformat.read(path, as_version=4).cells
    found = [(i, line.strip()) for i, cell in enumerate(cells) if cell.cell_type == "code"
             for line in cell.source.splitlines() if LOCATION_DEPENDENT.search(line)]
    assert not found, found


def test_the_folder_check_catches_a_relative_path():
    assert LOCATION_DEPENDENT.search('pd.read_csv("../../data/x.csv")')
    assert LOCATION_DEPENDENT.search("%cd ..") and LOCATION_DEPENDENT.search("os.chdir(here)")
    assert not LOCATION_DEPENDENT.search('Path(tempfile.mkdtemp()) / "pairs.csv"')


def test_nbval_runs_the_english_notebooks_only():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    line = next(line for line in makefile.splitlines() if "--nbval" in line)
    assert line.rstrip().endswith(" chapters"), line


# -- glued English phrases in Chinese ------------------------------------------------------------

TABLE = zh_glue.load_table(ZH / "glue_text.yml")


@pytest.mark.parametrize(("english", "chinese"), [
    ("8, 16 and 32", "8、16 和 32"),
    ("1, 2, 4, 8 and 16", "1、2、4、8 和 16"),
    ("0, 20, 40 or 60%", "0、20、40 或 60%"),
    ("5,000 to 40,000", "5,000 至 40,000"),
    ("50 of 50", "50/50"),
    ("16, 32, 1,024", "16、32、1,024"),
    ("rotation, background, hue", "rotation、background、hue"),
    ("at no size of the grid", "在网格的任何规模上都未能"),
    ("seeds 0, 1 and 2", "种子 0、1 和 2"),
    ("seed 3", "种子 3"),
    ("faster", "更快"),
    ("not faster", "并不更快"),
    ("CLIP ahead in every seed", "每个种子上都是 CLIP 领先"),
    ("reached it in 2 of 3 seeds", "在 3 个种子中的 2 个上达到了这一水平"),
    ("from 20,000 pairs on", "从 20,000 个训练对起"),
    ("neither ahead by more than 3 points on both splits", "两者都没有在两种划分上领先超过 3 个百分点"),
    ("star and diamond", "star 和 diamond"),
    ("97.4%", "97.4%"),
    ("a photo of a green heart", "a photo of a green heart"),
])
def test_glued_english_is_rendered_in_chinese(english, chinese):
    assert TABLE.render(english) == chinese
    assert TABLE.english_left(TABLE.render(english)) == []


def test_english_left_in_a_value_is_found():
    assert TABLE.english_left("much faster now") == ["much", "faster", "now"]
    assert TABLE.english_left("a red square in the top left") == []  # ShapesWorld's own words
    assert TABLE.english_left("resnet.py, ViT-B/32 and of</w>") == ["and"]  # code-like tokens are names
    assert TABLE.english_left("ch1-demo, RN50x4 at step 300") == ["step"]
    assert TABLE.english_left("rotation, background, hue") == []  # listed under keep


def test_a_bad_table_is_refused():
    with pytest.raises(ValueError, match=r"phrases\[0\]"):
        zh_glue.GlueTable.from_mapping({"phrases": [{"en": "x"}]})
    with pytest.raises(ValueError, match=r"phrases\[0\]\.en"):
        zh_glue.GlueTable.from_mapping({"phrases": [{"en": "(", "zh": "x"}]})


def test_every_phrase_of_the_table_is_chinese():
    for pattern, chinese in TABLE.phrases:
        assert _has_chinese(chinese) or not re.search("[A-Za-z]", chinese), pattern.pattern
        assert TABLE.english_left(chinese) == [], pattern.pattern


# -- the link between the editions ---------------------------------------------------------------


def test_the_switch_link_points_at_the_same_page_in_the_other_edition():
    assert editions.counterpart_href("index", "zh/") == "zh/index.html"
    assert editions.counterpart_href("chapters/ch1/02_why_clip", "zh/") == "../../zh/chapters/ch1/02_why_clip.html"
    assert editions.counterpart_href("chapters/ch1/02_why_clip", "../") == "../../../chapters/ch1/02_why_clip.html"
    with pytest.raises(ValueError, match="other_root"):
        editions.counterpart_href("index", "zh")


def test_both_editions_configure_the_switch_towards_each_other():
    english = _yaml(ROOT / "_config.yml")["sphinx"]["config"]
    chinese = _yaml(ZH / "_config.yml")["sphinx"]["config"]
    assert english["edition_other_root"] == "zh/" and chinese["edition_other_root"] == "../"
    assert english["edition_other_lang"] == "zh-CN" and chinese["edition_other_lang"] == "en"
    assert chinese["language"] == "zh_CN"


def test_the_chinese_notebooks_share_the_english_cache_keys():
    """The execution cache keys a notebook on its code cells (with metadata) and its kernelspec."""
    from jupyter_cache.cache.main import JupyterCacheBase

    cache = JupyterCacheBase.__new__(JupyterCacheBase)
    for english in ENGLISH_NOTEBOOKS[:3] + ENGLISH_NOTEBOOKS[-3:]:
        chinese = ZH / english.relative_to(ROOT)
        keys = [cache.create_hashed_notebook(nbformat.read(p, as_version=4))[1] for p in (english, chinese)]
        assert keys[0] == keys[1], english.name
    changed = nbformat.read(ENGLISH_NOTEBOOKS[0], as_version=4)
    next(c for c in changed.cells if c.cell_type == "code").source += "\n"
    assert cache.create_hashed_notebook(changed)[1] != keys[0]


CHINESE_NOTEBOOKS = sorted((ZH / "chapters").rglob("*.ipynb"))


@pytest.mark.parametrize("path", CHINESE_NOTEBOOKS, ids=[p.stem for p in CHINESE_NOTEBOOKS])
def test_chinese_notebooks_store_no_outputs(path):
    dirty = [i for i, cell in enumerate(nbformat.read(path, as_version=4).cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"cells {dirty} have stored outputs: the book takes them from the English build"


def test_the_chinese_search_index_is_the_same_with_a_set_of_latin_terms():
    """_ext/book_html.py swaps the Chinese indexer's list of Latin words for a set (a quadratic lookup
    cost minutes): the words and stems it indexes must not change."""
    from sphinx.search.zh import SearchChinese

    book_html = load_module("_ext/book_html.py", "_ext_book_html")
    text = (ZH / "chapters" / "ch2" / "03_contrastive_maths.ipynb").read_text(encoding="utf-8")[:20000]
    fixed, plain = SearchChinese({}), SearchChinese({})
    plain.latin_terms = []  # its own list, not the class's shared one
    book_html.fast_latin_terms(fixed)
    assert isinstance(fixed.latin_terms, set)
    words = fixed.split(text)
    assert words == plain.split(text) and len(words) > 1000
    assert [fixed.stem(w) for w in words] == [plain.stem(w) for w in words]
    assert any(_has_chinese(w) for w in words), "no Chinese words were split out: is jieba installed?"
