"""Glued text in the Chinese edition: English phrases made by the shared code cells, shown in Chinese.

Both editions run the same code cells, so a value that a cell glues is the same string in both:
a number reads the same in Chinese, but a list such as ``"8, 16 and 32"`` or a verdict such as
``"faster"`` does not. This extension, loaded by the Chinese edition only, rewrites every pasted
glue value (``{glue:text}``) as the page is written:

1. a table (``zh/glue_text.yml``, ``phrases``) of regular expressions, each matched against the
   whole value, with its Chinese rendering, in which ``\\1``, ``\\2`` are the captured groups,
   rendered in turn, and ``\\n`` a line break (``texts`` holds exact values and their Chinese);
2. otherwise a list, ``"a, b and c"``, ``"a or b"`` or ``"a, b, c"``, becomes ``"a、b 和 c"``,
   ``"a 或 b"`` or ``"a、b、c"``;
3. what is left may keep English words only if they are ShapesWorld's own words (its captions
   are English data) or are listed under ``keep`` (names such as ``resnet.py``).

Any other English word left in a pasted value is a Sphinx warning, which the book build turns
into a failure that names the page and the value: a new verdict in an English cell cannot reach
the Chinese pages untranslated.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*[A-Za-z]")
_CODE = re.compile(r"[./<>_=()\[\]]|[A-Za-z].*\d|\d.*[A-Za-z]")  # or letters with digits: RN50, ch1-demo
_ENUMERATION = re.compile(r"^\S+(?:, \S+)+$")  # "16, 32, 1,024" or "rotation, hue"
_LIST = re.compile(r"^(?P<head>.+?) (?P<conj>and|or) (?P<last>[^,]+)$")


@dataclass(frozen=True)
class GlueTable:
    """The Chinese renderings of glued English text, and the English words allowed to stay."""

    phrases: tuple[tuple[re.Pattern[str], str], ...]
    keep: frozenset[str]
    texts: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], data_words: Iterable[str] = ()) -> GlueTable:
        """Build a table from the YAML's ``texts`` (exact English: Chinese), ``phrases`` (``en``/``zh`` pairs) and ``keep`` list.

        Raises:
            ValueError: if an entry lacks ``en`` or ``zh``, or ``en`` is not a valid expression,
                or ``texts`` is not a mapping of strings.
        """
        texts = data.get("texts") or {}
        if not isinstance(texts, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in texts.items()):
            raise ValueError(f"texts: expected a mapping from English to Chinese strings, got {texts!r}")
        phrases = []
        for index, entry in enumerate(data.get("phrases") or []):
            if not isinstance(entry, Mapping) or not {"en", "zh"} <= set(entry):
                raise ValueError(f"phrases[{index}]: expected a mapping with 'en' and 'zh', got {entry!r}")
            try:
                pattern = re.compile(str(entry["en"]))
            except re.error as err:
                raise ValueError(f"phrases[{index}].en: not a regular expression ({err})") from None
            phrases.append((pattern, str(entry["zh"])))
        keep = {str(word).lower() for word in (data.get("keep") or [])}
        keep.update(word.lower() for word in data_words)
        return cls(tuple(phrases), frozenset(keep), dict(texts))

    def render(self, text: str) -> str:
        """``text`` in Chinese: its entry in ``texts``, else the first phrase that matches it whole, else a Chinese list, else as is."""
        if text in self.texts:
            return self.texts[text]
        for pattern, chinese in self.phrases:
            match = pattern.fullmatch(text)
            if match:
                groups = [self.render(group) if group is not None else "" for group in match.groups()]
                return re.sub(r"\\(\d|n)", lambda m: "\n" if m.group(1) == "n" else groups[int(m.group(1)) - 1],
                              chinese)
        listed = _LIST.match(text)
        if listed:
            items = [self.render(item) for item in listed.group("head").split(", ")]
            joiner = " 和 " if listed.group("conj") == "and" else " 或 "
            return "、".join(items) + joiner + self.render(listed.group("last"))
        if _ENUMERATION.match(text):
            return "、".join(text.split(", "))
        return text

    def english_left(self, text: str) -> list[str]:
        """The English words of ``text`` that are neither ShapesWorld's nor listed under ``keep``.

        Tokens that look like code (a file name, a model name with a slash or digits, a recipe name
        such as ``ch1-demo``, a BPE token such as ``of</w>``) are not words.
        """
        prose = " ".join(token for token in text.split() if not _CODE.search(token))
        return [word for word in _WORD.findall(prose) if word.lower() not in self.keep]


def load_table(path: Path) -> GlueTable:
    """Read ``path`` (YAML) into a :class:`GlueTable`, with ShapesWorld's vocabulary kept."""
    import yaml

    from clip_tutorial.data.shapesworld import vocabulary

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return GlueTable.from_mapping(data, vocabulary())


def _translate(app: Any, doctree: Any, docname: str) -> None:
    from docutils import nodes
    from sphinx.util import logging

    table = getattr(app, "_zh_glue_table", None)
    if table is None:
        table = app._zh_glue_table = load_table(Path(app.confdir) / app.config.zh_glue_table)
    logger = logging.getLogger(__name__)
    for node in list(doctree.findall(nodes.inline)):
        if "pasted-text" not in node.get("classes", []):
            continue
        english = node.astext()
        chinese = table.render(english)
        left = table.english_left(chinese)
        if left:
            logger.warning(f"glued text {english!r} keeps English words {left} in the Chinese edition: "
                           f"add its Chinese to {app.config.zh_glue_table}", location=node)
        if chinese != english:
            node.replace_self(nodes.inline(chinese, chinese, classes=node["classes"]))


def setup(app: Any) -> dict[str, Any]:
    """Register the table's path (``zh_glue_table``, relative to the edition's folder) and the rewrite."""
    app.add_config_value("zh_glue_table", "glue_text.yml", "env")
    app.connect("doctree-resolved", _translate)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
