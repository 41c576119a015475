"""Named recipes for the generators of Chapter 7: the judge, the image decoder and two text-to-image models.

Explained in Chapter 7.5 (DALL·E 2 in miniature: ``ch7-judge`` and ``ch7-decoder``) and Chapter 7.6
(Stable Diffusion's use of CLIP: ``ch7-sd-pooled`` and ``ch7-sd-tokens``). As the CLIP recipes of
:mod:`clip_tutorial.train.recipes` do for CLIPs, a :class:`GeneratorRecipe` names every setting
of one training run, :func:`train_generator` runs it, and
``python -m clip_tutorial.generate --recipe NAME`` trains it from the command line and writes its
weights and model card (:mod:`clip_tutorial.generate.shipped`).

A recipe is of one of two kinds. ``"judge"``: the :class:`~clip_tutorial.generate.judge.AttributeJudge`
that scores every generator (it owes nothing to CLIP). ``"denoiser"``: a
:class:`~clip_tutorial.generate.unet.UNet` trained with :func:`~clip_tutorial.generate.decoder.train_denoiser`
on scenes the CLIP named by ``clip`` was trained on (its training split: the colour-shape pairs it
held out stay unseen by the generator too), conditioned on one of:

* ``"image"``: the CLIP image embedding of the picture (DALL·E 2's decoder);
* ``"text"``: the CLIP text embedding of its caption, one pooled vector;
* ``"tokens"``: every output token of CLIP's text tower, read by cross-attention (Stable Diffusion).

``ch7-sd-pooled`` and ``ch7-sd-tokens`` differ in the condition only, so the comparison of
Chapter 7.6 has its control.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from collections.abc import Sequence
from typing import Any

import torch

from clip_tutorial.core.checks import check_choice, check_int, check_number, check_sequence, check_subset
from clip_tutorial.data import ShapesWorld, heldout_combinations
from clip_tutorial.data.render import COLOURS, POSITIONS, SHAPES, SIZES, STYLES

__all__ = ["GeneratorRecipe", "GENERATOR_RECIPES", "get_generator_recipe", "KINDS", "CONDITIONS", "Scenes",
           "recipe_scenes", "eval_prompt", "Prompts", "all_prompts"]

KINDS = ("judge", "denoiser")
CONDITIONS = ("image", "text", "tokens")
#: The prompt that names a colour-shape pair when a text-conditioned generator is evaluated.
EVAL_TEMPLATE = "a photo of a {colour} {shape}"


@dataclass(frozen=True)
class GeneratorRecipe:
    """Every setting of one generator's (or the judge's) training run (Chapters 7.5 and 7.6).

    Attributes:
        name: the recipe's name, e.g. ``"ch7-decoder"``.
        description: one sentence for ``--list`` and the model card.
        kind: ``"judge"`` or ``"denoiser"``.
        condition: what a denoiser is conditioned on, one of ``CONDITIONS`` (ignored by the judge).
        clip: the CLIP recipe whose shipped model makes the conditions and whose held-out pairs are kept out.
        channels: the UNet's channels at full resolution, or the judge's first convolution width.
        n_train: training scenes (single objects).
        styles: drawing styles of the scenes (a subset of ``STYLES``).
        sizes: object sizes drawn (a subset of ``SIZES``).
        positions: grid cells the objects are drawn in (a subset of ``POSITIONS``).
        data_seed: seed of the training scenes.
        steps, batch_size, lr: optimisation (AdamW, warm-up then cosine decay).
        parameterization: what the denoiser predicts, ``"eps"``, ``"x0"`` or ``"v"``.
        diffusion_steps: ``T`` of the cosine noise schedule.
        p_uncond: probability of dropping the condition while training (classifier-free guidance).
        ema_decay: exponential moving average of the weights (0: none).
        seed: seed of the initial weights and of the batches.
        sample_steps, guidance: the DDIM sampler's steps and guidance weight used to measure the card's metrics.
        eval_n, eval_seed: pictures per split judged for the card, and the seed of their conditions and noise.
    """

    name: str
    description: str
    kind: str = "denoiser"
    condition: str = "image"
    clip: str = "ch1-demo"
    channels: int = 16
    n_train: int = 8000
    styles: tuple[str, ...] = ("filled",)
    sizes: tuple[str, ...] = ("large",)
    positions: tuple[str, ...] = ("center",)
    data_seed: int = 1
    steps: int = 5400
    batch_size: int = 32
    lr: float = 2e-3
    parameterization: str = "x0"
    diffusion_steps: int = 1000
    p_uncond: float = 0.1
    ema_decay: float = 0.995
    seed: int = 0
    sample_steps: int = 25
    guidance: float = 1.0
    eval_n: int = 256
    eval_seed: int = 777

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, KINDS)
        check_choice("condition", self.condition, CONDITIONS)
        for name in ("channels", "n_train", "steps", "batch_size", "diffusion_steps", "sample_steps", "eval_n"):
            check_int(name, getattr(self, name), 1)
        for name in ("data_seed", "seed", "eval_seed"):
            check_int(name, getattr(self, name), 0)
        check_number("lr", self.lr, 0.0, low_open=True)
        check_number("p_uncond", self.p_uncond, 0.0, 1.0)
        check_number("ema_decay", self.ema_decay, 0.0, 1.0, high_open=True)
        check_number("guidance", self.guidance)
        check_choice("parameterization", self.parameterization, ("eps", "x0", "v"))
        for name, allowed in (("styles", STYLES), ("sizes", SIZES), ("positions", POSITIONS)):
            object.__setattr__(self, name, check_subset(name, getattr(self, name), allowed))  # canonical order

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> "GeneratorRecipe":
        """The recipe recorded by :meth:`to_dict` (a model card's ``recipe_settings``).

        Raises:
            ValueError: if a setting is unknown or missing.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"settings: expected keys among {sorted(known)}, got unknown keys {unknown}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
        try:
            return cls(**values)
        except TypeError as err:
            raise ValueError(f"settings: expected every setting of a GeneratorRecipe, got {err}") from err


#: The denoisers' shared settings. Their scenes are single large filled objects in the centre cell
#: (jittered and rotated a little): the prompts name a colour and a shape only, and on a CPU budget
#: of minutes a small UNet learns to draw eight shapes far sooner when it need not also choose a
#: size, a style and one of nine places for them.
_DENOISER = GeneratorRecipe(name="", description="")


def _denoiser(name: str, description: str, **settings: Any) -> GeneratorRecipe:
    return GeneratorRecipe(**{**asdict(_DENOISER), "name": name, "description": description, **settings})


#: The generator recipes, by name (Chapter 7.5 then 7.6).
GENERATOR_RECIPES: dict[str, GeneratorRecipe] = {
    "ch7-judge": GeneratorRecipe(
        name="ch7-judge", kind="judge", channels=16, n_train=8000, steps=1500, batch_size=128, lr=3e-3, seed=0,
        data_seed=0, styles=("filled", "outline"), sizes=SIZES, positions=POSITIONS,
        description="The attribute judge of Chapter 7.5: a small CNN that names the colour and the shape of a "
                    "picture, trained on ShapesWorld's labels of all 64 combinations."),
    "ch7-decoder": _denoiser(
        "ch7-decoder", "DALL·E 2's decoder in miniature (Chapter 7.5): a UNet that draws a 32 x 32 picture "
                       "from a CLIP image embedding.", condition="image"),
    "ch7-sd-pooled": _denoiser(
        "ch7-sd-pooled", "The pooled control of Chapter 7.6: a UNet conditioned on the caption's one CLIP text "
                         "embedding.", condition="text"),
    "ch7-sd-tokens": _denoiser(
        "ch7-sd-tokens", "Stable Diffusion's conditioning in miniature (Chapter 7.6): a UNet whose "
                         "cross-attention reads every output token of CLIP's text tower.", condition="tokens"),
}


def get_generator_recipe(name: str) -> GeneratorRecipe:
    """The generator recipe called ``name``; a clear error lists the known ones (Chapter 7.5)."""
    if not isinstance(name, str) or name not in GENERATOR_RECIPES:
        raise ValueError(f"name: expected one of the generator recipes {sorted(GENERATOR_RECIPES)}, got {name!r}")
    return GENERATOR_RECIPES[name]


@dataclass
class Scenes:
    """Single-object scenes, their captions and true labels (indices into COLOURS and SHAPES); Chapter 7.5."""

    images: torch.Tensor
    captions: list[str]
    colours: torch.Tensor
    shapes: torch.Tensor


def recipe_scenes(recipe: GeneratorRecipe, n: int, split: str, seed: int) -> Scenes:
    """``n`` single-object scenes of the recipe's styles, sizes and positions, from its CLIP's ``split``.

    Explained in Chapter 7.5. ``split`` is ``"train"`` (the pairs the CLIP was trained on),
    ``"heldout"`` (the pairs it held out) or ``"all"``.
    """
    from clip_tutorial.generate.judge import scene_labels
    from clip_tutorial.train.recipes import get_recipe

    n = check_int("n", n, 1)
    clip = get_recipe(recipe.clip)
    heldout = heldout_combinations(clip.n_heldout, seed=clip.data_seed)
    data = ShapesWorld(n, split=split, seed=seed, styles=recipe.styles, heldout=heldout, sizes=recipe.sizes,
                       positions=recipe.positions)
    colours, shapes = scene_labels(data)
    return Scenes(data.images, list(data.captions), colours, shapes)


def eval_prompt(colour: str, shape: str) -> str:
    """The prompt a text-conditioned generator is judged on: ``"a photo of a {colour} {shape}"`` (Chapter 7.6)."""
    return EVAL_TEMPLATE.format(colour=colour, shape=shape)


@dataclass
class Prompts:
    """Every colour-shape prompt with its labels, as Chapters 7.5 and 7.6 draw and judge them.

    ``colours`` and ``shapes`` index ``list(COLOURS)`` and ``SHAPES``; ``heldout`` is ``True`` for
    the prompts of held-out pairs.
    """

    texts: list[str]
    colours: torch.Tensor
    shapes: torch.Tensor
    heldout: torch.Tensor


def all_prompts(heldout: Sequence[tuple[str, str]], per_pair: int = 1) -> Prompts:
    """The prompt :func:`eval_prompt` of every (colour, shape) pair, ``per_pair`` times in a row (Chapter 7.5).

    Pairs come colour by colour, shape by shape (``per_pair = 1`` fills an 8 x 8 table row by row);
    ``heldout`` lists the pairs the CLIP held out, which the returned mask marks.

    Raises:
        TypeError, ValueError: if ``per_pair`` is not a positive int, or ``heldout`` is not a list
            of known (colour, shape) pairs.
    """
    per_pair = check_int("per_pair", per_pair, 1)
    held = set()
    for i, pair in enumerate(check_sequence("heldout", heldout, iterable=True,
                                            expected="a list of (colour, shape) tuples")):
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"heldout[{i}]: expected a (colour, shape) tuple, got {pair!r}")
        held.add((check_choice(f"heldout[{i}] colour", pair[0], tuple(COLOURS)),
                  check_choice(f"heldout[{i}] shape", pair[1], SHAPES)))
    pairs = [(c, s) for c in COLOURS for s in SHAPES]

    def repeat(values: list) -> torch.Tensor:
        return torch.tensor(values).repeat_interleave(per_pair)

    return Prompts([eval_prompt(c, s) for c, s in pairs for _ in range(per_pair)],
                   repeat([list(COLOURS).index(c) for c, _ in pairs]), repeat([SHAPES.index(s) for _, s in pairs]),
                   repeat([p in held for p in pairs]))
