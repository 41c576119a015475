"""An exact embedding index: store many embeddings, find the ``k`` closest to a query.

Explained in Chapter 5.2 (a text-to-image search engine). The index keeps one row per item in a
single float32 matrix. With ``normalize=True`` every row (and every query) is scaled to unit
length, so the dot product of a query with a row is their cosine similarity, and one matrix
product followed by :func:`torch.topk` answers a whole batch of queries exactly. Queries are
processed in chunks so that the score matrix never grows beyond a fixed number of entries.

An index is saved as two files side by side (by :mod:`clip_tutorial.core.storage`):
``NAME.safetensors`` holds the matrix and ``NAME.json`` holds everything else (dimension, count,
ids, metadata and the SHA-256 of the matrix file), so a truncated or edited file is caught when
the index is loaded.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from clip_tutorial.core.storage import load_tensors, save_tensors, tensor_paths
from clip_tutorial.model import CLIP
from clip_tutorial.evaluation.zeroshot import encode_images

__all__ = ["SearchResult", "EmbeddingIndex", "build_image_index"]

ItemId = int | str

#: How many query-by-row scores one chunk of a search may hold (64 MiB of float32).
MAX_SCORES_PER_CHUNK = 1 << 24
#: The ``"format"`` field of every index description.
FORMAT = "clip_tutorial.EmbeddingIndex"


class SearchResult(NamedTuple):
    """What :meth:`EmbeddingIndex.search` returns; unpacks as ``scores, ids, rows``."""

    #: (queries, k) float32 similarities, best first in every row.
    scores: torch.Tensor
    #: For every query, the ids of its ``k`` best items, in the same order.
    ids: list[list[ItemId]]
    #: (queries, k) int64 row numbers of those items in the index.
    rows: torch.Tensor


class EmbeddingIndex:
    """An exact (brute-force) top-``k`` index over embeddings of one dimension.

    Args:
        dim: the length of every embedding, e.g. ``model.config.embed_dim``.
        device: where the matrix lives and searches run; ``None`` means the CPU.
        normalize: scale stored rows and queries to unit length, so scores are cosine similarities;
            with ``False`` rows are stored as given and scores are plain dot products.

    Raises:
        ValueError: if ``dim`` is not a positive integer.

    Explained in Chapter 5.2.
    """

    def __init__(self, dim: int, device: str | torch.device | None = None, normalize: bool = True) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim: expected a positive integer, got {dim!r}")
        self.dim = dim
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.normalize = bool(normalize)
        self._matrix = torch.empty(0, dim, dtype=torch.float32, device=self.device)
        self._ids: list[ItemId] = []
        self._rows: dict[ItemId, int] = {}
        self._metadata: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"EmbeddingIndex(dim={self.dim}, count={len(self)}, device={str(self.device)!r}, normalize={self.normalize})"

    @property
    def embeddings(self) -> torch.Tensor:
        """The stored (count, dim) float32 matrix (normalised rows when ``normalize``); do not modify."""
        return self._matrix

    @property
    def ids(self) -> list[ItemId]:
        """The ids of the stored rows, in row order (a copy)."""
        return list(self._ids)

    @property
    def metadata(self) -> list[dict[str, Any]]:
        """The metadata dictionary of every row, in row order (a copy of the list)."""
        return list(self._metadata)

    def row_of(self, item_id: ItemId) -> int:
        """The row number of ``item_id``; raises ``KeyError`` if the index has no such id."""
        return self._rows[item_id]

    def _prepare(self, vectors: object, name: str) -> torch.Tensor:
        """Check a (n, dim) float tensor of finite values and return it as float32 on the index's device."""
        if not isinstance(vectors, torch.Tensor) or not vectors.is_floating_point():
            got = f"dtype {vectors.dtype}" if isinstance(vectors, torch.Tensor) else type(vectors).__name__
            raise TypeError(f"{name}: expected a float tensor (n, dim={self.dim}), got {got}")
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"{name}: expected shape (n, dim={self.dim}), got {tuple(vectors.shape)}")
        vectors = vectors.detach().to(device=self.device, dtype=torch.float32)
        if not bool(torch.isfinite(vectors).all()):
            bad = (~torch.isfinite(vectors)).any(dim=1).nonzero().flatten()[:5].tolist()
            raise ValueError(f"{name}: expected finite values, got NaN or infinity in rows {bad}")
        if self.normalize:
            zero = (vectors.norm(dim=1) == 0).nonzero().flatten()[:5].tolist()
            if zero:
                raise ValueError(f"{name}: expected non-zero vectors (cosine needs a direction), got zero rows {zero}")
            vectors = F.normalize(vectors, dim=1)
        return vectors

    def _check_ids(self, ids: Sequence[ItemId] | None, n: int) -> list[ItemId]:
        if ids is None:
            ids = list(range(len(self), len(self) + n))
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
            raise TypeError(f"ids: expected a sequence of int or str ids, got {type(ids).__name__}")
        if len(ids) != n:
            raise ValueError(f"ids: expected one id per embedding ({n}), got {len(ids)}")
        wrong = [i for i in ids if isinstance(i, bool) or not isinstance(i, (int, str))]
        if wrong:
            raise TypeError(f"ids: expected int or str ids, got {wrong[:5]!r}")
        ids = list(ids)
        seen: set[ItemId] = set()
        repeated = [i for i in ids if i in seen or seen.add(i)]
        clashing = [i for i in ids if i in self._rows]
        if repeated or clashing:
            raise ValueError(f"ids: expected unique ids, got duplicates {(repeated + clashing)[:5]!r}")
        return ids

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
        vectors = self._prepare(embeddings, "embeddings")
        n = vectors.shape[0]
        ids = self._check_ids(ids, n)
        if metadata is None:
            metadata = [{} for _ in range(n)]
        if not isinstance(metadata, list) or not all(isinstance(m, dict) for m in metadata):
            raise TypeError(f"metadata: expected a list of dictionaries, got {type(metadata).__name__}")
        if len(metadata) != n:
            raise ValueError(f"metadata: expected one dictionary per embedding ({n}), got {len(metadata)}")
        self._matrix = torch.cat([self._matrix, vectors])
        self._rows.update({item: len(self._ids) + i for i, item in enumerate(ids)})
        self._ids.extend(ids)
        self._metadata.extend(metadata)

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int = 10, chunk_size: int | None = None) -> SearchResult:
        """The ``k`` stored rows most similar to each query, best first (exact, no approximation).

        Args:
            queries: (q, dim) or (dim,) float tensor, on any device (moved to the index's device).
            k: how many results per query, ``1 <= k <= len(self)``.
            chunk_size: queries scored at once; ``None`` picks as many as keep a chunk's score
                matrix within ``MAX_SCORES_PER_CHUNK`` entries.

        Returns:
            A :class:`SearchResult` ``(scores, ids, rows)``; a (dim,) query gives one row.

        Raises:
            ValueError: if the index is empty, ``k`` is out of range, the query dimension differs,
                or a query holds NaN or infinity.
            TypeError: if ``queries`` is not a float tensor or ``k`` not an integer.
        """
        if len(self) == 0:
            raise ValueError("index: expected at least one embedding to search, got an empty index (call add first)")
        if isinstance(k, bool) or not isinstance(k, int):
            raise TypeError(f"k: expected an integer, got {type(k).__name__}")
        if not 1 <= k <= len(self):
            raise ValueError(f"k: expected 1 <= k <= {len(self)} (the number of indexed embeddings), got {k}")
        if isinstance(queries, torch.Tensor) and queries.ndim == 1:
            queries = queries.unsqueeze(0)
        queries = self._prepare(queries, "queries")
        if chunk_size is None:
            chunk_size = max(1, MAX_SCORES_PER_CHUNK // len(self))
        elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
            raise ValueError(f"chunk_size: expected a positive integer or None, got {chunk_size!r}")
        scores, rows = [], []
        for start in range(0, queries.shape[0], chunk_size):
            top = torch.topk(queries[start: start + chunk_size] @ self._matrix.T, k, dim=1)
            scores.append(top.values)
            rows.append(top.indices)
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
        try:
            metadata = json.loads(json.dumps(self._metadata))
        except (TypeError, ValueError) as error:
            raise TypeError(f"metadata: expected JSON-serialisable dictionaries, got {error}") from error
        weights = tensor_paths(path)[0]
        description = {"dim": self.dim, "count": len(self), "normalize": self.normalize, "ids": self._ids,
                       "metadata": metadata, "file": weights.name}
        return save_tensors(weights, {"embeddings": self._matrix}, description, format=FORMAT,
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
        index = cls(dim, device=device, normalize=normalize)
        index._ids = list(ids)
        index._rows = {item: row for row, item in enumerate(index._ids)}
        if len(index._rows) != count:
            raise ValueError(f"path: expected unique ids in {json_path.name}, got duplicates")
        index._metadata = metadata
        index._matrix = matrix.to(index.device)
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
