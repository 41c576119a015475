"""Fine-tuning CLIP's image tower, and WiSE-FT: mixing the zero-shot and fine-tuned weights.

Explained in Chapter 6.2. Following Wortsman et al. (2022), "Robust fine-tuning of zero-shot
models", a CLIP becomes a classifier by putting a linear head on its image tower, and the head
starts as the zero-shot classifier: the normalised text embeddings of the class prompts, times
the logit scale. At that point the classifier predicts exactly what zero-shot CLIP predicts.
:func:`fine_tune` then trains the tower and the head end to end with cross-entropy on labelled
images. (Those two live in :mod:`clip_tutorial.train.classifier`, since a LiT recipe trains with them too,
and are imported here, where Chapter 6.2 uses them.) Because the zero-shot model and the fine-tuned one have the same architecture, their
weights can be mixed: :func:`interpolate_weights` computes ``(1 - alpha) * a + alpha * b`` key by
key, and :func:`wise_ft` returns the model with those weights (``alpha = 0`` is the zero-shot
model, ``alpha = 1`` the fine-tuned one).
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

from clip_tutorial.core.checks import check_number, check_type
from clip_tutorial.train.classifier import CLIPClassifier, fine_tune

__all__ = ["CLIPClassifier", "fine_tune", "interpolate_weights", "wise_ft"]

StateDict = Mapping[str, torch.Tensor]


def _state(name: str, value: object) -> StateDict:
    if isinstance(value, nn.Module):
        return value.state_dict()
    if isinstance(value, Mapping) and all(isinstance(t, torch.Tensor) for t in value.values()):
        return value
    raise TypeError(f"{name}: expected an nn.Module or a state dict (a mapping of names to tensors), "
                    f"got {type(value).__name__}")


def interpolate_weights(a: nn.Module | StateDict, b: nn.Module | StateDict, alpha: float) -> dict[str, torch.Tensor]:
    """The weights ``(1 - alpha) * a + alpha * b`` of two models with the same architecture.

    Explained in Chapter 6.2: WiSE-FT's weight-space ensemble, with ``a`` the zero-shot model
    and ``b`` the fine-tuned one. Every floating-point tensor is mixed with :func:`torch.lerp`,
    which returns ``a`` exactly at ``alpha = 0`` and ``b`` exactly at ``alpha = 1``. Integer and
    boolean tensors (counters such as batch norm's ``num_batches_tracked``, index buffers) have no
    meaningful mixture: they are copied from the nearer end, ``a`` for ``alpha < 0.5`` and ``b``
    otherwise. Extrapolation (``alpha`` outside [0, 1]) is refused.

    Args:
        a: a model or its state dict (``alpha = 0``).
        b: a model or state dict with exactly the same keys, shapes and dtypes (``alpha = 1``).
        alpha: the mixing coefficient in [0, 1].

    Returns:
        A new state dict (fresh tensors, in the key order of ``a``), ready for ``load_state_dict``.

    Raises:
        TypeError: if ``a`` or ``b`` is neither a module nor a state dict, or ``alpha`` not a number.
        ValueError: if ``alpha`` is outside [0, 1], or the keys, shapes or dtypes differ (the
            message names the first key that does not match).
    """
    first, second = _state("a", a), _state("b", b)
    alpha = check_number("alpha", alpha, 0.0, 1.0)
    missing = [key for key in first if key not in second]
    extra = [key for key in second if key not in first]
    if missing or extra:
        where, key = ("b", missing[0]) if missing else ("a", extra[0])
        raise ValueError(f"b: expected the same keys as a (the same architecture), but {key!r} is not in "
                         f"{where} ({len(missing)} keys of a missing from b, {len(extra)} keys of b not in a)")
    mixed: dict[str, torch.Tensor] = OrderedDict()
    for key, x in first.items():
        y = second[key]
        if x.shape != y.shape or x.dtype != y.dtype:
            raise ValueError(f"b: expected the same shapes and dtypes as a; at key {key!r} a has shape "
                             f"{tuple(x.shape)} and dtype {x.dtype}, b has shape {tuple(y.shape)} and dtype {y.dtype}")
        if x.is_floating_point() or x.is_complex():
            mixed[key] = torch.lerp(x.detach(), y.detach().to(x.device), alpha)
        else:
            mixed[key] = (x if alpha < 0.5 else y).detach().clone()
    return mixed


def wise_ft(zero_shot: nn.Module, fine_tuned: nn.Module, alpha: float) -> nn.Module:
    """WiSE-FT: a copy of ``zero_shot`` carrying the weights ``(1 - alpha) * zero_shot + alpha * fine_tuned``.

    Explained in Chapter 6.2. Neither input is changed; the result is in eval mode.

    Raises:
        TypeError: if the two are not modules of the same class, or ``alpha`` is not a number.
        ValueError: as :func:`interpolate_weights`.
    """
    check_type("zero_shot", zero_shot, nn.Module)
    if type(fine_tuned) is not type(zero_shot):
        raise TypeError(f"fine_tuned: expected a {type(zero_shot).__name__}, like zero_shot, "
                        f"got {type(fine_tuned).__name__}")
    weights = interpolate_weights(zero_shot, fine_tuned, alpha)
    model = copy.deepcopy(zero_shot)
    model.load_state_dict(weights)
    return model.eval()
