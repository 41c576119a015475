"""Where the package keeps files, and how it writes tensors to disk: safetensors plus a JSON description.

Every file of tensors the package writes (a model checkpoint, a training state, an embedding
index) is a pair with one stem:

* ``<stem>.safetensors``: the tensors, written by ``safetensors`` (no pickle, so reading them can
  never run code);
* ``<stem>.json``: a description with the ``"format"`` name and ``"version"`` of the layout, the
  writer's own fields, and the ``"sha256"`` of the tensor file, checked on every read.

:func:`save_tensors` writes the pair atomically: each file goes to a temporary name in the same
folder, is flushed to disk and renamed over the old one, the description last. A reader thus never
finds a description pointing at a half-written tensor file, and a failed write leaves the previous
pair as it was. :func:`load_tensors` checks the format, the version and the SHA-256, and every
error names the file and what is wrong with it.

Explained in Chapter 1 (the shipped models), Chapter 3.2 (training states), Chapter 3.3 (the
recipe cache), Chapter 4.2 (the released weights) and Chapter 5.2 (the search index).
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .checks import check_type

__all__ = ["cache_dir", "sha256_file", "tensor_paths", "save_tensors", "read_description", "load_tensors"]

#: Keys of a description that :func:`save_tensors` fills in itself.
RESERVED_KEYS = ("format", "version", "sha256")


def cache_dir() -> Path:
    """Where trained recipes and downloads are cached: ``$CLIP_TUTORIAL_CACHE`` or ``~/.cache/clip_tutorial``."""
    return Path(os.environ.get("CLIP_TUTORIAL_CACHE", Path.home() / ".cache" / "clip_tutorial"))


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, as lower-case hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tensor_paths(path: str | os.PathLike, name: str = "path") -> tuple[Path, Path]:
    """The tensor file and the JSON description of the pair at ``path``.

    Args:
        path: the stem, or either file's name: ``run/tiny``, ``run/tiny.safetensors`` and
            ``run/tiny.json`` all give ``(run/tiny.safetensors, run/tiny.json)``.
        name: the argument's name in error messages.

    Raises:
        TypeError: if ``path`` is not a str or a path.
        ValueError: if ``path`` names no file (empty, ``.`` or ``..``).
    """
    check_type(name, path, (str, os.PathLike), "a str or a pathlib.Path")
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise ValueError(f"{name}: expected a file name such as 'checkpoints/tiny', got {str(path)!r}")
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return Path(f"{path}.safetensors"), Path(f"{path}.json")


def _temporary(path: Path) -> Path:
    """A fresh hidden name beside ``path`` for writing it atomically (hidden, so no glob of the folder sees it)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _flush(path: Path) -> None:
    """Push ``path``'s bytes to the disk, so that a crash after the rename cannot leave an empty file."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], description: Mapping[str, Any], *,
                 format: str, version: int = 1, name: str = "path", kind: str = "file",
                 indent: int | None = 1) -> tuple[Path, Path]:
    """Write ``tensors`` to ``<path>.safetensors`` and ``description`` to ``<path>.json``, atomically.

    The JSON file holds ``{"format": format, "version": version, **description, "sha256": ...}``.
    Both files are written under temporary names in the target folder (created if missing),
    flushed to disk and renamed into place, the description last; on any failure the temporary
    files are removed and the previous pair, if any, is left as it was. Explained in Chapter 3.2.

    Args:
        path: the stem, or either file's name (see :func:`tensor_paths`).
        tensors: name to tensor; each is copied to the CPU and made contiguous.
        description: JSON-serialisable fields of the writer's own (not ``format``, ``version``
            or ``sha256``, which this function fills in).
        format: the format name that :func:`load_tensors` will expect.
        version: the version of that format's layout.
        name: the caller's argument name, for error messages (e.g. ``"checkpoint_dir"``).
        kind: what the pair is, for error messages (e.g. ``"checkpoint"``).
        indent: the JSON indentation (``None``: one line, for large descriptions such as an index's ids).

    Returns:
        ``(tensor_file, json_file)``.

    Raises:
        TypeError: if ``tensors`` is not a mapping of str to tensors, or ``description`` is not a
            JSON-serialisable mapping.
        ValueError: if ``description`` uses a reserved key.
        PermissionError: if the folder cannot be created or written to.
    """
    weights, meta = tensor_paths(path, name)
    check_type("tensors", tensors, Mapping, "a mapping of names to tensors")
    bad = [key for key, value in tensors.items() if not isinstance(key, str) or not isinstance(value, torch.Tensor)]
    if bad:
        raise TypeError(f"tensors: expected str names of torch tensors, got entries {bad[:5]!r}")
    check_type("description", description, Mapping, "a mapping (a dict)")
    reserved = [key for key in RESERVED_KEYS if key in description]
    if reserved:
        raise ValueError(f"description: expected no {reserved} keys (save_tensors writes them), got them")
    full = {"format": format, "version": version, **description}
    try:
        json.dumps(full)
    except (TypeError, ValueError) as err:
        raise TypeError(f"description: expected JSON-serialisable values, got {err}") from err
    cpu = {key: value.detach().to("cpu").contiguous() for key, value in tensors.items()}
    temporaries = [_temporary(weights), _temporary(meta)]
    try:
        weights.parent.mkdir(parents=True, exist_ok=True)
        save_file(cpu, str(temporaries[0]), metadata={"format": "pt", "clip_tutorial": f"{format} v{version}"})
        _flush(temporaries[0])
        full["sha256"] = sha256_file(temporaries[0])
        with open(temporaries[1], "x", encoding="utf-8") as handle:
            handle.write(json.dumps(full, indent=indent, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporaries[0], weights)
        os.replace(temporaries[1], meta)  # last: the description never points at a half-written file
    except BaseException as err:
        for temporary in temporaries:
            if temporary.parent.is_dir():
                temporary.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise PermissionError(f"{name}: cannot write the {kind} to folder '{weights.parent}' "
                                  f"({err.strerror or err}); expected a writable folder") from err
        raise
    return weights, meta


def read_description(path: str | os.PathLike, *, expected_format: str, version: int = 1, name: str = "path",
                     kind: str = "file") -> dict[str, Any]:
    """The JSON description of the pair at ``path``, checked to have the expected format and version.

    Descriptions written before versions were recorded have no ``"version"`` and count as version
    1. The tensor file is neither read nor hashed (see :func:`load_tensors`).

    Args:
        path: the stem, or either file's name (see :func:`tensor_paths`).
        expected_format: the ``"format"`` the description must name.
        version: the layout version it must have.
        name: the caller's argument name, for error messages.
        kind: what the pair is, for error messages.

    Raises:
        FileNotFoundError: if the JSON file is missing.
        ValueError: if it is not JSON, names another format or version, or lacks its ``"sha256"``.
    """
    meta = tensor_paths(path, name)[1]
    if not meta.is_file():
        raise FileNotFoundError(f"{name}: expected the {kind} description {meta}, but it is missing")
    try:
        description = json.loads(meta.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{name}: {kind} description {meta} is corrupted: expected JSON, "
                         f"got a parse error ({err})") from err
    if not isinstance(description, dict) or description.get("format") != expected_format:
        found = description.get("format") if isinstance(description, dict) else type(description).__name__
        raise ValueError(f"{name}: {kind} description {meta}: expected format {expected_format!r}, got {found!r}")
    if description.get("version", 1) != version:
        raise ValueError(f"{name}: {kind} description {meta}: expected version {version}, got "
                         f"{description.get('version', 1)!r} (written by another version of clip_tutorial?)")
    if not isinstance(description.get("sha256"), str):
        raise ValueError(f"{name}: {kind} description {meta}: expected the SHA-256 of its tensor file under "
                         f"'sha256', got {description.get('sha256')!r}")
    return description


def load_tensors(path: str | os.PathLike, *, expected_format: str, version: int = 1, name: str = "path",
                 kind: str = "file") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a pair written by :func:`save_tensors`, checking its format, version and SHA-256.

    Explained in Chapter 3.2.

    Args:
        path: the stem, or either file's name (see :func:`tensor_paths`).
        expected_format: the ``"format"`` the description must name.
        version: the layout version it must have.
        name: the caller's argument name, for error messages.
        kind: what the pair is, for error messages.

    Returns:
        ``(tensors, description)``: the tensors on the CPU and the whole JSON description.

    Raises:
        FileNotFoundError: if either file is missing (the message names which).
        ValueError: if the description is not JSON or names another format or version, the
            tensor file's SHA-256 differs from the recorded one, or it is not safetensors data.
    """
    weights, meta = tensor_paths(path, name)
    missing = [file for file in (weights, meta) if not file.is_file()]
    if len(missing) == 2:
        raise FileNotFoundError(f"{name}: expected the {kind} '{weights.with_suffix('')}' ({weights.name} and "
                                f"{meta.name}), found neither file")
    if missing:
        label = "safetensors file" if missing[0] == weights else "JSON description"
        raise FileNotFoundError(f"{name}: {kind} '{weights.with_suffix('')}' is incomplete: its {label} "
                                f"{missing[0]} is missing")
    description = read_description(meta, expected_format=expected_format, version=version, name=name, kind=kind)
    digest = sha256_file(weights)
    if digest != description["sha256"]:
        raise ValueError(f"{name}: expected {weights.name} to have SHA-256 {description['sha256']} (recorded in "
                         f"{meta.name}), got {digest}: the {kind} file {weights} is corrupted (sha256 mismatch) "
                         "or was changed; save or download it again")
    try:
        tensors = load_file(str(weights), device="cpu")
    except Exception as err:  # safetensors raises its own SafetensorError and others on bad bytes
        raise ValueError(f"{name}: {kind} file {weights} is corrupted: expected safetensors data, got {err}") from err
    return tensors, description
