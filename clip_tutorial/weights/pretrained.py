"""OpenAI's released CLIP weights: download, verify, read safely, load into our model.

:func:`load_pretrained` fetches one of the nine official models, checks the file's SHA-256,
reads its tensors without running any code from it (:func:`read_state_dict`, which
:func:`clip_tutorial.weights.loader.load` uses for every weights file), loads them strictly into
:class:`~clip_tutorial.model.CLIP` and returns the model together with the BPE tokenizer and the
matching :class:`~clip_tutorial.data.preprocess.Preprocess` (:func:`bundle`).

Explained in Chapter 4.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from clip_tutorial.core.storage import cache_dir, sha256_file
from clip_tutorial.data.preprocess import Preprocess
from clip_tutorial.model import CLIP
from clip_tutorial.model.config import CONFIGS
from clip_tutorial.text.bpe import BPETokenizer
from clip_tutorial.text.tokenizer import BaseTokenizer
from .convert import from_openai_state_dict
from .torchscript import UnsafeArchiveError, is_torchscript_archive, read_torchscript_state_dict

__all__ = ["PretrainedSource", "PRETRAINED", "LoadedCLIP", "Pretrained", "PretrainedUnavailableError", "ChecksumError",
           "list_pretrained", "cached_path", "download_verified", "read_state_dict", "clip_tokenizer", "bundle",
           "load_pretrained"]

_OPENAI = "https://openaipublic.azureedge.net/clip/models"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PretrainedSource:
    """Where one official model's weights live.

    Attributes:
        url: OpenAI's file; the folder name in the URL is the file's SHA-256.
        sha256: the expected SHA-256 of that file (hex).
        hf_repo: the Hugging Face hub repository holding the same weights as ``open_clip_model.safetensors``.
    """

    url: str
    sha256: str
    hf_repo: str

    @property
    def filename(self) -> str:
        """The file name the download is cached under (the URL's last part, e.g. ``ViT-B-32.pt``)."""
        return self.url.rsplit("/", 1)[-1]


def _openai(sha256: str, filename: str, hf_repo: str) -> PretrainedSource:
    return PretrainedSource(f"{_OPENAI}/{sha256}/{filename}", sha256, hf_repo)


#: The nine models OpenAI released, by the names of :data:`clip_tutorial.model.config.CONFIGS`.
PRETRAINED: dict[str, PretrainedSource] = {
    "RN50": _openai("afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762", "RN50.pt",
                    "timm/resnet50_clip.openai"),
    "RN101": _openai("8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599", "RN101.pt",
                     "timm/resnet101_clip.openai"),
    "RN50x4": _openai("7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd", "RN50x4.pt",
                      "timm/resnet50x4_clip.openai"),
    "RN50x16": _openai("52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa", "RN50x16.pt",
                       "timm/resnet50x16_clip.openai"),
    "RN50x64": _openai("be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c", "RN50x64.pt",
                       "timm/resnet50x64_clip.openai"),
    "ViT-B/32": _openai("40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", "ViT-B-32.pt",
                        "timm/vit_base_patch32_clip_224.openai"),
    "ViT-B/16": _openai("5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f", "ViT-B-16.pt",
                        "timm/vit_base_patch16_clip_224.openai"),
    "ViT-L/14": _openai("b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", "ViT-L-14.pt",
                        "timm/vit_large_patch14_clip_224.openai"),
    "ViT-L/14@336": _openai("3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02", "ViT-L-14-336px.pt",
                            "timm/vit_large_patch14_clip_336.openai"),
}
HF_FILENAME = "open_clip_model.safetensors"


class PretrainedUnavailableError(RuntimeError):
    """The weights could not be downloaded (no internet, or the server could not be reached).

    ``str(error)`` is the full message: the address, the underlying error, and where to place the
    file by hand. ``error.reason`` is one short line without addresses or paths, fit to show a
    reader (e.g. ``"the server's name could not be resolved (no internet connection)"``).
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or "the weights could not be downloaded"


def _offline_reason(error: BaseException, timeout: float | None = None) -> str:
    """One short line saying why a download failed, without addresses, paths or error numbers."""
    import socket

    cause = getattr(error, "reason", error)  # URLError wraps the socket error in .reason
    if isinstance(error, urllib.error.HTTPError):
        return f"the server answered with HTTP status {error.code}"
    if isinstance(cause, socket.gaierror) or "name resolution" in str(cause) or "not known" in str(cause):
        return "the server's name could not be resolved (no internet connection)"
    if isinstance(cause, (TimeoutError, socket.timeout)) or "timed out" in str(cause):
        within = f" within {timeout:g} s" if timeout is not None else ""
        return f"the server did not answer{within}"
    if isinstance(cause, ConnectionError):
        return "the connection to the server failed"
    if isinstance(cause, FileNotFoundError) or "No such file" in str(cause):
        return "the file to download does not exist"
    return f"the download failed ({type(cause).__name__})"


class ChecksumError(RuntimeError):
    """A downloaded file's SHA-256 differs from the published one; the file was deleted."""


class LoadedCLIP(NamedTuple):
    """A model ready to use: unpack it as ``model, tokenizer, preprocess``.

    What :func:`load_pretrained` and :func:`clip_tutorial.weights.loader.load` return.
    ``tokenizer`` turns captions into the ids the model embeds; ``preprocess`` turns images (PIL or
    uint8 arrays) into the normalised tensors the model sees.
    """

    model: CLIP
    tokenizer: Any
    preprocess: Preprocess


#: The name :func:`load_pretrained`'s result had first.
Pretrained = LoadedCLIP


def clip_tokenizer(model: CLIP) -> BPETokenizer:
    """CLIP's BPE tokenizer at ``model``'s context length: what OpenAI's, open_clip's and Hugging Face's CLIPs read."""
    return BPETokenizer(context_length=model.config.context_length)


def bundle(model: CLIP, tokenizer: BaseTokenizer | None) -> LoadedCLIP:
    """``model`` with ``tokenizer`` and CLIP's preprocessing at the model's resolution.

    The one place a loaded model is paired with its preprocessing: OpenAI's resize, crop and
    normalisation (:class:`~clip_tutorial.data.preprocess.Preprocess`), which for a ShapesWorld model's
    square images at its own resolution is just the package's normalisation
    (:func:`~clip_tutorial.data.normalize_images`). Explained in Chapter 4.
    """
    return LoadedCLIP(model, tokenizer, Preprocess(model.config.image_resolution))


def list_pretrained() -> list[str]:
    """Names accepted by :func:`load_pretrained`."""
    return list(PRETRAINED)


def cached_path(name: str, cache: str | os.PathLike | None = None) -> Path:
    """Where :func:`load_pretrained` keeps (or looks for) OpenAI's file for ``name``; it may not exist yet."""
    if not isinstance(name, str) or name not in PRETRAINED:
        raise ValueError(f"name: expected one of {list_pretrained()}, got {name!r}")
    return (Path(cache) if cache is not None else cache_dir()) / "openai" / PRETRAINED[name].filename


def _fetch(url: str, dest: Path, timeout: float) -> str:
    """Stream ``url`` into ``dest`` and return its SHA-256 (a plain function so tests can replace it)."""
    from tqdm.auto import tqdm

    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name.split(".tmp")[0],
                  disable=total is None or total < 10 * _CHUNK) as bar:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()


def download_verified(url: str, dest: str | os.PathLike, sha256: str, timeout: float = 10.0) -> Path:
    """Download ``url`` to ``dest`` unless a file with the right SHA-256 is already there.

    The download goes to a temporary file next to ``dest``; only a file whose full SHA-256 equals
    ``sha256`` is moved into place. A cached file with a wrong hash is deleted and fetched again.

    Args:
        url: ``https://``, ``http://`` or ``file://`` address.
        dest: where the file is kept.
        sha256: the expected SHA-256, hex.
        timeout: seconds to wait for the server before giving up (per network operation).

    Raises:
        PretrainedUnavailableError: if the server cannot be reached; names the URL and ``dest``.
        ChecksumError: if the downloaded file's hash is wrong (the file is removed).
    """
    dest = Path(dest)
    sha256 = sha256.lower()
    if dest.is_file():
        if sha256_file(dest) == sha256:
            return dest
        dest.unlink()  # a truncated or corrupted earlier download
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            got = _fetch(url, tmp, timeout)
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            raise PretrainedUnavailableError(
                f"could not download the weights from {url} ({error}). This needs an internet connection. "
                f"Offline, download the file elsewhere and place it at {dest}; "
                f"it is used when its SHA-256 is {sha256}.",
                reason=_offline_reason(error, timeout),
            ) from error
        if got != sha256:
            raise ChecksumError(f"the file downloaded from {url} has SHA-256 {got}, expected {sha256}; "
                                "it was deleted (a corrupted download or a changed file). Try again.")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors in a weights file, never running code from it.

    TorchScript archives (OpenAI's ``.pt`` files) go through
    :func:`~clip_tutorial.weights.torchscript.read_torchscript_state_dict`, ``.safetensors`` files through
    ``safetensors``, and plain pickled state dicts through ``torch.load(weights_only=True)``; a
    training checkpoint's ``"state_dict"`` entry is taken from it.

    Raises:
        FileNotFoundError: if there is no file at ``path``.
        ValueError: if the file is none of these, or truncated or corrupted; the message names it.
        UnsafeArchiveError: if a TorchScript archive's pickle asks for anything but tensors.
    """
    path = Path(path)
    if not path.is_file():
        found = "is a folder" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"path: expected a weights file, but {path} {found}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own SafetensorError on bad bytes
            raise ValueError(f"path: expected safetensors data in {path}, but it is truncated or corrupted "
                             f"({error})") from error
    if is_torchscript_archive(path):
        try:
            return read_torchscript_state_dict(path)
        except UnsafeArchiveError as error:
            raise UnsafeArchiveError(f"{path}: {error}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # weights_only refuses anything but tensors and containers
        kind = "zip" if zipfile.is_zipfile(path) else "file"
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise ValueError(f"path: expected a TorchScript archive, a torch.save state dict or a .safetensors file; "
                         f"{path} is a {kind} that torch.load(weights_only=True) refuses (truncated, another format, "
                         f"or objects other than tensors): {reason}") from error
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ValueError(f"path: expected a state dict in {path}, got {type(state).__name__}")
    return state


def _hf_download(repo: str, timeout: float, root: Path) -> Path:
    """Fetch ``open_clip_model.safetensors`` from ``repo`` and check it against the hub's announced SHA-256."""
    from huggingface_hub import HfApi, hf_hub_download

    try:
        info = HfApi().model_info(repo, files_metadata=True, timeout=timeout)
        path = Path(hf_hub_download(repo, HF_FILENAME, cache_dir=root / "hf", etag_timeout=timeout))
    except Exception as error:  # huggingface_hub raises many kinds of connection errors
        raise PretrainedUnavailableError(
            f"could not download {HF_FILENAME} from https://huggingface.co/{repo} ({type(error).__name__}: {error}). "
            "This needs an internet connection; offline, use source='openai' with the file placed in the cache.",
            reason=f"the Hugging Face hub could not be reached ({type(error).__name__})",
        ) from error
    lfs = next((s.lfs for s in info.siblings or [] if s.rfilename == HF_FILENAME), None)
    expected = getattr(lfs, "sha256", None) or (lfs.get("sha256") if isinstance(lfs, dict) else None)
    if not expected:
        raise ChecksumError(f"the hub announced no SHA-256 for {repo}/{HF_FILENAME}; refusing to load it unverified")
    got = sha256_file(path)
    if got != expected:
        path.resolve().unlink(missing_ok=True)  # the hub's cache links to a blob: remove both
        path.unlink(missing_ok=True)
        raise ChecksumError(f"{repo}/{HF_FILENAME} has SHA-256 {got}, the hub announced {expected}; "
                            "the file was deleted. Try again.")
    return path


def load_pretrained(name: str, source: str = "openai", device: torch.device | str | None = None,
                    timeout: float = 10.0, cache: str | os.PathLike | None = None) -> LoadedCLIP:
    """OpenAI's official CLIP ``name`` as our model (float32, eval mode), with its tokenizer and preprocessing.

    Args:
        name: one of :func:`list_pretrained`, e.g. ``"ViT-B/32"``.
        source: ``"openai"`` downloads OpenAI's TorchScript file, whose SHA-256 is part of its URL
            and is checked in full. ``"hf"`` downloads the same weights converted to safetensors from
            the Hugging Face hub (``timm/..._clip.openai``); their hash is compared with the SHA-256
            the hub announces for the file, which cannot be pinned here in advance.
        device: where to put the model (default CPU).
        timeout: seconds to wait for the server before deciding it is unreachable.
        cache: folder for downloads, default :func:`clip_tutorial.core.storage.cache_dir`
            (``$CLIP_TUTORIAL_CACHE`` or ``~/.cache/clip_tutorial``); OpenAI's files go to its
            ``openai/`` subfolder (place a file there by hand to use it offline), the hub's to ``hf/``.

    Returns:
        ``LoadedCLIP(model, tokenizer, preprocess)``: unpack it as ``model, tokenizer, preprocess``.

    Raises:
        ValueError: for an unknown ``name`` or ``source``.
        PretrainedUnavailableError: when the weights cannot be downloaded (offline); the message
            names the URL and where to place the file by hand, and its ``reason`` says why in one
            short line without paths.
        ChecksumError: when a downloaded file's hash is wrong.
    """
    if not isinstance(name, str) or name not in PRETRAINED:
        raise ValueError(f"name: expected one of {list_pretrained()}, got {name!r}")
    if source not in ("openai", "hf"):
        raise ValueError(f"source: expected 'openai' or 'hf', got {source!r}")
    entry = PRETRAINED[name]
    root = Path(cache) if cache is not None else cache_dir()
    if source == "openai":
        path = download_verified(entry.url, cached_path(name, root), entry.sha256, timeout)
    else:
        path = _hf_download(entry.hf_repo, timeout, root)
    # The names are CONFIGS' own (the book's "tiny" too, which tests serve as a download).
    model = from_openai_state_dict(read_state_dict(path), CONFIGS.get(name)).to(device or "cpu").eval()
    return bundle(model, clip_tokenizer(model))
