"""Tests of ImageCaptionPairs: folders, CSVs and Hugging Face datasets stay paired, preprocess, tokenize, fail clearly."""
from __future__ import annotations

import csv

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from clip_tutorial.text.bpe import BPETokenizer
from clip_tutorial.data import normalize_images
from clip_tutorial.data.augment import RandomResizedCrop
from clip_tutorial.data.pairs import CaptionCollator, ImageCaptionPairs
from clip_tutorial.data.preprocess import preprocess
from clip_tutorial.text.tokenizer import WordTokenizer

WORDS = ["a", "photo", "of", "number"] + [str(i) for i in range(12)]


def _colour(i: int) -> tuple[int, int, int]:
    """A colour that encodes the index ``i``: the red channel is 20 * i."""
    return (20 * i, 100, 200)


def _photo(i: int, size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new("RGB", size, _colour(i))


def _index_of(image: torch.Tensor) -> int:
    """Decode the index from a normalised image tensor (the inverse of ``_colour``)."""
    red = normalize_images(torch.tensor(_colour(0), dtype=torch.uint8).view(1, 3, 1, 1))[0, 0, 0, 0]
    step = normalize_images(torch.tensor(_colour(1), dtype=torch.uint8).view(1, 3, 1, 1))[0, 0, 0, 0] - red
    return int(round(((image[0].mean() - red) / step).item()))


def _assert_paired(pairs: ImageCaptionPairs) -> None:
    images = pairs.tensors()
    assert images.shape == (len(pairs), 3, pairs.resolution, pairs.resolution) and images.dtype == torch.float32
    for i, caption in enumerate(pairs.captions):
        assert caption.split()[-1] == str(_index_of(images[i])), f"pair {i} lost its caption: {caption!r}"
        image, text = pairs[i]
        assert text == caption and torch.equal(image, images[i])


def test_from_folder_with_txt_captions_keeps_pairs(tmp_path):
    for i in (3, 0, 7):  # names sorted differently from the indices
        _photo(i).save(tmp_path / f"img_{9 - i}.png")
        (tmp_path / f"img_{9 - i}.txt").write_text(f"a photo of number {i}\n")
    pairs = ImageCaptionPairs.from_folder(tmp_path, resolution=16)
    assert len(pairs) == 3 and sorted(pairs.captions) == sorted(f"a photo of number {i}" for i in (3, 0, 7))
    _assert_paired(pairs)


def test_from_folder_with_captions_csv_and_multi_line_txt(tmp_path):
    _photo(1).save(tmp_path / "one.jpg", quality=100)
    _photo(2).save(tmp_path / "two.png")
    (tmp_path / "two.txt").write_text("number 2\n\nphoto of number 2\n")
    with open(tmp_path / "captions.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["image", "caption"], ["one.jpg", "a photo of number 1"]])
    pairs = ImageCaptionPairs.from_folder(tmp_path, resolution=8)
    assert pairs.captions == ["a photo of number 1", "number 2", "photo of number 2"]
    _assert_paired(pairs)


def test_from_csv_with_relative_paths_and_custom_columns(tmp_path):
    (tmp_path / "imgs").mkdir()
    rows = [["file", "text", "extra"]]
    for i in range(5):
        _photo(i, (24 + i, 50)).save(tmp_path / "imgs" / f"{i}.png")
        rows.append([f"imgs/{i}.png", f"a photo of number {i}", "x"])
    with open(tmp_path / "data.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    pairs = ImageCaptionPairs.from_csv(tmp_path / "data.csv", image_column="file", caption_column="text", resolution=12)
    assert len(pairs) == 5
    _assert_paired(pairs)


def test_from_hf_first_caption_or_all_captions():
    data = datasets.Dataset.from_dict({
        "image": [_photo(i) for i in range(4)],
        "sentences": [[f"a photo of number {i}", f"photo of number {i}"] for i in range(4)],
    }).cast_column("image", datasets.Image())
    first = ImageCaptionPairs.from_hf(data, caption_column="sentences", resolution=8)
    assert first.captions == [f"a photo of number {i}" for i in range(4)]
    _assert_paired(first)
    every = ImageCaptionPairs.from_hf(data, caption_column="sentences", captions="all", resolution=8)
    assert len(every) == 8 and every.captions[2:4] == ["a photo of number 1", "photo of number 1"]
    _assert_paired(every)


def test_from_hf_single_caption_column():
    data = datasets.Dataset.from_dict({"img": [_photo(i) for i in range(3)],
                                       "caption": [f"number {i}" for i in range(3)]})
    _assert_paired(ImageCaptionPairs.from_hf(data, image_column="img", resolution=8))


def test_preprocessing_is_clips():
    photos = [_photo(0, (64, 48)), Image.fromarray(np.arange(50 * 70 * 3, dtype=np.uint8).reshape(50, 70, 3))]
    pairs = ImageCaptionPairs(photos, ["a", "b"], resolution=32)
    torch.testing.assert_close(pairs.tensors(), preprocess(photos, 32), atol=0, rtol=0)
    assert pairs.pixels().dtype == torch.uint8


def test_training_tensors_and_dataloader_tokenize_with_any_tokenizer():
    pairs = ImageCaptionPairs([_photo(i) for i in range(6)], [f"a photo of number {i}" for i in range(6)],
                              resolution=8)
    words = WordTokenizer(WORDS, context_length=8)
    images, tokens = pairs.training_tensors(words)
    assert images.shape == (6, 3, 8, 8) and torch.equal(tokens, words(pairs.captions)) and tokens.shape == (6, 8)
    assert tokens[3].tolist()[:6] == words(["a photo of number 3"])[0].tolist()[:6]
    bpe = BPETokenizer(context_length=10)
    batches = list(pairs.dataloader(bpe, batch_size=4, shuffle=False))
    assert [b[0].shape for b in batches] == [(4, 3, 8, 8), (2, 3, 8, 8)]
    assert torch.equal(torch.cat([b[1] for b in batches]), bpe(pairs.captions))
    assert torch.equal(torch.cat([b[0] for b in batches]), images)
    collate = CaptionCollator(words)
    x, t = collate([pairs[5], pairs[0]])
    assert torch.equal(x, images[[5, 0]]) and torch.equal(t, tokens[[5, 0]])


def test_augmentation_gives_fresh_crops_of_the_right_size():
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8))
    pairs = ImageCaptionPairs([photo], ["a"], resolution=16, augment=RandomResizedCrop(16, scale=(0.3, 1.0), seed=0))
    first, second = pairs[0][0], pairs[0][0]
    assert first.shape == (3, 16, 16) and not torch.equal(first, second)
    with pytest.raises(ValueError, match="augment: expected a crop of size resolution=32, got size 16"):
        ImageCaptionPairs([photo], ["a"], resolution=32, augment=RandomResizedCrop(16))


def _write_csv(path, rows):
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="path: expected an existing folder"):
        ImageCaptionPairs.from_folder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="found no images"):
        ImageCaptionPairs.from_folder(tmp_path)
    _photo(0).save(tmp_path / "lonely.png")
    with pytest.raises(ValueError, match=r"lonely\.png has no caption: expected lonely\.txt"):
        ImageCaptionPairs.from_folder(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    (tmp_path / "broken.txt").write_text("number 1")
    (tmp_path / "lonely.txt").write_text("number 0")
    pairs = ImageCaptionPairs.from_folder(tmp_path, resolution=8)
    with pytest.raises(ValueError, match=r"broken\.png: could not be read as an image"):
        pairs.tensors()
    csv_path = _write_csv(tmp_path / "a.csv", [["path", "text"], ["lonely.png", "x"]])
    with pytest.raises(ValueError, match=r"image_column: expected one of the columns .*\['path', 'text'\], got 'image'"):
        ImageCaptionPairs.from_csv(csv_path)
    with pytest.raises(ValueError, match=r"caption_column: .*\['path', 'text'\], got 'caption'"):
        ImageCaptionPairs.from_csv(csv_path, image_column="path")
    with pytest.raises(ValueError, match="no rows"):
        ImageCaptionPairs.from_csv(_write_csv(tmp_path / "b.csv", [["image", "caption"]]))
    with pytest.raises(ValueError, match=r"line 2 of .* names 'gone\.png'"):
        ImageCaptionPairs.from_csv(_write_csv(tmp_path / "c.csv", [["image", "caption"], ["gone.png", "x"]]))
    with pytest.raises(ValueError, match="path: expected an existing CSV file"):
        ImageCaptionPairs.from_csv(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="images: expected at least one image-caption pair, got an empty dataset"):
        ImageCaptionPairs([], [])
    with pytest.raises(ValueError, match=r"captions: expected one caption per image \(2\), got 1"):
        ImageCaptionPairs([_photo(0), _photo(1)], ["a"])
    with pytest.raises(ValueError, match="expected a non-empty caption"):
        ImageCaptionPairs([_photo(0)], ["  "])
    with pytest.raises(TypeError, match="expected a str, got int"):
        ImageCaptionPairs([_photo(0)], [3])
    data = datasets.Dataset.from_dict({"image": [_photo(0)], "text": ["a"]})
    with pytest.raises(ValueError, match=r"caption_column: expected one of the dataset's columns \['image', 'text'\]"):
        ImageCaptionPairs.from_hf(data)
    with pytest.raises(ValueError, match="captions: expected 'first' or 'all'"):
        ImageCaptionPairs.from_hf(data, caption_column="text", captions="random")
    with pytest.raises(ValueError, match="got an empty dataset"):
        ImageCaptionPairs.from_hf(data.select([]), caption_column="text")
    with pytest.raises(TypeError, match="dataset: expected a datasets.Dataset"):
        ImageCaptionPairs.from_hf([1, 2])


def test_unreadable_hf_image_names_the_row():
    data = datasets.Dataset.from_dict({"image": [{"bytes": b"garbage", "path": "bad.jpg"}], "caption": ["a"]})
    pairs = ImageCaptionPairs.from_hf(data, resolution=8)
    with pytest.raises(ValueError, match=r"row 0: image bad\.jpg: could not be read as an image"):
        pairs[0]
