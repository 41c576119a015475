"""Colab's path, offline: the notebooks' setup cell installs the package from the book's repository into an
environment that holds what Colab preinstalls, and then a Chapter 1 notebook runs there.

What Colab preinstalls is :data:`COLAB_PREINSTALLED`: the packages that the book needs and Colab already
has, at the versions of Colab's published package list (``pip-freeze.txt`` of the repository
``googlecolab/backend-info``, at commit ``a724079`` of 2026-08-19, the Python 3.13 runtime), with what they
need in turn on our Python. That is the package's runtime dependencies that Colab has, PyTorch's own
dependencies and the kernel that runs a notebook (ipykernel, IPython, jupyter_client, nbclient, nbformat).
``jedi`` (which IPython 7.34 requires) and ``overrides`` (which jupyter_server requires before Python 3.12)
are not in Colab's list and are added at their newest versions. PyTorch itself is not reinstalled: the
project's environment lends its build (Colab has ``torch 2.11.0+cpu``), together with any dependency for
which that build needs a newer version than Colab's (today ``setuptools``).

``make install`` prepares, with network access, ``python tests/test_colab_install.py --prepare DIR``
(``DIR`` = ``.venv/colab-sim``):

``DIR/base/``
    Colab's preinstalled packages, installed with ``pip install --target``, plus links to PyTorch.
    A fresh virtual environment sees them through a ``.pth`` file, so they count as installed for pip.
``DIR/wheelhouse/``
    What pip would fetch from PyPI in Colab: the build requirements of ``pyproject.toml``, the newest
    versions of the package's runtime dependencies and theirs (PyTorch left out), and Colab's pip.
``DIR/prepared.json``
    What the two were made from; the tests refuse a preparation that no longer matches.

The tests download nothing: pip runs with ``--no-index --find-links DIR/wheelhouse`` (as ``PIP_NO_INDEX`` and
``PIP_FIND_LINKS``), and the repository URL is a ``file://`` URL of a local clone. Because the wheelhouse holds
newer versions of everything Colab has, an install that wanted to upgrade one of Colab's packages could, and
:func:`test_installing_upgrades_nothing_that_colab_ships` would see it.

The whole file took 25 s on a busy 2-core machine, 6 s of it in the setup cell (see the README).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Where Colab's figures come from (see the module's docstring).
COLAB_SOURCE = "googlecolab/backend-info pip-freeze.txt, commit a724079 (2026-08-19), Colab's Python 3.13 runtime"
#: Colab's PyTorch in that list (a CPU wheel there; GPU runtimes have the CUDA build of the same version).
COLAB_TORCH = "2.11.0"

#: What Colab preinstalls, as far as the book is concerned: the closure (on our Python) of the packages
#: named in the module's docstring, resolved with Colab's list as constraints.
COLAB_PREINSTALLED = """
anyio==4.14.2 argon2-cffi==25.1.0 argon2-cffi-bindings==25.1.0 arrow==1.4.0 attrs==26.1.0 backcall==0.2.0
beautifulsoup4==4.13.5 bleach==6.4.0 certifi==2026.7.22 cffi==2.1.1 click==8.4.2 contourpy==1.3.3
cycler==0.12.1 debugpy==1.8.15 decorator==4.4.2 defusedxml==0.7.1 entrypoints==0.4 fastjsonschema==2.22.2
filelock==3.32.3 fonttools==4.63.0 fqdn==1.5.1 fsspec==2025.3.0 h11==0.16.0 hf-xet==1.6.0 httpcore==1.0.9
httpx==0.28.1 huggingface_hub==1.27.0 idna==3.18 ipykernel==6.17.1 ipython==7.34.0 ipython-genutils==0.2.0
ipywidgets==7.7.1 isoduration==20.11.0 jedi==0.20.1 Jinja2==3.1.6 joblib==1.5.3 jsonpointer==3.1.1
jsonschema==4.26.0 jsonschema-specifications==2025.9.1 jupyter-events==0.12.1 jupyter_client==7.4.9
jupyter_core==5.9.1 jupyter_server==2.20.0 jupyter_server_terminals==0.5.4 jupyterlab_pygments==0.3.0
jupyterlab_widgets==3.0.16 kiwisolver==1.5.0 lark==1.3.1 MarkupSafe==3.0.3 matplotlib==3.10.0
matplotlib-inline==0.2.2 mistune==3.3.4 mpmath==1.3.0 nbclassic==1.3.3 nbclient==0.10.4 nbconvert==7.17.1
nbformat==5.11.1 nest-asyncio==1.6.0 networkx==3.6.1 notebook==6.5.7 notebook_shim==0.2.4 numpy==2.1.3
overrides==7.7.0 packaging==26.3 pandocfilters==1.5.1 parso==0.8.7 pexpect==4.9.0 pickleshare==0.7.5
pillow==11.3.0 platformdirs==4.11.3 prometheus_client==0.26.0 prompt_toolkit==3.0.53 psutil==5.9.5
ptyprocess==0.7.0 pycparser==3.0 Pygments==2.21.0 pyparsing==3.3.2 python-dateutil==2.9.0.post0
python-json-logger==4.2.0 PyYAML==6.0.3 pyzmq==26.2.1 referencing==0.37.0 regex==2025.11.3
rfc3339-validator==0.1.4 rfc3986-validator==0.1.1 rfc3987-syntax==1.1.0 rpds-py==2026.6.3 safetensors==0.8.0
scikit-learn==1.6.1 scipy==1.16.3 Send2Trash==2.1.0 setuptools==75.2.0 six==1.17.0 soupsieve==2.9.2
sympy==1.14.0 terminado==0.18.1 threadpoolctl==3.6.0 tinycss2==1.5.1 tornado==6.5.7 tqdm==4.67.3
traitlets==5.7.1 typing_extensions==4.16.0 tzdata==2026.3 uri-template==1.3.0 wcwidth==0.8.2
webcolors==25.10.0 webencodings==0.6.1 websocket-client==1.9.0 widgetsnbextension==3.6.10
"""
#: Colab's pip, which runs the setup cell's ``%pip install``.
COLAB_PIP = "24.1.2"
#: The package's dependencies that Colab lacks, so that every Colab session installs them.
NOT_IN_COLAB = {"ftfy"}
#: Colab's versions of what the optional extras need (the setup cell installs no extra).
COLAB_EXTRAS = {"datasets": "4.0.0"}
#: Some of Colab's versions (scipy 1.16.3, contourpy 1.3.3, rpds-py 2026.6.3) need Python 3.11 or newer; on
#: Python 3.10 there is no simulation to prepare, and the tests that need it are skipped.
MIN_PYTHON = (3, 11)
#: The notebook the end-to-end test runs: a short one of Chapter 1 that loads a shipped model.
NOTEBOOK = ROOT / "chapters" / "ch1" / "03_core_idea.ipynb"


def canonical_name(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def colab_pins() -> dict[str, str]:
    """:data:`COLAB_PREINSTALLED` as ``{canonical name: version}``."""
    pins = {}
    for pin in COLAB_PREINSTALLED.split():
        name, version = pin.split("==")
        pins[canonical_name(name)] = version
    return pins


def _pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def project_dependencies() -> list[str]:
    """The runtime requirements of ``pyproject.toml``, as written there."""
    return list(_pyproject()["project"]["dependencies"])


def build_requirements() -> list[str]:
    """``[build-system] requires`` of ``pyproject.toml``: what pip's isolated build of the package installs."""
    return list(_pyproject()["build-system"]["requires"])


def _requirements_of(dist: metadata.Distribution) -> list:
    """The requirements of an installed distribution that apply here (markers evaluated, no extras)."""
    from packaging.requirements import Requirement

    found = []
    for text in dist.requires or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            found.append(requirement)
    return found


def lent_distributions(pins: dict[str, str]) -> list[metadata.Distribution]:
    """PyTorch, and every distribution it needs (recursively) that Colab's versions do not satisfy.

    These are taken from the running environment (the project's ``.venv``) instead of being installed:
    PyTorch stands in for Colab's, and what this build of it needs must be there too, or pip would
    upgrade it during the install under test for reasons that have nothing to do with the book.
    """
    lent: dict[str, metadata.Distribution] = {}
    todo = ["torch"]
    while todo:
        name = canonical_name(todo.pop())
        if name in lent:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError as err:
            raise SystemExit(f"{name} is not installed in {sys.prefix}; install PyTorch there first") from err
        lent[name] = dist
        for requirement in _requirements_of(dist):
            pinned = pins.get(canonical_name(requirement.name))
            if pinned is None or not requirement.specifier.contains(pinned, prereleases=True):
                todo.append(requirement.name)
    return list(lent.values())


def _top_level_entries(dist: metadata.Distribution) -> set[str]:
    """The names that ``dist`` puts directly into site-packages (its packages, modules and metadata)."""
    if dist.files is None:
        raise SystemExit(f"{dist.metadata['Name']} has no RECORD: cannot tell which files to link")
    entries = set()
    for file in dist.files:
        first = file.parts[0]
        if first != ".." and not first.endswith(".pth") and first != "__pycache__":
            entries.add(first)
    return entries


def _pip(python: str | Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
         timeout: float = 900) -> subprocess.CompletedProcess:
    command = [str(python), "-m", "pip", *args]
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def prepare(dest: Path) -> None:
    """Make ``dest/base``, ``dest/wheelhouse`` and ``dest/prepared.json`` (downloads; for ``make install``)."""
    dest = dest.resolve()
    if sys.version_info < MIN_PYTHON:
        shutil.rmtree(dest, ignore_errors=True)
        print(f"the Colab simulation needs Python {'.'.join(map(str, MIN_PYTHON))} or newer; its tests will be skipped")
        return
    pins = colab_pins()
    lent = lent_distributions(pins)
    lent_names = {canonical_name(d.metadata["Name"]) for d in lent}
    record = {
        "colab": COLAB_SOURCE,
        "colab_pins": sorted(f"{n}=={v}" for n, v in pins.items()),
        "pins": sorted(f"{n}=={v}" for n, v in pins.items() if n not in lent_names),
        "lent": sorted(f"{canonical_name(d.metadata['Name'])}=={d.version}" for d in lent),
        "dependencies": project_dependencies(),
        "build_requirements": build_requirements(),
        "pip": COLAB_PIP,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }
    marker = dest / "prepared.json"
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == record:
        print(f"{dest}: already prepared")
        return
    marker.unlink(missing_ok=True)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    base, wheelhouse = dest / "base", dest / "wheelhouse"
    for folder in (base, wheelhouse):
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{base}: {len(record['pins'])} packages at Colab's versions")
    _pip(sys.executable, "install", "--quiet", "--no-deps", "--only-binary=:all:", "--target", str(base),
         *record["pins"], env=env)
    on_path = {Path(p).resolve() for p in sys.path if p}
    for dist in lent:
        location = Path(dist.locate_file("")).resolve()
        if location not in on_path:
            raise SystemExit(f"{dist.metadata['Name']} lies in {location}, not on sys.path")
        for entry in _top_level_entries(dist):
            if not (base / entry).is_symlink():  # several of NVIDIA's packages share the folder nvidia/
                (base / entry).symlink_to(location / entry)
    print(f"{base}: linked {', '.join(record['lent'])} from {sys.prefix}")
    runtime = [r for r in record["dependencies"] if canonical_name(re.split(r"[<>=!~;\[ ]", r)[0]) != "torch"]
    _pip(sys.executable, "download", "--quiet", "--only-binary=:all:", "--dest", str(wheelhouse),
         f"pip=={COLAB_PIP}", *record["build_requirements"], *runtime, env=env)
    print(f"{wheelhouse}: {len(list(wheelhouse.glob('*.whl')))} wheels")
    marker.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------------------
# Helpers of the tests (tests/test_wheel.py uses them too)


def sim_dir() -> Path:
    """Where ``make install`` prepared the simulation: ``$CLIP_TUTORIAL_COLAB_SIM``, or ``colab-sim`` in the venv."""
    return Path(os.environ.get("CLIP_TUTORIAL_COLAB_SIM", Path(sys.prefix) / "colab-sim"))


def prepared_sim() -> Path:
    """The prepared simulation folder; fails the calling test if it is missing or out of date."""
    if sys.version_info < MIN_PYTHON:
        pytest.skip(f"Colab's package versions need Python {'.'.join(map(str, MIN_PYTHON))} or newer")
    dest = sim_dir()
    marker = dest / "prepared.json"
    hint = f"run `make install` (it runs `python tests/test_colab_install.py --prepare {dest}`)"
    if not marker.is_file():
        pytest.fail(f"{dest} is not prepared: {hint}")
    record = json.loads(marker.read_text(encoding="utf-8"))
    expected = {"colab_pins": sorted(f"{n}=={v}" for n, v in colab_pins().items()), "pip": COLAB_PIP,
                "dependencies": project_dependencies(), "build_requirements": build_requirements(),
                "python": f"{sys.version_info.major}.{sys.version_info.minor}"}
    if any(record.get(key) != value for key, value in expected.items()):
        pytest.fail(f"{dest} was prepared for other requirements or another list of Colab's packages: {hint}")
    return dest


def site_packages(venv: Path) -> Path:
    """The site-packages folder of a virtual environment made by :func:`make_venv`."""
    (folder,) = (venv / "lib").glob("python3*/site-packages")
    return folder


def pip_env(sim: Path, tmp: Path) -> dict[str, str]:
    """The environment for pip and the kernel: offline, configuration files ignored, nothing from the checkout."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV", "JUPYTER", "IPYTHON"))}
    env.update({
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(sim / "wheelhouse"),
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_CACHE_DIR": str(tmp / "pip-cache"),
        "PYTHONNOUSERSITE": "1",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "2",
    })
    return env


def make_venv(path: Path, sim: Path, env: dict[str, str]) -> Path:
    """A fresh virtual environment that sees Colab's packages (``base``) and has Colab's pip; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    (site_packages(path) / "colab_preinstalled.pth").write_text(f"{sim / 'base'}\n", encoding="utf-8")
    python = path / "bin" / "python"
    (pip_wheel,) = (sim / "wheelhouse").glob(f"pip-{COLAB_PIP}-*.whl")
    subprocess.run([str(python), str(pip_wheel / "pip"), "install", "--quiet", f"pip=={COLAB_PIP}"],
                   env=env, check=True, capture_output=True)
    return python


def pip_freeze(python: Path, env: dict[str, str]) -> dict[str, str]:
    """``pip freeze --all`` as ``{canonical name: the line}``."""
    lines = _pip(python, "freeze", "--all", env=env).stdout.splitlines()
    return {canonical_name(re.split(r"[=@ ]", line, maxsplit=1)[0]): line.strip() for line in lines if line.strip()}


def snapshot_repository(dest: Path) -> Path:
    """A git repository at ``dest`` with what a clone of this checkout would hold once its changes are committed.

    It is a clone of ``HEAD`` plus the working-tree state of every tracked file (so a change under test
    counts before it is committed); untracked files are left out, as a clone leaves them out.
    """
    if not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout of the book")
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "clone", "--quiet", "--no-hardlinks", str(ROOT), str(dest)], check=True)
    changed = subprocess.run(["git", "-C", str(ROOT), "diff", "--name-only", "-z", "HEAD"], check=True,
                             capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, changed):
        source, target = ROOT / name, dest / name
        if source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        else:
            target.unlink(missing_ok=True)
    if any(changed):
        subprocess.run([*git, "-C", str(dest), "add", "--all"], check=True)
        subprocess.run([*git, "-C", str(dest), "commit", "--quiet", "-m", "uncommitted changes of the checkout"],
                       check=True)
    return dest


def package_files(repository: Path) -> set[str]:
    """The files of ``clip_tutorial/`` that ``repository`` tracks, relative to it."""
    out = subprocess.run(["git", "-C", str(repository), "ls-files", "clip_tutorial"], check=True,
                         capture_output=True, text=True).stdout
    return set(out.split())


# --------------------------------------------------------------------------------------------------------
# The simulation

_STUB = '''"""Stand-in for Colab's ``google.colab``: the setup cell only asks whether it is imported."""
'''

# Runs after the notebook's own cells, in the same kernel: where the package came from, and the parts of it
# that other notebooks need (every shipped model, CLIP's BPE vocabulary, the widgets under Colab's ipywidgets).
_CHECK_CELL = '''\
import importlib.metadata, json, sys
import torch
import ipywidgets
from clip_tutorial.viz.temperature import temperature_explorer
from clip_tutorial.viz.widgets import search_box

shipped = {}
for name in clip_tutorial.list_shipped():
    trained = clip_tutorial.load_shipped(name)
    shipped[name] = trained.model.num_parameters()
bpe = clip_tutorial.BPETokenizer()
ids = bpe(["a photo of a red circle"])[0]
slider = temperature_explorer(torch.eye(4) * 0.5 + 0.1)
box = search_box(tr.model, tr.tokenizer, pool.images[:8], k=3)
print("COLAB-CHECK " + json.dumps({
    "executable": sys.executable,
    "package": clip_tutorial.__file__,
    "google.colab": "google.colab" in sys.modules,
    "ipywidgets": ipywidgets.__version__,
    "shipped": shipped,
    "bpe_ids": ids[:8].tolist(),
    "widgets": [type(w).__name__ for w in (*slider.children, *box.children)],
    "pictures": [len(slider.children[1].value), len(box.children[2].value)],
}))
'''

_RUNNER = '''
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": sys.argv[3]}}).execute()
nbformat.write(nb, sys.argv[2])
'''


@dataclass
class ColabRun:
    """What the simulated Colab session left behind."""

    repository: Path          # the clone the setup cell installed from
    venv: Path                # the simulated runtime
    before: dict[str, str]    # pip freeze before the notebook ran
    after: dict[str, str]     # and after
    notebook: object          # the executed notebook (nbformat)
    check: dict               # what the last, added cell reported
    install_seconds: float    # the setup cell's wall time
    total_seconds: float      # the notebook's wall time, kernel start to end


def _setup_cell_tool():
    """``tools/setup_cell.py``, which builds the setup cell from ``_config.yml``."""
    from repo_files import load_module

    return load_module("tools/setup_cell.py", "_setup_cell_tool")


def colab_notebook(file_url: str):
    """Chapter 1.3 with the setup cell's URL replaced by ``file_url`` and the check cell appended."""
    import nbformat

    setup_cell = _setup_cell_tool()
    repository_url = setup_cell.repository_url()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    _, cell = setup_cell.first_code_cell(nb)
    assert cell.source == setup_cell.canonical_setup_cell(), f"{NOTEBOOK}: the first code cell is not the setup cell"
    assert cell.source.count(f"git+{repository_url}") == 1, cell.source
    cell.source = cell.source.replace(f"git+{repository_url}", f"git+{file_url}")
    nb.cells.append(nbformat.v4.new_code_cell(_CHECK_CELL))
    for c in nb.cells:
        c.pop("id", None)
    nb.nbformat_minor = min(nb.nbformat_minor, 4)
    return nb


def run_colab_session(tmp: Path) -> ColabRun:
    """Clone, make the runtime, run the notebook with its setup cell taking Colab's branch."""
    import nbformat

    sim = prepared_sim()
    repository = snapshot_repository(tmp / "clip-tutorial")
    env = pip_env(sim, tmp)
    venv = tmp / "colab-runtime"
    python = make_venv(venv, sim, env)
    # google.colab: a stub, imported when the kernel starts, as Colab's kernel does.
    stub = tmp / "colab-stub"
    (stub / "google" / "colab").mkdir(parents=True)
    (stub / "google" / "colab" / "__init__.py").write_text(_STUB, encoding="utf-8")
    startup = tmp / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text(f"import sys\nsys.path.append({str(stub)!r})\nimport google.colab\n",
                                         encoding="utf-8")
    kernels = tmp / "jupyter" / "kernels" / "python3"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (simulated Colab)", "language": "python"}), encoding="utf-8")
    env.update({"IPYTHONDIR": str(tmp / "ipython"), "JUPYTER_PATH": str(tmp / "jupyter"),
                "JUPYTER_DATA_DIR": str(tmp / "jupyter"), "JUPYTER_CONFIG_DIR": str(tmp / "jupyter-config"),
                "CLIP_TUTORIAL_CACHE": str(tmp / "cache")})

    nb = colab_notebook(repository.as_uri())
    work = tmp / "work"
    work.mkdir()
    source, executed = work / NOTEBOOK.name, work / f"executed-{NOTEBOOK.name}"
    nbformat.write(nb, source)

    before = pip_freeze(python, env)
    started = time.perf_counter()
    result = subprocess.run([str(python), "-c", _RUNNER, str(source), str(executed), str(work)], cwd=work,
                            env=env, capture_output=True, text=True, timeout=900)
    total = time.perf_counter() - started
    if result.returncode != 0:
        raise AssertionError(f"the notebook failed in the simulated Colab runtime:\n{result.stderr[-6000:]}")
    after = pip_freeze(python, env)
    done = nbformat.read(executed, as_version=4)
    check = {}
    for output in done.cells[-1].outputs:
        for line in output.get("text", "").splitlines():
            if line.startswith("COLAB-CHECK "):
                check = json.loads(line.removeprefix("COLAB-CHECK "))
    times = [c.metadata.get("execution", {}) for c in done.cells if c.cell_type == "code"]
    install_seconds = _cell_seconds(times[0])
    return ColabRun(repository, venv, before, after, done, check, install_seconds, total)


def _cell_seconds(timing: dict) -> float:
    from datetime import datetime

    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return float("nan")
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


# --------------------------------------------------------------------------------------------------------
# The tests


def test_every_dependency_accepts_colabs_version():
    """Each lower bound of pyproject.toml is met by the version Colab ships; only NOT_IN_COLAB is absent."""
    from packaging.requirements import Requirement

    pins = {**colab_pins(), "torch": COLAB_TORCH}
    requirements = [Requirement(r) for r in project_dependencies() + _pyproject()["project"]["optional-dependencies"]["data"]]
    absent = set()
    for requirement in requirements:
        name = canonical_name(requirement.name)
        if name in pins or name in COLAB_EXTRAS:
            version = pins.get(name) or COLAB_EXTRAS[name]
        else:
            absent.add(name)
            continue
        assert requirement.specifier.contains(version), (
            f"pyproject.toml asks for {requirement}, but Colab ships {name} {version} ({COLAB_SOURCE}): "
            "pip would replace Colab's copy on every install")
    assert absent == NOT_IN_COLAB, (
        f"dependencies that Colab does not preinstall: {sorted(absent)}; expected {sorted(NOT_IN_COLAB)}. "
        "If Colab has a new one, add it with Colab's version to COLAB_PREINSTALLED")


def test_the_prepared_runtime_holds_colabs_versions(tmp_path):
    """A fresh environment over the prepared base sees Colab's versions, and nothing of the book yet."""
    sim = prepared_sim()
    env = pip_env(sim, tmp_path)
    python = make_venv(tmp_path / "venv", sim, env)
    frozen = {name: line.partition("==")[2] for name, line in pip_freeze(python, env).items()}
    lent = {p.split("==")[0] for p in json.loads((sim / "prepared.json").read_text(encoding="utf-8"))["lent"]}
    wrong = {name: (version, frozen.get(name)) for name, version in colab_pins().items()
             if name not in lent and frozen.get(name) != version}
    assert not wrong, f"expected Colab's version, got another: {wrong}"
    assert "torch" in frozen and "clip-tutorial" not in frozen and "ftfy" not in frozen
    assert frozen["pip"] == COLAB_PIP
    probe = subprocess.run([str(python), "-c", "import clip_tutorial"], env=env, cwd=tmp_path,
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'clip_tutorial'" in probe.stderr


@pytest.fixture(scope="module")
def colab_run(tmp_path_factory) -> ColabRun:
    run = run_colab_session(tmp_path_factory.mktemp("colab"))
    print(f"\nsimulated Colab: setup cell {run.install_seconds:.1f} s, notebook {run.total_seconds:.1f} s")
    return run


def test_the_setup_cell_installs_from_the_repository_and_the_notebook_runs(colab_run):
    check = colab_run.check
    assert check, "the appended check cell printed nothing"
    assert check["google.colab"] is True  # the setup cell took its Colab branch
    installed_in = site_packages(colab_run.venv)
    assert Path(check["executable"]).parent == colab_run.venv / "bin"
    assert Path(check["package"]).resolve().is_relative_to(installed_in.resolve()), check["package"]
    line = colab_run.after["clip-tutorial"]
    assert line.startswith(f"clip-tutorial @ git+{colab_run.repository.as_uri()}@"), line
    setup_output = "".join(o.get("text", "") for o in colab_run.notebook.cells[
        next(i for i, c in enumerate(colab_run.notebook.cells) if c.cell_type == "code")].outputs)
    assert "clip_tutorial 0" in setup_output and "device: " in setup_output, setup_output


def test_a_clean_install_brings_every_file_of_the_package(colab_run):
    installed = site_packages(colab_run.venv)
    tracked = package_files(colab_run.repository)
    assert {f for f in tracked if f.startswith("clip_tutorial/weights/shipped/")}, "no shipped weights tracked"
    missing = sorted(f for f in tracked if not (installed / f).is_file())
    assert not missing, f"a clean install from the repository lacks {missing}"
    check = colab_run.check
    assert set(check["shipped"]) == {Path(f).stem for f in tracked
                                     if f.startswith("clip_tutorial/weights/shipped/") and f.endswith(".safetensors")}
    assert all(n > 0 for n in check["shipped"].values())
    assert check["bpe_ids"][0] == 49406  # CLIP's start-of-text token, from the shipped vocabulary


def test_the_widgets_work_with_colabs_ipywidgets(colab_run):
    check = colab_run.check
    assert check["ipywidgets"] == colab_pins()["ipywidgets"]
    assert check["widgets"] == ["FloatLogSlider", "Image", "Text", "HTML", "Image"]
    assert all(size > 1000 for size in check["pictures"]), check["pictures"]  # PNGs were drawn


def test_installing_upgrades_nothing_that_colab_ships(colab_run):
    before, after = colab_run.before, colab_run.after
    changed = {name: (line, after.get(name)) for name, line in before.items() if after.get(name) != line}
    assert not changed, f"the install replaced packages that were there: {changed}"
    added = set(after) - set(before)
    assert added == {"clip-tutorial"} | NOT_IN_COLAB, sorted(added)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Prepare the offline Colab simulation (downloads; run by make install).")
    parser.add_argument("--prepare", metavar="DIR", type=Path, required=True,
                        help="where to put base/, wheelhouse/ and prepared.json (e.g. .venv/colab-sim)")
    args = parser.parse_args(argv)
    prepare(args.prepare)
    return 0


if __name__ == "__main__":
    sys.exit(main())
