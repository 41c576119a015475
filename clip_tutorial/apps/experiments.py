"""Short training experiments on ShapesWorld, and the loss floor that repeated captions set.

Explained in Chapter 3.3. :func:`make_experiment_data` renders one training set;
:func:`run_short` trains a fresh tiny CLIP on it for a few seconds (optionally with the
temperature frozen) and measures zero-shot accuracy; :func:`sweep` runs a list of such settings
and returns one tidy row per run. :func:`duplicate_loss_floor` is the lowest value CLIP's loss can
reach on a batch whose captions repeat, and :func:`expected_duplicate_floor` its average over
random batches of a dataset.
"""
from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from clip_tutorial.core.progress import progress_bar

from clip_tutorial.core.checks import check_number, check_positive_int, check_type
from clip_tutorial.core.device import seed_everything
from clip_tutorial.data import ShapesWorld, heldout_combinations
from clip_tutorial.objectives.loss import caption_positives
from clip_tutorial.model import CLIP, CLIPConfig
from clip_tutorial.train.recipes import get_recipe, evaluate_zero_shot, make_tokenizer
from clip_tutorial.text.tokenizer import WordTokenizer
from clip_tutorial.train.config import History, TrainConfig
from clip_tutorial.train.loop import train_clip

__all__ = ["ExperimentData", "ShortRun", "make_experiment_data", "run_short", "sweep", "duplicate_loss_floor",
           "expected_duplicate_floor"]


@dataclass
class ExperimentData:
    """One rendered ShapesWorld training set, ready for :func:`run_short`.

    Attributes:
        images: (N, 3, H, W) normalised pixels.
        tokens: (N, context_length) token ids.
        captions: the N captions as text (to count repeats).
        tokenizer: the word-level tokenizer that made ``tokens``.
        heldout: the (colour, shape) pairs kept out of training, for zero-shot evaluation.
        model_config: the model sizes, with the tokenizer's vocabulary.
        styles: the rendering styles of the images.
    """

    images: torch.Tensor
    tokens: torch.Tensor
    captions: list[str]
    tokenizer: WordTokenizer
    heldout: list[tuple[str, str]]
    model_config: CLIPConfig
    styles: tuple[str, ...] = ("filled", "outline")


@dataclass
class ShortRun:
    """What one short run produced.

    Attributes:
        model: the trained CLIP, in eval mode.
        history: its training history.
        metrics: ``heldout_acc`` and ``all_acc`` (see :func:`~clip_tutorial.train.recipes.evaluate_zero_shot`).
    """

    model: CLIP
    history: History
    metrics: dict[str, float] = field(default_factory=dict)


def make_experiment_data(n_train: int = 8000, templates: Sequence[str] | None = None, seed: int = 0,
                         recipe: str = "ch1-demo") -> ExperimentData:
    """Render a ShapesWorld training set with the sizes and held-out pairs of ``recipe``.

    Explained in Chapter 3.3.

    Args:
        n_train: number of training pairs.
        templates: caption templates (``None``: ShapesWorld's default ones). A single template
            such as ``["a photo of a {colour} {shape}"]`` makes captions repeat often.
        seed: seed of the images, the captions and the held-out pairs.
        recipe: the recipe whose model sizes, styles and number of held-out pairs are used.

    Returns:
        An :class:`ExperimentData`.
    """
    chosen = get_recipe(recipe)
    n_train = check_positive_int("n_train", n_train)
    heldout = heldout_combinations(chosen.n_heldout, seed=seed)
    tokenizer = make_tokenizer(chosen.model.context_length)
    data = ShapesWorld(n_train, split="train", seed=seed, image_size=chosen.model.image_resolution,
                       styles=chosen.styles, heldout=heldout, templates=templates)
    config = chosen.model.replace(vocab_size=tokenizer.vocab_size, eot_token_id=tokenizer.eot_id)
    return ExperimentData(data.tensors(), tokenizer(data.captions), list(data.captions), tokenizer, heldout, config,
                          chosen.styles)


def run_short(data: ExperimentData, config: TrainConfig, fixed_temperature: float | None = None,
              n_eval: int = 500, device: torch.device | str | None = None, progress: bool = False) -> ShortRun:
    """Train a fresh tiny CLIP on ``data`` with ``config`` and measure its zero-shot accuracy.

    Explained in Chapter 3.3. The model's initial weights are drawn with ``config.seed``, which
    also orders the batches, so one seed fixes the whole run.

    Args:
        data: the training set, from :func:`make_experiment_data`.
        config: the optimiser settings (steps, batch size, learning rate, ...).
        fixed_temperature: freeze the temperature at this value, in [0.01, 1], instead of
            learning it; the logit scale then gets no gradient and no optimiser state. ``None`` learns it from
            CLIP's initial 0.07.
        n_eval: images per zero-shot evaluation (held-out pairs, and all pairs).
        device: where to train (default: the CPU).
        progress: show the training progress bar.

    Returns:
        A :class:`ShortRun`.
    """
    check_type("data", data, ExperimentData, "an ExperimentData (see make_experiment_data)")
    check_type("config", config, TrainConfig)
    if fixed_temperature is not None and not 0.01 <= check_number("fixed_temperature", fixed_temperature) <= 1:
        raise ValueError(f"fixed_temperature: expected None or a number in [0.01, 1] (training clamps the logit "
                         f"scale to [1, 100]), got {fixed_temperature!r}")
    n_eval = check_positive_int("n_eval", n_eval)
    seed_everything(config.seed)
    model = CLIP(data.model_config)
    if fixed_temperature is not None:
        with torch.no_grad():
            model.logit_scale.fill_(math.log(1 / fixed_temperature))
        model.logit_scale.requires_grad_(False)
    history = train_clip(model, data.images, data.tokens, config, device=device, progress=progress)
    metrics = evaluate_zero_shot(model, data.tokenizer, data.heldout, data.styles, n=n_eval)
    return ShortRun(model, history, metrics)


_CONFIG_FIELDS = frozenset(f.name for f in fields(TrainConfig))


def sweep(data: ExperimentData, settings: Sequence[Mapping[str, Any]], base: TrainConfig = TrainConfig(),
          n_eval: int = 500, device: torch.device | str | None = None, desc: str = "runs") -> list[dict[str, Any]]:
    """Run :func:`run_short` once per setting and return one tidy row per run.

    Explained in Chapter 3.3. Each setting overrides fields of ``base`` (for example
    ``{"batch_size": 32, "seed": 1}``) and may hold ``fixed_temperature``. A ``tqdm`` bar counts
    the runs.

    Args:
        data: the training set, from :func:`make_experiment_data`.
        settings: one mapping per run.
        base: the settings every run starts from.
        n_eval: images per zero-shot evaluation.
        device: where to train.
        desc: the progress bar's label.

    Returns:
        One dict per run: the setting's keys, then ``heldout_acc``, ``all_acc``, ``final_loss``
        (mean of the last tenth of the logged losses), ``final_temperature``, ``seconds``,
        ``history`` (the run's :class:`~clip_tutorial.train.History`) and ``model`` (the trained CLIP).
    """
    if isinstance(settings, (str, Mapping)) or not isinstance(settings, Sequence):
        raise TypeError(f"settings: expected a list of dicts, got {type(settings).__name__}")
    check_type("base", base, TrainConfig)
    for setting in settings:
        if not isinstance(setting, Mapping):
            raise TypeError(f"settings: expected every entry to be a dict, got {type(setting).__name__}")
        unknown = set(setting) - _CONFIG_FIELDS - {"fixed_temperature"}
        if unknown:
            raise ValueError(f"settings: {sorted(unknown)} are not TrainConfig fields nor 'fixed_temperature'; "
                             f"expected keys among {sorted(_CONFIG_FIELDS | {'fixed_temperature'})}")
    rows = []
    for setting in progress_bar(settings, desc=desc):
        overrides = {k: v for k, v in setting.items() if k != "fixed_temperature"}
        run = run_short(data, replace(base, **overrides), setting.get("fixed_temperature"), n_eval, device)
        tail = run.history.loss[-max(1, len(run.history.loss) // 10):]
        rows.append({**setting, **run.metrics, "final_loss": sum(tail) / len(tail),
                     "final_temperature": run.history.temperature[-1], "seconds": run.history.seconds,
                     "history": run.history, "model": run.model})
    return rows


def duplicate_loss_floor(captions: Sequence[str]) -> float:
    """The lowest value CLIP's loss can take on a batch with these captions: the mean of ``log k``.

    Explained in Chapter 3.3 (and the false negatives of Chapter 2.3). Identical captions have
    identical text features, so the ``k`` logits of a row for the ``k`` copies of its caption are
    equal and its softmax can give its own copy at most ``1 / k``: the row costs at least
    ``log k``. The ``k`` columns of those copies are identical too, so together they cannot give
    each of their ``k`` images more than ``1 / k`` on average. Both directions of the loss are
    therefore at least the batch mean of ``log k_i``, where ``k_i`` counts the copies of caption
    ``i`` (itself included), and a model that puts each image exactly on its caption's direction,
    at a large logit scale, reaches it.

    Args:
        captions: the batch's captions, one str per pair.

    Returns:
        The floor in nats, 0 when no caption repeats.
    """
    if isinstance(captions, tuple):
        captions = list(captions)
    return float(caption_positives(captions).sum(dim=1).double().log().mean())


def expected_duplicate_floor(captions: Sequence[str], batch_size: int, n_batches: int = 200,
                             seed: int = 0) -> float:
    """The average :func:`duplicate_loss_floor` of random batches drawn from a dataset's captions.

    Explained in Chapter 3.3. Training draws each batch without replacement from the dataset, as
    here, so this is the floor under the training loss curve (each batch's own floor scatters
    around it).

    Args:
        captions: every caption of the dataset.
        batch_size: pairs per batch, at most ``len(captions)``.
        n_batches: number of random batches to average over.
        seed: seed of the draws.

    Returns:
        The mean floor in nats.
    """
    if isinstance(captions, str) or not isinstance(captions, Sequence):
        raise TypeError(f"captions: expected a list of str, got {type(captions).__name__}")
    batch_size, n_batches = check_positive_int("batch_size", batch_size), check_positive_int("n_batches", n_batches)
    if batch_size > len(captions):
        raise ValueError(f"batch_size: expected at most len(captions)={len(captions)}, got {batch_size}")
    rng = random.Random(seed)
    pool = list(captions)
    return sum(duplicate_loss_floor(rng.sample(pool, batch_size)) for _ in range(n_batches)) / n_batches
