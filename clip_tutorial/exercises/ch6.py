"""Checks for the exercises of Chapter 6: effective robustness, shifts, WiSE-FT, typographic attacks, hard negatives.

Four exercises ask for a function. Each ``check_<name>(fn)`` runs your ``fn`` on fresh random
inputs, compares it with the package's reference, prints ✅ or ❌ with an explanation, and returns
a :class:`~clip_tutorial.exercises.CheckResult` that is truthy when you passed. These checks take
the keyword arguments ``trials`` (number of random inputs), ``seed`` (of the inputs; a fresh one
by default) and ``verbose`` (print the feedback).

Two exercises ask for a prediction or a diagnosis instead: :func:`check_rotation_accuracy` and
:func:`check_reading_or_covering` take your answer, run the experiment on the shipped ``ch1-demo``
model (a few seconds on a CPU) and compare.

``EXERCISES`` lists all six in the book's order. Explained in Chapter 6 (section "Summary and exercises").
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch

from clip_tutorial.apps.finetune import interpolate_weights
from clip_tutorial.apps.robustness import effective_robustness, fit_baseline
from clip_tutorial.apps.typographic import AttackResult, typographic_attack, wrong_colour_words
from clip_tutorial.data import COLOURS, SHAPES, RELATIONS, ShapesWorld, class_names, normalize_images, \
    relation_caption
from clip_tutorial.data.negatives import swap_attributes
from clip_tutorial.data.overlay import PAPER, word_box
from clip_tutorial.data.shifts import shifted_world
from clip_tutorial.evaluation.zeroshot import build_zero_shot_classifier, encode_images, zero_shot_predict
from clip_tutorial.train.shipped import load_shipped
from .core import (CheckResult, Hint, NotANumber, as_number, ask_first, ensure_callable, finish_check, one_thread,
                   report, run_check)
from .predict import check_choice, check_estimate, percentage_hint
from .registry import Exercise

__all__ = ["EXERCISES", "check_effective_robustness", "check_rotation_accuracy", "check_interpolate_weights",
           "check_reading_or_covering", "check_attack_success_rate", "check_swap_colours",
           "reference_effective_robustness", "reference_interpolate_weights", "reference_attack_success_rate",
           "reference_swap_colours", "measure_rotation_accuracy", "measure_reading_or_covering",
           "ROTATION_TOLERANCE", "ROTATION_SCENES"]

_N_SHAPES = len(SHAPES)


def _wrapped(hints: list[Hint], wrap: Callable[..., Callable[..., Any]]) -> list[Hint]:
    """``hints`` with each known mistake wrapped as the reader's function is, so that their results compare."""
    return [Hint(h.message, mistake=wrap(h.mistake, "a mistake")) if h.mistake is not None else h for h in hints]


def _number(fn: Callable[..., Any], call: str = "fn") -> Callable[..., torch.Tensor]:
    """``fn`` with its result turned into a 0-dim float64 tensor (a clear message if it is not one number)."""
    def wrapped(*args: Any) -> torch.Tensor:
        return torch.tensor(as_number(fn(*args), call), dtype=torch.float64)
    return wrapped


# -- Exercise 1: effective robustness --------------------------------------------------------------

def reference_effective_robustness(baseline_id: torch.Tensor, baseline_shifted: torch.Tensor, model_id: float,
                                   model_shifted: float) -> float:
    """The effective robustness of one model against the line of ``len(baseline_id)`` baseline models.

    The line ``logit(shifted) = a logit(ID) + b`` is fitted by least squares on the baselines'
    accuracies (:func:`clip_tutorial.apps.robustness.fit_baseline`); the model's effective
    robustness is its shifted accuracy minus the accuracy the line predicts for its ID accuracy
    (:func:`clip_tutorial.apps.robustness.effective_robustness`), in accuracy units. Explained in Chapter 6.1.
    """
    fit = fit_baseline(baseline_id, baseline_shifted)
    return effective_robustness(float(model_id), float(model_shifted), fit)


def _logit(p: torch.Tensor | float) -> torch.Tensor:
    p = torch.as_tensor(p, dtype=torch.float64)
    return torch.log(p) - torch.log1p(-p)


def _line(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Least-squares slope and intercept of y on x."""
    dx = x - x.mean()
    slope = float((dx * (y - y.mean())).sum() / (dx * dx).sum())
    return slope, float(y.mean() - slope * x.mean())


def _robustness_mistake(scale: Callable = _logit, units: str = "accuracy", swap: bool = False, sign: int = 1,
                        flip_fit: bool = False) -> Callable[..., float]:
    """Effective robustness with one piece done wrong."""
    def mistake(bid: torch.Tensor, bsh: torch.Tensor, mid: float, msh: float) -> float:
        x, y = scale(bid), scale(bsh)
        slope, intercept = _line(y, x) if swap else _line(x, y)
        if swap:  # x = slope * y + intercept, solved for y
            slope, intercept = 1 / slope, -intercept / slope
        if flip_fit:
            slope, intercept = intercept, slope
        predicted = slope * scale(mid) + intercept
        if units == "logit":
            return sign * float(scale(msh) - predicted)
        if scale is _logit:
            predicted = torch.sigmoid(torch.as_tensor(predicted))
        return sign * float(msh - predicted)
    return mistake


_ROBUSTNESS_HINTS = [
    Hint("Fit the line on logit-scaled accuracies, logit(p) = log(p / (1 - p)), as Taori et al. did: on the raw "
         "accuracies the baselines do not lie on a line.", mistake=_robustness_mistake(scale=lambda p: torch.as_tensor(
             p, dtype=torch.float64))),
    Hint("Give the answer in accuracy units: the model's shifted accuracy minus sigmoid(a logit(ID) + b), not the "
         "difference of the logits.", mistake=_robustness_mistake(units="logit")),
    Hint("Regress the shifted accuracy on the ID accuracy (the ID logit is x, the shifted logit is y), not the "
         "reverse: the two least-squares lines differ whenever the points are not exactly on a line.",
         mistake=_robustness_mistake(swap=True)),
    Hint("Effective robustness is the model's shifted accuracy *minus* what the line predicts: above the line is "
         "positive.", mistake=_robustness_mistake(sign=-1)),
    Hint("Slope and intercept are swapped: numpy.polyfit(x, y, 1) returns the slope first, then the intercept.",
         mistake=_robustness_mistake(flip_fit=True)),
    Hint("That is the model's own drop (shifted minus ID accuracy). Effective robustness compares the model with "
         "the baselines' line at the same ID accuracy, so fit the line on the baselines first.",
         mistake=lambda bid, bsh, mid, msh: msh - mid),
]


def check_effective_robustness(fn: Callable[[torch.Tensor, torch.Tensor, float, float], float], *, trials: int = 6,
                               seed: int | None = None, verbose: bool = True) -> CheckResult:
    """Check ``fn(baseline_id, baseline_shifted, model_id, model_shifted)``: one model's effective robustness.

    ``baseline_id`` and ``baseline_shifted`` are 1-D float64 tensors, the accuracies of 2 to 10
    baseline models in distribution and under a shift; ``model_id`` and ``model_shifted`` are
    floats. Every accuracy lies between 0.01 and 0.99, so no clipping is needed before the logit.
    The baselines lie near, not on, a line in logit space. The reference is
    :func:`reference_effective_robustness`. Returns a :class:`~clip_tutorial.exercises.CheckResult`.
    Explained in Chapter 6.1.
    """
    ensure_callable(fn, "fn")

    def make(g: torch.Generator, trial: int) -> tuple:
        n = 2 if trial == 0 else int(torch.randint(3, 11, (), generator=g))
        slope = float(torch.empty(()).uniform_(0.6, 1.5, generator=g))
        intercept = float(torch.empty(()).uniform_(-2.0, -0.3, generator=g))
        x = torch.empty(n, dtype=torch.float64).uniform_(-0.8, 3.0, generator=g)   # ID accuracy 0.31 .. 0.95
        y = slope * x + intercept + 0.25 * torch.randn(n, generator=g, dtype=torch.float64)
        model_x = float(torch.empty(()).uniform_(0.0, 3.5, generator=g))
        model_y = slope * model_x + intercept + float(torch.empty(()).uniform_(-0.5, 1.5, generator=g))
        clamp = functools.partial(torch.clamp, min=0.01, max=0.99)
        return (clamp(torch.sigmoid(x)), clamp(torch.sigmoid(y)), round(float(clamp(torch.sigmoid(
            torch.tensor(model_x)))), 4), round(float(clamp(torch.sigmoid(torch.tensor(model_y)))), 4))

    call = "effective_robustness(baseline_id, baseline_shifted, model_id, model_shifted)"
    result = run_check(_number(fn, call), _number(reference_effective_robustness, "the reference"), make,
                       _wrapped(_ROBUSTNESS_HINTS, _number), "effective_robustness", trials, seed, False,
                       arg_names=["baseline_id", "baseline_shifted", "model_id", "model_shifted"], atol=1e-6, rtol=1e-5)
    return finish_check(result, verbose, f"Your effective robustness matches clip_tutorial.apps.robustness on {trials} "
                        "sets of accuracies (two baselines only in one of them).")


# -- Exercise 2 (predict): a quarter turn ---------------------------------------------------------

#: How far (in accuracy) a prediction of :func:`measure_rotation_accuracy` may be from the measurement.
ROTATION_TOLERANCE = 0.1
#: The number of test scenes of :func:`measure_rotation_accuracy`.
ROTATION_SCENES = 400
_ROTATION_DEGREES = 90.0


@functools.lru_cache(maxsize=1)
def _demo() -> tuple:
    trained = load_shipped("ch1-demo")
    return trained.model, trained.tokenizer, trained.recipe


@functools.lru_cache(maxsize=1)
def _rotation_facts(n_images: int = ROTATION_SCENES, seed: int = 1000) -> dict[str, Any]:
    model, tokenizer, recipe = _demo()
    names = class_names("pair")
    with one_thread():
        classifier = build_zero_shot_classifier(model, tokenizer, names)
        facts: dict[str, Any] = {}
        for label, shift in (("clean", None), ("turned", "rotation")):
            strength = _ROTATION_DEGREES if shift else None
            data = shifted_world(shift, n=n_images, seed=seed, split="all", styles=recipe.styles, strength=strength)
            truth = data.labels("pair")
            predicted = zero_shot_predict(model, data.images, classifier)
            right = predicted == truth
            shape = truth % _N_SHAPES
            facts[label] = float(right.float().mean())
            facts[f"{label}_by_shape"] = {s: float(right[shape == i].float().mean()) for i, s in enumerate(SHAPES)}
            facts[f"{label}_colour"] = float((predicted // _N_SHAPES == truth // _N_SHAPES).float().mean())
    facts["images"] = n_images
    return facts


def measure_rotation_accuracy() -> float:
    """Zero-shot accuracy of ``ch1-demo`` on 400 test scenes with every object turned a further 90 degrees.

    The scenes are those of ``shifted_world(None, n=400, seed=1000, split="all")`` in the model's
    training styles, drawn with :mod:`clip_tutorial.data.shifts`' ``"rotation"`` shift; the classes
    are the 64 colour-shape pairs with the default prompt. Explained in Chapter 6.1.
    """
    return _rotation_facts()["turned"]


def check_rotation_accuracy(prediction: Any, *, verbose: bool = True) -> CheckResult:
    """Check your prediction of ``ch1-demo``'s zero-shot accuracy when every object is turned a quarter turn.

    The check runs :func:`measure_rotation_accuracy` (a few seconds) and accepts a prediction within
    :data:`ROTATION_TOLERANCE` of the measurement. ``None`` (no prediction yet) prints a reminder and
    returns a falsy result. Explained in Chapter 6.1.

    Raises:
        TypeError: if ``prediction`` is not a number (or ``None``).
        ValueError: if ``prediction`` is not finite.
    """
    if prediction is None:
        return ask_first("rotation_accuracy", "prediction", verbose)
    facts = _rotation_facts()
    by_shape = ", ".join(f"{s} {facts['turned_by_shape'][s]:.0%}" for s in SHAPES)
    explanation = (
        f"On the same {facts['images']} scenes the accuracy is {facts['clean']:.1%} as drawn and "
        f"{facts['turned']:.1%} turned; the colour stays right ({facts['turned_colour']:.1%}), so every loss is a "
        f"shape. Per shape, turned: {by_shape}. Training turned objects by at most 15 degrees. A circle, a square "
        f"and a cross look the same after a quarter turn, so nothing changes for them. A heart and a diamond (a "
        f"rhombus taller than wide) lie on their side, a view the model never saw. A triangle, a star and a hexagon "
        f"turned by 90 degrees look like themselves turned by 30, 18 and 30 degrees, just beyond what training "
        f"showed: some are still recognised. A shift is not one thing: what hurts is what the training data never "
        f"covered.")
    result = check_estimate(prediction, measure_rotation_accuracy, name="rotation_accuracy",
                            tolerance=ROTATION_TOLERANCE, explanation=explanation, verbose=False)
    return report(percentage_hint(result, prediction, "accuracy"), verbose)


# -- Exercise 3: WiSE-FT's weight interpolation ---------------------------------------------------

class _StateDict(dict):
    """A state dict whose repr in the check's feedback is short."""

    def __repr__(self) -> str:
        return f"<a state dict of {len(self)} tensors>"


class _BadResult(NotANumber):
    """The reader's function returned something that is not a state dict like its inputs (the message says what)."""


def reference_interpolate_weights(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
                                  alpha: float) -> dict[str, torch.Tensor]:
    """WiSE-FT's weights ``(1 - alpha) a + alpha b``, key by key; integer tensors from the nearer end.

    Computed by :func:`clip_tutorial.apps.finetune.interpolate_weights`. Explained in Chapter 6.2.
    """
    return interpolate_weights(a, b, alpha)


def _flat(fn: Callable[..., Any], call: str = "fn") -> Callable[..., torch.Tensor]:
    """``fn(a, b, alpha)`` as one float64 vector, keys in ``a``'s order, after checking the state dict it returns."""
    def flat(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], alpha: float) -> torch.Tensor:
        before = {key: (x.clone(), b[key].clone()) for key, x in a.items()}
        mixed = fn(a, b, alpha)
        for key, (x, y) in before.items():
            for name, original, now in (("a", x, a.get(key)), ("b", y, b.get(key))):
                if now is None or not torch.equal(original, now):
                    raise _BadResult(f"Your function changed its input {name} in place (at key {key!r}). Build a "
                                     "new dict of new tensors, so that neither model's weights change.")
        if not isinstance(mixed, Mapping):
            raise _BadResult(f"interpolate_weights(a, b, alpha) returned a {type(mixed).__name__}; expected a dict "
                             "of tensors with the same keys as a.")
        missing = [key for key in a if key not in mixed]
        if missing or len(mixed) != len(a):
            raise _BadResult(f"Your state dict has {len(mixed)} keys; expected the {len(a)} keys of a"
                             + (f" ({missing[0]!r} is missing)." if missing else "."))
        parts = []
        for key, x in a.items():
            got = mixed[key]
            if not isinstance(got, torch.Tensor) or got.shape != x.shape:
                shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                raise _BadResult(f"At key {key!r} expected a tensor of shape {tuple(x.shape)}, got {shape}.")
            if got.dtype != x.dtype:
                raise _BadResult(f"At key {key!r} expected dtype {x.dtype} (the dtype of a and b), got "
                                 f"{got.dtype}: load_state_dict would refuse or silently convert it.")
            parts.append(got.detach().double().flatten())
        return torch.cat(parts)
    return flat


def _mix(floats: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] = torch.lerp,
         integers: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] | None = None,
         keep: Callable[[str], bool] = lambda key: True) -> Callable[..., dict[str, torch.Tensor]]:
    """The interpolation with one rule swapped for a wrong one."""
    def near(x: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
        return x if alpha < 0.5 else y
    integers = integers or near

    def mix(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
        return {k: (floats(x, b[k], alpha) if keep(k) else x.clone()) if x.is_floating_point()
                else integers(x, b[k], alpha).clone() for k, x in a.items()}
    return mix


_WISE_HINTS = [
    Hint("alpha = 0 must give a (the zero-shot weights) and alpha = 1 must give b (the fine-tuned ones): you "
         "mixed them the other way round.", mistake=_mix(floats=lambda x, y, t: torch.lerp(y, x, t))),
    Hint("An integer tensor (a counter such as batch norm's num_batches_tracked) has no meaningful mixture: copy it "
         "from a when alpha < 0.5 and from b otherwise, without arithmetic.",
         mistake=_mix(integers=lambda x, y, t: torch.lerp(x.double(), y.double(), t).round().to(x.dtype))),
    Hint("Copy integer tensors from the nearer end: from b when alpha >= 0.5, not always from a.",
         mistake=_mix(integers=lambda x, y, t: x)),
    Hint("Copy integer tensors from the nearer end: from a when alpha < 0.5, not always from b.",
         mistake=_mix(integers=lambda x, y, t: y)),
    Hint("Mix every floating-point tensor, not only the weights: biases and buffers such as running means belong "
         "to the model too.", mistake=_mix(keep=lambda key: key.endswith("weight"))),
    Hint("torch.lerp (and arithmetic) is not defined for integer tensors: treat them apart (x.is_floating_point()).",
         error_contains="'Long'"),
    Hint("An integer tensor (a counter such as batch norm's num_batches_tracked) has no meaningful mixture: copy it "
         "from a when alpha < 0.5 and from b otherwise, without arithmetic.", error_contains="expected dtype torch.int64"),
]


def _state_dict(g: torch.Generator, counters: bool, scale: float) -> tuple[dict, dict]:
    """Two random state dicts of one small model: the zero-shot weights and fine-tuned ones near them."""
    shapes = {"visual.conv1.weight": (4, 3, 2, 2), "visual.ln_pre.weight": (4,), "visual.ln_pre.bias": (4,),
              "visual.proj": (4, 3), "head.weight": (5, 3), "head.bias": (5,)}
    if counters:
        shapes.update({"visual.bn.running_mean": (4,), "visual.bn.running_var": (4,), "visual.bn.weight": (4,)})
    a = {key: torch.randn(*shape, generator=g) for key, shape in shapes.items()}
    b = {key: x + scale * torch.randn(x.shape, generator=g) for key, x in a.items()}
    if counters:
        a["visual.bn.num_batches_tracked"] = torch.tensor(int(torch.randint(100, 1000, (), generator=g)))
        b["visual.bn.num_batches_tracked"] = a["visual.bn.num_batches_tracked"] + int(
            torch.randint(50, 500, (), generator=g))
    return _StateDict(a), _StateDict(b)


def check_interpolate_weights(fn: Callable[[Mapping, Mapping, float], Mapping], *, trials: int = 7,
                              seed: int | None = None, verbose: bool = True) -> CheckResult:
    """Check ``fn(a, b, alpha)``: the state dict ``(1 - alpha) * a + alpha * b`` of two models.

    ``a`` and ``b`` are state dicts (dicts of tensors) with the same keys, shapes and dtypes;
    ``alpha`` is in [0, 1], 0, 1 and 0.5 among the trials. Some trials hold an integer counter
    (``num_batches_tracked``), which must come from ``a`` when ``alpha < 0.5`` and from ``b``
    otherwise. Neither input may change. The reference is
    :func:`clip_tutorial.apps.finetune.interpolate_weights`. Returns a
    :class:`~clip_tutorial.exercises.CheckResult`. Explained in Chapter 6.2.
    """
    ensure_callable(fn, "fn")
    table = [(0.3, True), (0.0, False), (1.0, True), (0.5, True), (0.75, False), (0.2, True), (0.9, True)]

    def make(g: torch.Generator, trial: int) -> tuple:
        alpha, counters = table[trial] if trial < len(table) else (
            round(float(torch.rand((), generator=g)), 2), bool(torch.rand((), generator=g) < 0.5))
        return (*_state_dict(g, counters, scale=float(torch.empty(()).uniform_(0.2, 2.0, generator=g))), alpha)

    result = run_check(_flat(fn), _flat(reference_interpolate_weights), make, _wrapped(_WISE_HINTS, _flat), "interpolate_weights",
                       trials, seed, False, arg_names=["a", "b", "alpha"], atol=1e-6, rtol=1e-5)
    return finish_check(result, verbose, f"Your interpolation matches clip_tutorial.apps.finetune.interpolate_weights "
                        f"on {trials} pairs of state dicts (alpha 0, 1 and 0.5 among them, integer counters in "
                        "most), and it leaves both inputs as they were.",
                        (r" at index \(\d+,\)", ""))


# -- Exercise 4 (diagnose): does the model read, or is the label in the way? -----------------------

_READING_CHOICES = {
    "a": "nothing is wrong: ch1-demo's captions are full of colour names, so it learned to read them, and the "
         "written word fools it this often",
    "b": "the rate counts every change, including the damage the white label does by covering part of the object; "
         "an attack that works through reading changes the predicted colour to the written word, and that almost "
         "never happens here",
    "c": "the letters are black, so the model sees a black object: the changes are predictions of the colour "
         "black, not of the written word",
}


@functools.lru_cache(maxsize=1)
def _reading_facts(n_images: int = 300, seed: int = 1000, size: float = 0.2) -> dict[str, Any]:
    model, tokenizer, recipe = _demo()
    data = ShapesWorld(n_images, split="all", seed=seed, styles=recipe.styles)
    labels = data.labels("pair")
    words = wrong_colour_words(data.labels("colour"), seed=seed)
    with one_thread():
        attack = typographic_attack(model, tokenizer, data.images, labels, words, size=size)
        blank = data.images.clone()
        for word in set(words):  # the same white label, with no letters on it
            x0, y0, x1, y1 = word_box(word, data.image_size, size)
            rows = torch.tensor([w == word for w in words])
            patch = blank[rows]
            patch[:, :, y0:y1, x0:x1] = torch.tensor(PAPER, dtype=torch.uint8).view(3, 1, 1)
            blank[rows] = patch
        classifier = build_zero_shot_classifier(model, tokenizer, class_names("pair"))
        covered = (encode_images(model, normalize_images(blank)) @ classifier).argmax(dim=1)
    correct = attack.clean == labels
    changed = correct & (attack.attacked != labels)
    black = list(COLOURS).index("black")
    return {"images": n_images, "correct": int(correct.sum()), "broken": float(changed.sum() / correct.sum()),
            "success": attack.success_rate, "flips": int(attack.flipped.sum()),
            "changed": int(changed.sum()),
            "to_black": int((changed & (attack.attacked // _N_SHAPES == black)).sum()),
            "colour_kept": int((changed & (attack.attacked // _N_SHAPES == labels // _N_SHAPES)).sum()),
            "blank": float((correct & (covered != labels)).sum() / correct.sum())}


def measure_reading_or_covering() -> str:
    """Run the typographic attack on ``ch1-demo`` and a blank-label control; return the letter the data support.

    300 test images each get a wrong colour name written on a white label at the bottom (a fifth of
    the image high), as in Chapter 6.5; the control gets the same white label with no letters. Among
    the images classified correctly when clean, the broken rate counts every changed prediction. The
    letter is ``"a"`` when most changes go to the written colour, ``"c"`` when most go to black, and
    ``"b"`` when the blank label changes as many predictions as the words do. Explained in Chapter 6.5.
    """
    facts = _reading_facts()
    support = {"a": facts["flips"] / max(facts["changed"], 1), "c": facts["to_black"] / max(facts["changed"], 1),
               "b": min(1.0, facts["blank"] / max(facts["broken"], 1e-9))}
    return max(support, key=support.get)


def check_reading_or_covering(answer: Any, *, verbose: bool = True) -> CheckResult:
    """Check your diagnosis (``"a"``, ``"b"`` or ``"c"``) of a typographic-attack rate measured on ``ch1-demo``.

    The check runs the attack and its blank-label control (see :func:`measure_reading_or_covering`,
    a few seconds) and says which statement the experiment bears out. ``None`` (no answer yet)
    prints a reminder and returns a falsy result. Explained in Chapter 6.5.

    Raises:
        TypeError: if ``answer`` is neither ``None`` nor a string.
        ValueError: if ``answer`` is not one of the letters.
    """
    if answer is None:
        return ask_first("reading_or_covering", 'answer ("a", "b" or "c")', verbose)
    facts = _reading_facts()
    explanation = (
        f"Of the {facts['correct']} images ch1-demo classifies correctly, the written word changes the prediction "
        f"of {facts['changed']} ({facts['broken']:.1%}). Only {facts['flips']} of them ({facts['success']:.1%} of "
        f"the correct images) take the written colour, and only {facts['to_black']} become black; "
        f"{facts['colour_kept']} keep the true colour and lose the shape. The control, the same white label with no "
        f"letters, changes {facts['blank']:.1%} of them, most of that damage: it is the label that does it, not "
        f"the word. A typographic attack is measured by the flips to the written word (the attack success rate of "
        f"Exercise 5), beside a model that cannot read and a label without a word.")
    result = check_choice(answer, measure_reading_or_covering, _READING_CHOICES, name="reading_or_covering",
                          explanation=explanation, verbose=False)
    return report(result, verbose)


# -- Exercise 5: the attack success rate -------------------------------------------------------------

def reference_attack_success_rate(labels: torch.Tensor, clean: torch.Tensor, attacked: torch.Tensor,
                                  written: torch.Tensor) -> float:
    """Of the images classified correctly when clean, the share whose attacked prediction has the written colour.

    ``labels``, ``clean`` and ``attacked`` are pair-class indices (``colour * len(SHAPES) + shape``),
    ``written`` colour indices into ``COLOURS``. Computed by
    :attr:`clip_tutorial.apps.typographic.AttackResult.success_rate`. Explained in Chapter 6.5.
    """
    words = [list(COLOURS)[int(c)] for c in written]
    return AttackResult(words, labels, clean, attacked).success_rate


def _success_mistake(hit: Callable[..., torch.Tensor], over_all: bool = False) -> Callable[..., float]:
    def rate(labels: torch.Tensor, clean: torch.Tensor, attacked: torch.Tensor, written: torch.Tensor) -> float:
        correct = clean == labels
        hits = hit(labels, clean, attacked, written)
        return float((hits & correct).sum() / (len(labels) if over_all else correct.sum()))
    return rate


_SUCCESS_HINTS = [
    Hint("That counts every changed prediction, the damage of covering the object included (Exercise 4). Count only "
         "the images whose predicted colour becomes the written one.",
         mistake=_success_mistake(lambda y, c, a, w: a != y)),
    Hint("Divide by the number of images classified correctly when clean, not by all images: an image the model "
         "already got wrong cannot be fooled.", mistake=_success_mistake(
             lambda y, c, a, w: a // _N_SHAPES == w, over_all=True)),
    Hint("Count only the images classified correctly when clean: a flip of an image that was already wrong is not "
         "the attack's doing.", mistake=lambda y, c, a, w: float((a // _N_SHAPES == w).double().mean())),
    Hint("A pair class is colour * len(SHAPES) + shape: its colour is the class // len(SHAPES), not % len(SHAPES).",
         mistake=_success_mistake(lambda y, c, a, w: a % _N_SHAPES == w)),
    Hint("Compare the *colour* of the attacked prediction (attacked // len(SHAPES)) with the written colour; the "
         "attacked prediction itself is a colour-shape pair.", mistake=_success_mistake(lambda y, c, a, w: a == w)),
    Hint("Return a fraction between 0 and 1, not a percentage.",
         detect=lambda got, expected, inputs: bool(torch.isclose(got, 100 * expected))),
]


def check_attack_success_rate(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], float], *,
                              trials: int = 6, seed: int | None = None, verbose: bool = True) -> CheckResult:
    """Check ``fn(labels, clean, attacked, written)``: the success rate of a typographic attack.

    ``labels``, ``clean`` and ``attacked`` are 1-D LongTensors of pair-class indices
    (``colour * len(SHAPES) + shape``: the true class, the prediction on the clean image and the
    prediction on the attacked one); ``written`` holds the colour index of the word written on each
    image, never the image's own colour. Some clean predictions are wrong, and at least one is
    right. The reference is :func:`reference_attack_success_rate`. Returns a
    :class:`~clip_tutorial.exercises.CheckResult`. Explained in Chapter 6.5.
    """
    ensure_callable(fn, "fn")

    def make(g: torch.Generator, trial: int) -> tuple:
        n = 1 if trial == 0 else int(torch.randint(8, 60, (), generator=g))
        colours, shapes = len(COLOURS), _N_SHAPES
        labels = torch.randint(0, colours * shapes, (n,), generator=g)
        written = (labels // shapes + torch.randint(1, colours, (n,), generator=g)) % colours
        clean = torch.where(torch.rand(n, generator=g) < 0.8, labels, torch.randint(0, colours * shapes, (n,),
                                                                                      generator=g))
        clean[0] = labels[0]
        flip = written * shapes + torch.randint(0, shapes, (n,), generator=g)   # the written colour, any shape
        other = torch.randint(0, colours * shapes, (n,), generator=g)             # some other mistake
        draw = torch.rand(n, generator=g)
        attacked = torch.where(draw < 0.35, flip, torch.where(draw < 0.6, other, clean))
        return labels, clean, attacked, written

    call = "attack_success_rate(labels, clean, attacked, written)"
    result = run_check(_number(fn, call), _number(reference_attack_success_rate, "the reference"), make,
                       _wrapped(_SUCCESS_HINTS, _number), "attack_success_rate", trials, seed, False,
                       arg_names=["labels", "clean", "attacked", "written"], atol=1e-6, rtol=0.0)
    return finish_check(result, verbose, f"Your success rate matches AttackResult.success_rate of "
                        f"clip_tutorial.apps.typographic on {trials} sets of predictions (one of a single image).")


# -- Exercise 6: a hard-negative caption -----------------------------------------------------------

def reference_swap_colours(caption: str) -> str | None:
    """``caption`` with its two objects' colours exchanged, or ``None`` when that changes nothing.

    Computed by :func:`clip_tutorial.data.negatives.swap_attributes` with ``swap="colour"``.
    Explained in Chapter 6.6.
    """
    return swap_attributes(caption, "colour")


def _replace_twice(caption: str) -> str | None:
    colours = [w for w in caption.split() if w in COLOURS]
    if len(colours) != 2 or colours[0] == colours[1]:
        return None
    return caption.replace(colours[0], colours[1]).replace(colours[1], colours[0])


def _string_or_none(fn: Callable[[str], Any]) -> Callable[[str], Any]:
    def wrapped(caption: str) -> Any:
        got = fn(caption)
        if got is not None and not isinstance(got, str):
            raise _BadResult(f"swap_colours(caption) returned a {type(got).__name__}; expected a caption (a str) "
                             "or None.")
        return got
    return wrapped


_SWAP_HINTS = [
    Hint("Swap the colours, not the shapes: 'a red circle left of a blue square' becomes 'a blue circle left of a "
         "red square'.", mistake=lambda c: swap_attributes(c, "shape")),
    Hint("When there is nothing to swap (one object, or two objects of the same colour), return None: the caption "
         "itself is not a negative, it is true of the picture.",
         mistake=lambda c: swap_attributes(c, "colour") or c),
    Hint("Replacing one colour by the other and then the other by the first turns both into the same colour: "
         "exchange the two words at their positions at once.", mistake=_replace_twice),
    Hint("Right words, wrong spacing: join the words with single spaces, as the caption had them.",
         detect=lambda got, expected, inputs: isinstance(got, str) and isinstance(expected, str)
         and got.split() == expected.split() and got != expected),
]


def check_swap_colours(fn: Callable[[str], str | None], *, trials: int = 10, seed: int | None = None,
                       verbose: bool = True) -> CheckResult:
    """Check ``fn(caption)``: the caption with its two objects' colours swapped, or ``None``.

    The captions are ShapesWorld's: relation captions of two objects (with shape synonyms such as
    "box" and relations such as "under"), two objects of the same colour, one object, and counts
    ("there are three black hexagons"). The reference is
    :func:`clip_tutorial.data.negatives.swap_attributes` with ``swap="colour"``. Returns a
    :class:`~clip_tutorial.exercises.CheckResult`. Explained in Chapter 6.6.
    """
    ensure_callable(fn, "fn")
    table = ["a red circle left of a blue square", "a green star above a green heart",
             "a photo of a small red circle", "a purple hexagon under a pink box", "there are three black hexagons",
             "a cyan plus right of a yellow rhombus"]
    colours = list(COLOURS)

    def make(g: torch.Generator, trial: int) -> tuple:
        if trial < len(table):
            return (table[trial],)
        pick = [int(i) for i in torch.randint(0, len(colours), (2,), generator=g)]
        if torch.rand((), generator=g) < 0.25:
            pick[1] = pick[0]
        shapes = [SHAPES[int(i)] for i in torch.randint(0, _N_SHAPES, (2,), generator=g)]
        relation = RELATIONS[int(torch.randint(0, len(RELATIONS), (), generator=g))]
        return (relation_caption((colours[pick[0]], shapes[0]), relation, (colours[pick[1]], shapes[1])),)

    result = run_check(_string_or_none(fn), reference_swap_colours, make, _SWAP_HINTS, "swap_colours", trials, seed,
                       False, arg_names=["caption"])
    return finish_check(result, verbose, f"Your hard negatives match clip_tutorial.data.negatives.swap_attributes on "
                        f"{trials} captions (one object, counts, same colours and synonyms among them).")


#: The exercises of Chapter 6, in the book's order (see :mod:`clip_tutorial.exercises.registry`).
EXERCISES = (
    Exercise("ch6.effective_robustness", "implement", check_effective_robustness, "Effective robustness"),
    Exercise("ch6.rotation_accuracy", "predict", check_rotation_accuracy,
             "Predict, then run: a quarter turn"),
    Exercise("ch6.interpolate_weights", "implement", check_interpolate_weights, "WiSE-FT's weight interpolation"),
    Exercise("ch6.reading_or_covering", "diagnose", check_reading_or_covering,
             "Break it and explain: an attack on a model that cannot read"),
    Exercise("ch6.attack_success_rate", "implement", check_attack_success_rate, "The attack success rate"),
    Exercise("ch6.swap_colours", "implement", check_swap_colours, "A hard-negative caption"),
)
