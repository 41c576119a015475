"""Tests of clip_tutorial.core.storage: the one writer and reader of safetensors + JSON pairs.

A round trip, every way a pair can be bad (each with its own error naming the file), and the
atomicity of a write: a failure at any point leaves the previous pair intact and no temporary file.
"""
from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch

from clip_tutorial.core import storage
from clip_tutorial.core.storage import load_tensors, read_description, save_tensors, sha256_file, tensor_paths
from clip_tutorial.train.shipped import WEIGHTS_DIR, list_shipped

FORMAT = "test-format"


def _tensors(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "weights": torch.randn(5, 7, generator=g),
        "half": torch.randn(3, generator=g).half(),
        "brain": torch.randn(2, 2, generator=g).bfloat16(),
        "order": torch.randperm(11, generator=g),
        "bytes": torch.randint(0, 256, (9,), generator=g, dtype=torch.uint8),
        "scalar": torch.tensor(float(seed)),
        "view": torch.randn(4, 6, generator=g).T,  # not contiguous
    }


def _saved(tmp_path, seed: int = 0, **description):
    description = description or {"step": 3, "names": ["a", "ü"], "nested": {"x": [1.5, None]}}
    weights, meta = save_tensors(tmp_path / "pair", _tensors(seed), description, format=FORMAT, kind="test pair")
    return weights, meta


def _edit(meta, **changes):
    data = json.loads(meta.read_text(encoding="utf-8"))
    data.update(changes)
    meta.write_text(json.dumps(data), encoding="utf-8")


@pytest.mark.parametrize("seed", [0, 1])
def test_round_trip_gives_back_every_tensor_bit_for_bit_and_the_description(tmp_path, seed):
    weights, meta = _saved(tmp_path, seed)
    assert (weights, meta) == (tmp_path / "pair.safetensors", tmp_path / "pair.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pair.json", "pair.safetensors"]  # no temporaries
    tensors, description = load_tensors(tmp_path / "pair", expected_format=FORMAT)
    expected = _tensors(seed)
    assert tensors.keys() == expected.keys()
    for name, value in expected.items():
        assert tensors[name].dtype == value.dtype and torch.equal(tensors[name], value), name
    assert description == {"format": FORMAT, "version": 1, "step": 3, "names": ["a", "ü"],
                           "nested": {"x": [1.5, None]}, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert json.loads(meta.read_text(encoding="utf-8")) == description


@pytest.mark.parametrize("spelling", ["pair", "pair.safetensors", "pair.json"])
def test_a_pair_is_named_by_its_stem_or_either_file(tmp_path, spelling):
    save_tensors(tmp_path / "sub" / "deeper" / spelling, _tensors(2), {}, format=FORMAT)  # folders are created
    assert tensor_paths(tmp_path / spelling) == (tmp_path / "pair.safetensors", tmp_path / "pair.json")
    for other in ("pair", "pair.safetensors", "pair.json"):
        assert torch.equal(load_tensors(tmp_path / "sub" / "deeper" / other, expected_format=FORMAT)[0]["order"],
                           _tensors(2)["order"])
    assert tensor_paths("run/model.v2") == (tensor_paths("run/model.v2.json")[0], tensor_paths("run/model.v2")[1])


def test_saving_again_replaces_both_files(tmp_path):
    _saved(tmp_path, 0, step=1)
    _saved(tmp_path, 1, step=2)
    tensors, description = load_tensors(tmp_path / "pair", expected_format=FORMAT)
    assert description["step"] == 2 and torch.equal(tensors["weights"], _tensors(1)["weights"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pair.json", "pair.safetensors"]


def test_sha256_file_matches_hashlib_across_block_boundaries(tmp_path):
    for size in (0, 1, (1 << 20) - 1, (1 << 20) + 17):
        path = tmp_path / f"f{size}"
        data = os.urandom(size)
        path.write_bytes(data)
        assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_a_description_without_a_version_counts_as_version_1(tmp_path):
    """Training states and search indexes written before versions were recorded stay readable."""
    _, meta = _saved(tmp_path)
    data = json.loads(meta.read_text(encoding="utf-8"))
    del data["version"]
    meta.write_text(json.dumps(data), encoding="utf-8")
    assert "version" not in load_tensors(meta, expected_format=FORMAT)[1]
    with pytest.raises(ValueError, match="expected version 2, got 1"):
        read_description(meta, expected_format=FORMAT, version=2)


@pytest.mark.parametrize("name", sorted(list_shipped()))
def test_the_shipped_checkpoints_verify_unchanged(name):
    weights = WEIGHTS_DIR / f"{name}.safetensors"
    before = hashlib.sha256(weights.read_bytes()).hexdigest()
    tensors, description = load_tensors(weights, expected_format="clip_tutorial-checkpoint")
    assert description["sha256"] == before and len(tensors) > 10
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == before


# --- each way a pair can be bad has its own error, naming the file ---

def test_missing_files_are_named(tmp_path):
    weights, meta = _saved(tmp_path)
    meta.unlink()
    with pytest.raises(FileNotFoundError, match=r"test pair .* is incomplete: its JSON description .*json is missing"):
        load_tensors(weights, expected_format=FORMAT, kind="test pair")
    with pytest.raises(FileNotFoundError, match="description .*pair.json, but it is missing"):
        read_description(weights, expected_format=FORMAT)
    weights, meta = _saved(tmp_path)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="its safetensors file .*pair.safetensors is missing"):
        load_tensors(meta, expected_format=FORMAT)
    with pytest.raises(FileNotFoundError, match="resume_from: expected the training state .*nowhere.* found neither"):
        load_tensors(tmp_path / "nowhere", expected_format=FORMAT, name="resume_from", kind="training state")


def test_corrupt_json_is_reported(tmp_path):
    weights, meta = _saved(tmp_path)
    meta.write_text('{"format": "test-format", "sha256": ', encoding="utf-8")
    with pytest.raises(ValueError, match="is corrupted: expected JSON, got a parse error") as err:
        load_tensors(weights, expected_format=FORMAT)
    assert str(meta) in str(err.value)


@pytest.mark.parametrize("content,message", [
    ({"format": "other"}, "expected format 'test-format', got 'other'"),
    ({"format": None}, "expected format 'test-format', got None"),
    ({"version": 2}, r"expected version 1, got 2 \(written by another version"),
    ({"sha256": None}, "expected the SHA-256 of its tensor file under 'sha256', got None"),
])
def test_wrong_format_version_or_missing_checksum_is_reported(tmp_path, content, message):
    weights, meta = _saved(tmp_path)
    _edit(meta, **content)
    with pytest.raises(ValueError, match=message) as err:
        load_tensors(weights, expected_format=FORMAT, name="path")
    assert str(err.value).startswith("path: ") and str(meta) in str(err.value)


def test_a_description_that_is_not_an_object_is_reported(tmp_path):
    weights, meta = _saved(tmp_path)
    meta.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="expected format 'test-format', got 'list'"):
        load_tensors(weights, expected_format=FORMAT)


def test_changed_bytes_give_a_checksum_mismatch(tmp_path):
    weights, meta = _saved(tmp_path)
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # a single bit
    weights.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"to have SHA-256 .* is corrupted \(sha256 mismatch\)") as err:
        load_tensors(weights, expected_format=FORMAT)
    assert str(weights) in str(err.value) and hashlib.sha256(bytes(raw)).hexdigest() in str(err.value)


@pytest.mark.parametrize("keep", [0, 7, 100])
def test_a_truncated_tensor_file_with_a_matching_checksum_is_reported(tmp_path, keep):
    weights, meta = _saved(tmp_path)
    weights.write_bytes(weights.read_bytes()[:keep])
    _edit(meta, sha256=hashlib.sha256(weights.read_bytes()).hexdigest())  # as a careless edit would
    with pytest.raises(ValueError, match="is corrupted: expected safetensors data") as err:
        load_tensors(weights, expected_format=FORMAT)
    assert str(weights) in str(err.value)


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(TypeError, match="path: expected a str or a pathlib.Path"):
        save_tensors(42, {}, {}, format=FORMAT)
    with pytest.raises(TypeError, match="checkpoint_dir: expected a str or a pathlib.Path"):
        save_tensors(None, {}, {}, format=FORMAT, name="checkpoint_dir")
    with pytest.raises(ValueError, match="path: expected a file name"):
        load_tensors("", expected_format=FORMAT)
    with pytest.raises(TypeError, match="tensors: expected str names of torch tensors, got entries \\['x'\\]"):
        save_tensors(tmp_path / "a", {"x": [1.0]}, {}, format=FORMAT)
    with pytest.raises(TypeError, match="tensors: expected a mapping"):
        save_tensors(tmp_path / "a", [torch.zeros(1)], {}, format=FORMAT)
    with pytest.raises(ValueError, match=r"description: expected no \['format', 'sha256'\] keys"):
        save_tensors(tmp_path / "a", {}, {"format": "x", "sha256": "0"}, format=FORMAT)
    with pytest.raises(TypeError, match="description: expected JSON-serialisable values"):
        save_tensors(tmp_path / "a", {}, {"when": object()}, format=FORMAT)
    assert list(tmp_path.iterdir()) == []


# --- atomicity: a failed write leaves the previous pair as it was, and no temporary file ---

def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _fail_on_call(monkeypatch, target, attribute, call, error):
    """Make ``target.attribute`` raise ``error`` on its ``call``-th call (1-based); earlier calls run as usual."""
    original, calls = getattr(target, attribute), []

    def wrapper(*args, **kwargs):
        calls.append(args)
        if len(calls) == call:
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(target, attribute, wrapper)
    return calls


def _half_written_save_file(tensors, filename, metadata=None):
    with open(filename, "wb") as handle:
        handle.write(b"\x00" * 100)  # a partial file, then the disk fills up
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("where", ["tensor file", "tensor fsync", "json fsync", "first rename"])
def test_a_failure_mid_write_keeps_the_previous_pair_and_leaves_no_temporary(tmp_path, monkeypatch, where):
    _saved(tmp_path, 0, step=1)
    before = _snapshot(tmp_path)
    disk_full = OSError(28, "No space left on device")
    if where == "tensor file":
        monkeypatch.setattr(storage, "save_file", _half_written_save_file)
    elif where == "tensor fsync":
        _fail_on_call(monkeypatch, storage.os, "fsync", 1, disk_full)
    elif where == "json fsync":  # the tensor file is complete and the JSON half-written under temporary names
        _fail_on_call(monkeypatch, storage.os, "fsync", 2, disk_full)
    else:
        _fail_on_call(monkeypatch, storage.os, "replace", 1, disk_full)
    with pytest.raises(PermissionError, match=r"path: cannot write the test pair to folder .*No space left") as err:
        _saved(tmp_path, 1, step=2)
    assert str(tmp_path) in str(err.value)
    assert _snapshot(tmp_path) == before  # same names (no temporaries), same bytes
    monkeypatch.undo()
    tensors, description = load_tensors(tmp_path / "pair", expected_format=FORMAT)
    assert description["step"] == 1 and torch.equal(tensors["weights"], _tensors(0)["weights"])


def test_an_interrupt_mid_write_is_raised_as_is_and_cleaned_up(tmp_path, monkeypatch):
    _saved(tmp_path, 0)
    before = _snapshot(tmp_path)
    _fail_on_call(monkeypatch, storage.os, "fsync", 2, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        _saved(tmp_path, 1)
    assert _snapshot(tmp_path) == before


def test_both_files_are_flushed_before_renaming_and_the_json_is_renamed_last(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace

    def logged_fsync(fd):
        events.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) if os.path.exists("/proc/self/fd")
                       else fd))
        return fsync(fd)

    def logged_replace(src, dst):
        assert os.path.dirname(os.fspath(src)) == os.path.dirname(os.fspath(dst)), "a rename within one folder"
        events.append(("replace", os.path.basename(os.fspath(dst))))
        return replace(src, dst)

    monkeypatch.setattr(storage.os, "fsync", logged_fsync)
    monkeypatch.setattr(storage.os, "replace", logged_replace)
    _saved(tmp_path)
    assert [kind for kind, _ in events] == ["fsync", "fsync", "replace", "replace"]
    assert events[2:] == [("replace", "pair.safetensors"), ("replace", "pair.json")]
    if os.path.exists("/proc/self/fd"):  # the files flushed are the temporaries, tensors first
        assert events[0][1].startswith(".pair.safetensors.") and events[1][1].startswith(".pair.json.")


def test_an_unwritable_folder_gives_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file, not a folder")
    with pytest.raises(PermissionError, match="checkpoint_dir: cannot write the training state to folder") as err:
        save_tensors(blocker / "step-000001", {"x": torch.zeros(1)}, {}, format=FORMAT, name="checkpoint_dir",
                     kind="training state")
    assert str(blocker) in str(err.value)
