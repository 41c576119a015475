"""Approximate nearest-neighbour search with FAISS: flat, IVF and HNSW indexes behind one interface.

Explained in Chapter 5.7 (search at scale). :class:`FaissIndex` wraps a FAISS index that scores
by inner product, with the ids and metadata of an
:class:`~clip_tutorial.apps.search.EmbeddingIndex`, and answers :meth:`FaissIndex.search` with the
same :class:`~clip_tutorial.apps.search.SearchResult`. Three kinds are built here:

- ``"flat"``: FAISS's exact brute-force scan, the same answers as ``EmbeddingIndex``.
- ``"ivf"``: an inverted file. k-means splits the rows into ``nlist`` cells; a query scores the
  rows of its ``nprobe`` nearest cells only.
- ``"hnsw"``: a hierarchical navigable small-world graph of ``m`` links per row; a query walks the
  graph, keeping the ``ef_search`` best rows seen so far.

FAISS is an optional dependency (``pip install faiss-cpu``, or the ``faiss`` extra). An index is
saved like an ``EmbeddingIndex``: FAISS's own byte serialisation in a safetensors file and the
rest in the JSON beside it, with the SHA-256 of the bytes, so nothing is unpickled on load.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clip_tutorial.apps.search import EmbeddingIndex, SearchResult
from clip_tutorial.apps.vectors import (ItemId, ItemRecords, check_item_ids, check_json_metadata, check_k,
                                        check_metadata, check_queries, check_vectors)
from clip_tutorial.core.checks import check_choice, check_positive_int
from clip_tutorial.core.storage import load_tensors, save_tensors, tensor_paths

__all__ = ["FaissIndex", "KINDS", "import_faiss", "default_nlist", "gaussian_like"]

#: The kinds of index :meth:`FaissIndex.build` makes.
KINDS = ("flat", "ivf", "hnsw")
#: The ``"format"`` field of every saved FAISS index description.
FORMAT = "clip_tutorial.FaissIndex"
#: How the errors for counts such as ``nlist`` and ``nprobe`` word what was expected.
POSITIVE = "a positive integer"


def import_faiss() -> Any:
    """Import and return the ``faiss`` module, or raise an ``ImportError`` that says how to install it."""
    try:
        import faiss
    except ImportError as error:
        raise ImportError("FaissIndex needs FAISS: pip install faiss-cpu "
                          "(or pip install 'clip-tutorial[faiss]')") from error
    return faiss


def default_nlist(count: int) -> int:
    """FAISS's rule of thumb for the number of IVF cells: about ``4 * sqrt(count)``.

    Capped so that every cell gets at least 39 training rows, the fewest k-means accepts without a
    warning, and at least 1.
    """
    return max(1, min(round(4 * math.sqrt(count)), count // 39))


def gaussian_like(embeddings: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` unit vectors drawn from a Gaussian with the mean and covariance of ``embeddings``.

    A stand-in for a collection too large to embed: the rows of ``embeddings`` (e.g. a model's image
    embeddings) are scaled to unit length, their mean and covariance estimated, and ``n`` draws
    from that Gaussian scaled to unit length again. The draws keep the embeddings' direction and
    anisotropy but not their clusters.

    Raises:
        TypeError: if ``embeddings`` is not a float tensor, or ``n`` not an integer.
        ValueError: if it has fewer than two finite, non-zero rows, or ``n`` is not positive.
    """
    if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2:
        got = f"shape {tuple(embeddings.shape)}" if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__
        raise TypeError(f"embeddings: expected a (rows, dim) float tensor, got {got}")
    rows = check_vectors(embeddings, embeddings.shape[1], "embeddings", normalize=True, device=torch.device("cpu"))
    if rows.shape[0] < 2:
        raise ValueError(f"embeddings: expected at least 2 rows to estimate a covariance, got {rows.shape[0]}")
    n = check_positive_int("n", n, expected=POSITIVE)
    rows = rows.double()
    mean = rows.mean(dim=0)
    covariance = torch.cov(rows.T) + 1e-8 * torch.eye(rows.shape[1], dtype=torch.float64)
    factor = torch.linalg.cholesky(covariance)
    noise = torch.randn(n, rows.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.nn.functional.normalize(mean + noise @ factor.T, dim=1).float()


class FaissIndex(ItemRecords):
    """A FAISS index of inner products with the ids and metadata of its rows.

    Args:
        index: any FAISS index built with ``METRIC_INNER_PRODUCT`` (e.g. one you built yourself).
        ids: one unique int or str id per stored vector; ``None`` numbers them ``0, 1, ...``.
        metadata: one dictionary per stored vector; ``None`` gives each an empty one.
        normalize: scale queries to unit length before searching (as the rows should be).
        kind: a label for ``repr`` and the saved description, e.g. ``"ivf"``.

    Raises:
        ImportError: if FAISS is not installed.
        TypeError: if ``index`` is not a FAISS index, or ids or metadata are malformed.
        ValueError: if the index does not score by inner product, is empty, or the number of ids
            or metadata entries differs from its size.

    Explained in Chapter 5.7.
    """

    def __init__(self, index: Any, ids: Sequence[ItemId] | None = None, metadata: list[dict] | None = None,
                 normalize: bool = True, kind: str = "custom") -> None:
        faiss = import_faiss()
        if not isinstance(index, faiss.Index):
            raise TypeError(f"index: expected a faiss.Index, got {type(index).__name__}")
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(f"index: expected a FAISS index with METRIC_INNER_PRODUCT, got metric {index.metric_type}")
        if index.ntotal == 0:
            raise ValueError("index: expected at least one vector, got an empty FAISS index")
        self.index, self.kind, self.normalize = index, kind, bool(normalize)
        self.dim = int(index.d)
        self._ids = check_item_ids(ids, int(index.ntotal))
        self._metadata = check_metadata(metadata, int(index.ntotal))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def __repr__(self) -> str:
        return f"FaissIndex(kind={self.kind!r}, dim={self.dim}, count={len(self)}, normalize={self.normalize})"

    @property
    def nbytes(self) -> int:
        """The size of the index in bytes, as FAISS serialises it (vectors plus structure)."""
        return int(import_faiss().serialize_index(self.index).size)

    @classmethod
    def build(cls, source: EmbeddingIndex, kind: str = "flat", *, nlist: int | None = None, m: int = 32,
              ef_construction: int = 40, seed: int = 0) -> FaissIndex:
        """Copy the rows, ids and metadata of an ``EmbeddingIndex`` into a new FAISS index.

        Args:
            source: the exact index whose rows (already unit length when it normalises) are copied.
            kind: ``"flat"`` (exact), ``"ivf"`` or ``"hnsw"``.
            nlist: IVF cells; ``None`` means :func:`default_nlist` of the row count.
            m: HNSW links per row (FAISS's ``M``).
            ef_construction: HNSW's candidate list while the graph is built.
            seed: the k-means seed of an IVF index.

        Raises:
            ImportError: if FAISS is not installed.
            TypeError: if ``source`` is not an ``EmbeddingIndex``, or a parameter not an integer.
            ValueError: for an empty source, an unknown ``kind``, or parameters that are not
                positive (``nlist`` at most the row count).
        """
        faiss = import_faiss()
        if not isinstance(source, EmbeddingIndex):
            raise TypeError(f"source: expected a clip_tutorial EmbeddingIndex, got {type(source).__name__}")
        check_choice("kind", kind, KINDS)
        if len(source) == 0:
            raise ValueError("source: expected at least one embedding, got an empty index (call add first)")
        vectors = np.ascontiguousarray(source.embeddings.detach().cpu().numpy(), dtype=np.float32)
        dim, count = source.dim, len(source)
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind == "ivf":
            nlist = default_nlist(count) if nlist is None else check_positive_int("nlist", nlist, expected=POSITIVE)
            if nlist > count:
                raise ValueError(f"nlist: expected at most the number of rows ({count}), got {nlist}")
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = int(seed)
            index.train(vectors)
        else:
            index = faiss.IndexHNSWFlat(dim, check_positive_int("m", m, expected=POSITIVE), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = check_positive_int("ef_construction", ef_construction, expected=POSITIVE)
        index.add(vectors)
        return cls(index, source.ids, source.metadata, normalize=source.normalize, kind=kind)

    def to_embedding_index(self) -> EmbeddingIndex:
        """The stored vectors, ids and metadata as an exact ``EmbeddingIndex`` (FAISS reconstructs them).

        Raises:
            RuntimeError: from FAISS, for index kinds that cannot reconstruct their vectors.
        """
        if hasattr(self.index, "make_direct_map") and not self.index.direct_map.type:
            self.index.make_direct_map()  # an IVF index finds a row's vector through this map
        vectors = torch.from_numpy(self.index.reconstruct_n(0, len(self)))
        exact = EmbeddingIndex(self.dim, normalize=self.normalize)
        exact.add(vectors, ids=self._ids, metadata=self._metadata)
        return exact

    def search(self, queries: torch.Tensor, k: int = 10, *, nprobe: int | None = None,
               ef_search: int | None = None) -> SearchResult:
        """The ``k`` stored vectors FAISS finds most similar to each query, best first.

        Args:
            queries: (q, dim) or (dim,) float tensor on any device.
            k: results per query, ``1 <= k <= len(self)``.
            nprobe: IVF cells searched per query (FAISS's default, 1, when ``None``).
            ef_search: HNSW's candidate list while searching (FAISS's default, 16, when ``None``).

        Returns:
            A :class:`~clip_tutorial.apps.search.SearchResult`. Where an approximate index finds
            fewer than ``k`` vectors (an IVF search of too few cells) the missing places have row
            ``-1``, id ``None`` and score ``-inf``.

        Raises:
            ValueError: if ``k`` is out of range, the query dimension differs, a query holds NaN
                or infinity, or ``nprobe``/``ef_search`` is not positive or does not apply to this
                index.
            TypeError: if ``queries`` is not a float tensor, or ``k``, ``nprobe`` or ``ef_search``
                not an integer.
        """
        faiss = import_faiss()
        k = check_k(k, len(self))
        queries = check_queries(queries, self.dim, normalize=self.normalize, device=torch.device("cpu"))
        params = None
        if nprobe is not None:
            if not isinstance(self.index, faiss.IndexIVF):
                raise ValueError(f"nprobe: applies to an IVF index, got a {type(self.index).__name__}")
            params = faiss.SearchParametersIVF(nprobe=check_positive_int("nprobe", nprobe, expected=POSITIVE))
        if ef_search is not None:
            if not isinstance(self.index, faiss.IndexHNSW):
                raise ValueError(f"ef_search: applies to an HNSW index, got a {type(self.index).__name__}")
            params = faiss.SearchParametersHNSW(efSearch=check_positive_int("ef_search", ef_search, expected=POSITIVE))
        scores, rows = self.index.search(np.ascontiguousarray(queries.numpy()), k, params=params)
        scores, rows = torch.from_numpy(scores), torch.from_numpy(rows)
        scores = scores.masked_fill(rows < 0, float("-inf"))
        ids = [[self._ids[r] if r >= 0 else None for r in query_rows] for query_rows in rows.tolist()]
        return SearchResult(scores, ids, rows)

    def save(self, path: str | os.PathLike) -> Path:
        """Write FAISS's bytes to ``path`` (safetensors) and ids, metadata and kind to the ``.json`` beside it.

        Returns:
            The path of the JSON description.

        Raises:
            TypeError: if some metadata cannot be written as JSON.
        """
        faiss = import_faiss()
        weights = tensor_paths(path)[0]
        description = {"kind": self.kind, "dim": self.dim, "count": len(self), "normalize": self.normalize,
                       "ids": self._ids, "metadata": check_json_metadata(self._metadata), "file": weights.name}
        data = torch.from_numpy(faiss.serialize_index(self.index))
        return save_tensors(weights, {"faiss": data}, description, format=FORMAT, kind="FAISS index",
                            indent=None)[1]

    @classmethod
    def load(cls, path: str | os.PathLike) -> FaissIndex:
        """Read an index written by :meth:`save`, checking the SHA-256 of the bytes before FAISS reads them.

        Raises:
            ImportError: if FAISS is not installed.
            FileNotFoundError: if either file is missing.
            ValueError: if the hash differs (a corrupted or edited file), the description is
                malformed, or FAISS's index disagrees with it.
        """
        faiss = import_faiss()
        tensors, description = load_tensors(path, expected_format=FORMAT, kind="FAISS index")
        json_path = tensor_paths(path)[1]
        data = tensors.get("faiss")
        if set(tensors) != {"faiss"} or data.dtype != torch.uint8 or data.ndim != 1:
            raise ValueError(f"path: expected one uint8 tensor 'faiss' in {Path(path).name}, got {sorted(tensors)}")
        try:
            kind, dim, count = description["kind"], description["dim"], description["count"]
            ids, metadata, normalize = description["ids"], description["metadata"], description["normalize"]
        except KeyError as error:
            raise ValueError(f"path: expected a valid FAISS index description in {json_path}, got no {error}") from error
        index = faiss.deserialize_index(data.numpy())
        if (index.d, index.ntotal) != (dim, count):
            raise ValueError(f"path: expected a FAISS index of {count} vectors of dimension {dim} "
                             f"({json_path.name}), got {index.ntotal} of dimension {index.d}")
        return cls(index, ids, metadata, normalize=normalize, kind=kind)
