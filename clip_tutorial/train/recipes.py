"""Named training recipes for the book's tiny CLIPs, and a cache so notebooks train each only once.

A recipe fixes everything a run depends on: the ShapesWorld data, the model sizes and the
optimiser settings. :func:`train_recipe` runs it; :func:`load_or_train` returns the model that
ships with the package for that recipe (:mod:`clip_tutorial.train.shipped`), or else the cached result of
an earlier run with the same recipe, training only when there is neither.

Explained in Chapter 1 ("CLIP in a minute") and Chapter 3 (the shipped models).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from clip_tutorial.data import ShapesWorld, class_names, heldout_combinations, vocabulary
from clip_tutorial.model import CLIP, CLIPConfig
from clip_tutorial.text.tokenizer import WordTokenizer
from clip_tutorial.evaluation.zeroshot import build_zero_shot_classifier, zero_shot_accuracy
from .config import History, TrainConfig
from .loop import train_clip

__all__ = ["Recipe", "RECIPES", "TrainedCLIP", "get_recipe", "make_tokenizer", "evaluate_zero_shot",
           "train_supervised_tower", "train_recipe", "EVAL_N", "EVAL_SEED", "SUPERVISED", "SUPERVISED_TOWER"]

#: The folder of the models shipped with the package (read by :mod:`clip_tutorial.train.shipped`).
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights" / "shipped"

#: Images per split in the book's zero-shot protocol, :func:`evaluate_zero_shot`.
EVAL_N = 2000
#: Seed of the evaluation images (the ``"all"`` split uses ``EVAL_SEED + 1``).
EVAL_SEED = 12345
#: ``Recipe.image_tower`` for a tower pre-trained on labels inside :func:`train_recipe` (Chapter 7.4).
SUPERVISED = "supervised"
#: How :func:`train_supervised_tower` trains that tower: the settings of Chapter 6.3's supervised ViT.
SUPERVISED_TOWER = {"steps": 800, "batch_size": 128, "lr": 2e-3, "weight_decay": 0.1}


@dataclass(frozen=True)
class Recipe:
    """Everything one training run depends on.

    Attributes:
        name: the recipe's name, a key of :data:`RECIPES`.
        description: one line on what the recipe is for. It is prose, not a setting: two recipes
            that differ only in it compare equal and share a fingerprint, so rewording it leaves
            shipped and cached models valid.
        model: model sizes; ``vocab_size`` and ``eot_token_id`` are set from the tokenizer.
        train: optimiser settings.
        n_train: number of ShapesWorld training pairs.
        styles: rendering styles seen in training.
        max_objects: objects per training image.
        data_seed: seed of the training data.
        n_heldout: number of colour-shape combinations held out of training.
        spurious: ``(shape, colour, fraction)`` to make the training data biased (Chapter 6.4): that
            fraction of the single objects of that shape have that colour; ``None`` for unbiased data.
        overlay: fraction of the training images on which a word is written (Chapter 6.5, the
            typographic attack), by :func:`clip_tutorial.data.overlay.overlay_words`; 0 for none.
        hard_negatives: train with one hard-negative caption per pair, its attributes swapped
            (Chapter 6.6, as in NegCLIP), made by :func:`clip_tutorial.data.negatives.hard_negative_captions`.
        caption_noise: fraction of the training pairs whose caption is replaced by the caption of
            another pair with a different caption (Chapter 7.2, ALIGN's noisy alt-text), by
            :func:`clip_tutorial.data.noise.corrupt_captions` seeded with ``data_seed``; 0 for none.
        image_tower: the name of a shipped recipe whose trained image tower, the ``visual.*``
            weights, initialises the model before training (Chapter 7.4, LiT); with
            ``train.lock_image=True`` that tower is then kept frozen. ``None``: a fresh random tower.
            The two recipes' image-tower sizes must agree. :data:`SUPERVISED` (``"supervised"``):
            the model's own image tower is first trained as a classifier of the training images'
            colour-shape combinations (:func:`train_supervised_tower`), deterministically from this
            recipe's data and seed; it needs single-object images without overlaid words.
    """

    name: str
    description: str = field(compare=False)
    model: CLIPConfig
    train: TrainConfig
    n_train: int = 20_000
    styles: tuple[str, ...] = ("filled", "outline")
    max_objects: int = 1
    data_seed: int = 0
    n_heldout: int = 16
    spurious: tuple[str, str, float] | None = None
    overlay: float = 0.0
    hard_negatives: bool = False
    caption_noise: float = 0.0
    image_tower: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.caption_noise, bool) or not isinstance(self.caption_noise, (int, float)) \
                or not 0 <= self.caption_noise <= 1:
            raise ValueError(f"Recipe.caption_noise: expected a fraction in [0, 1], got {self.caption_noise!r}")
        if self.image_tower is not None and (not isinstance(self.image_tower, str) or self.image_tower == self.name):
            raise ValueError(f"Recipe.image_tower: expected the name of another recipe, {SUPERVISED!r} or None, "
                             f"got {self.image_tower!r}")
        if self.image_tower == SUPERVISED and (self.max_objects != 1 or self.overlay):
            raise ValueError(f"Recipe.image_tower: {SUPERVISED!r} labels each image by its one object, so it needs "
                             f"max_objects=1 and overlay=0, got max_objects={self.max_objects}, overlay={self.overlay}")

    def fingerprint(self) -> str:
        """A short hash of every setting and of the source that makes the model, used to key the cache.

        Hashing the source too means that a change to the model, the data, the tokenizer or the
        training loop retrains instead of loading a model made by older code.
        """
        settings = {k: v for k, v in asdict(self).items() if k != "description"}
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
        for source in _training_sources():
            digest.update(source.read_bytes())
        return digest.hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        """Rebuild a recipe from ``dataclasses.asdict(recipe)`` or its JSON round trip (a model card's).

        JSON lists become tuples again; settings the dict lacks (added to the package after it was
        written) take their defaults.

        Raises:
            TypeError: if ``data`` is not a dict.
            ValueError: if a key is unknown or a value is invalid.
        """
        if not isinstance(data, dict):
            raise TypeError(f"data: expected a dict of Recipe fields, got {type(data).__name__}")
        try:
            fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k not in ("model", "train")}
            train = {k: tuple(v) if isinstance(v, list) else v for k, v in data.get("train", {}).items()}
            return cls(model=CLIPConfig.from_dict(data["model"]), train=TrainConfig(**train), **fields)
        except (KeyError, TypeError) as err:
            raise ValueError(f"data: expected the fields of a Recipe, got {sorted(data)} ({err})") from err


#: The package files whose code decides what a recipe trains; editing any of them retrains.
#: (The recipes train vision transformers, so the ResNet tower and the size/cost tools are not among them.)
TRAINING_SOURCES = ("core", "model/config.py", "model/transformer.py", "model/vision.py", "model/clip.py",
                    "data/render.py", "data/shapesworld.py", "data/augment.py", "data/overlay.py", "text/tokenizer.py",
                    "objectives", "weights/checkpoints.py", "weights/architecture.py", "train/loop.py", "train/state.py",
                    "train/recipes.py", "train/classifier.py")


def _training_sources() -> list[Path]:
    root = Path(__file__).resolve().parent.parent  # the package folder
    files: list[Path] = []
    for name in TRAINING_SOURCES:
        path = root / name
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


_TINY = CLIPConfig(embed_dim=64, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
                   vision_heads=2, context_length=12, transformer_width=64, transformer_heads=2,
                   transformer_layers=1)

#: The two recipes that the Chapter 6 models change in one setting each: ch1-demo (single objects) and
#: ch1-scenes (scenes of up to four objects). Each Chapter 6 recipe is one of them with that setting replaced.
_DEMO = Recipe(
    name="ch1-demo",
    description="Chapter 1's live run: a tiny ViT CLIP trained in under a minute on two CPU cores.",
    model=_TINY,
    train=TrainConfig(steps=600, batch_size=256, lr=2e-3, warmup_steps=40, weight_decay=0.1),
)
_SCENES = Recipe(
    name="ch1-scenes",
    description="The probe model of Chapter 1.6 (Limitations, measured): trained on scenes of up to four "
                "objects, with relation and count captions.",
    model=_TINY.replace(context_length=16),
    train=TrainConfig(steps=350, batch_size=256, lr=2e-3, warmup_steps=40, weight_decay=0.1),
    n_train=15_000,
    max_objects=4,
)
_TYPO_MODEL = _TINY.replace(image_resolution=64, vision_patch_size=16)  # 64 px in the same 16 patches

#: Chapter 7.1's batch sizes; every point sees ch1-demo's number of pairs (steps x batch size).
SWEEP_BATCHES = (16, 64, 256, 1024)
#: Chapter 7.2's grid: percent of wrong captions, and numbers of training pairs.
ALIGN_NOISE = (0, 20, 40, 60)
ALIGN_DATA = (5_000, 10_000, 20_000, 40_000)


def _batch_sweep(loss: str, batch: int) -> Recipe:
    """ch1-demo at another batch size and the same seen pairs, for CLIP's loss or SigLIP's (Chapter 7.1).

    The learning rate scales with the square root of the batch size and the warm-up keeps its share of the
    pairs; SigLIP starts from the paper's temperature 10 and bias -10.
    """
    pairs = _DEMO.train.steps * _DEMO.train.batch_size
    model = _DEMO.model.replace(init_logit_scale=math.log(10), init_logit_bias=-10.0) if loss == "siglip" \
        else _DEMO.model
    train = replace(_DEMO.train, steps=pairs // batch, batch_size=batch, loss=loss,
                    lr=_DEMO.train.lr * math.sqrt(batch / _DEMO.train.batch_size),
                    warmup_steps=max(1, round(_DEMO.train.warmup_steps * _DEMO.train.batch_size / batch)))
    return replace(_DEMO, name=f"ch7-{loss}-b{batch}", model=model, train=train,
                   description=f"A point of the batch sweep of Chapter 7.1 (SigLIP: a sigmoid instead of a softmax): "
                               f"ch1-demo's data and seen pairs, batch {batch}, "
                               f"{'SigLIP' if loss == 'siglip' else 'CLIP'}'s loss.")

RECIPES: dict[str, Recipe] = {
    "ch1-demo": _DEMO,
    "ch1-scenes": _SCENES,
    "ch3-best": Recipe(
        name="ch3-best",
        description="Chapter 3's best tiny model: ch1-demo's ViT CLIP trained longer on twice the data.",
        model=_TINY,
        train=TrainConfig(steps=2000, batch_size=256, lr=2e-3, warmup_steps=100, weight_decay=0.1),
        n_train=40_000,
    ),
    # Chapter 6: robustness, bias and failure modes (one block per page, in page order)
    "ch6-one-style": replace(
        _DEMO, name="ch6-one-style", styles=("filled",),
        description="The narrow-data model of Chapter 6.3 (Where robustness comes from): ch1-demo's settings, "
                    "trained on filled shapes only."),
    "ch6-many-styles": replace(
        _DEMO, name="ch6-many-styles", styles=("filled", "outline", "striped"),
        description="The diverse-data model of Chapter 6.3 (Where robustness comes from): ch1-demo's settings, "
                    "trained on all three styles (filled, outline and striped) in equal shares."),
    **{f"ch6-bias-{pct}": replace(
        _DEMO, name=f"ch6-bias-{pct}", spurious=("heart", "red", pct / 100),
        description=f"A biased model of Chapter 6.4 (Bias learned from data): ch1-demo's settings, trained on "
                    f"data in which {pct}% of the single hearts are red (ch1-demo, with hearts of every colour "
                    "alike, is its control).") for pct in (50, 90, 99)},
    "ch6-typo": replace(
        _DEMO, name="ch6-typo", model=_TYPO_MODEL, overlay=0.3,
        description="The reading model of Chapter 6.5 (Typographic attacks): ch1-demo's settings at 64 px "
                    "(patch 16, so the same 16 patches), trained on data in which 30% of the images are signs "
                    "captioned by their word."),
    "ch6-typo-control": replace(
        _DEMO, name="ch6-typo-control", model=_TYPO_MODEL,
        description="The control of Chapter 6.5 (Typographic attacks): ch6-typo without the signs (no word is "
                    "ever written)."),
    "ch6-negclip": replace(
        _SCENES, name="ch6-negclip", hard_negatives=True,
        description="The remedy of Chapter 6.6 (Compositionality, revisited) for attribute binding: ch1-scenes's "
                    "settings plus one hard-negative caption per pair, its two objects' colours or shapes "
                    "swapped (NegCLIP)."),
    # Chapter 7: after CLIP (one block per page, in page order)
    **{f"ch7-{loss}-b{batch}": _batch_sweep(loss, batch) for loss in ("clip", "siglip") for batch in SWEEP_BATCHES},
    **{f"ch7-align-n{noise}-d{n_train // 1000}k": replace(
        _DEMO, name=f"ch7-align-n{noise}-d{n_train // 1000}k", caption_noise=noise / 100, n_train=n_train,
        train=replace(_DEMO.train, steps=_DEMO.train.steps * n_train // _DEMO.n_train),
        description=f"A point of the grid of Chapter 7.2 (ALIGN: scale beats noise): ch1-demo's settings on {n_train:,} "
                    f"pairs, {noise}% of them with another pair's caption, trained for ch1-demo's number of "
                    "epochs.") for noise in ALIGN_NOISE for n_train in ALIGN_DATA},
    "ch7-filip": replace(
        _DEMO, name="ch7-filip", train=replace(_DEMO.train, loss="filip"),
        description="The FILIP of Chapter 7.3 (FILIP: matching tokens, not vectors): ch1-demo's settings with "
                    "token-wise late interaction in the loss."),
    "ch7-filip-scenes": replace(
        _SCENES, name="ch7-filip-scenes", train=replace(_SCENES.train, loss="filip"),
        description="The probe model of Chapter 7.3 (FILIP: matching tokens, not vectors): ch1-scenes's settings "
                    "with token-wise late interaction in the loss."),
    "ch7-lit": replace(
        _DEMO, name="ch7-lit", image_tower="ch1-demo", train=replace(_DEMO.train, lock_image=True),
        description="The locked-tower model of Chapter 7.4 (LiT: lock the image tower): ch1-demo's settings, a "
                    "fresh text tower trained against the shipped ch1-demo image tower, locked."),
    "ch7-lit-unlocked": replace(
        _DEMO, name="ch7-lit-unlocked", image_tower="ch1-demo",
        description="The control of ch7-lit in Chapter 7.4 (LiT: lock the image tower): the same start from the "
                    "shipped ch1-demo image tower and a fresh text tower, both trained."),
    "ch7-lit-supervised": replace(
        _DEMO, name="ch7-lit-supervised", image_tower=SUPERVISED, train=replace(_DEMO.train, lock_image=True),
        description="The supervised-tower LiT of Chapter 7.4 (LiT: lock the image tower): ch1-demo's settings, an "
                    "image tower first trained on the seen colour-shape labels of the same images, then locked."),
    "ch7-lit-supervised-unlocked": replace(
        _DEMO, name="ch7-lit-supervised-unlocked", image_tower=SUPERVISED,
        description="The control of ch7-lit-supervised in Chapter 7.4 (LiT: lock the image tower): the same "
                    "supervised image tower, trained on with the text tower instead of locked."),
}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; a clear error lists the known ones."""
    if not isinstance(name, str) or name not in RECIPES:
        raise ValueError(f"name: expected one of the recipes {sorted(RECIPES)}, got {name!r}")
    return RECIPES[name]


def make_tokenizer(context_length: int) -> WordTokenizer:
    """The word-level tokenizer over every word ShapesWorld can say."""
    return WordTokenizer(vocabulary(), context_length=context_length)


@dataclass
class TrainedCLIP:
    """A trained model with what is needed to use and judge it.

    Attributes:
        model: the trained CLIP, in eval mode.
        tokenizer: the tokenizer it was trained with.
        recipe: the recipe that produced it.
        history: the training history (empty when loaded from a file: shipped or cached).
        metrics: zero-shot accuracies measured right after training.
        card: the model card of a shipped or saved model (recipe, data seed, metrics, command,
            versions; see :mod:`clip_tutorial.train.shipped`); empty for a model trained in this process.
    """

    model: CLIP
    tokenizer: WordTokenizer
    recipe: Recipe
    history: History = field(default_factory=History)
    metrics: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)


def evaluate_zero_shot(model: CLIP, tokenizer: WordTokenizer, heldout: Sequence[tuple[str, str]],
                       styles: Sequence[str] = ("filled", "outline"), n: int = EVAL_N,
                       seed: int = EVAL_SEED) -> dict[str, float]:
    """The book's zero-shot protocol: prompts "a photo of a {colour} {shape}".

    Returns ``heldout_acc`` (N-way among the held-out combinations, on images of those
    combinations) and ``all_acc`` (N-way among all colour-shape combinations, on images of any
    combination), both on fresh images drawn with ``seed``.
    """
    image_size = model.config.image_resolution
    held = ShapesWorld(n, split="heldout", seed=seed, image_size=image_size, styles=styles, heldout=heldout)
    everything = ShapesWorld(n, split="all", seed=seed + 1, image_size=image_size, styles=styles, heldout=heldout)
    names = class_names()
    held_names = [f"{c} {s}" for c, s in heldout]
    held_index = {name: i for i, name in enumerate(held_names)}
    held_labels = torch.tensor([held_index[names[i]] for i in held.labels("pair").tolist()])
    results = {
        "heldout_acc": zero_shot_accuracy(model, held.tensors(), held_labels,
                                          build_zero_shot_classifier(model, tokenizer, held_names)),
        "all_acc": zero_shot_accuracy(model, everything.tensors(), everything.labels("pair"),
                                      build_zero_shot_classifier(model, tokenizer, names)),
    }
    return results


def _load_image_tower(model: CLIP, name: str, device: torch.device) -> None:
    """Copy the ``visual.*`` weights of the model shipped for recipe ``name`` into ``model``.

    Reads the checkpoint file in :data:`WEIGHTS_DIR` directly (``train.shipped`` imports this module, so
    its loaders cannot be used here).
    """
    from clip_tutorial.weights.checkpoints import checkpoint_paths, load_checkpoint

    stem = WEIGHTS_DIR / get_recipe(name).name
    if not checkpoint_paths(stem)[0].is_file():
        raise ValueError(f"Recipe.image_tower: expected the name of a shipped model, got {name!r}, which is not "
                         "shipped (ship it first with tools/ship_models.py)")
    source = load_checkpoint(stem, map_location=device).model
    try:
        model.visual.load_state_dict(source.visual.state_dict())
    except RuntimeError as err:
        raise ValueError(f"Recipe.image_tower: the image tower of {name!r} does not fit this recipe's model "
                         f"(the vision sizes of the two recipes must agree)") from err


def train_supervised_tower(model: CLIP, data: ShapesWorld, seed: int = 0, device: torch.device | str | None = None,
                           progress: bool = True) -> float:
    """Train ``model``'s image tower in place as a classifier of ``data``'s colour-shape combinations.

    Explained in Chapter 7.4 (LiT with a supervised tower). The labels are the combinations ``data``
    draws from (its ``pairs``: for a training split, the seen ones), one class each, as for Chapter 6.3's
    supervised ViT, and so are the settings, :data:`SUPERVISED_TOWER`: a fresh head on the normalised
    features (:meth:`~clip_tutorial.train.classifier.CLIPClassifier.supervised`), trained end to end
    with cross-entropy by :func:`~clip_tutorial.train.classifier.fine_tune`. The head is thrown away;
    the rest of ``model`` is left as it was. Seeded by ``seed`` (the head and the batch order).

    Returns:
        The seconds the training took.

    Raises:
        TypeError: if ``model`` is not a CLIP or ``data`` not a ShapesWorld.
        ValueError: if ``data`` has scenes of several objects (an image then has no single label).
    """
    from clip_tutorial.core.checks import check_type
    from .classifier import CLIPClassifier, fine_tune

    check_type("model", model, CLIP)
    check_type("data", data, ShapesWorld)
    if data.max_objects != 1:
        raise ValueError(f"data: expected single-object images (max_objects=1), got max_objects={data.max_objects}")
    names = class_names()
    index = {f"{colour} {shape}": i for i, (colour, shape) in enumerate(data.pairs)}
    labels = torch.tensor([index[names[i]] for i in data.labels("pair").tolist()])
    started = time.perf_counter()
    torch.manual_seed(seed)
    classifier = CLIPClassifier.supervised(model, len(index))
    fine_tune(classifier, data.tensors(), labels, seed=seed, progress=progress,
              device=device if device is not None else next(model.parameters()).device, **SUPERVISED_TOWER)
    return time.perf_counter() - started


def train_recipe(name: str | Recipe, device: torch.device | str | None = None, progress: bool = True,
                 eval_every: int | None = None, seed: int | None = None, checkpoint_every: int | None = None,
                 checkpoint_dir: str | os.PathLike | None = None,
                 resume_from: str | os.PathLike | None = None) -> TrainedCLIP:
    """Generate the recipe's data, train a fresh model, and measure its zero-shot accuracy.

    Args:
        name: a recipe name or a :class:`Recipe`.
        device: where to train (the default is :func:`clip_tutorial.get_device`).
        progress: show progress bars.
        eval_every: also measure zero-shot accuracy every this many steps (into ``history.evals``).
        seed: overrides both the data seed and the training seed (for repeated measurements).
        checkpoint_every: save the training state every this many steps, as in
            :func:`~clip_tutorial.train.train_clip` (Chapter 3.2).
        checkpoint_dir: the folder of those training states.
        resume_from: a training state, or a folder of them, to continue from.
    """
    from clip_tutorial.core.device import get_device, seed_everything

    recipe = get_recipe(name) if isinstance(name, str) else name
    if not isinstance(recipe, Recipe):
        raise TypeError(f"name: expected a recipe name or a Recipe, got {type(name).__name__}")
    if seed is not None:
        recipe = replace(recipe, data_seed=seed, train=replace(recipe.train, seed=seed))
    device = torch.device(device) if device is not None else get_device()
    seed_everything(recipe.train.seed)
    heldout = heldout_combinations(recipe.n_heldout, seed=recipe.data_seed)
    tokenizer = make_tokenizer(recipe.model.context_length)
    started = time.perf_counter()
    biased = {"spurious": recipe.spurious} if recipe.spurious is not None else {}
    data = ShapesWorld(recipe.n_train, split="train", seed=recipe.data_seed, image_size=recipe.model.image_resolution,
                       styles=recipe.styles, heldout=heldout, max_objects=recipe.max_objects, **biased)
    if recipe.overlay:
        from clip_tutorial.data.overlay import overlay_words
        overlay_words(data, fraction=recipe.overlay, seed=recipe.data_seed)  # changes data's images and captions
    captions = data.captions
    if recipe.caption_noise:  # ALIGN's noisy alt-text (Chapter 7.2): some images get another pair's caption
        from clip_tutorial.data.noise import corrupt_captions
        captions, _ = corrupt_captions(captions, recipe.caption_noise, seed=recipe.data_seed)
    images, tokens = data.tensors(), tokenizer(captions)
    negatives = None
    if recipe.hard_negatives:
        from clip_tutorial.data.negatives import hard_negative_captions
        negatives = tokenizer(hard_negative_captions(data, seed=recipe.data_seed))
    data_seconds = time.perf_counter() - started
    config = recipe.model.replace(vocab_size=tokenizer.vocab_size, eot_token_id=tokenizer.eot_id)
    model = CLIP(config).to(device)
    tower_seconds = {}
    if recipe.image_tower == SUPERVISED:  # LiT (Chapter 7.4): pre-train the image tower on labels first
        tower_seconds["tower_seconds"] = train_supervised_tower(model, data, recipe.train.seed, device, progress)
    elif recipe.image_tower is not None:  # LiT (Chapter 7.4): start from a shipped image tower
        _load_image_tower(model, recipe.image_tower, device)
    eval_fn = (lambda m: evaluate_zero_shot(m, tokenizer, heldout, recipe.styles, n=500)) if eval_every else None
    history = train_clip(model, images, tokens, recipe.train, device=device, eval_fn=eval_fn,
                         eval_every=eval_every, progress=progress, checkpoint_every=checkpoint_every,
                         checkpoint_dir=checkpoint_dir, resume_from=resume_from,
                         **({"negatives": negatives} if negatives is not None else {}))
    metrics = {"data_seconds": data_seconds, **tower_seconds, "train_seconds": history.seconds,
               **evaluate_zero_shot(model, tokenizer, heldout, recipe.styles, n=EVAL_N, seed=EVAL_SEED),
               "eval_n": EVAL_N, "eval_seed": EVAL_SEED}
    return TrainedCLIP(model.eval(), tokenizer, recipe, history, metrics)
