"""The README's "Open in Colab" links (tools/readme_badges.py) match _config.yml and _toc.yml."""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import readme_badges  # noqa: E402

sys.path.remove(str(ROOT / "tools"))


def test_the_readme_holds_the_generated_links():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_badges.current_block(text) == readme_badges.block(), (
        "README.md's Colab links are stale: run python tools/readme_badges.py --write")


def test_every_numbered_notebook_has_one_link_to_its_file_on_the_configured_repository():
    base = readme_badges.colab_base()
    links = re.findall(r"\]\(([^()\s]+\.ipynb)", readme_badges.block())
    badge, pages = links[0], links[1:]
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    toc_notebooks = [f"{s['file']}.ipynb" for part in toc["parts"]
                     if part.get("numbered") for c in part["chapters"] for s in c.get("sections", [])
                     if (ROOT / f"{s['file']}.ipynb").is_file()]
    assert pages == [f"{base}/{path}" for path in toc_notebooks]
    assert badge == pages[0]
    assert all((ROOT / link.removeprefix(base + "/")).is_file() for link in pages)


def test_the_links_follow_the_configured_repository(tmp_path):
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "chapters", tmp_path / "chapters")
    config = tmp_path / "_config.yml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("url: https://github.com/clip-tutorial/clip-tutorial",
                                   "url: https://github.com/someone/a-fork").replace("branch: main", "branch: draft"),
                      encoding="utf-8")
    block = readme_badges.block(tmp_path)
    assert "https://colab.research.google.com/github/someone/a-fork/blob/draft/chapters/ch1/01_" in block
    assert "clip-tutorial/clip-tutorial" not in block
    config.write_text(text.replace("url: https://github.com/clip-tutorial/clip-tutorial",
                                   "url: https://gitlab.com/someone/a-fork"), encoding="utf-8")
    with pytest.raises(ValueError, match="must be a GitHub repository"):
        readme_badges.block(tmp_path)


def test_replacing_the_block_keeps_the_rest_and_needs_both_markers():
    new = f"{readme_badges.START}\nnew\n{readme_badges.END}"
    text = f"intro\n{readme_badges.START}\nold\n{readme_badges.END}\noutro\n"
    assert readme_badges.replace_block(text, new) == f"intro\n{new}\noutro\n"
    with pytest.raises(ValueError, match="must hold one"):
        readme_badges.replace_block("intro\n", new)
    with pytest.raises(ValueError, match="must hold one"):
        readme_badges.replace_block(f"{readme_badges.END}\n{readme_badges.START}\n", new)
