"""Official weights, offline: the safe TorchScript reader and the verified download, on archives made here.

Nothing touches the network: the "downloads" are ``file://`` URLs to TorchScript archives that
``torch.jit`` writes in the test, and the unreachable server is a download function that raises.
"""
from __future__ import annotations

import hashlib
import io
import pickle
import urllib.error
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import clip_tutorial.weights.pretrained as pretrained
from clip_tutorial import CLIP, get_config
from clip_tutorial.weights.pretrained import (PRETRAINED, ChecksumError, PretrainedSource, PretrainedUnavailableError,
                                      download_verified, list_pretrained, load_pretrained, read_state_dict)
from clip_tutorial.weights.torchscript import UnsafeArchiveError, is_torchscript_archive, read_torchscript_state_dict

# torch.jit is deprecated, but it is how OpenAI's files were written, so the tests write archives with it.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


class OddStorage(nn.Module):
    """Tensors that share one storage, sit at offsets, are transposed, and have five dtypes."""

    def __init__(self) -> None:
        super().__init__()
        base = torch.arange(24, dtype=torch.float32)
        self.w = nn.Parameter(torch.randn(4, 6).t())  # non-contiguous
        self.register_buffer("a", base[2:10])  # offset view ...
        self.register_buffer("b", base[5:15].view(2, 5))  # ... sharing a's storage
        self.register_buffer("ids", torch.arange(5, dtype=torch.int64))
        self.register_buffer("flag", torch.tensor([True, False, True]))
        self.register_buffer("bf", torch.randn(3, dtype=torch.bfloat16))
        self.sub = nn.Linear(3, 2).half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.a.sum()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def traced_clip(path: Path, half: bool = False, seed: int = 0) -> CLIP:
    """Save a traced tiny CLIP (optionally fp16, as OpenAI's GPU models are) to ``path``; return the eager model."""
    torch.manual_seed(seed)
    model = CLIP(get_config("tiny")).eval()
    inputs = (torch.randn(1, 3, 32, 32), torch.randint(0, 128, (1, 16)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, inputs, check_trace=False)
    (traced.half() if half else traced).save(str(path))
    return model


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    folder = tmp_path_factory.mktemp("archives")
    fp32 = traced_clip(folder / "tiny.pt")
    fp16 = traced_clip(folder / "tiny16.pt", half=True, seed=1)
    odd = OddStorage()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(odd, (torch.zeros(1),), check_trace=False).save(str(folder / "odd.pt"))
    return {"folder": folder, "fp32": fp32, "fp16": fp16, "odd": odd}


def assert_same_state(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype, key
        assert got[key].shape == value.shape, key
        assert torch.equal(got[key], value), key


# ----------------------------------------------------------------------------- the safe reader

def test_reader_equals_model_state_dict(archives):
    path = archives["folder"] / "tiny.pt"
    assert is_torchscript_archive(path)
    got = read_torchscript_state_dict(path)
    expected = archives["fp32"].state_dict()
    # TorchScript cannot mark a buffer non-persistent, so the causal mask is stored as a buffer too.
    assert set(got) - set(expected) == {"attn_mask"}
    assert_same_state({k: got[k] for k in expected}, expected)
    assert_same_state(got, torch.jit.load(str(path)).state_dict())  # what torch.jit.load would give


def test_reader_fp16_archive(archives):
    got = read_torchscript_state_dict(archives["folder"] / "tiny16.pt")
    expected = {k: v.half() for k, v in archives["fp16"].state_dict().items()}
    assert_same_state({k: got[k] for k in expected}, expected)


def test_reader_shared_strided_and_typed_storages(archives):
    path = archives["folder"] / "odd.pt"
    got = read_torchscript_state_dict(path)
    assert_same_state(got, archives["odd"].state_dict())
    assert got["w"].stride() == (1, 6) and got["b"].storage_offset() == 5
    assert got["a"].untyped_storage().data_ptr() == got["b"].untyped_storage().data_ptr()


def test_reader_big_endian_archive(archives, tmp_path):
    """An archive written on a big-endian machine (bytes of every element reversed): same values."""
    source, target = archives["folder"] / "odd.pt", tmp_path / "odd_be.pt"
    with zipfile.ZipFile(source) as src:
        entries = {i.filename: src.read(i) for i in src.infolist()}
    prefix = next(n for n in entries if n.endswith("/data.pkl")).split("/")[0]
    entries[f"{prefix}/byteorder"] = b"big"
    sizes = _storage_element_sizes(entries[f"{prefix}/data.pkl"])
    assert sorted(sizes.values()) == [1, 2, 2, 2, 4, 4, 8]  # bool, bf16, 2 x fp16, 2 x fp32, int64
    for key, size in sizes.items():
        raw = np.frombuffer(entries[f"{prefix}/data/{key}"], dtype=np.uint8).reshape(-1, size)
        entries[f"{prefix}/data/{key}"] = raw[:, ::-1].tobytes()
    with zipfile.ZipFile(target, "w") as dst:
        for name, data in entries.items():
            dst.writestr(name, data)
    assert_same_state(read_torchscript_state_dict(target), archives["odd"].state_dict())


def _storage_element_sizes(pkl: bytes) -> dict[str, int]:
    """Storage key -> element size, read from the pickle's persistent ids without building tensors."""
    from clip_tutorial.weights.torchscript import STORAGE_DTYPES

    sizes = {}

    class Peek(pickle.Unpickler):
        def find_class(self, module, name):
            if module == "torch" and name in STORAGE_DTYPES:
                return STORAGE_DTYPES[name]
            if module.startswith("__torch__"):
                return type(name, (), {"__setstate__": lambda self, state: None})
            return lambda *a, **k: None

        def persistent_load(self, pid):
            sizes[pid[2]] = torch.empty(0, dtype=pid[1]).element_size()
            return None

    Peek(io.BytesIO(pkl)).load()
    return sizes


class _Evil:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _archive_with_pickle(path: Path, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", payload)
        z.writestr("evil/code/__torch__/m.py", "class M(Module):\n  __parameters__ = []\n  __buffers__ = []\n")
        z.writestr("evil/version", "3")
    return path


@pytest.mark.parametrize("make", ["os.system", "builtins.eval", "torch.jit.load"])
def test_malicious_pickle_is_refused_and_never_run(tmp_path, make):
    marker = tmp_path / "pwned"
    if make == "os.system":
        import os
        payload = pickle.dumps(_Evil(os.system, (f"touch {marker}",)), protocol=2)
    elif make == "builtins.eval":
        payload = pickle.dumps(_Evil(eval, (f"open({str(marker)!r}, 'w')",)), protocol=2)
    else:
        payload = pickle.dumps(_Evil(torch.jit.load, (str(marker),)), protocol=2)
    path = _archive_with_pickle(tmp_path / "evil.pt", payload)
    with pytest.raises(UnsafeArchiveError, match="refusing to load"):
        read_torchscript_state_dict(path)
    with pytest.raises(UnsafeArchiveError):
        read_state_dict(path)
    assert not marker.exists()


def test_bad_persistent_id_and_missing_storage(tmp_path):
    class Bad:
        def __reduce__(self):
            return (dict, ())

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", "x", "0", "cpu", 1) if isinstance(obj, Bad) else None

    buffer = io.BytesIO()
    P(buffer, protocol=2).dump({"a": Bad()})
    path = _archive_with_pickle(tmp_path / "bad.pt", buffer.getvalue())
    with pytest.raises(UnsafeArchiveError, match="unexpected persistent id"):
        read_torchscript_state_dict(path)


def test_not_an_archive(tmp_path):
    path = tmp_path / "x.pt"
    path.write_bytes(b"not a zip")
    assert not is_torchscript_archive(path)
    with pytest.raises(ValueError, match="path: expected a TorchScript archive"):
        read_torchscript_state_dict(path)
    with pytest.raises(ValueError, match="refuses"):
        read_state_dict(path)


# ----------------------------------------------------------------------------- verified download

@pytest.fixture
def served(archives, monkeypatch, tmp_path):
    """Register ``tiny`` (fp16 archive) as a downloadable model behind a ``file://`` URL."""
    path = archives["folder"] / "tiny16.pt"
    entry = PretrainedSource(path.as_uri(), sha256(path), "example/tiny_clip.openai")
    monkeypatch.setitem(PRETRAINED, "tiny", entry)
    return {"entry": entry, "cache": tmp_path / "cache", "model": archives["fp16"]}


def test_list_pretrained_names_the_nine_official_models():
    names = list_pretrained()
    assert names == ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16", "ViT-L/14",
                     "ViT-L/14@336"]
    for name in names:
        entry = PRETRAINED[name]
        assert entry.url.startswith("https://openaipublic.azureedge.net/clip/models/")
        assert entry.url.split("/")[-2] == entry.sha256 and len(entry.sha256) == 64
        assert entry.hf_repo.startswith("timm/") and entry.hf_repo.endswith(".openai")


def test_download_with_correct_hash_loads_fp32_model(served):
    model, tokenizer, preprocess = load_pretrained("tiny", cache=served["cache"])
    cached = served["cache"] / "openai" / "tiny16.pt"
    assert cached.is_file() and sha256(cached) == served["entry"].sha256
    assert not model.training and model.dtype == torch.float32
    expected = {k: v.half().float() for k, v in served["model"].state_dict().items()}
    assert_same_state(model.state_dict(), expected)
    assert preprocess.resolution == 32 and tokenizer(["a photo"]).shape == (1, 16)
    assert not list(cached.parent.glob("*.tmp"))


def test_wrong_hash_is_rejected_and_the_file_removed(served, monkeypatch):
    bad = PretrainedSource(served["entry"].url, "0" * 64, served["entry"].hf_repo)
    monkeypatch.setitem(PRETRAINED, "tiny", bad)
    with pytest.raises(ChecksumError, match="expected 0000"):
        load_pretrained("tiny", cache=served["cache"])
    folder = served["cache"] / "openai"
    assert not (folder / "tiny16.pt").exists() and not list(folder.glob("*"))


def test_cached_file_is_reused_without_download(served, monkeypatch):
    load_pretrained("tiny", cache=served["cache"])

    def no_download(*args, **kwargs):
        raise AssertionError("the cached file should have been used")

    monkeypatch.setattr(pretrained, "_fetch", no_download)
    model, _, _ = load_pretrained("tiny", cache=served["cache"])
    assert model.dtype == torch.float32


def test_corrupted_cache_is_downloaded_again(served):
    cached = served["cache"] / "openai" / "tiny16.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    load_pretrained("tiny", cache=served["cache"])
    assert sha256(cached) == served["entry"].sha256


def test_unreachable_server_gives_the_offline_error(served, monkeypatch):
    def offline(url, dest, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(pretrained, "_fetch", offline)
    with pytest.raises(PretrainedUnavailableError) as info:
        load_pretrained("tiny", cache=served["cache"])
    message = str(info.value)
    assert served["entry"].url in message and "internet" in message
    assert str(served["cache"] / "openai" / "tiny16.pt") in message
    assert not list((served["cache"] / "openai").glob("*"))


def test_missing_file_url_is_also_unavailable(tmp_path):
    with pytest.raises(PretrainedUnavailableError, match="could not download"):
        download_verified((tmp_path / "nope.pt").as_uri(), tmp_path / "dest.pt", "0" * 64)


def test_unknown_name_and_source():
    with pytest.raises(ValueError, match=r"name: expected one of \['RN50'.*got 'ViT-H/14'"):
        load_pretrained("ViT-H/14")
    with pytest.raises(ValueError, match="source: expected 'openai' or 'hf'"):
        load_pretrained("ViT-B/32", source="laion")


def test_plain_state_dict_and_safetensors_files(tmp_path, archives):
    from safetensors.torch import save_file

    state = archives["fp32"].state_dict()
    torch.save(state, tmp_path / "plain.pt")
    assert_same_state(read_state_dict(tmp_path / "plain.pt"), state)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    assert_same_state(read_state_dict(tmp_path / "w.safetensors"), state)


# ----------------------------------------------------------------------------- Hugging Face hub source

@pytest.fixture
def fake_hub(archives, monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub.hf_api import BlobLfsInfo, RepoSibling
    from safetensors.torch import save_file

    model = archives["fp32"]
    file = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(file))
    announced = {"sha256": sha256(file)}

    class Info:
        @property
        def siblings(self):
            return [RepoSibling("open_clip_model.safetensors",
                                lfs=BlobLfsInfo(size=file.stat().st_size, sha256=announced["sha256"], pointer_size=0))]

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, repo, **kw: Info())
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, filename, **kw: str(file))
    monkeypatch.setitem(PRETRAINED, "tiny", PretrainedSource("file:///unused", "0" * 64, "example/tiny"))
    return {"model": model, "announced": announced, "file": file}


def test_hf_source_checks_the_announced_hash(fake_hub, tmp_path):
    model, _, _ = load_pretrained("tiny", source="hf", cache=tmp_path)
    assert_same_state(model.state_dict(), {k: v.half().float() for k, v in fake_hub["model"].state_dict().items()})
    fake_hub["announced"]["sha256"] = "f" * 64
    with pytest.raises(ChecksumError, match="the hub announced ffff"):
        load_pretrained("tiny", source="hf", cache=tmp_path)
    assert not fake_hub["file"].exists()


def test_hf_source_offline(monkeypatch, tmp_path):
    import huggingface_hub

    def offline(self, repo, **kw):
        raise OSError("Cannot reach https://huggingface.co")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", offline)
    with pytest.raises(PretrainedUnavailableError, match="timm/vit_base_patch32_clip_224.openai.*internet"):
        load_pretrained("ViT-B/32", source="hf", cache=tmp_path)
