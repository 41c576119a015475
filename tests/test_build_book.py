"""The book build (tools/build_book.py): a fresh build when the code changed, and a readable failure.

Most tests call the functions on small folders; one builds a two-page book in a temporary folder
with jupyter-book (a few seconds), once with a cell that hangs past a tiny timeout and once fixed.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from repo_files import load_module

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "build_book.py"


build = load_module("tools/build_book.py", "_build_book_tool")
ENV = ["python 3.x", "torch==1.0"]


def _write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")


@pytest.fixture
def book(tmp_path) -> Path:
    """A folder with a package (code and a weight file) and a _config.yml."""
    _write(tmp_path / "clip_tutorial" / "__init__.py", "X = 1\n")
    _write(tmp_path / "clip_tutorial" / "weights" / "shipped" / "tiny.safetensors", b"\x00\x01\x02")
    _write(tmp_path / "_config.yml", "title: t\n")
    return tmp_path


# -- the fingerprint and the plan ---------------------------------------------------------------


def test_fingerprint_is_stable(book):
    assert build.code_fingerprint(book, environment=ENV) == build.code_fingerprint(book, environment=ENV)


@pytest.mark.parametrize("change", [
    lambda root: _write(root / "clip_tutorial" / "__init__.py", "X = 2\n"),
    lambda root: _write(root / "clip_tutorial" / "weights" / "shipped" / "tiny.safetensors", b"\x00\x01\x03"),
    lambda root: _write(root / "clip_tutorial" / "new_module.py", ""),
    lambda root: (root / "clip_tutorial" / "__init__.py").rename(root / "clip_tutorial" / "renamed.py"),
    lambda root: _write(root / "_config.yml", "title: u\n"),
], ids=["code", "weights", "new-file", "renamed-file", "config"])
def test_fingerprint_changes_with_the_code_weights_and_config(book, change):
    before = build.code_fingerprint(book, environment=ENV)
    change(book)
    assert build.code_fingerprint(book, environment=ENV) != before


def test_fingerprint_changes_with_the_environment(book):
    assert build.code_fingerprint(book, environment=ENV) != build.code_fingerprint(book, environment=[*ENV[:1],
                                                                                                      "torch==2.0"])


def test_fingerprint_ignores_caches(book):
    before = build.code_fingerprint(book, environment=ENV)
    _write(book / "clip_tutorial" / "__pycache__" / "x.cpython-311.pyc", b"junk")
    _write(book / "clip_tutorial" / "stray.pyc", b"junk")
    _write(book / "chapters" / "notes.md", "pages are Sphinx's business")
    assert build.code_fingerprint(book, environment=ENV) == before


def test_default_environment_names_torch():
    assert any(item.startswith("torch==") for item in build.installed_distributions())


STATE = {"files": {"clip_tutorial/__init__.py": "aa", "_config.yml": "bb"}, "environment": ["torch==1.0"]}


def _stamp(build_dir: Path, state: dict, html: bool = True) -> None:
    record = {"fingerprint": build.fingerprint_of(state), "state": state}
    _write(build_dir / build.STAMP_NAME, json.dumps(record))
    if html:
        _write(build_dir / "html" / "index.html", "<html></html>")


def test_plan_is_fresh_without_a_recorded_build(tmp_path):
    fresh, reason = build.plan_build(tmp_path / "_build", STATE)
    assert fresh and "no successful build" in reason


def test_plan_is_incremental_when_nothing_changed(tmp_path):
    _stamp(tmp_path / "_build", STATE)
    fresh, reason = build.plan_build(tmp_path / "_build", json.loads(json.dumps(STATE)))
    assert not fresh and "unchanged" in reason


def test_plan_is_fresh_when_the_code_changed_and_says_what_changed(tmp_path):
    _stamp(tmp_path / "_build", STATE)
    edited = {"files": {**STATE["files"], "clip_tutorial/__init__.py": "ab", "clip_tutorial/new.py": "cc"},
              "environment": ["torch==2.0"]}
    fresh, reason = build.plan_build(tmp_path / "_build", edited)
    assert fresh
    for item in ("clip_tutorial/__init__.py", "clip_tutorial/new.py", "+torch==2.0", "-torch==1.0"):
        assert item in reason
    assert "_config.yml" not in reason


def test_plan_is_fresh_when_asked_or_when_the_pages_are_gone(tmp_path):
    _stamp(tmp_path / "_build", STATE)
    assert build.plan_build(tmp_path / "_build", STATE, fresh=True)[0]
    (tmp_path / "_build" / "html" / "index.html").unlink()
    assert build.plan_build(tmp_path / "_build", STATE)[0]


def test_plan_is_fresh_when_the_stamp_is_damaged(tmp_path):
    _write(tmp_path / "_build" / build.STAMP_NAME, "{not json")
    _write(tmp_path / "_build" / "html" / "index.html", "")
    assert build.plan_build(tmp_path / "_build", STATE)[0]


def test_state_lists_every_file_with_its_hash(book):
    state = build.code_state(book, environment=ENV)
    assert sorted(state["files"]) == ["_config.yml", "clip_tutorial/__init__.py",
                                      "clip_tutorial/weights/shipped/tiny.safetensors"]
    assert state["environment"] == ENV
    assert build.fingerprint_of(state) == build.code_fingerprint(book, environment=ENV)


def test_clear_build_removes_what_a_fresh_build_must_not_reuse(tmp_path):
    build_dir = tmp_path / "_build"
    _stamp(build_dir, STATE)
    for name in (".doctrees/environment.pickle", "jupyter_execute/chapters/a.ipynb", "book.log",
                 ".jupyter_cache/global.db", "zh/_build/html/index.html"):
        _write(build_dir / name, "x")
    build.clear_build(build_dir)
    assert sorted(p.name for p in build_dir.iterdir()) == ["book.log"]


def test_kernel_environment_adds_the_wait_policy_but_keeps_the_users():
    assert build.kernel_environment({"A": "1"}) == {"A": "1", "OMP_WAIT_POLICY": "PASSIVE", "TQDM_DISABLE": "1"}
    assert build.kernel_environment({"OMP_WAIT_POLICY": "ACTIVE"})["OMP_WAIT_POLICY"] == "ACTIVE"


# -- reading a failed build's log ----------------------------------------------------------------

HANG = "import time\n# a cell that hangs\ntime.sleep(60)\nprint('done')"
RAISE = "import math\n# a cell that raises\nvalue = math.sqrt(-1)\nprint(value)"
LONG = "\n".join(f"line_{i} = {i}" for i in range(14))


def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# Slow"), *(nbformat.v4.new_code_cell(s) for s in sources)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


# Excerpts of real jupyter-book 1.0 logs (colour codes included), with {nb} for the notebook's path.
TIMEOUT_LOG = """\
/x/slow.ipynb: Executing notebook using local CWD [mystnb]
[IPKernelApp] ERROR | Exception in message handler:
Traceback (most recent call last):
zmq.error.ZMQError: Socket operation on non-socket

\x1b[91mException occurred:\x1b[39;49;00m
myst_nb.core.execute.base.ExecutionError: {nb}
\x1b[91mThe full traceback has been saved in /tmp/sphinx-err-1.log, if you want to report the issue.\x1b[39;49;00m
Traceback (most recent call last):
nbclient.exceptions.CellTimeoutError: A cell timed out while it was being executed, after 5 seconds.
The message was: Cell execution timed out.
Here is a preview of the cell contents:
-------------------
{preview}
-------------------


The above exception was the direct cause of the following exception:

myst_nb.core.execute.base.ExecutionError: {nb}
RuntimeError:
There was an error in building your book. Look above for the cause.
"""

ERROR_LOG = """\
\x1b[91mException occurred:\x1b[39;49;00m
myst_nb.core.execute.base.ExecutionError: {nb}
nbclient.exceptions.CellExecutionError: An error occurred while executing the following cell:
------------------
{source}
------------------


\x1b[31m---------------------------------------------------------------------------\x1b[39m
\x1b[31mValueError\x1b[39m                                Traceback (most recent call last)
\x1b[32m----> \x1b[39m\x1b[32m3\x1b[39m value = math.sqrt(-\x1b[32m1\x1b[39m)

\x1b[31mValueError\x1b[39m: math domain error


The above exception was the direct cause of the following exception:

myst_nb.core.execute.base.ExecutionError: {nb}
"""


def test_summary_of_a_timeout_names_notebook_cell_and_limit(tmp_path):
    nb = _notebook(tmp_path / "ch" / "slow.ipynb", "x = 1", HANG, "print(2)")
    (failure,) = build.summarize_failure(TIMEOUT_LOG.format(nb=nb, preview=HANG), tmp_path)
    assert (failure.kind, failure.notebook, failure.cell, failure.code_cell) == ("timeout", "ch/slow.ipynb", 2, 2)
    text = failure.describe()
    assert text.startswith("CellTimeoutError in ch/slow.ipynb, code cell 2")
    assert "starts: import time" in text and "5 s" in text and "ZMQ" not in text


def test_summary_finds_a_long_cell_from_its_preview(tmp_path):
    nb = _notebook(tmp_path / "long.ipynb", "x = 1", "y = 2", LONG)
    lines = LONG.split("\n")
    preview = f"{lines[:5]}\n...\n{lines[-5:]}"  # how nbclient previews a cell of 11 lines or more
    (failure,) = build.summarize_failure(TIMEOUT_LOG.format(nb=nb, preview=preview), tmp_path)
    assert (failure.cell, failure.code_cell) == (3, 3)


def test_summary_of_an_error_names_the_exception(tmp_path):
    nb = _notebook(tmp_path / "bad.ipynb", RAISE)
    (failure,) = build.summarize_failure(ERROR_LOG.format(nb=nb, source=RAISE), tmp_path)
    assert (failure.kind, failure.notebook, failure.cell) == ("error", "bad.ipynb", 1)
    assert "ValueError: math domain error" in failure.describe()


def test_summary_of_warnings(tmp_path):
    log = ("reading sources... [100%] intro\n"
           "[IPKernelApp] WARNING | Kernel is running over TCP without encryption.\n"
           "/book/intro.md:3: WARNING: unknown document: 'nowhere' [ref.doc]\n"
           "build finished with problems, 1 warning (with warnings treated as errors).\n")
    (failure,) = build.summarize_failure(log, tmp_path)
    assert failure.kind == "warnings" and "1 Sphinx warning" in failure.exception
    assert "intro.md:3" in failure.detail and "IPKernelApp" not in failure.detail


def test_summary_of_another_exception(tmp_path):
    log = "Exception occurred:\n  File \"x.py\", line 1, in f\nKeyError: 'bibtex_bibfiles'\nThe full traceback...\n"
    (failure,) = build.summarize_failure(log, tmp_path)
    assert failure.kind == "exception" and failure.exception == "KeyError: 'bibtex_bibfiles'"


def test_report_without_a_known_cause_points_at_the_output():
    report = build.failure_report([], Path("_build/book.log"))
    assert "THE BOOK BUILD FAILED" in report and "_build/book.log" in report


# -- a real build of a two-page book ---------------------------------------------------------------


def _tiny_book(root: Path, timeout: int, cell: str) -> Path:
    config = {"title": "tiny", "exclude_patterns": ["zh"],
              "execute": {"execute_notebooks": "cache", "timeout": timeout,
                          "allow_errors": False, "raise_on_error": True, "show_tb": True}}
    _write(root / "_config.yml", yaml.safe_dump(config))
    _write(root / "_toc.yml", "format: jb-book\nroot: intro\nchapters:\n- file: slow\n")
    _write(root / "intro.md", "# Intro\n\nA tiny book.\n")
    return _notebook(root / "slow.ipynb", "x = 1\nprint(x)", cell)


def _run(root: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    return subprocess.run([sys.executable, str(TOOL), "--root", str(root)], capture_output=True, text=True,
                          timeout=300, env=env)


def test_a_hanging_cell_fails_the_build_and_the_summary_comes_last(tmp_path):
    root = tmp_path / "book"
    _tiny_book(root, timeout=3, cell="import time\ntime.sleep(60)")
    failed = _run(root)
    assert failed.returncode != 0
    tail = failed.stderr.strip().splitlines()[-10:]
    assert any(re.search(r"CellTimeoutError in slow\.ipynb, code cell 2 \(cell \[2\]", line) for line in tail), tail
    log = (root / "_build" / build.LOG_NAME).read_text(encoding="utf-8")
    assert log.startswith("=" * 79 + "\nTHE BOOK BUILD FAILED:\n- CellTimeoutError in slow.ipynb")
    assert not (root / "_build" / build.STAMP_NAME).exists()

    _tiny_book(root, timeout=3, cell="import os\nprint(os.environ.get('OMP_WAIT_POLICY'))")
    built = _run(root)
    assert built.returncode == 0, built.stdout[-2000:]
    assert built.stdout.startswith("Fresh build: no successful build is recorded")
    assert json.loads((root / "_build" / build.STAMP_NAME).read_text())["fingerprint"] == build.code_fingerprint(root)
    page = (root / "_build" / "html" / "slow.html").read_text(encoding="utf-8")
    assert "PASSIVE" in page  # the kernel got the build's environment


def _tiny_chinese_edition(root: Path, cell: str) -> Path:
    config = {"title": "小书", "execute": {"execute_notebooks": "cache", "cache": "_build/.jupyter_cache",
                                          "timeout": 30, "allow_errors": False, "raise_on_error": True}}
    _write(root / "zh" / "_config.yml", yaml.safe_dump(config, allow_unicode=True))
    _write(root / "zh" / "_toc.yml", "format: jb-book\nroot: intro\nchapters:\n- file: slow\n")
    _write(root / "zh" / "intro.md", "# 简介\n\n一本小书。\n")
    return _notebook(root / "zh" / "slow.ipynb", "x = 1\nprint(x)", cell)


def _with_chinese_figures(root: Path) -> None:
    """The tiny book's two editions with the book's own _ext/zh_figures.py and a table of one word."""
    shutil.copytree(ROOT / "_ext", root / "_ext", ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    _write(root / "zh" / "figure_text.yml", "texts:\n  accuracy: 准确率\n")
    for config, sphinx in ((root / "_config.yml", {"local_extensions": {"zh_figures": "_ext"}}),
                           (root / "zh" / "_config.yml", {"local_extensions": {"zh_figures": "../_ext"},
                                                          "config": {"figures_edition": "zh"}})):
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
        data["sphinx"] = sphinx
        _write(config, yaml.safe_dump(data, allow_unicode=True))


def _figure_files(page: Path) -> list[Path]:
    html = page.read_text(encoding="utf-8")
    return [page.parent / src for src in re.findall(r'<img [^>]*src="([^"]+\.png)"', html)]


FIGURE = "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(3, 2))\nax.set_title({title!r})\nplt.show()"


def test_the_chinese_edition_reads_the_english_outputs_and_refuses_to_run_other_code(tmp_path):
    root = tmp_path / "book"
    # a different number in every run of the cell, and a figure
    cell = "import os\nprint('pid', os.getpid())\n" + FIGURE.format(title="accuracy")
    _tiny_book(root, timeout=30, cell=cell)
    _tiny_chinese_edition(root, cell)
    _with_chinese_figures(root)
    built = _run(root)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert "Chinese edition: 1 notebooks' outputs from the English build's cache, 0 executed" in built.stdout
    english_page, chinese_page = root / "_build" / "html" / "slow.html", root / "_build" / "html" / "zh" / "slow.html"
    pid = re.compile(r"pid \d+")
    english = pid.findall(english_page.read_text(encoding="utf-8"))
    chinese = pid.findall(chinese_page.read_text(encoding="utf-8"))
    assert english and chinese == english  # the same run's output, not a second run

    # each edition shows one drawing of the figure: the English one, and the Chinese one in its place
    (english_figure,), (chinese_figure,) = _figure_files(english_page), _figure_files(chinese_page)
    figures = load_module("_ext/zh_figures.py", "_ext_zh_figures")
    assert figures.EDITION_KEY not in figures.text_chunks(english_figure)
    chunks = figures.text_chunks(chinese_figure)
    assert chunks[figures.EDITION_KEY] == "zh"
    assert chunks[figures.REPLACES_KEY] == hashlib.sha256(english_figure.read_bytes()).hexdigest()
    # and no text standing in for the other edition's drawing
    assert "in Chinese&gt;" not in english_page.read_text(encoding="utf-8")
    assert "&lt;Figure size" not in chinese_page.read_text(encoding="utf-8")

    # an English word with no Chinese in the table fails the Chinese edition
    cell = cell.replace("'accuracy'", "'epochs'")
    _tiny_book(root, timeout=30, cell=cell)
    _tiny_chinese_edition(root, cell)
    _with_chinese_figures(root)
    failed = _run(root)
    assert failed.returncode != 0
    assert re.search(r"a figure in Chinese keeps English words .*\['epochs'\]", failed.stdout), failed.stdout[-2000:]

    _tiny_chinese_edition(root, cell + "\nprint('only in Chinese')")
    failed = _run(root)
    assert failed.returncode != 0
    assert "the Chinese edition executed 1 notebook(s)" in failed.stderr, failed.stderr[-2000:]
    assert not (root / "_build" / build.STAMP_NAME).exists()


# -- what the Makefile, _config.yml and the README say ------------------------------------------


def _recipe(target: str) -> list[str]:
    lines = (ROOT / "Makefile").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_make_book_goes_through_the_build_tool():
    assert _recipe("book") == ["$(PY) tools/build_book.py"]
    assert _recipe("book-fresh") == ["$(PY) tools/build_book.py --fresh"]


def test_config_reuses_outputs_only_of_the_same_code():
    # "cache" reuses a notebook's outputs only for the same code cells; outputs computed with an
    # older package cannot be reused, because a changed package makes the build fresh, and a fresh
    # build empties the cache (test_clear_build_removes_what_a_fresh_build_must_not_reuse).
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert config["execute"]["execute_notebooks"] == "cache"
    assert config["execute"].get("cache") in (None, "", "_build/" + build.CACHE_NAME)
    assert config["execute"]["raise_on_error"] is True


def test_readme_states_the_configured_timeout_and_the_build_tool():
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    stated = re.search(r"may run for (\d+) s \(`execute\.timeout`", readme)
    assert stated, "README: the make book paragraph should state the per-cell timeout"
    assert int(stated.group(1)) == config["execute"]["timeout"]
    assert "tools/build_book.py" in readme and "_build/book.log" in readme and "make book-fresh" in readme
