"""Image-caption pairs from real data (a folder, a CSV or a Hugging Face dataset), ready for ``train_clip``.

The same pipeline as ShapesWorld: images become normalised ``(N, 3, R, R)`` tensors through
CLIP's preprocessing (:func:`clip_tutorial.data.preprocess.preprocess`: resize the shorter side,
centre crop, normalise) or, for training, through the random resized crop of
:mod:`clip_tutorial.data.augment`; captions become token ids through any package tokenizer.
Images are read lazily, one at a time, so only the captions and the image references are kept.

Explained in Chapter 3.1.
"""
from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from clip_tutorial.core.checks import check_callable, check_choice, check_positive_int, check_type

from . import preprocess as _pre
from .augment import RandomResizedCrop
from .shapesworld import normalize_images

__all__ = ["IMAGE_EXTENSIONS", "ImageSource", "ImageCaptionPairs", "CaptionCollator"]

#: File name endings :meth:`ImageCaptionPairs.from_folder` treats as images.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: One image reference: a file path, a PIL image, or a ``{"bytes": ..., "path": ...}`` dict as Hugging Face stores them.
ImageSource = Union[str, os.PathLike, Image.Image, dict]
Tokenizer = Callable[[Sequence[str]], torch.Tensor]


def _describe(source: ImageSource) -> str:
    if isinstance(source, dict):
        return str(source.get("path") or "an image given as bytes")
    return f"a PIL image of size {source.size}" if isinstance(source, Image.Image) else str(source)


def _open(source: ImageSource) -> Image.Image:
    """The RGB PIL image behind ``source``; errors name the file."""
    try:
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, dict) and source.get("bytes") is not None:
            image = Image.open(io.BytesIO(source["bytes"]))
        else:
            image = Image.open(source["path"] if isinstance(source, dict) else source)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"image {_describe(source)}: could not be read as an image ({error})") from None
    return _pre.to_rgb(image)


def _check_caption(caption: object, where: str) -> str:
    check_type(f"caption of {where}", caption, str)
    if not caption.strip():
        raise ValueError(f"caption of {where}: expected a non-empty caption, got {caption!r}")
    return caption.strip()


class CaptionCollator:
    """``collate_fn`` for a ``DataLoader`` over :class:`ImageCaptionPairs`: stack images, tokenize captions.

    Args:
        tokenizer: any package tokenizer (``WordTokenizer``, ``BPETokenizer``): list of str -> LongTensor.

    Called on a list of ``(image, caption)`` items it returns ``(images, tokens)``: ``(B, 3, R, R)``
    float32 and ``(B, context_length)`` int64.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = check_callable("tokenizer", tokenizer, "a callable tokenizer")

    def __call__(self, batch: Sequence[tuple[torch.Tensor, str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack the images and tokenize the captions of ``batch``."""
        images, captions = zip(*batch)
        return torch.stack(images), self.tokenizer(list(captions))


class ImageCaptionPairs(torch.utils.data.Dataset):
    """Image-caption pairs from real data, preprocessed as CLIP does.

    Build one with :meth:`from_folder`, :meth:`from_csv` or :meth:`from_hf`, or directly from
    matching lists. An image with several captions appears once per caption.

    Args:
        images: one :data:`ImageSource` per pair (paths are opened lazily).
        captions: one caption per pair, in the same order.
        resolution: side ``R`` of the square model input.
        augment: ``None`` for CLIP's deterministic preprocessing (resize, centre crop), or a
            :class:`~clip_tutorial.data.augment.RandomResizedCrop` (whose ``size`` must equal
            ``resolution``) applied by ``__getitem__`` for training.

    Attributes:
        images: the image sources.
        captions: the captions, stripped of surrounding white space.

    Raises:
        ValueError: for no pairs, lists of different lengths, an empty caption or a ``resolution`` below 1.
        TypeError: for a caption that is not a str, a ``resolution`` that is not an int or a bad ``augment``.
    """

    def __init__(self, images: Sequence[ImageSource], captions: Sequence[str], resolution: int = 224,
                 augment: RandomResizedCrop | None = None) -> None:
        self.images, captions = list(images), list(captions)
        if len(self.images) != len(captions):
            raise ValueError(f"captions: expected one caption per image ({len(self.images)}), got {len(captions)}")
        if not self.images:
            raise ValueError("images: expected at least one image-caption pair, got an empty dataset")
        self.captions = [_check_caption(c, _describe(s)) for s, c in zip(self.images, captions)]
        self.resolution = check_positive_int("resolution", resolution, expected="a positive int (e.g. 224)")
        if augment is not None:
            check_type("augment", augment, RandomResizedCrop, expected="a RandomResizedCrop or None")
        if augment is not None and augment.size != resolution:
            raise ValueError(f"augment: expected a crop of size resolution={resolution}, got size {augment.size}")
        self.augment = augment

    # ----------------------------------------------------------------------------- constructors
    @classmethod
    def from_folder(cls, path: str | os.PathLike, **kwargs: Any) -> "ImageCaptionPairs":
        """Pairs from a folder: each image with a same-named ``.txt`` beside it and/or rows of ``captions.csv``.

        A ``.txt`` file holds one caption per non-empty line. ``captions.csv`` (if present) has
        columns ``image`` (a path relative to the folder) and ``caption``. Images are the files
        ending in :data:`IMAGE_EXTENSIONS`, in sorted order; the CSV's rows come first.

        Args:
            path: the folder.
            **kwargs: passed to the constructor (``resolution``, ``augment``).

        Raises:
            ValueError: if the folder does not exist, an image has no caption, or nothing is found.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise ValueError(f"path: expected an existing folder of images and captions, got {str(path)!r}")
        images: list[ImageSource] = []
        captions: list[str] = []
        listed: set[Path] = set()
        if (folder / "captions.csv").exists():
            images, captions = _read_csv(folder / "captions.csv", "image", "caption")
            listed = {Path(p).resolve() for p in images}
        for file in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
            text = file.with_suffix(".txt")
            lines = [ln for ln in text.read_text(encoding="utf-8").splitlines() if ln.strip()] if text.exists() else []
            if not lines and file.resolve() not in listed:
                raise ValueError(f"path: image {file} has no caption: expected {text.name} beside it "
                                 f"or a row in {folder / 'captions.csv'}")
            images.extend([str(file)] * len(lines))
            captions.extend(lines)
        if not images:
            raise ValueError(f"path: found no images ({', '.join(IMAGE_EXTENSIONS)}) with captions in {folder}")
        return cls(images, captions, **kwargs)

    @classmethod
    def from_csv(cls, path: str | os.PathLike, image_column: str = "image", caption_column: str = "caption",
                 **kwargs: Any) -> "ImageCaptionPairs":
        """Pairs from a CSV file with one row per pair; image paths are relative to the CSV's folder.

        Raises:
            ValueError: if the file or a column is missing (the message lists the columns there
                are), a listed image file does not exist, or the CSV has no rows.
        """
        images, captions = _read_csv(Path(path), image_column, caption_column)
        return cls(images, captions, **kwargs)

    @classmethod
    def from_hf(cls, dataset: Any, image_column: str = "image", caption_column: str = "caption",
                captions: str = "first", **kwargs: Any) -> "ImageCaptionPairs":
        """Pairs from a Hugging Face ``datasets.Dataset``.

        The image column may hold PIL images (the ``Image`` feature), ``{"bytes", "path"}`` dicts
        or paths. The caption column may hold one caption per row or, as in COCO-captions or
        Flickr-style data, a list of captions per image.

        Args:
            dataset: the dataset (rows are read lazily; images are decoded only when used).
            image_column: name of the image column.
            caption_column: name of the caption column.
            captions: for list-valued captions, ``"first"`` keeps each image's first caption and
                ``"all"`` makes one pair per caption.
            **kwargs: passed to the constructor.

        Raises:
            ValueError: for a missing column (the message lists the columns there are), an empty
                dataset, an image with an empty caption list or a bad ``captions``.
        """
        names = list(getattr(dataset, "column_names", None) or [])
        if not names:
            raise TypeError(f"dataset: expected a datasets.Dataset with columns, got {type(dataset).__name__}")
        for arg, column in (("image_column", image_column), ("caption_column", caption_column)):
            check_choice(arg, column, names, expected=f"one of the dataset's columns {names}")
        check_choice("captions", captions, ("first", "all"), expected="'first' or 'all'")
        images: list[ImageSource] = []
        texts: list[str] = []
        for row, value in enumerate(dataset[caption_column]):
            values = list(value) if isinstance(value, (list, tuple)) else [value]
            if not values:
                raise ValueError(f"{caption_column}: row {row} has an empty list of captions")
            values = values[:1] if captions == "first" else values
            images.extend([_HFImage(dataset, image_column, row)] * len(values))
            texts.extend(values)
        if not images:
            raise ValueError("dataset: expected at least one row, got an empty dataset")
        return cls(images, texts, **kwargs)

    # ----------------------------------------------------------------------------- access
    def __len__(self) -> int:
        """Number of image-caption pairs."""
        return len(self.images)

    def load_image(self, index: int) -> Image.Image:
        """The RGB PIL image of pair ``index``, as stored (no resizing)."""
        source = self.images[index]
        return source.load() if isinstance(source, _HFImage) else _open(source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        """``(image, caption)``: a normalised float32 ``3 x R x R`` tensor and its caption.

        With ``augment`` set, the image is a fresh random resized crop on every call.
        """
        image = self.load_image(index)
        if self.augment is not None:
            image = self.augment(image)
        return _pre.preprocess(image, self.resolution)[0], self.captions[index]

    def pixels(self) -> torch.Tensor:
        """Every image resized and centre-cropped as CLIP does, as uint8 ``(N, 3, R, R)`` (no augmentation).

        Like ``ShapesWorld.images``: feed batches to :func:`~clip_tutorial.data.augment.random_resized_crop`
        and then :func:`~clip_tutorial.data.normalize_images` to augment during training.
        """
        out = torch.empty(len(self), 3, self.resolution, self.resolution, dtype=torch.uint8)
        for i in range(len(self)):
            square = _pre.center_crop(_pre.resize_shortest_side(self.load_image(i), self.resolution), self.resolution)
            out[i] = torch.from_numpy(np.asarray(square, dtype=np.uint8).copy()).permute(2, 0, 1)
        return out

    def tensors(self) -> torch.Tensor:
        """Every image preprocessed as CLIP does: normalised float32 ``(N, 3, R, R)``."""
        return normalize_images(self.pixels())

    def tokens(self, tokenizer: Tokenizer) -> torch.Tensor:
        """The captions tokenized by ``tokenizer``: a LongTensor ``(N, context_length)``."""
        return check_callable("tokenizer", tokenizer, "a callable tokenizer")(self.captions)

    def training_tensors(self, tokenizer: Tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, tokens)`` for :func:`clip_tutorial.train.train_clip`, row ``i`` of both from pair ``i``."""
        return self.tensors(), self.tokens(tokenizer)

    def dataloader(self, tokenizer: Tokenizer, batch_size: int = 32, shuffle: bool = True,
                   **kwargs: Any) -> torch.utils.data.DataLoader:
        """A ``DataLoader`` yielding ``(images, tokens)`` batches (see :class:`CaptionCollator`)."""
        return torch.utils.data.DataLoader(self, batch_size=batch_size, shuffle=shuffle,
                                           collate_fn=CaptionCollator(tokenizer), **kwargs)

    def __repr__(self) -> str:
        return f"ImageCaptionPairs(n={len(self)}, resolution={self.resolution}, augment={self.augment!r})"


class _HFImage:
    """A lazy reference to one image of a Hugging Face dataset."""

    def __init__(self, dataset: Any, column: str, row: int) -> None:
        self.dataset, self.column, self.row = dataset, column, row

    def load(self) -> Image.Image:
        value = check_type(f"{self.column}: row {self.row}", self.dataset[self.row][self.column],
                           (Image.Image, dict, str, os.PathLike), expected="an image (PIL, bytes or a path)")
        try:
            return _open(value)
        except ValueError as error:
            raise ValueError(f"{self.column}: row {self.row}: {error}") from None

    def __repr__(self) -> str:
        return f"row {self.row} of column {self.column!r}"


def _read_csv(path: Path, image_column: str, caption_column: str) -> tuple[list[ImageSource], list[str]]:
    if not path.is_file():
        raise ValueError(f"path: expected an existing CSV file, got {str(path)!r}")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        for arg, column in (("image_column", image_column), ("caption_column", caption_column)):
            check_choice(arg, column, columns, expected=f"one of the columns of {path} {columns}")
        rows = list(reader)
    if not rows:
        raise ValueError(f"path: {path} has a header but no rows: expected at least one image-caption pair")
    images: list[ImageSource] = []
    for line, row in enumerate(rows, start=2):
        file = path.parent / (row[image_column] or "")
        if not row[image_column] or not file.is_file():
            raise ValueError(f"{image_column}: line {line} of {path} names {row[image_column]!r}, "
                             f"but {file} is not a file")
        images.append(str(file))
    return images, [row[caption_column] for row in rows]
