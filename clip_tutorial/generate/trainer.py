"""Training, sampling and judging the generators named by :mod:`clip_tutorial.generate.recipes`.

Explained in Chapter 7.5 (the judge, the decoder) and Chapter 7.6 (pooled and token conditioning).
:func:`train_generator` runs a recipe; :func:`sample_pictures` draws from a trained denoiser;
:func:`evaluate_generator` measures what the model card records: the fractions of pictures whose
colour, shape, and both the judge names as asked, for the colour-shape pairs the CLIP was trained
on (``"seen"``) and for those it held out (``"heldout"``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from clip_tutorial.core.checks import check_int, check_number, check_type
from clip_tutorial.data.render import COLOURS, SHAPES
from clip_tutorial.evaluation.zeroshot import encode_texts

from .decoder import image_conditions, text_token_conditions, to_model_pixels, to_uint8, train_denoiser
from .diffusion import NoiseSchedule, ddim_sample, diffusion_loss, make_schedule
from .judge import AttributeJudge, judge_accuracy, train_judge
from .recipes import GeneratorRecipe, eval_prompt, get_generator_recipe, recipe_scenes
from .unet import UNet

__all__ = ["TrainedGenerator", "build_generator", "generator_conditions", "train_generator", "sample_pictures",
           "evaluate_generator", "check_loss", "CHECK_N"]

#: Scenes of the fixed batch whose loss :func:`check_loss` measures (the card records it; a test recomputes it).
CHECK_N = 32


@dataclass
class TrainedGenerator:
    """A trained judge or denoiser with its recipe, noise schedule, metrics and card (Chapter 7.5).

    ``schedule`` is ``None`` for the judge. ``card`` is empty for a model trained in this process.
    """

    model: torch.nn.Module
    recipe: GeneratorRecipe
    schedule: NoiseSchedule | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)


def _recipe(recipe: GeneratorRecipe | str) -> GeneratorRecipe:
    return get_generator_recipe(recipe) if isinstance(recipe, str) else check_type(
        "recipe", recipe, GeneratorRecipe, "a GeneratorRecipe or its name")


def _clip(recipe: GeneratorRecipe) -> Any:
    from clip_tutorial.train.shipped import load_or_train

    return load_or_train(recipe.clip, progress=False)


def build_generator(recipe: GeneratorRecipe | str, cond_dim: int = 64) -> torch.nn.Module:
    """The untrained network of a recipe: an :class:`AttributeJudge` or a :class:`UNet` (Chapter 7.5).

    ``cond_dim`` is the width of the CLIP embeddings the denoiser reads.
    """
    recipe = _recipe(recipe)
    if recipe.kind == "judge":
        return AttributeJudge(width=recipe.channels)
    mode = "tokens" if recipe.condition == "tokens" else "pooled"
    return UNet(mode, cond_dim=check_int("cond_dim", cond_dim, 1), channels=recipe.channels)


def generator_conditions(recipe: GeneratorRecipe | str, clip: Any, images: torch.Tensor | None = None,
                         texts: list[str] | None = None) -> Any:
    """The condition a recipe's denoiser reads: from ``images`` (``"image"``) or from ``texts``.

    Explained in Chapter 7.5 and 7.6. ``clip`` is what :func:`~clip_tutorial.train.load_or_train`
    returns for ``recipe.clip`` (a model and its tokenizer). Returns a tensor ``(N, D)`` of
    L2-normalised embeddings, or for ``"tokens"`` the pair ``(tokens (N, L, D), mask (N, L))``.

    Raises:
        ValueError: if the input the condition needs is missing.
    """
    recipe = _recipe(recipe)
    if recipe.condition == "image":
        if images is None:
            raise ValueError(f"images: expected uint8 pictures for the image-conditioned {recipe.name!r}, got None")
        return image_conditions(clip.model, images)
    if texts is None:
        raise ValueError(f"texts: expected captions for the text-conditioned {recipe.name!r}, got None")
    if recipe.condition == "text":
        return encode_texts(clip.model, clip.tokenizer, list(texts), normalize=True)
    return text_token_conditions(clip.model, clip.tokenizer, list(texts))


def _scenes_and_conditions(recipe: GeneratorRecipe, clip: Any, n: int, split: str, seed: int) -> tuple[Any, Any]:
    scenes = recipe_scenes(recipe, n, split, seed)
    return scenes, generator_conditions(recipe, clip, scenes.images, scenes.captions)


def check_loss(trained: TrainedGenerator, clip: Any = None) -> float:
    """The diffusion loss of a denoiser on a fixed batch: the recipe's first ``CHECK_N`` training scenes.

    Explained in Chapter 7.5. Steps, noise and condition dropout are drawn from a generator seeded
    with 0, so the value depends only on the weights: the model card records it and a test
    recomputes it to show that the shipped weights are those the card describes.
    """
    recipe = trained.recipe
    if recipe.kind != "denoiser":
        raise ValueError(f"trained: expected a denoiser, got the {recipe.kind} {recipe.name!r}")
    scenes, cond = _scenes_and_conditions(recipe, clip or _clip(recipe), CHECK_N, "train", recipe.data_seed)
    with torch.no_grad():
        return diffusion_loss(trained.model.eval(), trained.schedule, to_model_pixels(scenes.images), cond,
                              p_uncond=recipe.p_uncond, parameterization=recipe.parameterization,
                              generator=torch.Generator().manual_seed(0)).item()


def sample_pictures(trained: TrainedGenerator, cond: Any, *, guidance: float | None = None, steps: int | None = None,
                    seed: int = 0, progress: bool = False) -> torch.Tensor:
    """uint8 pictures ``(N, 3, 32, 32)`` drawn by a trained denoiser, one per row of ``cond`` (Chapter 7.5).

    DDIM (deterministic given ``seed``) with the recipe's ``sample_steps`` and ``guidance`` unless
    given, predicted clean images clamped to ``[-1, 1]``.
    """
    check_type("trained", trained, TrainedGenerator)
    recipe = trained.recipe
    if trained.schedule is None:
        raise ValueError(f"trained: expected a denoiser, got the {recipe.kind} {recipe.name!r}")
    first = cond[0] if isinstance(cond, (tuple, list)) else cond
    x = ddim_sample(trained.model, trained.schedule, (len(first), 3, 32, 32), cond,
                    steps=recipe.sample_steps if steps is None else check_int("steps", steps, 1),
                    guidance=recipe.guidance if guidance is None else check_number("guidance", guidance),
                    clip=1.0, parameterization=recipe.parameterization,
                    generator=torch.Generator().manual_seed(check_int("seed", seed, 0)), progress=progress)
    return to_uint8(x)


def evaluate_generator(trained: TrainedGenerator, judge: AttributeJudge, clip: Any = None, *, n: int | None = None,
                       guidance: float | None = None, seed: int | None = None) -> dict[str, dict[str, float]]:
    """Judged match rates of a denoiser's pictures, for seen and for held-out colour-shape pairs (Chapter 7.5).

    An image-conditioned decoder is given the CLIP image embeddings of ``n`` fresh scenes of each
    split (drawn with ``seed``) and asked to redraw them; a text-conditioned one the prompts
    ``"a photo of a {colour} {shape}"`` of those scenes' pairs. The judge then names the colour and
    shape of each picture. Returns ``{"seen": {"colour", "shape", "both"}, "heldout": {...}}``.
    """
    recipe = trained.recipe
    check_type("judge", judge, AttributeJudge)
    clip = clip or _clip(recipe)
    n = recipe.eval_n if n is None else check_int("n", n, 1)
    seed = recipe.eval_seed if seed is None else check_int("seed", seed, 0)
    results = {}
    for name, split in (("seen", "train"), ("heldout", "heldout")):
        scenes = recipe_scenes(recipe, n, split, seed)
        prompts = [eval_prompt(list(COLOURS)[c], SHAPES[s]) for c, s in zip(scenes.colours.tolist(),
                                                                            scenes.shapes.tolist())]
        cond = generator_conditions(recipe, clip, scenes.images, prompts)
        pictures = sample_pictures(trained, cond, guidance=guidance, seed=seed)
        results[name] = judge_accuracy(judge, pictures, scenes.colours, scenes.shapes)
    return results


def train_generator(recipe: GeneratorRecipe | str, judge: AttributeJudge | None = None,
                    progress: bool = True) -> TrainedGenerator:
    """Train a generator recipe and measure it: the judge on clean scenes, a denoiser with ``judge``.

    Explained in Chapter 7.5. A denoiser's metrics are :func:`evaluate_generator`'s match rates
    (``judge`` is required for them; without one they are left out), its :func:`check_loss`, and
    the training time; the judge's are its accuracy on ``eval_n`` clean scenes of all 64 pairs.
    """
    recipe = _recipe(recipe)
    torch.manual_seed(recipe.seed)
    if recipe.kind == "judge":
        started = time.perf_counter()
        model = train_judge(n=recipe.n_train, steps=recipe.steps, batch_size=recipe.batch_size, lr=recipe.lr,
                            seed=recipe.seed, width=recipe.channels, progress=progress)
        seconds = time.perf_counter() - started
        scenes = recipe_scenes(recipe, recipe.eval_n, "all", recipe.eval_seed)
        metrics = {**judge_accuracy(model, scenes.images, scenes.colours, scenes.shapes), "train_seconds": seconds}
        return TrainedGenerator(model, recipe, None, metrics)
    clip = _clip(recipe)
    scenes, cond = _scenes_and_conditions(recipe, clip, recipe.n_train, "train", recipe.data_seed)
    first = cond[0] if isinstance(cond, tuple) else cond
    torch.manual_seed(recipe.seed)
    model = build_generator(recipe, cond_dim=first.shape[-1])
    schedule = make_schedule("cosine", recipe.diffusion_steps)
    history = train_denoiser(model, schedule, to_model_pixels(scenes.images), cond, steps=recipe.steps,
                             batch_size=recipe.batch_size, lr=recipe.lr, p_uncond=recipe.p_uncond,
                             parameterization=recipe.parameterization, ema_decay=recipe.ema_decay, seed=recipe.seed,
                             progress=progress)
    trained = TrainedGenerator(model.eval(), recipe, schedule)
    metrics: dict[str, Any] = {"train_seconds": history["seconds"],
                               "final_loss": sum(history["loss"][-50:]) / len(history["loss"][-50:]),
                               "check_loss": check_loss(trained, clip)}
    if judge is not None:
        metrics.update(evaluate_generator(trained, judge, clip))
    trained.metrics = metrics
    return trained
