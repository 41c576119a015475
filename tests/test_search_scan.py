"""The reduced-precision scan of EmbeddingIndex: exact re-rank, its guarantee, and its errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clip_tutorial.apps.search import EmbeddingIndex

REDUCED = ["float16", "bfloat16"]


def _random(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def _exact_rows(data: torch.Tensor, queries: torch.Tensor, k: int) -> np.ndarray:
    """Cosine top-k rows, computed in float64 by sorting every similarity."""
    data = torch.nn.functional.normalize(data.double(), dim=1)
    queries = torch.nn.functional.normalize(queries.double(), dim=1)
    return np.argsort(-(queries @ data.T).numpy(), axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("scan_dtype", REDUCED)
def test_rerank_returns_exact_rows_whenever_the_shortlist_holds_them(scan_dtype):
    n, dim, k, shortlist = 3000, 48, 10, 40
    data, queries = _random(n, dim, 10), _random(60, dim, 11)
    index = EmbeddingIndex(dim, scan_dtype=scan_dtype)
    index.add(data)
    exact = _exact_rows(data, queries, k)
    # The reduced scan's order, recomputed here from the rounded rows and queries: the exact top k
    # counts as held when it lies well inside the shortlist (half of it), clear of rounding at its edge.
    dtype = getattr(torch, scan_dtype)
    rounded = torch.nn.functional.normalize(data, dim=1).to(dtype).double()
    rough = torch.nn.functional.normalize(queries, dim=1).to(dtype).double() @ rounded.T
    held = [set(e) <= set(np.argsort(-r.numpy(), kind="stable")[: shortlist // 2]) for e, r in zip(exact, rough)]
    assert sum(held) >= 50, "the condition must hold for most queries, or the test checks little"
    for query, expected, holds in zip(queries, exact, held):  # one query at a time: the reduced path
        result = index.search(query, k=k, shortlist=shortlist)
        if holds:
            assert result.rows[0].tolist() == expected.tolist()
    full = index.search(queries, k=k)  # a batch on the CPU is scored exactly
    assert full.rows.tolist() == exact.tolist()


@pytest.mark.parametrize("scan_dtype", REDUCED)
def test_scores_are_exact_float32_scores_of_the_returned_rows(scan_dtype):
    data, query = _random(500, 32, 12), _random(1, 32, 13)
    index = EmbeddingIndex(32, scan_dtype=scan_dtype)
    index.add(data)
    result = index.search(query, k=5)
    unit = torch.nn.functional.normalize
    expected = (unit(data.double(), dim=1)[result.rows[0]] @ unit(query.double(), dim=1)[0]).float()
    torch.testing.assert_close(result.scores[0], expected, atol=2e-6, rtol=0)


def test_a_shortlist_of_k_can_miss_and_a_longer_one_recovers_the_exact_answer():
    # Scores 1.00049 and 1.00051 with the query (1, 1): float16 rounds the first row up to 1.000977
    # and the second down to about 1.00003, so the reduced scan prefers the worse row.
    worse, better = [1 + 4.9e-4, 0.0], [1 + 4.8e-4, 3e-5]
    data = torch.tensor([worse, better] + [[-1.0, float(i) / 10] for i in range(8)])
    index = EmbeddingIndex(2, normalize=False, scan_dtype="float16")
    index.add(data)
    query = torch.tensor([1.0, 1.0])
    assert index.search(query, k=1, shortlist=1).rows.tolist() == [[0]]  # the reduced scan alone
    assert index.search(query, k=1, shortlist=2).rows.tolist() == [[1]]  # re-ranked: exact
    exact = EmbeddingIndex(2, normalize=False)
    exact.add(data)
    assert exact.search(query, k=1).rows.tolist() == [[1]]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 60), dim=st.integers(1, 12), k=st.integers(1, 60), seed=st.integers(0, 10_000),
       scan_dtype=st.sampled_from(REDUCED))
def test_a_shortlist_of_the_whole_index_is_exact(n, dim, k, seed, scan_dtype):
    k = min(k, n)
    data, query = _random(n, dim, seed) + 0.01, _random(1, dim, seed + 1)
    index, exact = EmbeddingIndex(dim, scan_dtype=scan_dtype), EmbeddingIndex(dim)
    index.add(data)
    exact.add(data)
    got, expected = index.search(query, k=k, shortlist=n), exact.search(query, k=k)
    # The k best scores, not the rows: rows with equal scores may trade places.
    torch.testing.assert_close(got.scores, expected.scores, atol=1e-6, rtol=0)


def test_reduced_copy_follows_adds_and_costs_half_the_bytes_again():
    index = EmbeddingIndex(16, scan_dtype="float16")
    index.add(_random(100, 16, 14))
    index.add(_random(50, 16, 15))
    assert index.nbytes == 150 * 16 * (4 + 2)
    assert "scan_dtype='float16'" in repr(index)
    torch.testing.assert_close(index._scan.float(), index.embeddings, atol=1e-3, rtol=0)


def test_save_load_keeps_the_scan_dtype(tmp_path):
    index = EmbeddingIndex(8, scan_dtype="bfloat16")
    index.add(_random(40, 8, 16))
    index.save(tmp_path / "i.safetensors")
    loaded = EmbeddingIndex.load(tmp_path / "i.safetensors")
    assert loaded.scan_dtype == "bfloat16" and torch.equal(loaded._scan, index._scan)
    query = _random(1, 8, 17)
    assert loaded.search(query, k=5).ids == index.search(query, k=5).ids


def test_bad_scan_dtype_and_shortlist_are_refused():
    with pytest.raises(ValueError, match="scan_dtype: expected one of .*float16.*got 'int8'"):
        EmbeddingIndex(4, scan_dtype="int8")
    with pytest.raises(TypeError, match="scan_dtype"):
        EmbeddingIndex(4, scan_dtype=None)
    index = EmbeddingIndex(4, scan_dtype="float16")
    index.add(_random(20, 4, 18))
    for bad in (4, 21, 0, 2.5, True):
        with pytest.raises(ValueError, match=r"shortlist: expected an integer with k=5 <= shortlist <= 20"):
            index.search(_random(1, 4, 19), k=5, shortlist=bad)
    with pytest.raises(ValueError, match="queries: expected finite values"):
        index.search(torch.tensor([1.0, float("nan"), 0.0, 0.0]), k=1)
    with pytest.raises(ValueError, match=r"queries: expected shape \(n, dim=4\), got \(1, 5\)"):
        index.search(_random(1, 5, 20), k=1)
    with pytest.raises(ValueError, match="k: expected 1 <= k <= 20"):
        index.search(_random(1, 4, 21), k=21)
    with pytest.raises(ValueError, match="empty index"):
        EmbeddingIndex(4, scan_dtype="float16").search(_random(1, 4, 22), k=1)
