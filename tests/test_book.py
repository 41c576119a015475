"""Checks of the book's structure. Fast: no notebook is executed here.

They read the real files (_config.yml, _toc.yml, api.md, the notebooks under chapters/),
so they fail as soon as the files drift apart.
"""
from __future__ import annotations

import importlib.util
import pkgutil
import re
import shlex
from pathlib import Path

import nbformat
import pytest
import yaml
from repo_files import load_module

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"


_TOOL = load_module("tools/setup_cell.py", "_setup_cell_tool")
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
REPOSITORY_URL = CONFIG["repository"]["url"].rstrip("/")
# The canonical setup cell: one template (tools/setup_cell.py) and the URL from _config.yml.
SETUP_CELL = _TOOL.SETUP_CELL_TEMPLATE.format(repository_url=REPOSITORY_URL)

NOTEBOOKS = sorted(p for p in CHAPTERS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
NOTEBOOK_IDS = [str(p.relative_to(ROOT)) for p in NOTEBOOKS]


def _toc_files(node) -> list[str]:
    """Every ``file:`` entry of the table of contents, the root included, in order."""
    found = []
    if isinstance(node, dict):
        for key in ("root", "file"):
            if key in node:
                found.append(str(node[key]))
        for value in node.values():
            if isinstance(value, (list, dict)):
                found.extend(_toc_files(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_toc_files(item))
    return found


TOC_FILES = _toc_files(TOC)


def _resolve(entry: str) -> Path | None:
    """The file a toc entry names (the suffix may be left out, as jupyter-book allows)."""
    path = ROOT / entry
    if path.suffix in (".md", ".ipynb") and path.is_file():
        return path
    for suffix in (".md", ".ipynb"):
        candidate = path.with_name(path.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _first_code_cell(nb):
    return next((cell for cell in nb.cells if cell.cell_type == "code"), None)


# -- the table of contents -------------------------------------------------------------


def test_toc_is_a_jupyter_book_with_intro_as_root():
    assert TOC["format"] == "jb-book"
    assert TOC["root"] == "intro"
    captions = [part.get("caption") for part in TOC["parts"]]
    assert captions == ["Chapters", "Appendices"]
    # the table of contents numbers the chapters and their pages, so page titles carry no numbers
    assert TOC["parts"][0].get("numbered") is True


def test_toc_has_no_duplicates():
    assert len(TOC_FILES) == len(set(TOC_FILES))


@pytest.mark.parametrize("entry", TOC_FILES)
def test_every_toc_entry_exists(entry):
    assert _resolve(entry) is not None, f"_toc.yml lists {entry!r} but there is no {entry}.md or {entry}.ipynb"


def test_every_chapter_page_is_in_the_toc():
    listed = {_resolve(entry) for entry in TOC_FILES}
    pages = [
        p
        for p in CHAPTERS.rglob("*")
        if p.suffix in (".md", ".ipynb") and ".ipynb_checkpoints" not in p.parts
    ]
    missing = sorted(str(p.relative_to(ROOT)) for p in pages if p not in listed)
    assert not missing, f"pages under chapters/ that _toc.yml does not list: {missing}"


# Chapter folder -> number of notebook pages it holds.
EXPECTED_CHAPTERS = {"ch1": 7, "ch2": 5, "ch3": 6, "ch4": 2, "ch5": 8, "ch6": 7, "ch7": 8}


@pytest.mark.parametrize("chapter", sorted(EXPECTED_CHAPTERS))
def test_chapter_notebooks_are_in_reading_order(chapter):
    prefix = f"chapters/{chapter}/"
    entries = [e for e in TOC_FILES if e.startswith(prefix) and e != f"{prefix}index"]
    assert entries == sorted(entries), f"{chapter}: the toc lists its notebooks out of order"
    assert len(entries) == EXPECTED_CHAPTERS[chapter], entries
    assert f"{prefix}index" in TOC_FILES, f"{chapter} has no overview page in _toc.yml"
    assert TOC_FILES.index(f"{prefix}index") < TOC_FILES.index(entries[0]), "the overview comes first"


def test_chapters_appear_in_order():
    indexes = [e for e in TOC_FILES if e.startswith("chapters/") and e.endswith("/index")]
    assert indexes == sorted(indexes) and len(indexes) == len(EXPECTED_CHAPTERS), indexes


# -- the configuration -----------------------------------------------------------------


def test_config_executes_every_notebook_and_fails_on_errors():
    execute = CONFIG["execute"]
    # "cache": executed when the code has no executed copy in the build's cache, which a fresh build
    # empties (tests/test_build_book.py); the Chinese edition reads the same cache
    assert execute["execute_notebooks"] == "cache"
    assert execute["timeout"] >= 300
    assert execute["allow_errors"] is False
    # stderr (progress bars) must not become Sphinx warnings, which --warningiserror fails on
    assert execute["stderr_output"] in ("show", "remove")


def test_config_launch_buttons_and_repository():
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["repository"]["branch"] == "main"
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", REPOSITORY_URL)
    assert CONFIG["html"]["use_repository_button"] is True
    assert CONFIG["only_build_toc_files"] is True


def test_config_loads_autodoc_and_napoleon():
    extensions = CONFIG["sphinx"]["extra_extensions"]
    assert "sphinx.ext.autodoc" in extensions
    assert "sphinx.ext.napoleon" in extensions


# -- the notebooks ---------------------------------------------------------------------


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks under chapters/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NOTEBOOK_IDS)
def test_notebook_is_valid(path):
    nbformat.validate(_read(path))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NOTEBOOK_IDS)
def test_notebook_has_no_outputs(path):
    dirty = [
        index
        for index, cell in enumerate(_read(path).cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"cells {dirty} have stored outputs or execution counts: clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NOTEBOOK_IDS)
def test_first_code_cell_is_the_setup_cell(path):
    cell = _first_code_cell(_read(path))
    assert cell is not None, "the notebook has no code cell"
    assert cell.source == SETUP_CELL, "the first code cell differs; run: python tools/setup_cell.py --fix"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NOTEBOOK_IDS)
def test_setup_cell_installs_from_the_configured_repository(path):
    """The agreement test: the URL in the setup cell's pip line is repository.url of _config.yml."""
    cell = _first_code_cell(_read(path))
    assert cell is not None
    pip_lines = [line.strip() for line in cell.source.splitlines() if line.strip().startswith("%pip install")]
    assert len(pip_lines) == 1, "the setup cell needs exactly one %pip install line"
    requirements = [arg for arg in shlex.split(pip_lines[0]) if "git+" in arg]
    assert len(requirements) == 1
    url = requirements[0].split("git+", 1)[1]
    assert url.split("@")[0].rstrip("/") == REPOSITORY_URL


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NOTEBOOK_IDS)
def test_notebook_starts_with_a_title(path):
    nb = _read(path)
    assert nb.cells and nb.cells[0].cell_type == "markdown", "the first cell must be markdown"
    first_line = nb.cells[0].source.lstrip().splitlines()[0] if nb.cells[0].source.strip() else ""
    assert re.match(r"# \S", first_line), f"the first cell must open with a level-1 title, got {first_line!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NOTEBOOK_IDS)
def test_notebook_kernel_is_python3(path):
    kernelspec = _read(path).metadata.get("kernelspec", {})
    assert kernelspec.get("name") == "python3"
    assert kernelspec.get("language", "python") == "python"


def test_setup_cell_tool_agrees_with_the_notebooks():
    assert _TOOL.canonical_setup_cell(ROOT) == SETUP_CELL
    assert _TOOL.check(NOTEBOOKS, SETUP_CELL) == []


# -- the API page ----------------------------------------------------------------------


def _public_modules() -> list[str]:
    """Every public module and subpackage of clip_tutorial, at any depth (a ``_private`` one and all below it aside)."""
    spec = importlib.util.find_spec("clip_tutorial")
    assert spec is not None and spec.submodule_search_locations, "clip_tutorial is not installed"
    found = []

    def walk(paths: list[str], prefix: str) -> None:
        for info in pkgutil.iter_modules(paths):
            if info.name.startswith("_"):
                continue
            found.append(f"{prefix}.{info.name}")
            if info.ispkg:
                walk([str(Path(info.module_finder.path) / info.name)], f"{prefix}.{info.name}")

    walk(list(spec.submodule_search_locations), "clip_tutorial")
    return sorted(found)


def test_api_page_documents_every_public_module():
    text = (ROOT / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\.\. automodule:: (\S+)", text, flags=re.MULTILINE))
    modules = _public_modules()
    assert {"clip_tutorial.model", "clip_tutorial.model.clip", "clip_tutorial.exercises.solutions.ch1"} <= set(modules)
    missing = [name for name in modules if name not in documented]
    assert not missing, f"api.md has no automodule for: {missing}"


def test_api_page_documents_members():
    text = (ROOT / "api.md").read_text(encoding="utf-8")
    blocks = re.split(r"^\.\. automodule:: ", text, flags=re.MULTILINE)[1:]
    assert blocks
    for block in blocks:
        name = block.split()[0]
        assert ":members:" in block.split("```")[0], f"automodule {name} lacks :members:"


# -- pages that repeat the repository URL or the setup cell ----------------------------

_PROSE = [ROOT / "README.md", ROOT / "intro.md", *sorted((ROOT / "chapters").rglob("*.md"))]


@pytest.mark.parametrize("path", [p for p in _PROSE if p.is_file()], ids=lambda p: str(p.relative_to(ROOT)))
def test_repository_urls_in_pages_agree_with_config(path):
    text = path.read_text(encoding="utf-8")
    urls = re.findall(r"git clone (\S+)", text) + re.findall(r"git\+(https://[^\s\"'@]+)", text)
    for url in urls:
        assert url.removesuffix(".git").rstrip("/") == REPOSITORY_URL, f"{url} is not repository.url of _config.yml"


def test_landing_page_shows_the_setup_cell():
    assert SETUP_CELL in (ROOT / "intro.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("chapter", sorted(EXPECTED_CHAPTERS))
def test_overview_pages_have_no_numbered_sections(chapter):
    """A heading in a chapter's overview would take the number (1.1, 1.2, ...) that its first pages should have."""
    text = (CHAPTERS / chapter / "index.md").read_text(encoding="utf-8")
    headings = [line for line in text.splitlines() if re.match(r"#{2,} ", line)]
    assert not headings, f"use a rubric, not a heading, on the overview page: {headings}"
