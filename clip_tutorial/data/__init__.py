"""ShapesWorld: a procedural image–caption dataset of coloured shapes, drawn with PIL.

Explained in Chapter 1 (what the data looks like and the probes of CLIP's limitations) and
Chapter 3.1 (how the pairs are generated). Each object has a shape (``SHAPES``), a colour
(``COLOURS``, name to RGB), a size (``SIZES``), a position on a 3x3 grid (``POSITIONS``) and a
drawing style (``STYLES``). Captions are lower-case words separated by spaces; the first of
``TEMPLATES``, ``"a photo of a {colour} {shape}"``, is the zero-shot prompt. Images are
normalised with CLIP's ``MEAN`` and ``STD``.
"""
from .render import (BACKGROUND, COLOURS, POSITIONS, RELATIONS, SHAPES, SIZES, STYLES, ShapeSpec, count_scene,
                     relation_scene, render_scene)
from .shapesworld import (MEAN, NUMBER_WORDS, SHAPE_SYNONYMS, STD, TEMPLATES, ShapesWorld, class_names,
                          count_caption, heldout_combinations, normalize_images, plural, relation_caption, vocabulary)

__all__ = [
    "BACKGROUND", "COLOURS", "MEAN", "NUMBER_WORDS", "POSITIONS", "RELATIONS", "SHAPES", "SHAPE_SYNONYMS", "SIZES",
    "STD", "STYLES", "TEMPLATES", "ShapeSpec", "ShapesWorld", "class_names", "count_caption", "count_scene",
    "heldout_combinations", "normalize_images", "plural", "relation_caption", "relation_scene", "render_scene", "vocabulary",
]
from .augment import RandomResizedCrop, random_resized_crop, random_resized_crop_pil, sample_crop_boxes
from .pairs import CaptionCollator, ImageCaptionPairs

__all__ += ["CaptionCollator", "ImageCaptionPairs", "RandomResizedCrop", "random_resized_crop",
            "random_resized_crop_pil", "sample_crop_boxes"]
