"""Tests of the training command line, ``python -m clip_tutorial.train`` (Chapter 3.2)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clip_tutorial.weights.checkpoints import load_checkpoint
from clip_tutorial.cli import main
from clip_tutorial.model import CLIPConfig
from clip_tutorial.train.recipes import RECIPES, Recipe
from clip_tutorial.train import TrainConfig

_TINY = Recipe(
    name="test-tiny",
    description="a few steps of a very small model, for tests",
    model=CLIPConfig(embed_dim=16, image_resolution=32, vision_layers=1, vision_width=16, vision_patch_size=8,
                     vision_heads=2, context_length=12, transformer_width=16, transformer_heads=2,
                     transformer_layers=1),
    train=TrainConfig(steps=4, batch_size=16, lr=2e-3, warmup_steps=1),
    n_train=48,
)


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(RECIPES, _TINY.name, _TINY)
    return _TINY.name


def _train(out: Path, *extra: str) -> int:
    return main(["--recipe", "test-tiny", "--out", str(out), "--device", "cpu", "--no-progress", *extra])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Train ``test-tiny`` for 3 steps saving the state every 2; then, as if the run had been stopped after
    step 2, resume it. Returns the folder, the first run's model card and weights, and the printed lines."""
    out = tmp_path_factory.mktemp("cli") / "run"
    args = ("--steps", "3", "--seed", "7", "--checkpoint-every", "2", "--n-train", "40")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(RECIPES, _TINY.name, _TINY)
        assert _train(out, *args) == 0
        first = load_checkpoint(out / "model")  # checks the sha256 too
        description = json.loads((out / "model.json").read_text())
        digest = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
        history = json.loads((out / "history.json").read_text())
        states = sorted(p.name for p in (out / "checkpoints").glob("*.json"))
        for suffix in (".json", ".safetensors"):
            (out / "checkpoints" / f"step-000003{suffix}").unlink()
        assert _train(out, *args, "--resume") == 0
    return {"first": first, "description": description, "digest": digest, "history": history, "states": states,
            "resumed": load_checkpoint(out / "model")}


def test_trains_a_recipe_and_writes_a_checkpoint_with_a_model_card(runs):
    card = runs["first"].metadata
    assert card["recipe"] == "test-tiny" and card["steps"] == 3 and card["train_config"]["steps"] == 3
    assert card["data_seed"] == 7 and card["train_seed"] == 7 and card["resumed"] is False
    assert card["train_config"]["warmup_steps"] == 1 and card["recipe_settings"]["n_train"] == 40
    assert 0.0 <= card["metrics"]["heldout_acc"] <= 1.0 and 0.0 <= card["metrics"]["all_acc"] <= 1.0
    assert runs["description"]["sha256"] == runs["digest"]
    assert runs["history"]["steps"] == [1, 2, 3] and runs["history"]["loss"][-1] == card["final_loss"]
    assert runs["first"].tokenizer is not None and runs["first"].model.config.context_length == 12
    assert runs["states"] == ["step-000002.json", "step-000003.json"]


def test_resume_continues_an_interrupted_run_to_the_same_weights(runs):
    assert runs["resumed"].metadata["resumed"] is True
    resumed = runs["resumed"].model.state_dict()
    for name, value in runs["first"].model.state_dict().items():
        assert torch.equal(value, resumed[name]), name


def test_list_shows_every_recipe(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in RECIPES:
        assert name in out


ROOT = Path(__file__).resolve().parents[1]


def _book_pages() -> dict[str, str]:
    """'N.M' -> the title of that page, numbered as the table of contents numbers it."""
    import nbformat
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    numbered = next(part for part in toc["parts"] if part.get("numbered"))
    pages = {}
    for n, chapter in enumerate(numbered["chapters"], start=1):
        for m, section in enumerate(chapter.get("sections", []), start=1):
            path = ROOT / f"{section['file']}.ipynb"
            first = nbformat.read(path, as_version=4).cells[0].source.lstrip().splitlines()[0]
            pages[f"{n}.{m}"] = first.removeprefix("# ").strip()
    return pages


def test_list_numbers_pages_as_the_book_does(capsys):
    """A description that names a page by number ('Chapter 1.6 (Limitations, measured)') names the right one."""
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    pages = _book_pages()
    cited = re.findall(r"Chapter (\d+\.\d+) \(([^)]+)\)", out)
    assert cited, "the probe model's description names the page that uses it"
    for number, title in cited:
        assert pages.get(number) == title, f"Chapter {number} is {pages.get(number)!r} in the book, not {title!r}"
    assert not re.search(r"Chapter \d+\.\d+(?! \()", out), "name a page by its number and its title"


def test_rewording_a_description_keeps_the_recipe(tmp_path):
    """The description is prose: the shipped model of a recipe stays valid when only its wording changes."""
    recipe = RECIPES["ch1-scenes"]
    reworded = dataclasses.replace(recipe, description="another wording")
    assert reworded == recipe and reworded.fingerprint() == recipe.fingerprint()
    assert dataclasses.replace(recipe, n_train=recipe.n_train + 1) != recipe


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


def test_clear_errors_for_bad_command_lines(tiny, tmp_path, capsys):
    err = _error(capsys, ["--recipe", "nope", "--out", str(tmp_path)])
    assert "unknown recipe 'nope'" in err and "ch1-demo" in err and "test-tiny" in err
    assert "--recipe" in _error(capsys, ["--out", str(tmp_path)])
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert "expected a folder" in _error(capsys, ["--recipe", "test-tiny", "--out", str(a_file)])
    assert "cannot write to the folder" in _error(capsys, ["--recipe", "test-tiny", "--out", str(a_file / "sub")])
    err = _error(capsys, ["--recipe", "test-tiny", "--out", str(tmp_path / "empty"), "--resume", "--device", "cpu"])
    assert "--resume" in err and "found none" in err
    assert "positive integer" in _error(capsys, ["--recipe", "test-tiny", "--steps", "0"])
    assert "--device" in _error(capsys, ["--recipe", "test-tiny", "--device", "tpu"])
    assert "positive integer" in _error(capsys, ["--recipe", "test-tiny", "--n-train", "-3"])
    err = _error(capsys, ["--recipe", "test-tiny", "--n-train", "8", "--out", str(tmp_path / "few"), "--device", "cpu",
                          "--no-progress"])
    assert "batch_size=16" in err and "got 8" in err


def test_a_bad_world_size_from_the_environment_is_a_usage_error(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    assert "WORLD_SIZE" in _error(capsys, ["--recipe", "test-tiny", "--out", str(tmp_path), "--device", "cpu"])


def test_help_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "clip_tutorial.train", "--help"], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    for option in ("--recipe", "--out", "--steps", "--n-train", "--seed", "--device", "--resume",
                   "--checkpoint-every", "--no-progress", "--list", "torchrun"):
        assert option in result.stdout, option
