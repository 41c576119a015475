"""Solutions of the exercises of Chapter 6, one function per exercise, named after it.

Read one with ``clip_tutorial.exercises.show_solution("ch6.<name>")``. Explained in Chapter 6.
"""
from __future__ import annotations

import torch


def effective_robustness(baseline_id: torch.Tensor, baseline_shifted: torch.Tensor, model_id: float,
                         model_shifted: float) -> float:
    """One model's accuracy under the shift above what the baselines' line predicts for its ID accuracy.

    Put every accuracy on the logit scale, where models trained on the same data lie close to a
    straight line (Taori et al., 2020). Fit that line by least squares on the baselines, with the
    ID logit as x and the shifted logit as y. Read off the line at the model's ID logit, go back to
    an accuracy with the sigmoid, and subtract it from the model's shifted accuracy: positive means
    above the line, more robust than baselines of the same ID accuracy.
    """
    x, y = torch.logit(baseline_id.double()), torch.logit(baseline_shifted.double())
    dx = x - x.mean()
    slope = (dx * (y - y.mean())).sum() / (dx * dx).sum()
    intercept = y.mean() - slope * x.mean()
    on_the_line = torch.sigmoid(slope * torch.logit(torch.tensor(model_id, dtype=torch.float64)) + intercept)
    return model_shifted - on_the_line.item()


def rotation_accuracy() -> float:
    """``ch1-demo``'s zero-shot accuracy when every object is turned a further quarter turn.

    Training turned objects by at most 15 degrees, and the turn changes no colour, so ask shape by
    shape what a quarter turn does (the eight shapes are about equally common):

    - a circle, a square and a cross have four-fold symmetry: turned by 90 degrees they are the
      same picture, and keep their accuracy, nearly 1;
    - a heart, and a diamond (a rhombus taller than wide), lie on their side: a view never seen,
      and nothing else in training looks like it, so count them as lost;
    - a triangle (three-fold), a star (five-fold) and a hexagon (six-fold) turned by 90 degrees
      look like themselves turned by 30, 18 and 30 degrees: just beyond the training range, so
      count half of them recognised.

    That is (3 * 1 + 3 * 0.5 + 2 * 0) / 8, about 0.56: far below the in-distribution accuracy,
    far above the 1/64 of chance.
    """
    kept, partly, lost = 3, 3, 2
    return (kept * 1.0 + partly * 0.5 + lost * 0.0) / (kept + partly + lost)


def interpolate_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """WiSE-FT's weight-space ensemble: ``(1 - alpha) a + alpha b`` for every tensor of two state dicts.

    ``a`` is the zero-shot model (alpha = 0) and ``b`` the fine-tuned one (alpha = 1). Floating-point
    tensors are mixed; an integer tensor, such as a counter of batches seen, has no meaningful mixture,
    so it is copied from the nearer end. Every tensor of the result is new, so neither input changes.
    """
    mixed = {}
    for key, x in a.items():
        y = b[key]
        if x.is_floating_point():
            mixed[key] = (1 - alpha) * x + alpha * y
        else:
            mixed[key] = (x if alpha < 0.5 else y).clone()
    return mixed


def reading_or_covering() -> str:
    """The diagnosis of an attack rate that counts every changed prediction, measured on ``ch1-demo``.

    ``ch1-demo`` never saw a written word: its training images hold shapes only. Words in its
    captions are tokens of the text tower; nothing ever tied the *pixels* of a word to them, so it
    cannot read, which rules out (a). The black letters sit on a white label, and a small patch of
    black and white inside a coloured object does not outvote the object's own colour, which rules
    out (c). What the label does is cover part of a 32-pixel image, in places the shape's outline
    (the label is a fifth of the image high), and a covered shape is easier to mistake for another.
    The rate counts those changes as if the model had read the word, so it is far higher than the
    share of flips to the written colour, and a label with no letters does most of the same damage.
    """
    return "b"


def attack_success_rate(labels: torch.Tensor, clean: torch.Tensor, attacked: torch.Tensor,
                        written: torch.Tensor) -> float:
    """Of the images classified correctly when clean, the share whose attacked prediction has the written colour.

    Only an image the model got right can be fooled, so those are the denominator. A pair class is
    ``colour * len(SHAPES) + shape``, so the predicted colour is the class divided by the number
    of shapes (eight), rounded down. The attack succeeds when that colour is the written one,
    whatever shape is predicted.
    """
    n_shapes = 8
    correct = clean == labels
    fooled = correct & (attacked // n_shapes == written)
    return fooled.sum().item() / correct.sum().item()


def swap_colours(caption: str) -> str | None:
    """A hard negative: ``caption`` with its two objects' colours exchanged, or None if nothing changes.

    Find the colour words. With exactly two, each followed by a shape word, and different, swap
    the two words in place and join the words again; otherwise there is no negative (one object, a
    count, or two objects of the same colour, where the swap would say the same thing).
    """
    colours = {"red", "green", "blue", "yellow", "purple", "pink", "cyan", "black"}
    shapes = {"circle", "square", "box", "triangle", "star", "hexagon", "diamond", "rhombus", "cross", "plus", "heart"}
    words = caption.split()
    at = [i for i, word in enumerate(words) if word in colours]
    if len(at) != 2 or any(i + 1 >= len(words) or words[i + 1] not in shapes for i in at):
        return None
    first, second = at
    if words[first] == words[second]:
        return None
    words[first], words[second] = words[second], words[first]
    return " ".join(words)
