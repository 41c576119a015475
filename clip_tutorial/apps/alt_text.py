"""Alt text by retrieval: describe an image attribute by attribute, then write the sentence.

Explained in Chapter 5.3. CLIP does not generate text; it scores texts against an image. A
description can still be built from its choices: first the colour and shape (zero-shot among
every pair), then, with those two words fixed in the prompt, the size, the drawing style and the
position, each chosen among its few possible phrases. :func:`compose_alt_text` turns the choices
into a sentence, :func:`~clip_tutorial.data.matching.parse_query` reads the attributes a ready-made caption
mentions (for the caption-bank baseline), and :func:`attribute_accuracy` scores descriptions against the truth.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from clip_tutorial.core.checks import check_choice, check_tensor, check_type
from clip_tutorial.data import COLOURS, POSITIONS, SHAPES, SIZES, STYLES, ShapeSpec
from clip_tutorial.data.shapesworld import SIZE_WORDS, STYLE_WORDS, WHERE_PHRASES
from clip_tutorial.model import CLIP, check_clip
from clip_tutorial.evaluation.zeroshot import build_zero_shot_classifier, encode_images, encode_texts, ensemble_prompt_embeddings

__all__ = ["ATTRIBUTES", "ATTRIBUTE_TEMPLATES", "describe_images", "describe_features", "compose_alt_text",
           "attribute_accuracy"]

#: The attributes a description holds, in the order a sentence says them.
ATTRIBUTES: tuple[str, ...] = ("size", "style", "colour", "shape", "position")

#: Prompts that choose one attribute once the colour and shape are known: ``{colour}`` and
#: ``{shape}`` are the chosen pair, ``{}`` is each candidate phrase (several templates are ensembled).
ATTRIBUTE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "pair": ("a photo of a {}",),
    "size": ("a {} {colour} {shape}",),
    "style": ("a {} {colour} {shape}",),
    "position": ("there is a {colour} {shape} {}",),
}

#: The phrase a description uses for each value: the first word ShapesWorld's captions use for it.
PHRASES: dict[str, dict[str, str]] = {
    "size": {s: SIZE_WORDS[s][0] for s in SIZES},
    "style": {s: STYLE_WORDS[s][0] for s in STYLES},
    "position": dict(WHERE_PHRASES),
}

Tokenizer = Callable[[Sequence[str]], torch.Tensor]


def _check_templates(templates: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    check_type("templates", templates, Mapping, "a dict from attribute to prompt templates")
    unknown = sorted(set(templates) - set(ATTRIBUTE_TEMPLATES))
    if unknown:
        raise ValueError(f"templates: expected keys among {sorted(ATTRIBUTE_TEMPLATES)}, got {unknown}")
    merged = {**ATTRIBUTE_TEMPLATES, **{k: tuple([v] if isinstance(v, str) else v) for k, v in templates.items()}}
    for key, group in merged.items():
        for t in group:
            try:
                filled = t.format("\x00", colour="red", shape="circle")
            except (IndexError, KeyError, ValueError) as error:
                raise ValueError(f"templates: {key!r} template {t!r} must use only '{{}}', '{{colour}}' and "
                                 f"'{{shape}}' ({error})") from None
            if "\x00" not in filled:
                raise ValueError(f"templates: {key!r} template {t!r} has no '{{}}' for the candidate phrase")
    return merged


def _check_values(name: str, values: Sequence[str], options: Sequence[str]) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{name}: expected a non-empty list of names from {list(options)}, got {values!r}")
    return tuple(check_choice(name, v, options) for v in values)


@torch.no_grad()
def describe_features(model: CLIP, tokenizer: Tokenizer, image_features: torch.Tensor,
                      styles: Sequence[str] = ("filled", "outline"), sizes: Sequence[str] = SIZES,
                      positions: Sequence[str] = POSITIONS, pairs: Sequence[tuple[str, str]] | None = None,
                      templates: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, str]]:
    """Describe already-embedded images: colour and shape first, then size, style and position.

    Explained in Chapter 5.3. See :func:`describe_images`; this takes the image embeddings
    ``(N, embed_dim)`` instead of the pixels, so that they can be reused.
    """
    dim = check_clip("model", model).config.embed_dim
    check_tensor("image_features", image_features, shape=(None, dim), nonempty=True,
                 what=f"a non-empty (N, {dim}) tensor")
    prompts = _check_templates(templates or {})
    candidates = {"size": _check_values("sizes", sizes, SIZES), "style": _check_values("styles", styles, STYLES),
                  "position": _check_values("positions", positions, POSITIONS)}
    if pairs is None:
        pairs = [(c, s) for c in COLOURS for s in SHAPES]
    if isinstance(pairs, str) or not isinstance(pairs, Sequence) or len(pairs) == 0:
        raise ValueError(f"pairs: expected a non-empty list of (colour, shape) tuples, got {pairs!r}")
    if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):
        bad = [p for p in pairs if not isinstance(p, (tuple, list)) or len(p) != 2][:3]
        raise ValueError(f"pairs: expected (colour, shape) tuples, got {bad}")
    pairs = [(check_choice("pairs colour", c, tuple(COLOURS)), check_choice("pairs shape", s, SHAPES))
             for c, s in pairs]
    features = torch.nn.functional.normalize(image_features.float().cpu(), dim=-1)
    pair_classifier = build_zero_shot_classifier(model, tokenizer, [f"{c} {s}" for c, s in pairs], prompts["pair"])
    chosen = (features @ pair_classifier).argmax(dim=1)
    descriptions = [{"colour": pairs[i][0], "shape": pairs[i][1]} for i in chosen.tolist()]
    present = chosen.unique()  # only the pairs some image was given
    slot = torch.full((len(pairs),), -1, dtype=torch.long)
    slot[present] = torch.arange(len(present))
    for attribute, values in candidates.items():
        # with the pair fixed, only the phrase of this attribute differs between the prompts
        texts = [t.format(PHRASES[attribute][v], colour=pairs[p][0], shape=pairs[p][1])
                 for p in present.tolist() for v in values for t in prompts[attribute]]
        embedded = encode_texts(model, tokenizer, texts).view(len(present) * len(values), len(prompts[attribute]), -1)
        classes = ensemble_prompt_embeddings(embedded).t().reshape(len(present), len(values), -1)  # (P, V, D)
        best = torch.einsum("nd,nvd->nv", features, classes[slot[chosen]]).argmax(dim=1)
        for description, b in zip(descriptions, best.tolist()):
            description[attribute] = values[b]
    return descriptions


def describe_images(model: CLIP, tokenizer: Tokenizer, images: torch.Tensor,
                    styles: Sequence[str] = ("filled", "outline"), sizes: Sequence[str] = SIZES,
                    positions: Sequence[str] = POSITIONS, pairs: Sequence[tuple[str, str]] | None = None,
                    templates: Mapping[str, Sequence[str]] | None = None,
                    batch_size: int = 512) -> list[dict[str, str]]:
    """Describe each single-object image by its colour, shape, size, style and position.

    Explained in Chapter 5.3. Step 1 is zero-shot classification among the colour-shape
    ``pairs`` (default: all 64) with the ``"pair"`` prompts. Step 2 fills the chosen colour and
    shape into the prompts of each other attribute, e.g. ``"a {} red circle"`` for the size, and
    picks the candidate phrase (``"small"``/``"large"``) whose prompt is most similar to the image.
    Keeping the rest of the prompt fixed means the comparison is about that one attribute only.
    Candidates are named as in :class:`~clip_tutorial.data.ShapeSpec` and said with the first
    word ShapesWorld's captions use (``"outline"`` is said ``"hollow"``).

    Args:
        model: a CLIP trained on ShapesWorld.
        tokenizer: its tokenizer.
        images: normalised images ``(N, 3, H, W)``, e.g. :meth:`ShapesWorld.tensors`.
        styles: the drawing styles to choose among (a subset of ``STYLES``).
        sizes: the sizes to choose among.
        positions: the grid positions to choose among.
        pairs: the (colour, shape) pairs to choose among; ``None`` means all 64.
        templates: prompts to use instead of :data:`ATTRIBUTE_TEMPLATES`, for some keys.
        batch_size: images embedded at a time.

    Returns:
        One dict per image with the keys ``"colour"``, ``"shape"``, ``"size"``, ``"style"`` and
        ``"position"``, ready for :func:`compose_alt_text`.

    Raises:
        TypeError: if ``model`` is not a CLIP or the features are not a tensor.
        ValueError: for an unknown candidate, an empty candidate list, a malformed template, or
            features whose width is not the model's ``embed_dim``.
    """
    return describe_features(model, tokenizer, encode_images(model, images, batch_size=batch_size), styles=styles,
                             sizes=sizes, positions=positions, pairs=pairs, templates=templates)


def compose_alt_text(description: Mapping[str, str]) -> str:
    """One sentence from a description, e.g. ``"A small hollow red circle in the top left."``.

    Explained in Chapter 5.3. ``"colour"`` and ``"shape"`` are required; ``"size"``,
    ``"style"`` and ``"position"`` are said when present.

    Raises:
        TypeError: if ``description`` is not a dict.
        ValueError: if the colour or shape is missing, or a value or key is unknown.
    """
    check_type("description", description, Mapping, "a dict of attributes")
    unknown = sorted(set(description) - set(ATTRIBUTES))
    if unknown:
        raise ValueError(f"description: expected keys among {list(ATTRIBUTES)}, got {unknown}")
    missing = [k for k in ("colour", "shape") if k not in description]
    if missing:
        raise ValueError(f"description: expected at least a colour and a shape, missing {missing}")
    words = [PHRASES["size"][check_choice("size", description["size"], SIZES)]] if "size" in description else []
    if "style" in description:
        words.append(PHRASES["style"][check_choice("style", description["style"], STYLES)])
    words += [check_choice("colour", description["colour"], tuple(COLOURS)),
              check_choice("shape", description["shape"], SHAPES)]
    if "position" in description:
        words.append(PHRASES["position"][check_choice("position", description["position"], POSITIONS)])
    article = "An" if words[0][0] in "aeiou" else "A"
    return " ".join([article, *words]) + "."


def _truth(item: object, i: int) -> dict[str, str]:
    if isinstance(item, ShapeSpec):
        return {k: getattr(item, k) for k in ATTRIBUTES}
    if isinstance(item, Sequence) and len(item) == 1 and isinstance(item[0], ShapeSpec):  # ShapesWorld.attributes
        return {k: getattr(item[0], k) for k in ATTRIBUTES}
    if isinstance(item, Mapping):
        return dict(item)
    raise TypeError(f"truth: expected ShapeSpec, [ShapeSpec] or dict entries, got {type(item).__name__} at index {i}")


def attribute_accuracy(descriptions: Sequence[Mapping[str, str]], truth: Sequence[object],
                       skip_missing: bool = False) -> dict[str, float]:
    """Per-attribute accuracy of descriptions, and the fraction that are right on every attribute.

    Explained in Chapter 5.3.

    Args:
        descriptions: one dict per image (from :func:`describe_images`, or ``parse_query(caption).mentioned()``).
        truth: per image, its object: a :class:`~clip_tutorial.data.ShapeSpec`, a one-object
            list such as an entry of :attr:`ShapesWorld.attributes`, or a dict of attributes.
        skip_missing: when ``False`` an attribute the description does not mention counts as
            wrong (an alt text that leaves it out does not convey it); when ``True`` each
            attribute's accuracy is over the descriptions that mention it (NaN if none does).

    Returns:
        ``{"size": ..., "style": ..., "colour": ..., "shape": ..., "position": ..., "all": ...}``;
        ``"all"`` counts a description right when every attribute is present and correct.

    Raises:
        ValueError: if the two lists differ in length or are empty.
        TypeError: if a truth entry is of an unsupported kind.
    """
    if isinstance(descriptions, Mapping) or not isinstance(descriptions, Sequence) or len(descriptions) == 0:
        raise ValueError(f"descriptions: expected a non-empty list of dicts, got {type(descriptions).__name__}")
    if not isinstance(truth, Sequence) or len(truth) != len(descriptions):
        raise ValueError(f"truth: expected one entry per description ({len(descriptions)}), "
                         f"got {len(truth) if isinstance(truth, Sequence) else type(truth).__name__}")
    truths = [_truth(t, i) for i, t in enumerate(truth)]
    result: dict[str, float] = {}
    for attribute in ATTRIBUTES:
        pairs = [(d.get(attribute), t[attribute]) for d, t in zip(descriptions, truths)
                 if not skip_missing or attribute in d]
        result[attribute] = sum(p == t for p, t in pairs) / len(pairs) if pairs else float("nan")
    result["all"] = sum(all(d.get(a) == t[a] for a in ATTRIBUTES) for d, t in zip(descriptions, truths)) / len(truths)
    return result
