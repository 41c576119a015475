"""The README's "Open in Colab" links (tools/readme_badges.py) match _config.yml and _toc.yml, and those of the
Chinese edition zh/_config.yml and zh/_toc.yml."""
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
    new = f"{readme_badges.ENGLISH.start}\nnew\n{readme_badges.ENGLISH.end}"
    text = f"intro\n{readme_badges.ENGLISH.start}\nold\n{readme_badges.ENGLISH.end}\noutro\n"
    assert readme_badges.replace_block(text, new) == f"intro\n{new}\noutro\n"
    with pytest.raises(ValueError, match="must hold one"):
        readme_badges.replace_block("intro\n", new)
    with pytest.raises(ValueError, match="must hold one"):
        readme_badges.replace_block(f"{readme_badges.ENGLISH.end}\n{readme_badges.ENGLISH.start}\n", new)


ZH = readme_badges.CHINESE
_LINK = re.compile(r"\]\(([^()\s]+\.ipynb)")


def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_holds_the_chinese_links_after_the_english_ones():
    text = _readme()
    assert readme_badges.current_block(text, ZH) == readme_badges.block(edition=ZH), (
        "README.md's Chinese Colab links are stale: run python tools/readme_badges.py --write")
    assert text.index(readme_badges.ENGLISH.end) < text.index(ZH.start)
    assert readme_badges.stale_editions(text) == []
    assert readme_badges.main(["--check"]) == 0


def test_every_chinese_link_opens_a_chinese_notebook_with_its_chinese_title():
    block = readme_badges.block(edition=ZH)
    prefix = "https://colab.research.google.com/github/clip-tutorial/clip-tutorial/blob/main/zh/chapters/"
    links = _LINK.findall(block)
    assert len(links) == 1 + sum(len(c.pages) for c in readme_badges.chapters(edition=ZH))
    assert all(link.startswith(prefix) for link in links), links
    assert all((ROOT / "zh" / "chapters" / link.removeprefix(prefix)).is_file() for link in links)
    assert f"{prefix}ch1/01_clip_in_60_seconds.ipynb" == links[0] == links[1]
    assert "- 第 1 章 什么是CLIP？: [1.1](" in block
    chapter_lines = [line for line in block.splitlines() if line.startswith("- ")]
    assert all(line.startswith(f"- 第 {n} 章 ") for n, line in enumerate(chapter_lines, start=1))
    first_title = readme_badges.notebook_title(ROOT / "zh/chapters/ch1/01_clip_in_60_seconds.ipynb")
    assert re.search(r"[\u4e00-\u9fff]", first_title), first_title
    assert f"从 1.1 *{first_title}* 开始" in block
    assert "Chapter" not in block and "Start with" not in block


def test_the_chinese_links_list_the_english_notebooks_in_the_same_order():
    english = _LINK.findall(readme_badges.current_block(_readme()))
    chinese = _LINK.findall(readme_badges.current_block(_readme(), ZH))
    repository = "https://colab.research.google.com/github/clip-tutorial/clip-tutorial/blob/main/"
    assert [link.removeprefix(repository) for link in chinese] == [
        "zh/" + link.removeprefix(repository) for link in english]
    english_titles = [p.title for c in readme_badges.chapters() for p in c.pages]
    chinese_titles = [p.title for c in readme_badges.chapters(edition=ZH) for p in c.pages]
    assert len(chinese_titles) == len(english_titles) and chinese_titles != english_titles


def _copy_both_editions(tmp_path: Path) -> Path:
    """A repository root in ``tmp_path`` with the README, both editions' settings and (linked) notebooks."""
    for name in ("README.md", "_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "zh").mkdir()
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / "zh" / name, tmp_path / "zh" / name)
    (tmp_path / "chapters").symlink_to(ROOT / "chapters", target_is_directory=True)
    (tmp_path / "zh" / "chapters").symlink_to(ROOT / "zh" / "chapters", target_is_directory=True)
    return tmp_path


def test_a_tampered_or_missing_chinese_block_fails_the_check(tmp_path, capsys):
    root = _copy_both_editions(tmp_path)
    readme = root / "README.md"
    good = readme.read_text(encoding="utf-8")
    assert readme_badges.main(["--check"], root=root) == 0
    # One Chinese link swapped for another notebook: the English block still matches.
    tampered = good.replace("zh/chapters/ch1/02_why_clip.ipynb", "zh/chapters/ch1/03_core_idea.ipynb", 1)
    assert tampered != good
    readme.write_text(tampered, encoding="utf-8")
    assert readme_badges.stale_editions(tampered, root) == [ZH]
    assert readme_badges.main(["--check"], root=root) == 1
    assert "Chinese edition's Colab links differ from zh/_config.yml and zh/_toc.yml" in capsys.readouterr().err
    assert readme_badges.main(["--write"], root=root) == 0
    assert readme.read_text(encoding="utf-8") == good
    # A Chinese chapter renamed in zh/_toc.yml makes the README stale too.
    toc = root / "zh" / "_toc.yml"
    toc.write_text(toc.read_text(encoding="utf-8").replace("什么是CLIP？", "CLIP 是什么？"), encoding="utf-8")
    assert readme_badges.stale_editions(good, root) == [ZH]
    shutil.copy(ROOT / "zh" / "_toc.yml", toc)
    # Without its markers, --check and --write say what is missing and change nothing.
    start, end = good.index(ZH.start), good.index(ZH.end) + len(ZH.end)
    readme.write_text(good[:start] + good[end:], encoding="utf-8")
    capsys.readouterr()
    for mode in ("--check", "--write"):
        assert readme_badges.main([mode], root=root) == 1
        assert f"must hold one {ZH.start!r} line followed by one {ZH.end!r} line" in capsys.readouterr().err
    assert ZH.start not in readme.read_text(encoding="utf-8")


def test_the_links_honour_path_to_book(tmp_path):
    root = _copy_both_editions(tmp_path)
    assert readme_badges.colab_base(root).endswith("/blob/main")
    assert readme_badges.colab_base(root, ZH).endswith("/blob/main/zh")
    config_path = root / "zh" / "_config.yml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    assert config["repository"]["path_to_book"] == "zh"
    config["repository"]["path_to_book"] = ""
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ValueError, match="path_to_book is '', but the Chinese edition's book is in 'zh'"):
        readme_badges.block(root, ZH)
    config["repository"]["path_to_book"] = "/zh/"
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    assert "/blob/main/zh/chapters/ch1/01_" in readme_badges.block(root, ZH)
