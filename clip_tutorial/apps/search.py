"""An exact embedding index: store many embeddings, find the ``k`` closest to a query.

Explained in Chapter 5.2 (a text-to-image search engine). The index keeps its embeddings in one
float32 matrix. With ``normalize=True`` every row (and every query) is scaled to unit length, so
the dot product of a query with a row is their cosine similarity, and one matrix product followed
by :func:`torch.topk` answers a whole batch of queries exactly. Queries are processed in chunks so
that the score matrix never grows beyond a fixed number of entries.

A single query reads every stored number and does one multiplication and one addition with each,
so its speed is set by memory bandwidth. The matrix is stored transposed, one column per item,
and on a CPU a single query's vector-times-matrix product goes to NumPy's BLAS (OpenBLAS), which
streams that layout through memory on every core; batches of queries, and every search on a GPU,
use PyTorch's matrix product. ``scan_dtype="float16"`` keeps a second, half-size copy that is
scanned first, and only the best ``shortlist`` rows of that scan are scored again exactly in
float32. The README's search benchmark measures both modes against NumPy and FAISS (Chapter 5.7).

An index is saved as two files side by side (by :mod:`clip_tutorial.core.storage`):
``NAME.safetensors`` holds the matrix and ``NAME.json`` holds everything else (dimension, count,
ids, metadata and the SHA-256 of the matrix file), so a truncated or edited file is caught when
the index is loaded.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from clip_tutorial.apps.vectors import (ItemId, ItemRecords, check_item_ids, check_json_metadata, check_k,
                                        check_metadata, check_queries, check_vectors)
from clip_tutorial.core.checks import check_choice
from clip_tutorial.core.storage import load_tensors, save_tensors, tensor_paths
from clip_tutorial.model import CLIP
from clip_tutorial.evaluation.zeroshot import encode_images

__all__ = ["SearchResult", "EmbeddingIndex", "build_image_index", "SCAN_DTYPES"]

#: How many query-by-row scores one chunk of a search may hold (64 MiB of float32).
MAX_SCORES_PER_CHUNK = 1 << 24
#: The ``"format"`` field of every index description.
FORMAT = "clip_tutorial.EmbeddingIndex"
#: The precisions a search may scan in: exact float32, or a half-size copy re-ranked in float32.
SCAN_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: The fewest rows a reduced-precision scan hands to the exact re-rank.
MIN_SHORTLIST = 64


class SearchResult(NamedTuple):
    """What :meth:`EmbeddingIndex.search` returns; unpacks as ``scores, ids, rows``."""

    #: (queries, k) float32 similarities, best first in every row.
    scores: torch.Tensor
    #: For every query, the ids of its ``k`` best items, in the same order.
    ids: list[list[ItemId]]
    #: (queries, k) int64 row numbers of those items in the index.
    rows: torch.Tensor


class EmbeddingIndex(ItemRecords):
    """An exact (brute-force) top-``k`` index over embeddings of one dimension.

    Args:
        dim: the length of every embedding, e.g. ``model.config.embed_dim``.
        device: where the matrix lives and searches run; ``None`` means the CPU.
        normalize: scale stored rows and queries to unit length, so scores are cosine similarities;
            with ``False`` rows are stored as given and scores are plain dot products.
        scan_dtype: ``"float32"`` scores every row exactly; ``"float16"`` or ``"bfloat16"`` also
            keeps a reduced-precision copy (half the bytes again), scans it, and re-ranks the best
            ``shortlist`` rows in float32: the result equals the exact one whenever that shortlist
            holds the exact top ``k``.

    Raises:
        ValueError: if ``dim`` is not a positive integer or ``scan_dtype`` is unknown.

    Explained in Chapter 5.2; the reduced-precision scan in Chapter 5.7.
    """

    def __init__(self, dim: int, device: str | torch.device | None = None, normalize: bool = True,
                 scan_dtype: str = "float32") -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim: expected a positive integer, got {dim!r}")
        check_choice("scan_dtype", scan_dtype, list(SCAN_DTYPES))
        self.dim = dim
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.normalize = bool(normalize)
        self.scan_dtype = scan_dtype
        self._columns = torch.empty(dim, 0, dtype=torch.float32, device=self.device)
        self._scan: torch.Tensor | None = None if scan_dtype == "float32" else torch.empty(
            0, dim, dtype=SCAN_DTYPES[scan_dtype], device=self.device)
        self._ids: list[ItemId] = []
        self._rows: dict[ItemId, int] = {}
        self._metadata: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        scan = "" if self.scan_dtype == "float32" else f", scan_dtype={self.scan_dtype!r}"
        return (f"EmbeddingIndex(dim={self.dim}, count={len(self)}, device={str(self.device)!r}, "
                f"normalize={self.normalize}{scan})")

    @property
    def embeddings(self) -> torch.Tensor:
        """The stored (count, dim) float32 matrix (normalised rows when ``normalize``); do not modify.

        A view of the transposed storage: call ``.contiguous()`` for a row-major copy.
        """
        return self._columns.T

    @property
    def nbytes(self) -> int:
        """The bytes the stored embeddings take (the float32 matrix plus any reduced copy)."""
        scan = 0 if self._scan is None else self._scan.numel() * self._scan.element_size()
        return self._columns.numel() * 4 + scan

    def row_of(self, item_id: ItemId) -> int:
        """The row number of ``item_id``; raises ``KeyError`` if the index has no such id."""
        return self._rows[item_id]

    def add(self, embeddings: torch.Tensor, ids: Sequence[ItemId] | None = None,
            metadata: list[dict[str, Any]] | None = None) -> None:
        """Append embeddings (one row each) with their ids and optional metadata.

        Args:
            embeddings: (n, dim) float tensor of finite values, on any device.
            ids: one unique int or str id per row; ``None`` numbers the rows ``len(self)``,
                ``len(self) + 1``, ...
            metadata: one JSON-serialisable dictionary per row (e.g. a caption or a file name);
                ``None`` gives every row an empty dictionary.

        Raises:
            TypeError: if ``embeddings`` is not a float tensor, or an id is neither int nor str.
            ValueError: on a dimension mismatch, NaN or infinity, a zero vector (with ``normalize``),
                a wrong number of ids or metadata entries, or an id already used.
        """
        vectors = check_vectors(embeddings, self.dim, "embeddings", normalize=self.normalize, device=self.device)
        n = vectors.shape[0]
        ids = check_item_ids(ids, n, self._rows, first=len(self))
        metadata = check_metadata(metadata, n)
        self._columns = torch.cat([self._columns, vectors.T], dim=1)
        if self._scan is not None:
            self._scan = torch.cat([self._scan, vectors.to(self._scan.dtype)])
        self._rows.update({item: len(self._ids) + i for i, item in enumerate(ids)})
        self._ids.extend(ids)
        self._metadata.extend(metadata)

    def _exact(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Score every row of a chunk of queries in float32; the top ``k`` values and rows."""
        if queries.shape[0] == 1 and self.device.type == "cpu":  # one query: memory-bound, see above
            scores = torch.from_numpy(queries[0].numpy() @ self._columns.numpy())[None]
        else:
            scores = queries @ self._columns
        top = torch.topk(scores, k, dim=1)
        return top.values, top.indices

    def _rescored(self, queries: torch.Tensor, k: int, shortlist: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Scan the reduced copy, then score its best ``shortlist`` rows again in float32."""
        low = queries.to(self._scan.dtype)
        rough = torch.mv(self._scan, low[0])[None] if queries.shape[0] == 1 else low @ self._scan.T
        candidates = torch.topk(rough, shortlist, dim=1).indices              # (q, shortlist)
        rows = self._columns.T[candidates]                                   # (q, shortlist, dim)
        exact = torch.bmm(rows, queries.unsqueeze(2)).squeeze(2)
        top = torch.topk(exact, k, dim=1)
        return top.values, candidates.gather(1, top.indices)

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int = 10, chunk_size: int | None = None,
               shortlist: int | None = None) -> SearchResult:
        """The ``k`` stored rows most similar to each query, best first.

        With ``scan_dtype="float32"`` the search is exact. With a reduced ``scan_dtype`` the
        returned scores are exact float32 scores, and the rows are the exact top ``k`` whenever
        the reduced scan's best ``shortlist`` rows hold them. On a CPU a batch of several queries
        is scored exactly even then, since there the float32 matrix product is the faster one.

        Args:
            queries: (q, dim) or (dim,) float tensor, on any device (moved to the index's device).
            k: how many results per query, ``1 <= k <= len(self)``.
            chunk_size: queries scored at once; ``None`` picks as many as keep a chunk's score
                matrix within ``MAX_SCORES_PER_CHUNK`` entries.
            shortlist: rows of the reduced scan re-ranked exactly, ``k <= shortlist``; ``None``
                means ``max(64, 4 * k)`` (at most the whole index). Ignored for float32 scans.

        Returns:
            A :class:`SearchResult` ``(scores, ids, rows)``; a (dim,) query gives one row.

        Raises:
            ValueError: if the index is empty, ``k`` or ``shortlist`` is out of range, the query
                dimension differs, or a query holds NaN or infinity.
            TypeError: if ``queries`` is not a float tensor or ``k`` not an integer.
        """
        k = check_k(k, len(self))
        queries = check_queries(queries, self.dim, normalize=self.normalize, device=self.device)
        if chunk_size is None:
            chunk_size = max(1, MAX_SCORES_PER_CHUNK // len(self))
        elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
            raise ValueError(f"chunk_size: expected a positive integer or None, got {chunk_size!r}")
        if shortlist is None:
            shortlist = min(len(self), max(MIN_SHORTLIST, 4 * k))
        elif isinstance(shortlist, bool) or not isinstance(shortlist, int) or not k <= shortlist <= len(self):
            raise ValueError(f"shortlist: expected an integer with k={k} <= shortlist <= {len(self)} "
                             f"(the number of indexed embeddings), got {shortlist!r}")
        scores, rows = [], []
        for start in range(0, queries.shape[0], chunk_size):
            chunk = queries[start: start + chunk_size]
            # A CPU's half-precision matrix product is slower than its float32 one, so on a CPU
            # only single queries (bound by memory bandwidth, not arithmetic) take the reduced scan.
            reduced = self._scan is not None and (chunk.shape[0] == 1 or self.device.type != "cpu")
            values, indices = self._rescored(chunk, k, shortlist) if reduced else self._exact(chunk, k)
            scores.append(values)
            rows.append(indices)
        score_tensor, row_tensor = torch.cat(scores), torch.cat(rows)
        ids = [[self._ids[r] for r in query_rows] for query_rows in row_tensor.tolist()]
        return SearchResult(score_tensor, ids, row_tensor)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the matrix to ``path`` (safetensors) and the rest to the ``.json`` file beside it.

        Both files are replaced atomically (:func:`~clip_tutorial.core.storage.save_tensors`): a
        failed save leaves a previously saved index intact.

        Args:
            path: the ``.safetensors`` file to write (a path without that suffix gets it).

        Returns:
            The path of the JSON description.

        Raises:
            TypeError: if some metadata cannot be written as JSON.
            PermissionError: if the folder cannot be created or written to.
        """
        metadata = check_json_metadata(self._metadata)
        weights = tensor_paths(path)[0]
        description = {"dim": self.dim, "count": len(self), "normalize": self.normalize, "ids": self._ids,
                       "metadata": metadata, "file": weights.name}
        if self.scan_dtype != "float32":
            description["scan_dtype"] = self.scan_dtype
        return save_tensors(weights, {"embeddings": self._columns.T.contiguous()}, description, format=FORMAT,
                            kind="embedding index", indent=None)[1]  # one line: ids for every row

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> EmbeddingIndex:
        """Read an index written by :meth:`save`, checking its hash and shapes.

        Args:
            path: the ``.safetensors`` file given to :meth:`save`.
            device: where to put the matrix; ``None`` means the CPU.

        Raises:
            FileNotFoundError: if the matrix file or the JSON beside it is missing.
            ValueError: if the JSON is malformed, the file's SHA-256 differs from the recorded
                one, or shapes or counts disagree.
        """
        tensors, description = load_tensors(path, expected_format=FORMAT, kind="embedding index")
        json_path = tensor_paths(path)[1]
        try:
            dim, count, ids = description["dim"], description["count"], description["ids"]
            normalize, metadata = description["normalize"], description["metadata"]
        except KeyError as error:
            raise ValueError(f"path: expected a valid index description in {json_path}, got no {error}") from error
        matrix = tensors.get("embeddings")
        if set(tensors) != {"embeddings"} or matrix.dtype != torch.float32 or tuple(matrix.shape) != (count, dim):
            got = {name: (tuple(t.shape), str(t.dtype)) for name, t in tensors.items()}
            raise ValueError(f"path: expected one float32 tensor 'embeddings' of shape ({count}, {dim}), got {got}")
        if not isinstance(ids, list) or len(ids) != count or not isinstance(metadata, list) or len(metadata) != count:
            raise ValueError(f"path: expected {count} ids and {count} metadata entries in {json_path.name}, "
                             f"got {len(ids) if isinstance(ids, list) else ids!r} and "
                             f"{len(metadata) if isinstance(metadata, list) else metadata!r}")
        index = cls(dim, device=device, normalize=normalize, scan_dtype=description.get("scan_dtype", "float32"))
        index._ids = list(ids)
        index._rows = {item: row for row, item in enumerate(index._ids)}
        if len(index._rows) != count:
            raise ValueError(f"path: expected unique ids in {json_path.name}, got duplicates")
        index._metadata = metadata
        index._columns = matrix.to(index.device).T.contiguous()
        if index._scan is not None:
            index._scan = matrix.to(device=index.device, dtype=index._scan.dtype)
        return index


def build_image_index(model: CLIP, images: torch.Tensor, batch_size: int = 512, progress: bool = True,
                      ids: Sequence[ItemId] | None = None, metadata: list[dict[str, Any]] | None = None,
                      device: str | torch.device | None = None) -> EmbeddingIndex:
    """Embed images with ``model`` in batches (a ``tqdm`` bar counts them) and index the embeddings.

    Args:
        model: a CLIP model; its ``encode_image`` gives the embeddings.
        images: (N, 3, H, W) preprocessed float images, or uint8 pixels (``ShapesWorld.images``),
            which :func:`~clip_tutorial.evaluation.zeroshot.encode_images` normalises batch by batch.
        batch_size: images embedded at once.
        progress: show the progress bar.
        ids: one unique int or str id per image, as for :meth:`EmbeddingIndex.add`.
        metadata: one JSON-serialisable dictionary per image, as for :meth:`EmbeddingIndex.add`.
        device: where the index lives; ``None`` means the model's device.

    Returns:
        A cosine :class:`EmbeddingIndex` of ``N`` rows.

    Raises:
        TypeError: if ``images`` is not a tensor (from :func:`~clip_tutorial.evaluation.zeroshot.encode_images`).
        ValueError: for empty or misshapen ``images`` or a ``batch_size`` that is not a positive integer
            (from :func:`~clip_tutorial.evaluation.zeroshot.encode_images`).

    Explained in Chapter 5.2.
    """
    embeddings = encode_images(model, images, batch_size=batch_size, progress=progress)
    index = EmbeddingIndex(model.config.embed_dim, device=device or next(model.parameters()).device)
    index.add(embeddings, ids=ids, metadata=metadata)
    return index
