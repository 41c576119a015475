"""The third path, ``pip install clip-tutorial``: the sdist and the wheel, built offline from a clean clone.

``python -m build --no-isolation`` builds the sdist and then the wheel from the unpacked sdist (so a file the
sdist forgets is missing from the wheel too), with the setuptools of the running environment: nothing is
downloaded. The wheel is then installed in a fresh virtual environment whose dependencies are those of the
simulated Colab runtime (see ``tests/test_colab_install.py``; ``make install`` prepares it), and the
package is imported there and loads and evaluates a shipped model. The file took 13 s on a busy 2-core machine.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from test_colab_install import make_venv, package_files, pip_env, prepared_sim, site_packages, snapshot_repository

#: A guard against shipping something large by mistake: the wheel holds code, sixteen CLIPs of 0.7 to 0.9 MB
#: (11.7 MB in all, which compress little), four small generators (2.1 MB), the recorded grids of Chapter 7
#: (0.2 MB) and a 1.3 MB vocabulary: 14.5 MB compressed.
MAX_WHEEL_BYTES = 18_000_000


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(the clone, the wheel, the sdist) built from a clone of the checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    repository = snapshot_repository(tmp / "clip-tutorial")
    dist = tmp / "dist"
    result = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(repository)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = dist.glob("clip_tutorial-*.whl")
    (sdist,) = dist.glob("clip_tutorial-*.tar.gz")
    print(f"\nwheel {wheel.name}: {wheel.stat().st_size / 1e6:.2f} MB; sdist {sdist.name}: {sdist.stat().st_size / 1e6:.2f} MB")
    return repository, wheel, sdist


def test_the_wheel_holds_the_package_its_data_and_nothing_else(built):
    repository, wheel, _ = built
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    tracked = package_files(repository)
    assert any(f.startswith("clip_tutorial/weights/shipped/") and f.endswith(".safetensors") for f in tracked)
    assert "clip_tutorial/assets/bpe_simple_vocab_16e6.txt.gz" in tracked
    missing = sorted(tracked - names)
    assert not missing, f"the wheel lacks {missing}"
    dist_info = {n for n in names if n.split("/")[0].endswith(".dist-info")}
    extra = sorted(names - tracked - dist_info)
    assert not extra, f"the wheel holds files that the repository does not track under clip_tutorial/: {extra}"
    assert not any(n.startswith(("tests/", "chapters/", "benchmarks/", "tools/")) or n.endswith(".ipynb") for n in names)
    assert wheel.stat().st_size < MAX_WHEEL_BYTES, wheel.stat().st_size


def test_the_sdist_holds_the_package_and_its_data(built):
    repository, _, sdist = built
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    missing = sorted(package_files(repository) - names)
    assert not missing, f"the sdist lacks {missing}"
    assert {"pyproject.toml", "README.md"} <= names
    assert not any(n.endswith(".ipynb") for n in names)


_SMOKE = """
import json, clip_tutorial
from clip_tutorial.train.recipes import evaluate_zero_shot
trained = clip_tutorial.load_shipped("ch1-demo")
recipe = trained.recipe
heldout = clip_tutorial.heldout_combinations(recipe.n_heldout, seed=recipe.data_seed)
accuracy = evaluate_zero_shot(trained.model, trained.tokenizer, heldout, styles=recipe.styles, n=200)
print(json.dumps({"file": clip_tutorial.__file__, "version": clip_tutorial.__version__,
                  "shipped": clip_tutorial.list_shipped(), "accuracy": accuracy,
                  "bpe": clip_tutorial.BPETokenizer()(["a photo of a cat"])[0][:3].tolist()}))
"""


def test_the_installed_wheel_imports_and_loads_a_shipped_model(built, tmp_path):
    _, wheel, _ = built
    sim = prepared_sim()
    env = pip_env(sim, tmp_path)
    python = make_venv(tmp_path / "venv", sim, env)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], env=env, check=True, timeout=600)
    result = subprocess.run([str(python), "-c", _SMOKE], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(report["file"]).resolve().is_relative_to(site_packages(tmp_path / "venv").resolve()), report["file"]
    assert wheel.name.startswith(f"clip_tutorial-{report['version']}-")
    in_checkout = sorted(f.stem for f in (built[0] / "clip_tutorial" / "weights" / "shipped").glob("*.safetensors"))
    assert sorted(report["shipped"]) == in_checkout and "ch1-demo" in in_checkout  # every shipped model came along
    assert report["bpe"] == [49406, 320, 1125]  # <start_of_text> "a" "photo": CLIP's vocabulary
    # the model card records 99.05% held-out on 2,000 images; 200 fresh ones land close to it
    assert report["accuracy"]["heldout_acc"] > 0.9, report["accuracy"]
