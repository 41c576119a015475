"""Tests of clip_tutorial.weights.checkpoints: safetensors round trips and every way a checkpoint can be bad."""
from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest
import torch

from clip_tutorial.core import storage
from clip_tutorial.weights.checkpoints import Checkpoint, checkpoint_paths, load_checkpoint, save_checkpoint
from clip_tutorial.model import CLIP, CLIPConfig
from clip_tutorial.text.bpe import OFFICIAL_NUM_MERGES, BPETokenizer, load_merges
from clip_tutorial.text.bpe_trainer import learn_bpe
from clip_tutorial.text.tokenizer import WordTokenizer

SMALL = CLIPConfig(
    embed_dim=16, image_resolution=16, vision_layers=1, vision_width=32, vision_patch_size=8,
    context_length=8, vocab_size=40, transformer_width=32, transformer_heads=2, transformer_layers=1,
)


def _model(seed: int = 0, config: CLIPConfig = SMALL) -> CLIP:
    torch.manual_seed(seed)
    model = CLIP(config)
    with torch.no_grad():  # move every parameter away from its initial value
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


def _inputs(seed: int, config: CLIPConfig = SMALL) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(5, 3, config.image_resolution, config.image_resolution, generator=g)
    text = torch.randint(1, config.vocab_size, (5, config.context_length), generator=g)
    return images, text


def _rewrite_weights(base, tensors: dict[str, torch.Tensor]) -> None:
    """Replace the weights file and fix the recorded sha256, as a careless edit would."""
    from safetensors.torch import save_file

    weights, desc = checkpoint_paths(base)
    save_file(tensors, str(weights))
    data = json.loads(desc.read_text())
    data["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    desc.write_text(json.dumps(data))


@pytest.fixture
def saved(tmp_path):
    model = _model(1)
    tokenizer = WordTokenizer(["a", "red", "blue", "circle", "square"], context_length=8)
    path = save_checkpoint(model, tmp_path / "run" / "tiny", tokenizer=tokenizer, metadata={"steps": 12, "acc": 0.5})
    return model, tokenizer, path


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_trip_is_bit_identical(saved, seed):
    model, _, path = saved
    loaded = load_checkpoint(path)
    assert isinstance(loaded, Checkpoint) and isinstance(loaded.model, CLIP)
    assert not loaded.model.training
    images, text = _inputs(seed)
    with torch.no_grad():
        assert torch.equal(loaded.model.encode_image(images), model.encode_image(images))
        assert torch.equal(loaded.model.encode_text(text), model.encode_text(text))
        assert torch.equal(loaded.model(images, text)[0], model(images, text)[0])
    for (name, a), (name_b, b) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        assert name == name_b and torch.equal(a, b)


def test_tokenizer_metadata_and_config_round_trip(saved):
    _, tokenizer, path = saved
    loaded = load_checkpoint(path)
    assert loaded.config == SMALL
    assert loaded.metadata == {"steps": 12, "acc": 0.5}
    assert loaded.tokenizer.itos == tokenizer.itos
    assert loaded.tokenizer.context_length == tokenizer.context_length
    texts = ["a red circle", "blue square", "unknown words here"]
    assert torch.equal(loaded.tokenizer(texts), tokenizer(texts))


def test_numpy_and_tensor_metadata_become_plain_numbers(tmp_path):
    metadata = {"acc": np.float32(0.5), "steps": np.int64(7), "scale": torch.tensor(2.5), "curve": np.arange(3)}
    path = save_checkpoint(_model(2), tmp_path / "m", metadata=metadata)
    assert load_checkpoint(path).metadata == {"acc": 0.5, "steps": 7, "scale": 2.5, "curve": [0, 1, 2]}


def test_without_tokenizer_or_metadata(tmp_path):
    save_checkpoint(_model(2), tmp_path / "plain.safetensors")
    loaded = load_checkpoint(tmp_path / "plain")
    assert loaded.tokenizer is None and loaded.metadata == {}


@pytest.mark.parametrize("name", ["tiny", "tiny.safetensors", "tiny.json"])
def test_path_with_or_without_suffix(tmp_path, name):
    path = save_checkpoint(_model(3), tmp_path / name)
    assert path == tmp_path / "tiny.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json", "tiny.safetensors"]  # no temporaries left
    for spelling in ("tiny", "tiny.safetensors", "tiny.json"):
        load_checkpoint(tmp_path / spelling)
    load_checkpoint(str(tmp_path / "tiny"))


def test_files_hold_no_pickle(saved):
    _, _, path = saved
    raw = path.read_bytes()
    assert not raw.startswith(b"\x80") and not raw.startswith(b"PK")  # pickle protocol / torch zip
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])
    assert header["__metadata__"]["format"] == "pt"
    assert {k for k in header if k != "__metadata__"} == set(_model().state_dict())
    desc = json.loads(path.with_suffix(".json").read_text())
    assert desc["format"] == "clip_tutorial-checkpoint" and desc["version"] == 1
    assert desc["config"] == SMALL.to_dict()
    assert desc["sha256"] == hashlib.sha256(raw).hexdigest()


def test_corrupted_bytes_are_detected(saved):
    _, _, path = saved
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"is corrupted \(sha256 mismatch") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_truncated_file_is_detected(saved):
    _, _, path = saved
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupted") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_garbage_with_matching_sha_is_detected(saved):
    _, _, path = saved
    path.write_bytes(b"not a safetensors file at all")
    desc = path.with_suffix(".json")
    data = json.loads(desc.read_text())
    data["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    desc.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="corrupted: expected safetensors") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_corrupted_json_is_detected(saved):
    _, _, path = saved
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(ValueError, match="expected JSON"):
        load_checkpoint(path)


@pytest.mark.parametrize("field,value,message", [("format", "other", "expected format"), ("version", 7, "expected version 1")])
def test_wrong_format_or_version(saved, field, value, message):
    _, _, path = saved
    desc = path.with_suffix(".json")
    data = json.loads(desc.read_text())
    data[field] = value
    desc.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path)


@pytest.mark.parametrize("suffix,label", [(".json", "JSON description"), (".safetensors", "safetensors file")])
def test_missing_file_is_named(saved, suffix, label):
    _, _, path = saved
    missing = path.with_suffix(suffix)
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=label) as err:
        load_checkpoint(path)
    assert str(missing) in str(err.value)


def test_mismatching_config_lists_fields(saved):
    _, _, path = saved
    assert load_checkpoint(path, config=SMALL).config == SMALL
    other = SMALL.replace(vision_layers=3, embed_dim=32)
    with pytest.raises(ValueError, match="config") as err:
        load_checkpoint(path, config=other)
    text = str(err.value)
    assert "vision_layers (given 3, checkpoint 1)" in text and "embed_dim (given 32, checkpoint 16)" in text
    assert "transformer_width" not in text
    with pytest.raises(TypeError, match="config: expected a CLIPConfig"):
        load_checkpoint(path, config=SMALL.to_dict())


def test_missing_and_unexpected_keys_are_listed(saved):
    model, _, path = saved
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k != "ln_final.weight"}
    tensors["extra.weight"] = torch.zeros(2)
    _rewrite_weights(path, tensors)
    with pytest.raises(ValueError, match=r"1 missing keys: ln_final.weight; 1 unexpected keys: extra.weight"):
        load_checkpoint(path)


def test_wrong_shapes_are_listed(saved):
    model, _, path = saved
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    tensors["text_projection"] = torch.zeros(32, 8)
    _rewrite_weights(path, tensors)
    with pytest.raises(ValueError, match=r"1 shape mismatches: text_projection \(expected \(32, 16\), got \(32, 8\)\)"):
        load_checkpoint(path)


def test_half_precision_round_trip(tmp_path):
    model = _model(4).half()
    path = save_checkpoint(model, tmp_path / "half")
    loaded = load_checkpoint(path).model
    assert loaded.dtype == torch.float16
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_bad_arguments(tmp_path):
    model = _model()
    with pytest.raises(TypeError, match="model: expected a clip_tutorial CLIP"):
        save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "x")
    with pytest.raises(TypeError, match="tokenizer: expected a WordTokenizer"):
        save_checkpoint(model, tmp_path / "x", tokenizer="a b c")
    with pytest.raises(TypeError, match="metadata: expected a dict"):
        save_checkpoint(model, tmp_path / "x", metadata=[1, 2])
    with pytest.raises(ValueError, match="metadata: expected a JSON-serialisable"):
        save_checkpoint(model, tmp_path / "x", metadata={"t": object()})
    with pytest.raises(ValueError, match="tokenizer: expected at most model.config.vocab_size=40"):
        save_checkpoint(model, tmp_path / "x", tokenizer=WordTokenizer([f"w{i}" for i in range(60)]))
    with pytest.raises(TypeError, match="path: expected a str or a pathlib.Path"):
        save_checkpoint(model, 42)
    with pytest.raises(ValueError, match="map_location: expected a device"):
        load_checkpoint(save_checkpoint(model, tmp_path / "y"), map_location="toaster")
    assert not (tmp_path / "x.safetensors").exists()


def test_unwritable_folder_gives_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file, not a folder")
    with pytest.raises(PermissionError, match="cannot write the checkpoint to folder") as err:
        save_checkpoint(_model(), blocker / "tiny")
    assert str(blocker) in str(err.value)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(storage, "save_file", refuse)
    with pytest.raises(PermissionError, match="Permission denied"):
        save_checkpoint(_model(), tmp_path / "ok" / "tiny")
    assert list((tmp_path / "ok").iterdir()) == []


BPE_TEXTS = ["a photo of a red circle", "Ünïcödé & emoji 🙂 text", "a hollow blue hexagon, top-left!", "x" * 60]


@pytest.fixture(scope="module")
def official_bpe():
    return BPETokenizer(context_length=20)


def test_official_bpe_tokenizer_is_stored_by_its_settings(tmp_path, official_bpe):
    model = _model(5, SMALL.replace(vocab_size=official_bpe.vocab_size, context_length=20))
    path = save_checkpoint(model, tmp_path / "bpe", tokenizer=official_bpe)
    stored = json.loads(path.with_suffix(".json").read_text())["tokenizer"]
    assert stored == {"type": "bpe", "context_length": 20, "num_merges": OFFICIAL_NUM_MERGES}
    assert path.with_suffix(".json").stat().st_size < 5_000, "the vocabulary is the packaged asset, not copied"
    loaded = load_checkpoint(path).tokenizer
    assert isinstance(loaded, BPETokenizer) and loaded.context_length == 20
    assert loaded.itos == official_bpe.itos
    assert torch.equal(loaded(BPE_TEXTS), official_bpe(BPE_TEXTS))


def test_bpe_tokenizer_with_a_prefix_of_the_official_merges(tmp_path):
    tokenizer = BPETokenizer.from_merges(load_merges(num_merges=300), context_length=12)
    path = save_checkpoint(_model(6, SMALL.replace(vocab_size=tokenizer.vocab_size, context_length=12)),
                           tmp_path / "prefix", tokenizer=tokenizer)
    assert json.loads(path.with_suffix(".json").read_text())["tokenizer"]["num_merges"] == 300
    loaded = load_checkpoint(path).tokenizer
    assert loaded.vocab_size == 2 * 256 + 300 + 2
    assert torch.equal(loaded(BPE_TEXTS), tokenizer(BPE_TEXTS))


def test_bpe_tokenizer_with_learned_merges_stores_them(tmp_path):
    merges = learn_bpe(["a red circle", "a blue square", "a red square", "two red circles"] * 5, num_merges=30).merges
    tokenizer = BPETokenizer.from_merges(merges, context_length=10)
    path = save_checkpoint(_model(7, SMALL.replace(vocab_size=tokenizer.vocab_size, context_length=10)),
                           tmp_path / "learned", tokenizer=tokenizer)
    stored = json.loads(path.with_suffix(".json").read_text())["tokenizer"]
    assert stored["type"] == "bpe" and "num_merges" not in stored and len(stored["merges"]) == len(merges)
    loaded = load_checkpoint(path).tokenizer
    assert loaded.merges == tokenizer.merges
    assert torch.equal(loaded(BPE_TEXTS), tokenizer(BPE_TEXTS))


def test_word_tokenizer_checkpoints_without_a_type_tag_still_load(saved):
    """Checkpoints written before BPE support stored the word list alone; they stay loadable."""
    _, tokenizer, path = saved
    desc = path.with_suffix(".json")
    data = json.loads(desc.read_text())
    assert data["tokenizer"].pop("type") == "word"
    desc.write_text(json.dumps(data))
    loaded = load_checkpoint(path).tokenizer
    assert isinstance(loaded, WordTokenizer) and loaded.itos == tokenizer.itos


@pytest.mark.parametrize("tokenizer,message", [
    ({"type": "sentencepiece"}, "expected a tokenizer of type 'word' or 'bpe', got 'sentencepiece'"),
    ({"type": "bpe", "context_length": 8}, "expected a valid bpe tokenizer description"),
    ({"type": "bpe", "context_length": 8, "merges": [["a"]]}, "expected a valid bpe tokenizer description"),
    ({"type": "word", "context_length": 8}, "expected a valid word tokenizer description"),
])
def test_bad_tokenizer_descriptions_are_reported(saved, tokenizer, message):
    _, _, path = saved
    desc = path.with_suffix(".json")
    data = json.loads(desc.read_text())
    data["tokenizer"] = tokenizer
    desc.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as err:
        load_checkpoint(path)
    assert str(desc) in str(err.value)
