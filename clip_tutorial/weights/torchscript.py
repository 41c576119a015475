"""Read the weights out of a TorchScript archive without running any code from it.

OpenAI released CLIP's weights as TorchScript archives (``torch.jit.save``). Such a file is a zip
holding the model's code (``code/``), a pickle of the module tree (``data.pkl``) and one raw
byte file per tensor storage (``data/<key>``). ``torch.load(weights_only=True)`` refuses it and
``torch.jit.load`` compiles and runs the code it contains. This module reads the tensors only:

* ``data.pkl`` is unpickled by :class:`SafeUnpickler`, which allows nothing but tensor rebuilding,
  ``collections.OrderedDict`` and the archive's own module classes (``__torch__.*``), and turns
  each of those into an inert :class:`ScriptObject` that only holds attributes;
* tensors are rebuilt from the raw storage bytes with their dtype, shape, strides and offset;
* which attributes are parameters or buffers is read from the ``__parameters__`` and
  ``__buffers__`` declarations in ``code/``, parsed as literals (``ast.literal_eval``), never run.

Explained in Chapter 4.
"""
from __future__ import annotations

import ast
import collections
import os
import pickle
import re
import zipfile
from typing import Any

import torch

__all__ = ["UnsafeArchiveError", "ScriptObject", "SafeUnpickler", "is_torchscript_archive",
           "read_torchscript_state_dict"]

#: The storage classes a pickle may name, and the dtype of their elements.
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128,
}


class UnsafeArchiveError(pickle.UnpicklingError):
    """The archive asked for something other than tensors and plain containers; nothing was run."""


class ScriptObject:
    """An inert stand-in for one TorchScript module: its class name and its attributes, nothing else.

    The unpickler makes one empty subclass per TorchScript class name, with that name as ``qualname``.
    """

    qualname = "__torch__"

    def __new__(cls, *_args: Any) -> "ScriptObject":
        obj = super().__new__(cls)
        obj.attributes = {}
        return obj

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.attributes = dict(state)
        else:  # a class with a custom __getstate__: keep the state, walk nothing in it
            self.attributes = {"__state__": state}

    def __repr__(self) -> str:
        return f"ScriptObject({self.qualname!r}, {len(self.attributes)} attributes)"


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                    *_ignored: Any) -> torch.Tensor:
    """Our replacement for ``torch._utils._rebuild_tensor_v2``: a strided view of the flat storage."""
    if not isinstance(storage, torch.Tensor):
        raise UnsafeArchiveError(f"tensor rebuild: expected a storage, got {type(storage).__name__}")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or int(offset) < 0:
        raise UnsafeArchiveError(f"tensor rebuild: inconsistent size {size}, stride {stride}, offset {offset}")
    last = int(offset) + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else int(offset) - 1
    if last >= storage.numel():
        raise UnsafeArchiveError(f"tensor rebuild: size {size} and stride {stride} reach past the "
                                 f"storage's {storage.numel()} elements")
    return torch.as_strided(storage, size, stride, int(offset))


def _rebuild_parameter(data: torch.Tensor, *_ignored: Any) -> torch.Tensor:
    return data


class SafeUnpickler(pickle.Unpickler):
    """Unpickles a TorchScript ``data.pkl`` while refusing every global that could run code.

    Args:
        file: the open pickle stream.
        archive: the open zip archive the storages are read from.
        prefix: the archive's top folder, e.g. ``"ViT-B-32/"``.
        byteorder: ``"little"`` or ``"big"``, the byte order the storages were written in.
    """

    _SAFE = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, file: Any, archive: zipfile.ZipFile, prefix: str, byteorder: str = "little") -> None:
        super().__init__(file)
        self._archive, self._prefix, self._byteorder = archive, prefix, byteorder
        self._storages: dict[str, torch.Tensor] = {}
        self._classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        """Return the safe stand-in for ``module.name``, or raise :class:`UnsafeArchiveError`."""
        if (module, name) in self._SAFE:
            return self._SAFE[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        if module.startswith("__torch__.") or module == "__torch__":
            qualname = f"{module}.{name}"
            if qualname not in self._classes:  # a fresh empty class per name, so isinstance checks stay honest
                self._classes[qualname] = type(name, (ScriptObject,), {"qualname": qualname})
            return self._classes[qualname]
        raise UnsafeArchiveError(
            f"refusing to load {module}.{name}: a weights file needs only tensors and containers, "
            "so this archive may try to run code; it was not loaded"
        )

    def persistent_load(self, pid: Any) -> torch.Tensor:
        """Read the storage that ``pid = ("storage", type, key, location, numel)`` names, as a flat tensor."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            raise UnsafeArchiveError(f"unexpected persistent id {pid!r} (expected a storage reference)")
        _, storage_type, key, _location, numel = pid
        if key not in self._storages:
            try:
                raw = self._archive.read(f"{self._prefix}data/{key}")
            except KeyError:
                raise UnsafeArchiveError(f"storage {key!r} is missing from the archive") from None
            dtype = storage_type.dtype
            flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype) if raw else torch.empty(0, dtype=dtype)
            if self._byteorder != "little" and flat.element_size() > 1:
                flat = _swap_bytes(flat)
            if flat.numel() != int(numel):
                raise UnsafeArchiveError(f"storage {key!r}: expected {numel} elements, found {flat.numel()}")
            self._storages[key] = flat
        return self._storages[key]


def _swap_bytes(flat: torch.Tensor) -> torch.Tensor:
    size = flat.element_size()
    as_bytes = flat.view(torch.uint8).view(-1, size).flip(1).contiguous()
    return as_bytes.view(-1).view(flat.dtype)


def _archive_prefix(archive: zipfile.ZipFile) -> str:
    tops = [n[: -len("data.pkl")] for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(tops) != 1:
        raise ValueError(f"not a TorchScript archive: expected one '<name>/data.pkl', found {len(tops)}")
    return tops[0]


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """True if ``path`` is a zip with ``<name>/data.pkl`` and ``<name>/code/`` (what ``torch.jit.save`` writes)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        try:
            prefix = _archive_prefix(archive)
        except ValueError:
            return False
        return any(n.startswith(prefix + "code/") for n in archive.namelist())


_CLASS = re.compile(r"^class (\w+)\(", re.MULTILINE)
_DECL = re.compile(r"^  (__parameters__|__buffers__) = (\[.*?\])\s*$", re.MULTILINE)


def _declarations(archive: zipfile.ZipFile, prefix: str) -> dict[str, set[str]]:
    """Class qualname -> names declared as parameters or buffers, parsed from ``code/`` as literals."""
    found: dict[str, set[str]] = {}
    for entry in archive.namelist():
        if not (entry.startswith(prefix + "code/") and entry.endswith(".py")):
            continue
        module = entry[len(prefix + "code/"):-len(".py")].replace("/", ".")
        text = archive.read(entry).decode("utf-8", errors="replace")
        classes = list(_CLASS.finditer(text))
        for i, match in enumerate(classes):
            body = text[match.end(): classes[i + 1].start() if i + 1 < len(classes) else len(text)]
            names = found.setdefault(f"{module}.{match.group(1)}", set())
            for decl in _DECL.finditer(body):
                names.update(str(n) for n in ast.literal_eval(decl.group(2)))
    return found


def _walk(obj: ScriptObject, declared: dict[str, set[str]], prefix: str, out: dict[str, torch.Tensor]) -> None:
    keep = declared.get(obj.qualname)
    for name, value in obj.attributes.items():
        if isinstance(value, ScriptObject):
            _walk(value, declared, f"{prefix}{name}.", out)
        elif isinstance(value, torch.Tensor) and (keep is None or name in keep):
            out[prefix + name] = value


def read_torchscript_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The parameters and buffers of a TorchScript archive, as a flat state dict; runs no code from it.

    Names are dotted paths (``visual.conv1.weight``), dtypes are those stored (OpenAI's GPU models
    are float16), tensors that shared a storage in the file share it here. The result equals
    ``torch.jit.load(path).state_dict()``. A class with no declarations in ``code/`` contributes all
    of its tensor attributes.

    Args:
        path: the archive, e.g. ``ViT-B-32.pt``.

    Raises:
        ValueError: if ``path`` is not a TorchScript archive.
        UnsafeArchiveError: if its pickle names anything but tensors, containers and module classes.
    """
    if not is_torchscript_archive(path):
        raise ValueError(f"path: expected a TorchScript archive (a zip with <name>/data.pkl and <name>/code/), got {path}")
    with zipfile.ZipFile(path) as archive:
        prefix = _archive_prefix(archive)
        names = set(archive.namelist())
        byteorder = archive.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names else "little"
        if byteorder not in ("little", "big"):
            raise UnsafeArchiveError(f"unknown byte order {byteorder!r} in the archive")
        with archive.open(prefix + "data.pkl") as stream:
            root = SafeUnpickler(stream, archive, prefix, byteorder).load()
        declared = _declarations(archive, prefix)
    if not isinstance(root, ScriptObject):
        raise UnsafeArchiveError(f"expected a module at the archive's root, got {type(root).__name__}")
    out: dict[str, torch.Tensor] = {}
    _walk(root, declared, "", out)
    return out
