#!/usr/bin/env python3
"""Build the book (``make book``): pages that match the current code, and a failure you can read.

What this adds to ``jupyter-book build . --warningiserror --keep-going``:

- **No stale pages.** Sphinx re-reads only the sources that changed since the last build, so a
  notebook whose text did not change is not executed again, even when the package it imports
  did. Before each build this script hashes everything the notebooks' results depend on besides
  their own text: every file of ``clip_tutorial/`` (code and shipped weights), ``_config.yml``,
  the book's Sphinx extensions ``_ext/``, the figures' Chinese words, the Python version and the installed distributions. When that fingerprint differs from the one
  recorded by the last *successful* build (or there is none, or ``--fresh`` is given), the
  build starts afresh: ``_build/html``, ``_build/.doctrees`` and ``_build/jupyter_execute`` are
  removed and every notebook is executed. Otherwise only the pages whose sources changed are
  rebuilt, which is exact, since everything else they depend on is unchanged.
- **A calm kernel environment.** The notebooks' kernels inherit ``OMP_WAIT_POLICY=PASSIVE``
  (unless the variable is already set): idle OpenMP threads sleep instead of spinning, which
  keeps a build on a busy machine from slowing down several-fold (see
  ``benchmarks/loaded_machine.py``).
- **Both editions.** When the English book is built, the Chinese edition (``zh/``, its own
  ``_config.yml`` and ``_toc.yml``) is built whole after it and copied to ``_build/html/zh``. Its
  code cells are the English ones, byte for byte, so each of its notebooks takes its outputs from
  the jupyter-cache that the English build has just filled: the notebooks run once per build. A
  Chinese notebook that would have to run (its code differs) fails the build, with the advice to
  run ``tools/zh_sync.py``.
- **Figures in Chinese.** The kernels start with ``_ext/zh_figures.py`` installed (an IPython
  start-up file in ``_build/.ipython``), so each figure is drawn a second time with its words
  from ``zh/figure_text.yml``; each edition's pages keep their own drawings.
- **The cause first.** The build's output is shown as it comes and saved, without colour codes,
  to ``_build/book.log``. When the build fails, a short summary naming the failing notebook, its
  cell and the exception (a cell that timed out, a cell that raised, Sphinx warnings) is printed
  at the end of the output and written at the top of the log.

Usage::

    python tools/build_book.py            # build, afresh when the code changed
    python tools/build_book.py --fresh    # build afresh whatever changed
    python tools/build_book.py --plan     # only say whether the next build would start afresh, and why
    python tools/build_book.py --root /path/to/book

Exit status: jupyter-book's (0 when the book was built).
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What the executed notebooks depend on besides their own text (relative to the book's root).
FINGERPRINT_SOURCES = ("clip_tutorial", "_config.yml", "_ext", "zh/figure_text.yml")
SKIPPED_PARTS = ("__pycache__", ".ipynb_checkpoints", ".pytest_cache", ".hypothesis")
SKIPPED_SUFFIXES = (".pyc", ".pyo")
STAMP_NAME = ".book-fingerprint.json"
LOG_NAME = "book.log"
# The Chinese edition's folder: its sources (zh/), jupyter-book's build of it (_build/zh/) and its
# pages in the site (_build/html/zh/, where the English pages' switch leads: edition_other_root).
ZH = "zh"
ZH_LOG_NAME = "book-zh.log"
# The Chinese figures (_ext/zh_figures.py): the table of their words, and the IPython folder whose
# start-up file makes every kernel of the build draw each figure in Chinese too.
FIGURE_TABLE = "zh/figure_text.yml"
IPYTHON_DIR = ".ipython"
CACHE_NAME = ".jupyter_cache"
# Given to the kernels (and to jupyter-book itself) unless already set.
# TQDM_DISABLE: a progress bar in a built page is a frozen widget with the build's timings, so the
# pages leave them out (readers running a notebook still see theirs).
KERNEL_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE", "TQDM_DISABLE": "1"}
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# -- the environment ---------------------------------------------------------------------------


def install_chinese_figures(root: Path, build_dir: Path) -> dict[str, str]:
    """Write the IPython start-up file that draws every figure in Chinese too; return the kernels' variables for it.

    Nothing when the book has no ``zh/figure_text.yml``. Fails with the install command when
    matplotlib has no Chinese font.
    """
    table, ext = root / FIGURE_TABLE, root / "_ext"
    if not (table.is_file() and (ext / "zh_figures.py").is_file()):
        return {}
    import importlib.util

    spec = importlib.util.spec_from_file_location("zh_figures", ext / "zh_figures.py")
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    try:
        figures.add_cjk_fonts()
    except RuntimeError as err:
        raise SystemExit(str(err)) from None
    startup = build_dir / IPYTHON_DIR / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-zh-figures.py").write_text(figures.startup_script(ext, table), encoding="utf-8")
    return {"IPYTHONDIR": str(build_dir / IPYTHON_DIR)}


def kernel_environment(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with :data:`KERNEL_ENVIRONMENT` added; a variable already set in ``base`` is kept."""
    env = dict(base)
    for name, value in KERNEL_ENVIRONMENT.items():
        env.setdefault(name, value)
    return env


# -- the fingerprint ---------------------------------------------------------------------------


def _files(root: Path, sources: Iterable[str]) -> list[Path]:
    found = []
    for source in sources:
        path = root / source
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in candidates:
            rel = file.relative_to(root)
            if any(part in SKIPPED_PARTS or part.endswith(".egg-info") for part in rel.parts):
                continue
            if file.suffix in SKIPPED_SUFFIXES:
                continue
            found.append(file)
    return sorted(found)


def installed_distributions() -> list[str]:
    """``name==version`` of every distribution installed for this Python, sorted."""
    from importlib import metadata

    names = set()
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            names.add(f"{name.lower()}=={dist.version}")
    return sorted(names)


def code_state(root: Path = ROOT, sources: Iterable[str] = FINGERPRINT_SOURCES,
               environment: Iterable[str] | None = None) -> dict[str, object]:
    """What the executed notebooks depend on besides their own text: file hashes and the environment.

    Args:
        root: the book's root folder.
        sources: files and folders, relative to ``root``; caches and compiled files are skipped.
        environment: strings describing the environment; ``None`` for the Python version and
            :func:`installed_distributions`.

    Returns:
        ``{"files": {relative path: SHA-256 of the contents}, "environment": [...]}``.
    """
    if environment is None:
        environment = [f"python {sys.version.split()[0]}", *installed_distributions()]
    files = {f.relative_to(root).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest() for f in _files(root, sources)}
    return {"files": files, "environment": list(environment)}


def fingerprint_of(state: dict[str, object]) -> str:
    """A SHA-256 of a :func:`code_state`."""
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def code_fingerprint(root: Path = ROOT, sources: Iterable[str] = FINGERPRINT_SOURCES,
                     environment: Iterable[str] | None = None) -> str:
    """A SHA-256 of the files under ``sources`` (paths and contents) and of the environment (see :func:`code_state`)."""
    return fingerprint_of(code_state(root, sources, environment))


def _changes(old: dict, new: dict, limit: int = 4) -> str:
    """What differs between two code states, in a few words."""
    old_files, new_files = old.get("files", {}), new.get("files", {})
    changed = sorted(name for name in old_files.keys() | new_files.keys() if old_files.get(name) != new_files.get(name))
    old_env, new_env = set(old.get("environment", [])), set(new.get("environment", []))
    items = changed + [f"+{item}" for item in sorted(new_env - old_env)] + [f"-{item}" for item in sorted(old_env - new_env)]
    if not items:
        return "the code changed"
    shown = ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")
    return f"changed since the last successful build: {shown}"


def plan_build(build_dir: Path, state: dict[str, object], fresh: bool = False) -> tuple[bool, str]:
    """Decide whether the build must start afresh, given the current :func:`code_state`.

    Returns:
        (fresh, the reason in words).
    """
    if fresh:
        return True, "a fresh build was asked for"
    stamp = build_dir / STAMP_NAME
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
        recorded_fingerprint = recorded["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return True, "no successful build is recorded in " + str(build_dir)
    if not (build_dir / "html" / "index.html").is_file():
        return True, "the HTML of the last build is missing"
    if recorded_fingerprint != fingerprint_of(state):
        return True, _changes(recorded.get("state", {}) if isinstance(recorded, dict) else {}, state)
    return False, "the code is unchanged since the last successful build: only changed pages are rebuilt"


def clear_build(build_dir: Path) -> None:
    """Remove what a fresh build must not reuse: the pages, Sphinx's saved state, the executed notebooks
    and their cache, and the Chinese edition's build."""
    for name in ("html", ".doctrees", "jupyter_execute", CACHE_NAME, ZH, STAMP_NAME):
        path = build_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


# -- reading a failed build's log ----------------------------------------------------------------


@dataclass
class Failure:
    """One cause of a failed build, as read from its log."""

    kind: str  # "timeout", "error", "warnings" or "exception"
    notebook: str | None = None
    cell: int | None = None  # index among all the notebook's cells, from 0 (as Jupyter's cell list)
    code_cell: int | None = None  # index among its code cells, from 1
    exception: str | None = None
    detail: str | None = None
    first_line: str | None = None  # the cell's first line, to recognise it

    def describe(self) -> str:
        """One or two lines: what failed, where, and why."""
        where = ""
        if self.notebook:
            where = f" in {self.notebook}"
            if self.cell is not None:
                where += f", code cell {self.code_cell} (cell [{self.cell}] counting every cell from 0)"
            if self.first_line:
                where += f", which starts: {self.first_line}"
        text = f"{self.exception or self.kind}{where}"
        return text + (f"\n  {self.detail}" if self.detail else "")


def _between_rules(lines: list[str], start: int) -> tuple[str, int]:
    """The text between the first two lines made of dashes after ``start``, and the index after them."""
    rules = [i for i in range(start, len(lines)) if re.fullmatch(r"-{10,}", lines[i].strip())][:2]
    if len(rules) < 2:
        return "", start
    return "\n".join(lines[rules[0] + 1:rules[1]]), rules[1] + 1


def _source_matches(preview: str, source: str) -> bool:
    """Whether a cell's ``source`` is the one nbclient previewed (whole, or first and last 5 lines)."""
    preview, source = preview.strip(), source.strip()
    if preview == source:
        return True
    parts = preview.split("\n...\n")
    if len(parts) == 2:
        try:
            head, tail = ast.literal_eval(parts[0]), ast.literal_eval(parts[1])
        except (ValueError, SyntaxError):
            return False
        lines = source.split("\n")
        return lines[:len(head)] == head and lines[-len(tail):] == tail
    return False


def locate_cell(notebook: Path, preview: str) -> tuple[int | None, int | None, str | None]:
    """The (cell index, code-cell number, first line) of the code cell of ``notebook`` that ``preview`` shows."""
    try:
        import nbformat

        nb = nbformat.read(notebook, as_version=4)
    except Exception:  # noqa: BLE001 - the summary goes on without the cell number
        return None, None, None
    code_number = 0
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        code_number += 1
        if _source_matches(preview, cell.source):
            first = next((line.strip() for line in cell.source.splitlines() if line.strip()), "")
            return index, code_number, first[:70] + ("..." if len(first) > 70 else "")
    return None, None, None


def _display(path: str, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return path


def summarize_failure(log: str, root: Path = ROOT) -> list[Failure]:
    """The causes of a failed build, read from its log (colour codes are ignored)."""
    lines = ANSI.sub("", log).splitlines()
    failures: list[Failure] = []
    notebook_path = next((m.group(1) for line in lines
                          if (m := re.search(r"ExecutionError: (\S+\.(?:ipynb|md))\s*$", line))), None)
    notebook = _display(notebook_path, root) if notebook_path else None
    for i, line in enumerate(lines):
        if "CellTimeoutError: A cell timed out" in line:
            seconds = re.search(r"after (\d+(?:\.\d+)?) seconds", line)
            preview, _ = _between_rules(lines, i)
            cell, code, first = locate_cell(Path(notebook_path), preview) if notebook_path else (None, None, None)
            limit = f"{seconds.group(1)} s" if seconds else "the limit"
            failures.append(Failure("timeout", notebook, cell, code, "CellTimeoutError",
                                    f"the cell ran longer than {limit} (execute.timeout in _config.yml)", first))
            break
        if "CellExecutionError: An error occurred while executing the following cell" in line:
            source, after = _between_rules(lines, i)
            cell, code, first = locate_cell(Path(notebook_path), source) if notebook_path else (None, None, None)
            end = next((j for j in range(after, len(lines)) if lines[j].startswith("The above exception")),
                       len(lines))
            raised = next((lines[j].strip() for j in range(end - 1, after - 1, -1)
                           if re.match(r"^[A-Za-z_][\w.]*(: |$)", lines[j].strip())), None)
            failures.append(Failure("error", notebook, cell, code, "CellExecutionError",
                                    f"the cell raised {raised}" if raised else None, first))
            break
    if not failures and notebook:
        failures.append(Failure("error", notebook, exception="ExecutionError",
                                detail="the notebook failed to execute; see the log"))
    warnings = [line.strip() for line in lines if re.search(r"\b(WARNING|ERROR|CRITICAL|SEVERE):", line)
                and "[IPKernelApp]" not in line]
    if warnings:
        shown = "\n  ".join(warnings[:5]) + (f"\n  ... and {len(warnings) - 5} more" if len(warnings) > 5 else "")
        failures.append(Failure("warnings", exception=f"{len(warnings)} Sphinx warning(s)/error(s), "
                                "which --warningiserror makes fatal", detail=shown))
    if not failures:
        start = next((i for i, line in enumerate(lines) if line.startswith("Exception occurred:")), None)
        if start is not None:
            raised = next((lines[j].strip() for j in range(start + 1, min(start + 40, len(lines)))
                           if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b", lines[j].strip())), None)
            failures.append(Failure("exception", exception=raised or "an exception in Sphinx"))
    return failures


def failure_report(failures: list[Failure], log_path: Path | None) -> str:
    """The box printed after a failed build."""
    rule = "=" * 79
    body = [f"- {failure.describe()}" for failure in failures] or ["- no cause found in the output; read it above"]
    tail = [f"Full output: {log_path}"] if log_path else []
    return "\n".join([rule, "THE BOOK BUILD FAILED:", *body, *tail, rule])


# -- running the build ---------------------------------------------------------------------------


def jupyter_book_command() -> str:
    """The ``jupyter-book`` next to this Python, else the one on the PATH."""
    beside = Path(sys.executable).with_name("jupyter-book")
    if beside.exists():
        return str(beside)
    found = shutil.which("jupyter-book")
    if found is None:
        raise SystemExit("jupyter-book is not installed (run `make install`)")
    return found


def run_build(root: Path, fresh: bool, log_path: Path, source: Path | None = None,
              output: Path | None = None, extra_env: Mapping[str, str] | None = None) -> int:
    """Run jupyter-book on ``source`` (default ``root``), echoing and saving its output; return its exit status.

    ``output`` is jupyter-book's ``--path-output`` (default: the source's own ``_build``). The
    build runs in ``root``, so relative paths in a configuration are read from there.
    """
    command = [jupyter_book_command(), "build", str(source or root), "--warningiserror", "--keep-going"]
    if output is not None:
        command += ["--path-output", str(output)]
    if fresh:
        command.append("--all")
    env = kernel_environment(os.environ)
    env.update(extra_env or {})
    env["PYTHONUNBUFFERED"] = "1"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as log:
        log.write("$ " + " ".join(command) + "\n")
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                   cwd=root, text=True, errors="replace", bufsize=1)
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            log.write(ANSI.sub("", line))
        return process.wait()


def cache_use(log: str) -> tuple[int, int]:
    """(notebooks whose outputs came from the jupyter-cache, notebooks executed), read from a build's log."""
    text = ANSI.sub("", log)
    return len(re.findall(r"Using cached notebook: ID=", text)), len(re.findall(r"Executing notebook using", text))


def build_chinese(root: Path, build_dir: Path) -> tuple[int, str]:
    """Build the Chinese edition whole from the English build's cache and copy it to ``html/zh``.

    Returns:
        (exit status, a line saying what happened). A Chinese notebook that was executed instead of
        read from the cache makes the status 1.
    """
    log_path = build_dir / ZH_LOG_NAME
    status = run_build(root, True, log_path, source=root / ZH, output=build_dir / ZH)
    if status != 0:
        return status, "the Chinese edition failed to build"
    cached, executed = cache_use(log_path.read_text(encoding="utf-8"))
    if executed:
        return 1, (f"the Chinese edition executed {executed} notebook(s) instead of reading the English "
                   "build's outputs: their code differs from the English (run python tools/zh_sync.py), "
                   "or the cache is incomplete (run make book-fresh)")
    site = build_dir / "html" / ZH
    if site.exists():
        shutil.rmtree(site)
    shutil.copytree(build_dir / ZH / "_build" / "html", site)
    return 0, f"Chinese edition: {cached} notebooks' outputs from the English build's cache, 0 executed; {site}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help="rebuild every page and execute every notebook")
    parser.add_argument("--plan", action="store_true", help="only say whether the build would start afresh")
    parser.add_argument("--root", type=Path, default=ROOT, help="the book's folder (default: this repository)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    build_dir = root / "_build"
    log_path = build_dir / LOG_NAME

    state = code_state(root)
    fresh, reason = plan_build(build_dir, state, args.fresh)
    print(f"{'Fresh' if fresh else 'Incremental'} build: {reason}.", flush=True)
    if args.plan:
        return 0
    if fresh:
        clear_build(build_dir)
    else:
        (build_dir / STAMP_NAME).unlink(missing_ok=True)  # a build that fails leaves no record
    figures_env = install_chinese_figures(root, build_dir)
    start = time.perf_counter()
    status = run_build(root, fresh, log_path, extra_env=figures_env)
    english = time.perf_counter() - start
    chinese_line = ""
    if status == 0 and (root / ZH / "_config.yml").is_file():
        print("Building the Chinese edition from the English build's outputs.", flush=True)
        status, chinese_line = build_chinese(root, build_dir)
        log_path = build_dir / ZH_LOG_NAME
        print(chinese_line, flush=True)
    minutes, seconds = divmod(time.perf_counter() - start, 60)
    took = f"{int(minutes)} min {seconds:.0f} s"
    if chinese_line:
        took += f"; English {english:.0f} s, Chinese {time.perf_counter() - start - english:.0f} s"
    if status == 0:
        record = {"fingerprint": fingerprint_of(state), "fresh": fresh,
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "state": state}
        (build_dir / STAMP_NAME).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        print(f"Book built in {took} ({'fresh' if fresh else 'incremental'}): {build_dir / 'html' / 'index.html'}")
        return 0
    failures = summarize_failure(log_path.read_text(encoding="utf-8"), root)
    if chinese_line and not failures:
        failures = [Failure("exception", exception=chinese_line)]
    report = failure_report(failures, log_path)
    log_path.write_text(report + "\n\n" + log_path.read_text(encoding="utf-8"), encoding="utf-8")
    print(f"\n{report}\n(after {took})", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
