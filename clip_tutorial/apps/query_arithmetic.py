"""Arithmetic in the joint embedding space: composed queries and walks between concepts.

Explained in Chapter 5.5 ("like this one, but blue") and Chapter 5.6 (walking from one concept to
another). CLIP puts images and texts on the same unit sphere, so a query can mix them: start from
an image's embedding, add the direction of a text ("blue") and subtract the direction of what
should change ("red"), then normalise. Between two embeddings, spherical linear interpolation
(slerp) moves along the great circle at a constant angular speed and stays on the sphere, where
plain linear interpolation cuts through the inside and must be renormalised.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from clip_tutorial.core.checks import check_choice, check_int, check_number, check_tensor

__all__ = ["compose_query", "slerp", "interpolate"]

INTERPOLATION_METHODS = ("slerp", "lerp")


def _check_vectors(value: object, name: str) -> torch.Tensor:
    check_tensor(name, value, floating=True, what="a float tensor (dim,) or (n, dim)")
    if value.ndim not in (1, 2) or value.shape[-1] == 0:
        raise ValueError(f"{name}: expected shape (dim,) or (n, dim), got {tuple(value.shape)}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name}: expected finite values, got NaN or infinity")
    if bool((value.norm(dim=-1) == 0).any()):
        raise ValueError(f"{name}: expected non-zero vectors (a direction is needed), got a zero vector")
    return value


def _unit_pair(a: object, b: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Two checked (dim,) vectors of equal shape, normalised, in float64."""
    a, b = (F.normalize(_check_vectors(v, name).double(), dim=-1) for v, name in ((a, "a"), (b, "b")))
    if a.ndim != 1 or b.shape != a.shape:
        raise ValueError(f"b: expected the shape of a, two (dim,) vectors, got {tuple(a.shape)} and {tuple(b.shape)}")
    return a, b


def compose_query(image_features: torch.Tensor, add: torch.Tensor | None = None,
                  remove: torch.Tensor | None = None, weight: float = 1.0) -> torch.Tensor:
    """``normalise(x + weight * (a - r))`` with every input normalised first: "like x, but a, not r".

    Args:
        image_features: (dim,) or (n, dim) embeddings to start from (normalised here).
        add: text embedding(s) to move towards, (dim,) or (n, dim); ``None`` for none.
        remove: text embedding(s) to move away from, same shapes; ``None`` for none.
        weight: how far to move; ``0`` returns the normalised ``image_features``.

    Returns:
        Unit-length queries with the shape of ``image_features`` broadcast against ``add`` and
        ``remove`` (a (dim,) input and (dim,) texts give a (dim,) query).

    Raises:
        TypeError: if an input is not a float tensor or ``weight`` not a number.
        ValueError: on a zero, NaN or infinite vector, mismatched dimensions, or a non-finite weight.

    Explained in Chapter 5.5.
    """
    query = F.normalize(_check_vectors(image_features, "image_features").float(), dim=-1)
    weight = check_number("weight", weight)
    for name, texts, sign in (("add", add, 1.0), ("remove", remove, -1.0)):
        if texts is None:
            continue
        texts = _check_vectors(texts, name).to(query.device)
        if texts.shape[-1] != query.shape[-1]:
            raise ValueError(f"{name}: expected embeddings of dimension {query.shape[-1]}, got shape "
                             f"{tuple(texts.shape)}")
        if texts.ndim == 2 and query.ndim == 2 and texts.shape[0] not in (1, query.shape[0]):
            raise ValueError(f"{name}: expected 1 or {query.shape[0]} rows (one per image), got {texts.shape[0]}")
        query = query + sign * weight * F.normalize(texts.float(), dim=-1)
    if bool((query.norm(dim=-1) < 1e-12).any()):
        raise ValueError("weight: expected a query that is not the zero vector, got one that cancels out "
                         f"(weight={weight})")
    return F.normalize(query, dim=-1)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Spherical linear interpolation between the directions of ``a`` and ``b``.

    With ``theta`` the angle between the normalised ``a`` and ``b``, the result is
    ``(sin((1 - t) theta) a + sin(t theta) b) / sin(theta)``: ``t = 0`` gives ``a``, ``t = 1``
    gives ``b``, and equal steps in ``t`` are equal steps in angle. When ``a`` and ``b`` (almost)
    coincide it falls back to normalised linear interpolation; exactly opposite vectors have no
    unique great circle and are refused.

    Args:
        a: (dim,) start vector (normalised here).
        b: (dim,) end vector (normalised here).
        t: a number, or a 1-D tensor of numbers, usually in [0, 1] (values outside extrapolate).

    Returns:
        (dim,) for a number ``t``, (len(t), dim) for a tensor; every row has unit length.

    Raises:
        TypeError: if ``a``/``b`` are not float tensors or ``t`` is neither a number nor a tensor.
        ValueError: on shape mismatches, zero or non-finite vectors, or opposite ``a`` and ``b``.

    Explained in Chapter 5.6.
    """
    a, b = _unit_pair(a, b)
    scalar = not isinstance(t, torch.Tensor)
    if scalar:
        steps = torch.tensor([check_number("t", t)], dtype=torch.float64)
    else:
        if t.ndim != 1 or not bool(torch.isfinite(t).all()):
            raise ValueError(f"t: expected a number or a 1-D tensor of finite numbers, got shape {tuple(t.shape)}")
        steps = t.detach().double().cpu()
    cosine = float(torch.dot(a, b).clamp(-1.0, 1.0))
    if cosine < -1 + 1e-7:
        raise ValueError("b: expected a vector not opposite to a (slerp between antipodes is undefined)")
    theta = torch.tensor(cosine, dtype=torch.float64).acos()
    if float(theta) < 1e-6:
        out = F.normalize((1 - steps)[:, None] * a + steps[:, None] * b, dim=-1)
    else:
        out = (torch.sin((1 - steps) * theta)[:, None] * a + torch.sin(steps * theta)[:, None] * b) / torch.sin(theta)
    out = out.float().to(a.device)
    return out[0] if scalar else out


def interpolate(a: torch.Tensor, b: torch.Tensor, steps: int = 9, method: str = "slerp") -> torch.Tensor:
    """``steps`` unit vectors from ``a`` to ``b`` (both ends included), for a walk between concepts.

    Args:
        a: (dim,) start embedding, e.g. the text embedding of "a red circle".
        b: (dim,) end embedding.
        steps: number of points, at least 2; ``t`` runs evenly from 0 to 1.
        method: ``"slerp"`` (constant angular speed, see :func:`slerp`) or ``"lerp"`` (straight
            line, then normalised: faster in the middle, slower at the ends).

    Returns:
        A (steps, dim) float32 tensor of unit rows.

    Raises:
        ValueError: for fewer than 2 steps, an unknown method, or as :func:`slerp`.
        TypeError: if ``steps`` is not an integer or the vectors are not float tensors.

    Explained in Chapter 5.6.
    """
    steps = check_int("steps", steps, minimum=2)  # both ends at least
    check_choice("method", method, INTERPOLATION_METHODS)
    t = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    if method == "slerp":
        return slerp(a, b, t)
    a, b = _unit_pair(a, b)
    line = (1 - t)[:, None] * a + t[:, None] * b
    if bool((line.norm(dim=-1) < 1e-9).any()):
        raise ValueError("b: expected a vector not opposite to a (the straight line passes through zero)")
    return F.normalize(line, dim=-1).float().to(a.device)
