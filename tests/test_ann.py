"""FaissIndex: FAISS's flat, IVF and HNSW indexes against the exact EmbeddingIndex."""
from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
import torch

from clip_tutorial.apps.ann import FaissIndex, default_nlist
from clip_tutorial.apps.search import EmbeddingIndex, SearchResult


def _random(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def _exact(n: int = 2000, dim: int = 24, seed: int = 0) -> EmbeddingIndex:
    index = EmbeddingIndex(dim)
    index.add(_random(n, dim, seed), ids=[f"item{i}" for i in range(n)], metadata=[{"i": i} for i in range(n)])
    return index


def _recall(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got.tolist(), expected.tolist())]))


def test_flat_matches_the_exact_index():
    exact = _exact()
    flat = FaissIndex.build(exact, "flat")
    queries = _random(30, 24, 1)
    got, expected = flat.search(queries, k=10), exact.search(queries, k=10)
    assert isinstance(got, SearchResult) and got.ids == expected.ids
    assert torch.equal(got.rows, expected.rows)
    torch.testing.assert_close(got.scores, expected.scores, atol=1e-5, rtol=0)
    assert flat.ids == exact.ids and flat.metadata == exact.metadata


def test_ivf_probing_every_cell_is_exact_and_probing_one_is_not():
    exact = _exact()
    ivf = FaissIndex.build(exact, "ivf", nlist=32, seed=0)
    queries = _random(40, 24, 2)
    expected = exact.search(queries, k=10).rows
    assert torch.equal(ivf.search(queries, k=10, nprobe=32).rows, expected)
    one = _recall(ivf.search(queries, k=10, nprobe=1).rows, expected)
    four = _recall(ivf.search(queries, k=10, nprobe=4).rows, expected)
    assert one < four < 1.0, (one, four)


def test_hnsw_recall_grows_with_ef_search():
    exact = _exact()
    hnsw = FaissIndex.build(exact, "hnsw", m=8, ef_construction=40)
    queries = _random(40, 24, 3)
    expected = exact.search(queries, k=10).rows
    low = _recall(hnsw.search(queries, k=10, ef_search=10).rows, expected)
    high = _recall(hnsw.search(queries, k=10, ef_search=400).rows, expected)
    assert low < high and high >= 0.99, (low, high)


def test_missing_results_of_a_narrow_ivf_search_are_marked():
    exact = _exact(n=400, dim=8)
    ivf = FaissIndex.build(exact, "ivf", nlist=10)
    result = ivf.search(_random(5, 8, 4), k=200, nprobe=1)  # one cell holds fewer than 200 rows
    missing = result.rows < 0
    assert missing.any() and torch.isinf(result.scores[missing]).all()
    assert all((item is None) == bool(m) for row, ms in zip(result.ids, missing) for item, m in zip(row, ms))


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_export_to_an_embedding_index_round_trips(kind):
    exact = _exact(n=600, dim=16)
    back = FaissIndex.build(exact, kind).to_embedding_index()
    order = [back.row_of(item) for item in exact.ids]  # FAISS keeps the rows in order, but check by id
    # normalising unit rows again may move their last bit
    torch.testing.assert_close(back.embeddings[order], exact.embeddings, atol=1e-6, rtol=0)
    assert back.metadata == exact.metadata


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_load_round_trip(tmp_path, kind):
    index = FaissIndex.build(_exact(n=500, dim=12), kind)
    description = json.loads(index.save(tmp_path / "a" / "f.safetensors").read_text())
    assert description["kind"] == kind and description["count"] == 500
    loaded = FaissIndex.load(tmp_path / "a" / "f.safetensors")
    assert (loaded.kind, loaded.dim, loaded.ids, loaded.metadata) == (kind, 12, index.ids, index.metadata)
    queries = _random(8, 12, 5)
    a, b = index.search(queries, k=5), loaded.search(queries, k=5)
    assert torch.equal(a.rows, b.rows) and torch.equal(a.scores, b.scores)
    assert loaded.nbytes == index.nbytes > 500 * 12 * 4


def test_load_rejects_corrupted_and_edited_files(tmp_path):
    path = tmp_path / "f.safetensors"
    FaissIndex.build(_exact(n=100, dim=4), "flat").save(path)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="SHA-256"):
        FaissIndex.load(path)
    FaissIndex.build(_exact(n=100, dim=4), "flat").save(path)
    json_path = path.with_suffix(".json")
    description = json.loads(json_path.read_text())
    json_path.write_text(json.dumps({**description, "count": 99}))
    with pytest.raises(ValueError, match="expected a FAISS index of 99 vectors of dimension 4"):
        FaissIndex.load(path)
    json_path.write_text(json.dumps({k: v for k, v in description.items() if k != "ids"}))
    with pytest.raises(ValueError, match="got no 'ids'"):
        FaissIndex.load(path)


def test_a_hand_built_faiss_index_can_be_wrapped():
    data = torch.nn.functional.normalize(_random(300, 8, 6), dim=1)
    raw = faiss.IndexFlatIP(8)
    raw.add(data.numpy())
    wrapped = FaissIndex(raw, ids=[f"p{i}" for i in range(300)])
    assert wrapped.search(data[17], k=1).ids == [["p17"]]
    with pytest.raises(ValueError, match="METRIC_INNER_PRODUCT"):
        FaissIndex(faiss.IndexFlatL2(8))
    with pytest.raises(ValueError, match="empty FAISS index"):
        FaissIndex(faiss.IndexFlatIP(8))
    with pytest.raises(TypeError, match="index: expected a faiss.Index, got ndarray"):
        FaissIndex(data.numpy())
    with pytest.raises(ValueError, match=r"ids: expected one id per embedding \(300\), got 2"):
        FaissIndex(raw, ids=["a", "b"])


def test_bad_input_is_refused():
    exact = _exact(n=200, dim=8)
    flat, ivf = FaissIndex.build(exact, "flat"), FaissIndex.build(exact, "ivf", nlist=4)
    with pytest.raises(ValueError, match=r"queries: expected shape \(n, dim=8\), got \(1, 9\)"):
        flat.search(_random(1, 9, 7), k=1)
    with pytest.raises(ValueError, match="queries: expected finite values, got NaN"):
        flat.search(torch.full((8,), float("nan")), k=1)
    with pytest.raises(ValueError, match="k: expected 1 <= k <= 200"):
        flat.search(_random(1, 8, 8), k=201)
    with pytest.raises(TypeError, match="k: expected an integer"):
        flat.search(_random(1, 8, 8), k=2.0)
    with pytest.raises(ValueError, match="nprobe: applies to an IVF index"):
        flat.search(_random(1, 8, 8), k=1, nprobe=2)
    with pytest.raises(ValueError, match="ef_search: applies to an HNSW index"):
        ivf.search(_random(1, 8, 8), k=1, ef_search=2)
    with pytest.raises(ValueError, match="nprobe: expected a positive integer, got 0"):
        ivf.search(_random(1, 8, 8), k=1, nprobe=0)
    with pytest.raises(ValueError, match="source: expected at least one embedding"):
        FaissIndex.build(EmbeddingIndex(8), "flat")
    with pytest.raises(ValueError, match="kind: expected one of"):
        FaissIndex.build(exact, "pq")
    with pytest.raises(ValueError, match=r"nlist: expected at most the number of rows \(200\), got 201"):
        FaissIndex.build(exact, "ivf", nlist=201)
    with pytest.raises(ValueError, match="m: expected a positive integer, got -1"):
        FaissIndex.build(exact, "hnsw", m=-1)
    with pytest.raises(TypeError, match="source: expected a clip_tutorial EmbeddingIndex"):
        FaissIndex.build(torch.zeros(3, 8), "flat")


def test_default_nlist_follows_the_square_root_rule():
    assert default_nlist(1_000_000) == 4000 and default_nlist(100) == 2 and default_nlist(10) == 1


def test_gaussian_like_draws_unit_vectors_with_the_embeddings_direction_and_spread():
    from clip_tutorial.apps.ann import gaussian_like

    generator = torch.Generator().manual_seed(9)
    mean = torch.zeros(6)
    mean[0] = 1.0  # concentrated around one direction, with a different spread along each axis
    spread = torch.linspace(0.1, 0.4, 6)
    source = torch.nn.functional.normalize(mean + torch.randn(4000, 6, generator=generator) * spread, dim=1)
    drawn = gaussian_like(source, 20_000, seed=1)
    assert drawn.shape == (20_000, 6) and drawn.dtype == torch.float32
    torch.testing.assert_close(drawn.norm(dim=1), torch.ones(20_000), atol=1e-5, rtol=0)
    # the draws are renormalised, so compare what survives that: the mean direction and the spread
    torch.testing.assert_close(drawn.mean(0), source.mean(0), atol=0.02, rtol=0)
    torch.testing.assert_close(drawn.std(0), source.std(0), atol=0.02, rtol=0)
    assert torch.equal(gaussian_like(source, 10, seed=3), gaussian_like(source, 10, seed=3))
    assert not torch.equal(gaussian_like(source, 10, seed=3), gaussian_like(source, 10, seed=4))
    with pytest.raises(TypeError, match=r"embeddings: expected a \(rows, dim\) float tensor, got shape \(6,\)"):
        gaussian_like(source[0], 5)
    with pytest.raises(ValueError, match="embeddings: expected at least 2 rows"):
        gaussian_like(source[:1], 5)
    with pytest.raises(ValueError, match="n: expected a positive integer, got 0"):
        gaussian_like(source, 0)
    with pytest.raises(ValueError, match="embeddings: expected finite values"):
        gaussian_like(torch.full((3, 6), float("nan")), 5)
