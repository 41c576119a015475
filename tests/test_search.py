"""Tests of the exact embedding index against a brute-force numpy search."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_tiny_clip
from hypothesis import given, settings
from hypothesis import strategies as st

from clip_tutorial.apps.search import EmbeddingIndex, SearchResult, build_image_index
from clip_tutorial.evaluation.zeroshot import encode_images


def _random(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def _reference(data: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k by sorting every similarity in float64."""
    data = data / np.linalg.norm(data, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    similarity = queries @ data.T
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(similarity, order, axis=1), order


@pytest.mark.parametrize("n, dim, q, k, chunk", [(500, 16, 37, 10, None), (1000, 64, 9, 1, 2), (50, 8, 5, 50, 3)])
def test_search_matches_brute_force_numpy(n, dim, q, k, chunk):
    data, queries = _random(n, dim, seed=n), _random(q, dim, seed=n + 1)
    index = EmbeddingIndex(dim)
    index.add(data.double())  # any float dtype is stored as float32
    result = index.search(queries, k=k, chunk_size=chunk)
    expected_scores, expected_rows = _reference(data.double().numpy(), queries.double().numpy(), k)
    sorted_gaps = np.diff(-np.sort(-(_reference(data.numpy(), queries.numpy(), n)[0]), axis=1), axis=1)
    assert np.abs(sorted_gaps[:, :k]).min() > 1e-5, "ties within the top k would make the order ambiguous"
    assert isinstance(result, SearchResult) and result.scores.dtype == torch.float32
    assert result.rows.tolist() == expected_rows.tolist()
    assert result.ids == expected_rows.tolist()  # default ids are the row numbers
    np.testing.assert_allclose(result.scores.numpy(), expected_scores, atol=1e-5)


def test_single_query_vector_gives_one_row_and_custom_ids_follow_rows():
    data = _random(30, 8, seed=1)
    names = [f"img{i:02d}.png" for i in range(30)]
    index = EmbeddingIndex(8)
    index.add(data, ids=names, metadata=[{"n": i} for i in range(30)])
    scores, ids, rows = index.search(data[7] * 3.0, k=3)
    assert scores.shape == (1, 3) and ids[0][0] == "img07.png" and rows[0, 0] == 7
    assert ids[0] == [names[r] for r in rows[0].tolist()]
    assert index.metadata[index.row_of("img07.png")] == {"n": 7}


def test_incremental_adds_equal_one_add():
    data, queries = _random(300, 16, seed=2), _random(11, 16, seed=3)
    whole, parts = EmbeddingIndex(16), EmbeddingIndex(16)
    whole.add(data)
    for start in (0, 100, 170):
        parts.add(data[start: {0: 100, 100: 170, 170: 300}[start]])
    assert len(parts) == len(whole) == 300 and parts.ids == whole.ids == list(range(300))
    assert torch.equal(parts.embeddings, whole.embeddings)
    a, b = whole.search(queries, k=7), parts.search(queries, k=7)
    assert torch.equal(a.scores, b.scores) and a.ids == b.ids


def test_stored_rows_are_unit_float32_or_raw_without_normalize():
    data = _random(20, 8, seed=4) * 5
    cosine, raw = EmbeddingIndex(8), EmbeddingIndex(8, normalize=False)
    cosine.add(data)
    raw.add(data)
    assert cosine.embeddings.dtype == torch.float32
    torch.testing.assert_close(cosine.embeddings.norm(dim=1), torch.ones(20), atol=1e-6, rtol=0)
    assert torch.equal(raw.embeddings, data)
    query = _random(1, 8, seed=5)
    expected = np.sort((data.numpy() @ query.numpy().T)[:, 0])[::-1][:4]
    np.testing.assert_allclose(raw.search(query, k=4).scores[0].numpy(), expected, rtol=1e-5)


def test_save_load_round_trip(tmp_path):
    index = EmbeddingIndex(12, normalize=True)
    index.add(_random(40, 12, seed=6), ids=[f"a{i}" for i in range(40)], metadata=[{"caption": f"c{i}"} for i in range(40)])
    index.add(_random(5, 12, seed=7), ids=[100, 101, 102, 103, 104])
    description = json.loads(index.save(tmp_path / "sub" / "idx.safetensors").read_text())
    assert description["count"] == 45 and description["dim"] == 12 and description["ids"][-1] == 104
    loaded = EmbeddingIndex.load(tmp_path / "sub" / "idx.safetensors")
    assert (loaded.dim, loaded.normalize, loaded.ids, loaded.metadata) == (12, True, index.ids, index.metadata)
    assert torch.equal(loaded.embeddings, index.embeddings)
    queries = _random(6, 12, seed=8)
    assert loaded.search(queries, k=5).ids == index.search(queries, k=5).ids


def _saved(tmp_path) -> tuple:
    index = EmbeddingIndex(4)
    index.add(_random(6, 4, seed=9))
    path = tmp_path / "idx.safetensors"
    index.save(path)
    return path, path.with_suffix(".json")


def test_load_rejects_corrupted_files(tmp_path):
    path, json_path = _saved(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="path: expected idx.safetensors to have SHA-256 .* corrupted"):
        EmbeddingIndex.load(path)

    path, json_path = _saved(tmp_path)
    description = json.loads(json_path.read_text())
    json_path.write_text(json.dumps({**description, "count": 7, "ids": list(range(7))}))
    with pytest.raises(ValueError, match=r"path: expected one float32 tensor 'embeddings' of shape \(7, 4\)"):
        EmbeddingIndex.load(path)
    json_path.write_text(json.dumps({**description, "ids": [0, 1]}))
    with pytest.raises(ValueError, match="path: expected 6 ids and 6 metadata entries .* got 2 and 6"):
        EmbeddingIndex.load(path)
    json_path.write_text(json.dumps({k: v for k, v in description.items() if k != "normalize"}))
    with pytest.raises(ValueError, match="path: expected a valid index description in .*idx.json, got no 'normalize'"):
        EmbeddingIndex.load(path)
    json_path.write_text("{not json")
    with pytest.raises(ValueError, match="path: embedding index description .*idx.json is corrupted: expected JSON"):
        EmbeddingIndex.load(path)
    json_path.unlink()
    with pytest.raises(FileNotFoundError, match="path: embedding index .* is incomplete: its JSON description "
                                                ".*idx.json is missing"):
        EmbeddingIndex.load(path)
    with pytest.raises(FileNotFoundError, match="path: expected the embedding index .*missing.*found neither"):
        EmbeddingIndex.load(tmp_path / "missing.safetensors")


def test_errors_name_the_argument_and_what_arrived(tmp_path):
    index = EmbeddingIndex(4)
    with pytest.raises(ValueError, match="index: expected at least one embedding to search, got an empty index"):
        index.search(torch.ones(4))
    with pytest.raises(ValueError, match="dim: expected a positive integer, got 0"):
        EmbeddingIndex(0)
    index.add(_random(5, 4, seed=10))
    with pytest.raises(ValueError, match=r"k: expected 1 <= k <= 5 \(the number of indexed embeddings\), got 6"):
        index.search(torch.ones(4), k=6)
    with pytest.raises(ValueError, match=r"k: expected 1 <= k <= 5 .*got 0"):
        index.search(torch.ones(4), k=0)
    with pytest.raises(TypeError, match="k: expected an integer, got float"):
        index.search(torch.ones(4), k=2.0)
    with pytest.raises(ValueError, match=r"embeddings: expected shape \(n, dim=4\), got \(2, 5\)"):
        index.add(torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"queries: expected shape \(n, dim=4\), got \(1, 3\)"):
        index.search(torch.ones(3), k=2)
    with pytest.raises(TypeError, match="embeddings: expected a float tensor .* got dtype torch.int64"):
        index.add(torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"embeddings: expected finite values, got NaN or infinity in rows \[1\]"):
        index.add(torch.tensor([[1.0, 0, 0, 0], [float("nan"), 0, 0, 0]]))
    with pytest.raises(ValueError, match=r"queries: expected finite values, got NaN or infinity in rows \[0\]"):
        index.search(torch.tensor([float("inf"), 0, 0, 0]), k=2)
    with pytest.raises(ValueError, match=r"embeddings: expected non-zero vectors .* got zero rows \[0\]"):
        index.add(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"ids: expected one id per embedding \(2\), got 3"):
        index.add(torch.ones(2, 4), ids=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"ids: expected unique ids, got duplicates \['a'\]"):
        index.add(torch.ones(2, 4), ids=["a", "a"])
    with pytest.raises(ValueError, match=r"ids: expected unique ids, got duplicates \[3\]"):
        index.add(torch.ones(2, 4), ids=[3, 9])  # 3 is already a default id
    with pytest.raises(TypeError, match=r"ids: expected int or str ids, got \[1.5\]"):
        index.add(torch.ones(2, 4), ids=["a", 1.5])
    with pytest.raises(ValueError, match=r"metadata: expected one dictionary per embedding \(2\), got 1"):
        index.add(torch.ones(2, 4), metadata=[{}])
    assert len(index) == 5, "a rejected add must leave the index unchanged"
    index.add(torch.ones(1, 4), metadata=[{"bad": object()}])
    with pytest.raises(TypeError, match="metadata: expected JSON-serialisable dictionaries"):
        index.save(tmp_path / "idx.safetensors")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_device_handling(device, tmp_path):
    data, queries = _random(200, 16, seed=11), _random(4, 16, seed=12)
    index = EmbeddingIndex(16, device=device)
    index.add(data)
    assert index.embeddings.device.type == device
    result = index.search(queries, k=5)  # CPU queries are moved to the index's device
    assert result.scores.device.type == device
    expected_scores, expected_rows = _reference(data.numpy(), queries.numpy(), 5)
    assert result.rows.cpu().tolist() == expected_rows.tolist()
    np.testing.assert_allclose(result.scores.cpu().numpy(), expected_scores, atol=1e-5)
    index.save(tmp_path / "idx.safetensors")
    moved = EmbeddingIndex.load(tmp_path / "idx.safetensors", device="cpu")
    assert moved.embeddings.device.type == "cpu" and torch.equal(moved.embeddings, index.embeddings.cpu())


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), dim=st.integers(2, 32), seed=st.integers(0, 2**16), pick=st.integers(0, 10**6))
def test_a_stored_vector_finds_itself_first(n, dim, seed, pick):
    data = _random(n, dim, seed)
    index = EmbeddingIndex(dim)
    index.add(data)
    row = pick % n
    scores, ids, _ = index.search(data[row] * 2.5, k=1)
    cosine = torch.nn.functional.cosine_similarity(data, data[row:row + 1])
    if (cosine > 1 - 1e-6).sum() == 1:  # random Gaussian vectors are distinct, so this always holds in practice
        assert ids[0][0] == row
    assert abs(scores.item() - 1.0) < 1e-5


def test_build_image_index_uses_the_models_image_embeddings():
    model, _ = make_tiny_clip(12, seed=3)
    images = torch.randn(23, 3, 32, 32, generator=torch.Generator().manual_seed(13))
    index = build_image_index(model, images, batch_size=5, progress=False, ids=[f"i{j}" for j in range(23)])
    expected = encode_images(model, images)
    assert len(index) == 23 and index.dim == model.config.embed_dim
    torch.testing.assert_close(index.embeddings, expected, atol=1e-6, rtol=0)
    assert index.search(expected[4], k=1).ids == [["i4"]]
    with pytest.raises(ValueError, match="batch_size: expected a positive integer, got 0"):
        build_image_index(model, images, batch_size=0)
    with pytest.raises(ValueError, match="images: expected a non-empty"):
        build_image_index(model, images[:0], progress=False)


def test_build_image_index_from_uint8_pixels_normalises_batch_by_batch():
    from clip_tutorial import ShapesWorld

    model, _ = make_tiny_clip(12, seed=4)
    world = ShapesWorld(37, split="all", seed=3)
    from_pixels = build_image_index(model, world.images, batch_size=8, progress=False)
    from_floats = build_image_index(model, world.tensors(), batch_size=8, progress=False)
    torch.testing.assert_close(from_pixels.embeddings, from_floats.embeddings, atol=1e-6, rtol=0)
    assert from_pixels.ids == list(range(37))
    with pytest.raises(ValueError, match="batch_size: expected a positive integer, got 0"):
        build_image_index(model, world.images, batch_size=0)


@pytest.mark.parametrize("dim", [3, 64, 300])
def test_single_queries_match_brute_force_numpy(dim):
    """One query at a time takes its own path on the CPU (NumPy's BLAS on the transposed matrix)."""
    data, queries = _random(700, dim, seed=dim), _random(12, dim, seed=dim + 1)
    index = EmbeddingIndex(dim)
    index.add(data)
    expected_scores, expected_rows = _reference(data.double().numpy(), queries.double().numpy(), 10)
    for query, scores, rows in zip(queries, expected_scores, expected_rows):
        result = index.search(query, k=10)
        assert result.rows[0].tolist() == rows.tolist()
        np.testing.assert_allclose(result.scores[0].numpy(), scores, atol=1e-5)
    batch = index.search(queries, k=10)  # the batched path gives the same answers
    assert batch.rows.tolist() == expected_rows.tolist()
