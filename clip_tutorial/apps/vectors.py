"""Checks shared by the embedding indexes: query and row tensors, ``k``, and item ids.

Explained in Chapter 5.2 (a text-to-image search engine). The exact
:class:`~clip_tutorial.apps.search.EmbeddingIndex` and the approximate
:class:`~clip_tutorial.apps.ann.FaissIndex` reject the same bad input with the same messages.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Union

import torch
import torch.nn.functional as F

__all__ = ["ItemId", "ItemRecords", "check_vectors", "check_queries", "check_k", "check_item_ids", "check_metadata",
           "check_json_metadata"]

ItemId = Union[int, str]


class ItemRecords:
    """The ids and metadata of an index's rows, in row order; both indexes inherit them."""

    _ids: list[ItemId]
    _metadata: list[dict[str, Any]]

    @property
    def ids(self) -> list[ItemId]:
        """The ids of the stored rows, in row order (a copy)."""
        return list(self._ids)

    @property
    def metadata(self) -> list[dict[str, Any]]:
        """The metadata dictionary of every row, in row order (a copy of the list)."""
        return list(self._metadata)


def check_vectors(vectors: object, dim: int, name: str, *, normalize: bool,
                  device: torch.device) -> torch.Tensor:
    """Check a (n, dim) float tensor of finite values; return it as float32 on ``device``.

    Args:
        vectors: the tensor to check.
        dim: the length every row must have.
        name: the argument's name, used in error messages.
        normalize: scale every row to unit length (zero rows are refused).
        device: where the returned tensor lives.

    Raises:
        TypeError: if ``vectors`` is not a floating-point tensor.
        ValueError: on a wrong shape, NaN or infinity, or (with ``normalize``) a zero row.
    """
    if not isinstance(vectors, torch.Tensor) or not vectors.is_floating_point():
        got = f"dtype {vectors.dtype}" if isinstance(vectors, torch.Tensor) else type(vectors).__name__
        raise TypeError(f"{name}: expected a float tensor (n, dim={dim}), got {got}")
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"{name}: expected shape (n, dim={dim}), got {tuple(vectors.shape)}")
    vectors = vectors.detach().to(device=device, dtype=torch.float32)
    if not bool(torch.isfinite(vectors).all()):
        bad = (~torch.isfinite(vectors)).any(dim=1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"{name}: expected finite values, got NaN or infinity in rows {bad}")
    if normalize:
        zero = (vectors.norm(dim=1) == 0).nonzero().flatten()[:5].tolist()
        if zero:
            raise ValueError(f"{name}: expected non-zero vectors (cosine needs a direction), got zero rows {zero}")
        vectors = F.normalize(vectors, dim=1)
    return vectors


def check_queries(queries: object, dim: int, *, normalize: bool, device: torch.device) -> torch.Tensor:
    """Check a (q, dim) or (dim,) float tensor of queries; return it as (q, dim) float32 on ``device``.

    Raises:
        TypeError, ValueError: as :func:`check_vectors`, for the argument ``queries``.
    """
    if isinstance(queries, torch.Tensor) and queries.ndim == 1:
        queries = queries.unsqueeze(0)
    return check_vectors(queries, dim, "queries", normalize=normalize, device=device)


def check_k(k: object, count: int, name: str = "k") -> int:
    """Check that ``k`` is an integer with ``1 <= k <= count`` for an index of ``count`` rows.

    Raises:
        ValueError: if the index is empty or ``k`` is out of range.
        TypeError: if ``k`` is not an integer.
    """
    if count == 0:
        raise ValueError("index: expected at least one embedding to search, got an empty index (call add first)")
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"{name}: expected an integer, got {type(k).__name__}")
    if not 1 <= k <= count:
        raise ValueError(f"{name}: expected 1 <= {name} <= {count} (the number of indexed embeddings), got {k}")
    return k


def check_item_ids(ids: Sequence[ItemId] | None, n: int, taken: Sequence[ItemId] | dict = (),
                   first: int = 0) -> list[ItemId]:
    """Check one unique int or str id per row; ``None`` numbers the rows ``first``, ``first + 1``, ...

    Args:
        ids: the ids, or ``None``.
        n: how many rows they name.
        taken: ids already in use (a dictionary is searched by key).
        first: the first number given when ``ids`` is ``None``.

    Raises:
        TypeError: if ``ids`` is not a sequence, or an id is neither int nor str.
        ValueError: on a wrong count, or an id repeated or already taken.
    """
    if ids is None:
        ids = list(range(first, first + n))
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
    clashing = [i for i in ids if i in taken]
    if repeated or clashing:
        raise ValueError(f"ids: expected unique ids, got duplicates {(repeated + clashing)[:5]!r}")
    return ids


def check_metadata(metadata: list[dict] | None, n: int) -> list[dict]:
    """Check one dictionary per row; ``None`` gives every row an empty dictionary.

    Raises:
        TypeError: if ``metadata`` is not a list of dictionaries.
        ValueError: if it does not hold exactly ``n`` of them.
    """
    if metadata is None:
        return [{} for _ in range(n)]
    if not isinstance(metadata, list) or not all(isinstance(m, dict) for m in metadata):
        raise TypeError(f"metadata: expected a list of dictionaries, got {type(metadata).__name__}")
    if len(metadata) != n:
        raise ValueError(f"metadata: expected one dictionary per embedding ({n}), got {len(metadata)}")
    return metadata


def check_json_metadata(metadata: list[dict]) -> list[dict]:
    """A copy of ``metadata`` as JSON reads it back, for saving an index's description.

    Raises:
        TypeError: if some entry cannot be written as JSON.
    """
    try:
        return json.loads(json.dumps(metadata))
    except (TypeError, ValueError) as error:
        raise TypeError(f"metadata: expected JSON-serialisable dictionaries, got {error}") from error
