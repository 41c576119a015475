"""``weights.loader.load``: every kind of source it accepts, checked against independent references, and every refusal.

Nothing is downloaded: the official name is served from a ``file://`` URL to an archive written here,
the open_clip reference is open_clip's own ``CLIP`` loaded from the installed wheel (``reference_impl``),
and the Hugging Face models are ``transformers.CLIPModel`` with random weights, saved with
``save_pretrained``. Outputs are compared in float32 to <= 1e-5.
"""
from __future__ import annotations

import json
import os
import pickle
import warnings
import zipfile

import numpy as np
import pytest
import torch
from conftest import make_tiny_clip
from test_architecture import HEAD32, _logit_error, _open_clip_model
from test_convert import _perturb_
from test_pretrained import _archive_with_pickle, _Evil, sha256, traced_clip

from clip_tutorial.data import ShapesWorld
from clip_tutorial.model import CLIP, CLIPConfig, get_config
from clip_tutorial.text.bpe import BPETokenizer
from clip_tutorial.text.tokenizer import WordTokenizer
from clip_tutorial.weights import LoadedCLIP, load
from clip_tutorial.weights.checkpoints import checkpoint_paths, save_checkpoint
from clip_tutorial.weights.hf import hf_config
from clip_tutorial.weights.pretrained import PRETRAINED, PretrainedSource, load_pretrained
from clip_tutorial.weights.torchscript import UnsafeArchiveError

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

# open_clip's ViT-B-32 text tower (CLIP's 49,408 BPE ids, 77 tokens) under a small image tower
# whose heads are 32 wide: a model that reads CLIP's tokens.
BPE_HEAD32 = {**HEAD32, "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}
# A Hugging Face CLIP whose heads are 32 wide in both towers (OpenAI's rule would give 2 and 1).
HF_HEAD32 = CLIPConfig(embed_dim=24, image_resolution=32, vision_layers=2, vision_width=128, vision_patch_size=8,
                       vision_heads=4, context_length=12, vocab_size=50, transformer_width=96, transformer_heads=3,
                       transformer_layers=2, quick_gelu=False)


def _same_state(model: CLIP, expected: CLIP) -> None:
    got = model.state_dict()
    assert sorted(got) == sorted(expected.state_dict())
    for key, value in expected.state_dict().items():
        assert torch.equal(got[key], value), key


def _hf_model(seed: int = 60):
    torch.manual_seed(seed)
    return _perturb_(transformers.CLIPModel(hf_config(HF_HEAD32)))


def _hf_logit_error(hf, model: CLIP, seed: int = 8) -> float:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(3, 3, 32, 32, generator=g)
    text = torch.randint(1, 49, (4, 12), generator=g)
    text[torch.arange(4), torch.tensor([11, 3, 7, 0])] = 49  # the end token, the highest id, where pooling is
    with torch.no_grad():
        expected = hf(input_ids=text, pixel_values=images, attention_mask=torch.ones_like(text)).logits_per_image
        assert expected.abs().max() > 1.0
        return (model(images, text).logits_per_image - expected).abs().max().item()


# ----------------------------------------------------------------------------- accepted sources

def test_official_name_goes_through_load_pretrained(tmp_path, monkeypatch):
    archive = tmp_path / "tiny16.pt"
    served = traced_clip(archive, half=True, seed=3)
    monkeypatch.setitem(PRETRAINED, "tiny", PretrainedSource(archive.as_uri(), sha256(archive), "example/tiny"))
    loaded = load("tiny", cache=tmp_path / "cache")
    assert isinstance(loaded, LoadedCLIP) and (tmp_path / "cache" / "openai" / "tiny16.pt").is_file()
    expected = {k: v.half().float() for k, v in served.state_dict().items()}
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in expected.items())
    assert isinstance(loaded.tokenizer, BPETokenizer) and loaded.preprocess.resolution == 32
    again = load_pretrained("tiny", cache=tmp_path / "cache")
    _same_state(loaded.model, again.model)
    with pytest.raises(ValueError, match="config: expected none for the official model 'tiny'"):
        load("tiny", config="ViT-H-14", cache=tmp_path / "cache")


def test_torchscript_archive_is_read_without_running_it(tmp_path, monkeypatch):
    path = tmp_path / "tiny.pt"
    eager = traced_clip(path, seed=4)
    with pytest.warns(UserWarning, match=rf"{path}: the model embeds 128 token ids.*tokenizer is None"):
        model, tokenizer, preprocess = load(path, config="tiny")  # its 128 ids are not CLIP's BPE tokens
    _same_state(model, eager)
    assert model.config == get_config("tiny") and not model.training
    assert tokenizer is None and preprocess.resolution == 32
    # Without a config the sizes are those of the book's tiny model (its heads are known), but the
    # activation is an assumption, said aloud and naming the file.
    with pytest.warns(UserWarning, match=rf"{path}: state_dict: assumed OpenAI's QuickGELU"):
        with pytest.warns(UserWarning, match="tokenizer is None"):
            assert load(path).model.config == get_config("tiny")
    # One of OpenAI's own files (recognised by its SHA-256) is loaded with its configuration, silently.
    monkeypatch.setitem(PRETRAINED, "tiny", PretrainedSource(path.as_uri(), sha256(path), "example/tiny"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        with pytest.warns(UserWarning, match="tokenizer is None"):
            _same_state(load(path).model, eager)
    marker = tmp_path / "pwned"
    evil = _archive_with_pickle(tmp_path / "evil.pt", pickle.dumps(_Evil(os.system, (f"touch {marker}",)), protocol=2))
    with pytest.raises(UnsafeArchiveError, match=rf"{evil}: refusing to load"):
        load(evil)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["pt", "bin", "safetensors", "training_checkpoint"])
def test_open_clip_state_dict_files(tmp_path, kind):
    from safetensors.torch import save_file

    reference = _open_clip_model(HEAD32, seed=61)
    state = reference.state_dict()
    path = tmp_path / f"open_clip.{'pt' if kind == 'training_checkpoint' else kind}"
    if kind == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif kind == "training_checkpoint":  # open_clip's epoch_N.pt: DistributedDataParallel names, an optimizer
        torch.save({"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in state.items()},
                    "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]}}, path)
    else:
        torch.save(state, path)
    with pytest.warns(UserWarning, match="tokenizer is None"):  # 50 ids: not CLIP's BPE tokenizer
        if kind == "bin":  # the heads stated one by one instead of by the config
            model, tokenizer, preprocess = load(path, vision_head_width=32, transformer_heads=3, quick_gelu=False)
        else:
            model, tokenizer, preprocess = load(path, config=HEAD32)
    assert tokenizer is None and preprocess.resolution == 32
    assert model.config.num_vision_heads == 4 and model.config.transformer_heads == 3
    assert _logit_error(reference, model, seed=9) <= 1e-5


def test_open_clip_file_with_clip_tokens_gets_the_bpe_tokenizer_and_preprocessing(tmp_path):
    from PIL import Image
    from safetensors.torch import save_file

    reference = _open_clip_model(BPE_HEAD32, seed=62)
    path = tmp_path / "bpe.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # everything stated: no assumption to warn of
        model, tokenizer, preprocess = load(path, config=BPE_HEAD32)
    assert isinstance(tokenizer, BPETokenizer) and tokenizer.context_length == 77
    text = tokenizer(["a photo of a red circle", "two dogs"])
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8))
    images = preprocess([photo, photo.convert("L")])
    assert images.shape == (2, 3, 32, 32)
    with torch.no_grad():
        image_features, text_features, scale = reference(images, text)
        expected = scale * image_features @ text_features.t()
        torch.testing.assert_close(model(images, text).logits_per_image, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", ["safetensors", "sharded", "pytorch_model.bin"])
def test_hugging_face_folder(tmp_path, layout):
    hf = _hf_model()
    folder = tmp_path / "hf"
    if layout == "pytorch_model.bin":
        hf.config.save_pretrained(folder)
        torch.save(hf.state_dict(), folder / "pytorch_model.bin")
    else:
        hf.save_pretrained(folder, max_shard_size="200KB" if layout == "sharded" else "5GB")
    assert (folder / "model.safetensors.index.json").is_file() == (layout == "sharded")
    with pytest.warns(UserWarning, match="tokenizer is None"):
        model, _, preprocess = load(folder)
    assert model.config == HF_HEAD32.replace(eot_token_id=None) and preprocess.resolution == 32
    assert _hf_logit_error(hf, model) <= 1e-5


def test_hugging_face_weights_file_needs_its_config(tmp_path):
    hf = _hf_model(seed=63)
    folder = tmp_path / "hf"
    hf.save_pretrained(folder)
    with pytest.raises(ValueError, match=r"model.safetensors: its tensors have Hugging Face's names.*config.json"):
        load(folder / "model.safetensors")
    with pytest.warns(UserWarning, match="tokenizer is None"):
        model = load(folder / "model.safetensors", config=folder / "config.json").model
    assert _hf_logit_error(hf, model) <= 1e-5


def test_open_clip_folder_and_its_preprocessing(tmp_path):
    from safetensors.torch import save_file

    reference = _open_clip_model(HEAD32, seed=64)
    folder = tmp_path / "open_clip"
    folder.mkdir()
    tensors = {k: v.contiguous() for k, v in reference.state_dict().items()}
    save_file(tensors, str(folder / "open_clip_model.safetensors"))
    openai_stats = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": HEAD32, "preprocess_cfg": openai_stats}))
    with pytest.warns(UserWarning, match="tokenizer is None"):
        model = load(folder).model
    assert _logit_error(reference, model, seed=10) <= 1e-5
    imagenet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": HEAD32, "preprocess_cfg": imagenet}))
    with pytest.raises(ValueError, match=r"open_clip_config.json: expected CLIP's image mean .*another normalisation"):
        load(folder)


@pytest.mark.parametrize("name", ["stem", "safetensors", "json"])
def test_our_checkpoint_with_its_word_tokenizer_and_shapesworld_normalisation(tmp_path, name):
    model, tokenizer = make_tiny_clip(seed=5)
    weights = save_checkpoint(model, tmp_path / "run" / "tiny", tokenizer=tokenizer, metadata={"steps": 3})
    source = {"stem": tmp_path / "run" / "tiny", "safetensors": weights, "json": checkpoint_paths(weights)[1]}[name]
    loaded, loaded_tokenizer, preprocess = load(source, device="cpu")
    _same_state(loaded, model)
    assert loaded.config == model.config and isinstance(loaded_tokenizer, WordTokenizer)
    captions = ["a red circle", "a big blue square on the left"]
    assert torch.equal(loaded_tokenizer(captions), tokenizer(captions))
    data = ShapesWorld(4, seed=6, image_size=model.config.image_resolution)
    photos = [img.permute(1, 2, 0).numpy() for img in data.images]  # the rendered uint8 images, channels last
    torch.testing.assert_close(preprocess(photos), data.tensors(), atol=0, rtol=0)
    with pytest.raises(ValueError, match="config: expected the checkpoint's config"):
        load(source, config=model.config.replace(transformer_layers=2))
    with pytest.raises(ValueError, match="stores its own config"):
        load(source, config="ViT-H-14")


# ----------------------------------------------------------------------------- refusals

def test_missing_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'nope.pt'} does not exist"):
        load(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match=r"official model name \['RN50'.*ViT-H/14 does not exist"):
        load("ViT-H/14")
    with pytest.raises(TypeError, match="source: expected a model name or a path, got int"):
        load(3)


def test_folders_without_config_or_weights(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'empty'}: expected a model folder with a config"):
        load(tmp_path / "empty")
    hf_config(HF_HEAD32).save_pretrained(tmp_path / "no_weights")
    with pytest.raises(FileNotFoundError, match=r"no_weights: has config.json but no weights"):
        load(tmp_path / "no_weights")
    (tmp_path / "bad_json").mkdir()
    (tmp_path / "bad_json" / "config.json").write_text("{not json")
    (tmp_path / "bad_json" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"bad_json/config.json does not parse as JSON"):
        load(tmp_path / "bad_json")


def test_truncated_files(tmp_path):
    from safetensors.torch import save_file

    state = _open_clip_model(HEAD32, seed=65).state_dict()
    files = {"w.safetensors": lambda p: save_file({k: v.contiguous() for k, v in state.items()}, str(p)),
             "w.pt": lambda p: torch.save(state, p),
             "archive.pt": lambda p: traced_clip(p, seed=6)}
    for name, write in files.items():
        path = tmp_path / name
        write(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.raises(ValueError, match=rf"{path}.*truncated"):
            load(path, config=HEAD32)
    model, tokenizer = make_tiny_clip(seed=7)
    weights = save_checkpoint(model, tmp_path / "ckpt", tokenizer=tokenizer)
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"ckpt.safetensors.*corrupted"):
        load(weights)


def test_unknown_formats(tmp_path):
    for name, data in (("notes.txt", b"hello"), ("random.bin", bytes(range(256)) * 8), ("w.onnx", b"\x08\x07")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match=rf"{path} is a file that torch.load\(weights_only=True\) refuses"):
            load(path)
    # A zip that is no TorchScript archive and no torch.save file.
    with zipfile.ZipFile(tmp_path / "x.pt", "w") as z:
        z.writestr("readme.txt", "nothing here")
    with pytest.raises(ValueError, match=r"x.pt is a zip that torch.load"):
        load(tmp_path / "x.pt")


def test_state_dict_that_does_not_fit_the_config(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(_open_clip_model(HEAD32, seed=66).state_dict(), path)
    wider = {**HEAD32, "vision_cfg": {**HEAD32["vision_cfg"], "width": 256}}
    with pytest.raises(ValueError, match=rf"{path}: config: expected the sizes.*vision_width \(config 256, tensors"):
        load(path, config=wider)
    with pytest.raises(ValueError, match=rf"{path}: state_dict: the tensors do not fit the model; .*shape mismatches"):
        load(path, config=get_config("tiny"))
    with pytest.raises(ValueError, match=rf"{path}: state_dict: cannot tell the number of attention heads"):
        load(path, quick_gelu=False)
    bad = tmp_path / "broken.pt"
    torch.save({k: v for k, v in torch.load(path).items() if not k.startswith("transformer.resblocks.1.")}, bad)
    with pytest.raises(ValueError, match=rf"{bad}: config: .*transformer_layers \(config 2, tensors 1\)"):
        load(bad, config=HEAD32)
    torch.save({k: v for k, v in torch.load(path).items() if k != "ln_final.bias"}, bad)
    with pytest.raises(ValueError, match=rf"{bad}: state_dict: the tensors do not fit the model; 1 missing keys: "
                                         "ln_final.bias"):
        load(bad, config=HEAD32)
