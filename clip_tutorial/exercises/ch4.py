"""Checks for the exercises of Chapter 4: converting weights, counting parameters, real weights.

Each ``check_<name>`` prints ✅ or ❌ with an explanation and returns a
:class:`~clip_tutorial.exercises.CheckResult` that is truthy when you passed.

- The checks of a function you write (:func:`check_hf_name`, :func:`check_count_parameters`,
  :func:`check_crop_offsets`) run it on fresh inputs against the package's reference and take the
  keyword arguments ``trials``, ``seed`` (of the inputs; a fresh one by default) and ``verbose``.
- The checks of a prediction or a diagnosis (:func:`check_quick_gelu_gap`,
  :func:`check_forgot_transpose`, :func:`check_swapped_qk`, :func:`check_fp16_error`) run the
  experiment themselves, on the CPU, in well under a second and without any download, and
  compare what it measures with your answer. Give them ``None`` and they ask for an answer first.

:data:`EXERCISES` lists them in the book's order. Explained in Chapter 4 (the sections
"Exercises" of its two pages).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from clip_tutorial.core.checks import check_positive_int, check_type
from clip_tutorial.weights.hf import from_hf_state_dict, hf_names, hf_towers, to_hf_state_dict
from clip_tutorial.model import CLIP, CLIPConfig, get_config
from clip_tutorial.model.transformer import QuickGELU
from clip_tutorial.data.preprocess import center_crop
from .core import CheckResult, Hint, as_number, ensure_callable, finish_check, report, run_check
from .predict import check_choice, check_estimate
from .registry import Exercise

__all__ = ["EXERCISES", "check_hf_name", "check_count_parameters", "check_quick_gelu_gap",
           "check_forgot_transpose", "check_swapped_qk", "check_crop_offsets", "check_fp16_error",
           "reference_hf_name", "reference_count_parameters", "reference_crop_offsets",
           "transposeless_hf_state_dict", "buggy_to_hf_state_dict",
           "FORGOT_TRANSPOSE_CHOICES", "SWAPPED_QK_CHOICES"]




def _trial_of(message: str) -> int | None:
    """The 0-based trial a failure message is about ("Trial 3 of 24" -> 2), if it names one."""
    found = re.search(r"Trial (\d+) of \d+", message)
    return int(found.group(1)) - 1 if found else None


def _reword_inputs(result: CheckResult, asked: list[str]) -> CheckResult:
    """Replace the truncated ``inputs: ...`` of a failure with the full description of its trial."""
    trial = _trial_of(result.message)
    if result.passed or trial is None or trial >= len(asked):
        return result
    first, _, rest = result.message.partition("\n")
    first = re.sub(r"inputs: .*$", lambda m: f"{asked[trial]}.", first)
    return CheckResult(False, f"{first}\n{rest}" if rest else first, result.name)


# -- Exercise 1 (4.1): a key in Hugging Face's naming ---------------------------------------------

#: The layers the reference knows names for (more than any released model has).
_MAX_LAYERS = 48


@functools.lru_cache(maxsize=1)
def _hf_names() -> dict[str, str]:
    config = dataclasses.replace(get_config("ViT-L/14"), vision_layers=_MAX_LAYERS, transformer_layers=_MAX_LAYERS)
    return hf_names(config)


def reference_hf_name(key: str) -> str:
    """Hugging Face's name for the OpenAI / open_clip parameter ``key`` of a vision-transformer CLIP.

    Read from the table :func:`clip_tutorial.weights.hf.to_hf_state_dict` uses. The packed
    ``attn.in_proj_weight`` and ``attn.in_proj_bias`` are split into three tensors rather than
    renamed, so they have no single name. Explained in Chapter 4.1.

    Raises:
        ValueError: for a key that a ViT CLIP (of up to 48 blocks a tower) does not have, or one
            that is split rather than renamed.
    """
    check_type("key", key, str, "a parameter name (a string)")
    if ".attn.in_proj_" in key:
        raise ValueError(f"key: {key!r} is split into q_proj, k_proj and v_proj, not renamed")
    names = _hf_names()
    if key not in names:
        raise ValueError(f"key: expected a parameter name of a ViT CLIP such as 'visual.proj', got {key!r}")
    return names[key]


_HF_NAME_TABLE = (
    "visual.ln_pre.weight", "visual.transformer.resblocks.0.ln_1.weight", "transformer.resblocks.0.ln_2.bias",
    "visual.transformer.resblocks.11.mlp.c_fc.weight", "transformer.resblocks.7.mlp.c_proj.bias",
    "visual.transformer.resblocks.3.attn.out_proj.weight", "transformer.resblocks.10.attn.out_proj.bias",
    "visual.proj", "text_projection", "visual.positional_embedding", "positional_embedding",
    "visual.class_embedding", "visual.conv1.weight", "token_embedding.weight", "visual.ln_post.bias",
    "ln_final.weight", "logit_scale", "transformer.resblocks.5.ln_1.bias", "visual.transformer.resblocks.2.ln_2.weight",
    "transformer.resblocks.1.mlp.c_fc.bias", "visual.transformer.resblocks.8.mlp.c_proj.weight",
)


def _is(text: str) -> Callable[[Any], bool]:
    return lambda got: isinstance(got, str) and text in got


def _swapped(a: str, b: str) -> Callable[[Any, Any, tuple], bool]:
    """A detector: the reader wrote ``b`` where ``a`` belongs, or the reverse."""
    def detect(got: Any, expected: Any, inputs: tuple) -> bool:
        return isinstance(got, str) and ((a in expected and b in got) or (b in expected and a in got))
    return detect


_HF_NAME_HINTS = [
    Hint("Hugging Face spells the norm before the vision transformer `pre_layrnorm` (sic: no second e). "
         "The one after it is `post_layernorm`, spelled normally.",
         detect=lambda got, expected, inputs: "pre_layrnorm" in expected and _is("pre_layernorm")(got)),
    Hint("`ln_1` (before the attention) becomes `layer_norm1`, and `ln_2` (before the MLP) `layer_norm2`.",
         detect=_swapped("layer_norm1", "layer_norm2")),
    Hint("`mlp.c_fc` (the layer that widens) becomes `mlp.fc1`; `mlp.c_proj` (back to the width) becomes "
         "`mlp.fc2`.", detect=_swapped(".fc1.", ".fc2.")),
    Hint("Every tensor of a tower sits under `vision_model.` or `text_model.`. OpenAI's keys that do not start "
         "with `visual.` belong to the text tower, which has no prefix of its own there.",
         detect=lambda got, expected, inputs: isinstance(got, str) and (
             _swapped("vision_model.", "text_model.")(got, expected, inputs)
             or (expected.startswith(("vision_model.", "text_model.")) and got == expected.split(".", 1)[1]))),
    Hint("A block's number stays, but `transformer.resblocks.N` becomes `encoder.layers.N`.",
         detect=lambda got, expected, inputs: _is("resblocks")(got) and "resblocks" not in expected),
    Hint("Hugging Face calls the attention module `self_attn`: `attn.out_proj` becomes `self_attn.out_proj`.",
         detect=lambda got, expected, inputs: _is(".attn.")(got) and "self_attn" in expected),
    Hint("The projections into the joint space are `nn.Linear` layers in Hugging Face, so their names end in "
         "`.weight`: `visual_projection.weight` and `text_projection.weight` (and the tensors are stored "
         "transposed, which a name cannot show).",
         detect=lambda got, expected, inputs: expected.endswith("projection.weight")
         and got == expected[:-len(".weight")]),
    Hint("Positions are an `nn.Embedding` in Hugging Face: `embeddings.position_embedding.weight` (while the "
         "class token is `embeddings.class_embedding`, with no `.weight`).",
         detect=lambda got, expected, inputs: expected.endswith("position_embedding.weight")
         and isinstance(got, str) and "positional_embedding" in got),
    Hint("Your function returned the OpenAI name unchanged; every parameter but `logit_scale` is renamed.",
         detect=lambda got, expected, inputs: got == inputs[0] and expected != inputs[0]),
    Hint("Return the new name, a string such as 'vision_model.post_layernorm.bias'.",
         detect=lambda got, expected, inputs: not isinstance(got, str)),
]


def check_hf_name(fn: Callable[[str], str], *, trials: int = 24, seed: int | None = None,
                  verbose: bool = True) -> CheckResult:
    """Check ``fn(key)``: the Hugging Face name of an OpenAI / open_clip parameter name.

    Every kind of tensor of a vision-transformer CLIP is asked for once (in both towers and in
    blocks with one- and two-digit numbers), then random ones. The packed ``attn.in_proj_*``
    tensors are not asked: they are split, not renamed. The reference is
    :func:`reference_hf_name`. Returns a :class:`~clip_tutorial.exercises.CheckResult`.
    Explained in Chapter 4.1.
    """
    ensure_callable(fn, "fn")
    keys = [k for k in _hf_names() if k.startswith(("visual.transformer.resblocks.", "transformer.resblocks."))
            or "resblocks" not in k]
    asked: list[str] = []

    def make(g: torch.Generator, trial: int) -> tuple:
        if trial < len(_HF_NAME_TABLE):
            key = _HF_NAME_TABLE[trial]
        else:
            key = keys[int(torch.randint(len(keys), (), generator=g))]
        asked.append(f"key {key!r}")
        return (key,)

    result = run_check(fn, reference_hf_name, make, _HF_NAME_HINTS, "hf_name", trials, seed, False,
                       arg_names=["key"])
    return report(finish_check(_reword_inputs(result, asked), False,
                              f"Your names match the converter's on {trials} keys: every kind of tensor of both "
                              "towers."), verbose)


# -- Exercise 2 (4.1): the parameters of a config ---------------------------------------------------

def reference_count_parameters(config: CLIPConfig) -> int:
    """The number of parameters of a vision-transformer CLIP with sizes ``config``.

    Counted on the model itself, built on the ``meta`` device (shapes only, no memory), with
    :meth:`~clip_tutorial.model.CLIP.num_parameters`. Explained in Chapter 4.1.
    """
    if not isinstance(config, CLIPConfig) or config.is_resnet:
        raise TypeError(f"config: expected the CLIPConfig of a vision transformer, got {config!r:.60}")
    with torch.device("meta"):
        return CLIP(config).num_parameters()


def _count(config: CLIPConfig, *, biases: bool = True, norms: bool = True, class_token: int = 2,
           conv_bias: bool = False, logit_scale: bool = True, packed: int = 3, mlp_ratio: float | None = None,
           projections: bool = True) -> int:
    """The count by formula, with one piece switchable off: the known mistakes of the exercise.

    ``class_token`` counts the class token's embedding and its position (2), or one of them (1),
    or neither (0).
    """
    ratio = config.mlp_ratio if mlp_ratio is None else mlp_ratio

    def block(w: int) -> int:
        hidden = int(w * ratio)
        n = packed * w * w + w * w + 2 * w * hidden
        n += (packed * w + w + hidden + w) if biases else 0
        return n + (4 * w if norms else 0)

    wv, wt, e = config.vision_width, config.transformer_width, config.embed_dim
    grid = config.image_resolution // config.vision_patch_size
    image = 3 * config.vision_patch_size ** 2 * wv + (wv if conv_bias else 0) + (grid * grid + class_token) * wv
    image += config.vision_layers * block(wv) + (4 * wv if norms else 0) + (wv * e if projections else 0)
    text = (config.vocab_size + config.context_length) * wt + config.transformer_layers * block(wt)
    text += (2 * wt if norms else 0) + (wt * e if projections else 0)
    return image + text + (1 if logit_scale else 0)


def _off_by(amount: Callable[[CLIPConfig], list[int]]) -> Callable[[Any, Any, tuple], bool]:
    return lambda got, expected, inputs: isinstance(got, int) and got - expected in amount(inputs[0])


_COUNT_HINTS = [
    Hint("Count the biases too: in every block `in_proj_bias` (3 x width), `out_proj.bias` (width), "
         "`c_fc.bias` (the hidden width) and `c_proj.bias` (width).", mistake=lambda c: _count(c, biases=False)),
    Hint("Each LayerNorm has a gain and a bias, 2 x width: `ln_1` and `ln_2` in every block, `ln_pre` and "
         "`ln_post` in the image tower, `ln_final` in the text tower.", mistake=lambda c: _count(c, norms=False)),
    Hint("Remember the class token: its embedding (vision_width numbers) and its position, since the image "
         "tower has (resolution / patch)^2 + 1 positions, one more than it has patches.",
         detect=_off_by(lambda c: [-c.vision_width, -2 * c.vision_width])),
    Hint("The patch convolution `conv1` has no bias: it holds 3 x patch^2 x vision_width weights only.",
         detect=_off_by(lambda c: [c.vision_width])),
    Hint("One parameter short: the learned temperature `logit_scale` is a parameter too.",
         mistake=lambda c: _count(c, logit_scale=False)),
    Hint("`in_proj_weight` packs the queries, keys and values: 3 x width x width numbers, and `in_proj_bias` "
         "3 x width.", mistake=lambda c: _count(c, packed=1)),
    Hint("The MLP's hidden width is int(width x mlp_ratio), from the config: OpenAI's models use a ratio of 4, "
         "but not every config does.",
         detect=lambda got, expected, inputs: inputs[0].mlp_ratio != 4 and got == _count(inputs[0], mlp_ratio=4.0)),
    Hint("The two projections into the joint space are parameters too: `visual.proj` (vision_width x "
         "embed_dim) and `text_projection` (transformer_width x embed_dim).",
         mistake=lambda c: _count(c, projections=False)),
]

_COUNT_TABLE = (
    get_config("tiny"), get_config("ViT-B/32"),
    CLIPConfig(embed_dim=24, image_resolution=28, vision_layers=3, vision_width=48, vision_patch_size=7,
               context_length=9, vocab_size=37, transformer_width=32, transformer_heads=4, transformer_layers=2,
               mlp_ratio=2.0),
    get_config("ViT-L/14@336"),
)


def _describe_config(config: CLIPConfig) -> str:
    grid = config.image_resolution // config.vision_patch_size
    return (f"the config with image {config.image_resolution} px in {config.vision_patch_size}-px patches "
            f"({grid} x {grid}), vision {config.vision_layers} blocks of width {config.vision_width}, text "
            f"{config.transformer_layers} blocks of width {config.transformer_width}, context {config.context_length}, "
            f"vocabulary {config.vocab_size}, embed_dim {config.embed_dim}, mlp_ratio {config.mlp_ratio:g}")


def _random_config(g: torch.Generator) -> CLIPConfig:
    def pick(options: list) -> Any:
        return options[int(torch.randint(len(options), (), generator=g))]

    patch = pick([4, 7, 8, 16])
    return CLIPConfig(embed_dim=pick([16, 24, 40]), image_resolution=patch * pick([2, 3, 5, 7]),
                      vision_layers=pick([1, 2, 3]), vision_width=pick([32, 48, 64]), vision_patch_size=patch,
                      context_length=pick([5, 12, 20]), vocab_size=pick([30, 101, 500]),
                      transformer_width=pick([24, 32, 48]), transformer_heads=2, transformer_layers=pick([1, 2, 4]),
                      mlp_ratio=pick([4.0, 2.0, 3.0]))


def _as_count(fn: Callable[[CLIPConfig], Any]) -> Callable[[CLIPConfig], Any]:
    def count(config: CLIPConfig) -> Any:
        value = as_number(fn(config), "count_parameters(config)")
        return int(value) if float(value).is_integer() else value
    return count


def check_count_parameters(fn: Callable[[CLIPConfig], int], *, trials: int = 8, seed: int | None = None,
                           verbose: bool = True) -> CheckResult:
    """Check ``fn(config)``: the number of parameters of a vision-transformer CLIP, from its config alone.

    The configs are the tiny one, ViT-B/32, one with an MLP ratio of 2, ViT-L/14@336, then random
    ones. The reference, :func:`reference_count_parameters`, builds each model on the ``meta``
    device and counts. Returns a :class:`~clip_tutorial.exercises.CheckResult`. Explained in
    Chapter 4.1.
    """
    ensure_callable(fn, "fn")
    asked: list[str] = []

    def make(g: torch.Generator, trial: int) -> tuple:
        config = _COUNT_TABLE[trial] if trial < len(_COUNT_TABLE) else _random_config(g)
        asked.append(_describe_config(config))
        return (config,)

    result = run_check(_as_count(fn), reference_count_parameters, make, _COUNT_HINTS, "count_parameters", trials,
                       seed, False, arg_names=["config"])
    return report(finish_check(_reword_inputs(result, asked), False,
                              f"Your count matches the model's on {trials} configs, ViT-B/32 and ViT-L/14@336 "
                              "included."), verbose)


# -- Exercise 3 (4.1): predict, QuickGELU against GELU ---------------------------------------------

def _measure_quick_gelu_gap() -> float:
    """The largest absolute QuickGELU(x) - GELU(x) over a fine grid of x in [-8, 8], with the model's modules."""
    x = torch.linspace(-8.0, 8.0, 160_001, dtype=torch.float64)
    with torch.no_grad():
        return float((QuickGELU()(x) - torch.nn.GELU()(x)).abs().max())


def check_quick_gelu_gap(prediction: object, *, verbose: bool = True) -> CheckResult:
    """Check your prediction of the largest difference between QuickGELU and exact GELU.

    The experiment evaluates the model's :class:`~clip_tutorial.model.transformer.QuickGELU` and
    ``torch.nn.GELU`` (the two activations a converter chooses between with ``hidden_act``) on
    160,001 points from -8 to 8, in float64, and takes the largest absolute difference. A
    prediction within 0.008 passes. Explained in Chapter 4.1.

    Args:
        prediction: your number (``None`` before you have written one).
        verbose: print the feedback.
    """
    return report(check_estimate(
        prediction, _measure_quick_gelu_gap, name="quick_gelu_gap", tolerance=0.008,
        explanation="GELU is x * Phi(x), with Phi the standard normal CDF; QuickGELU is x * sigmoid(1.702 x). Their "
                    "difference is x * (sigmoid(1.702 x) - Phi(x)). The logistic curve stays within about 0.01 of "
                    "Phi, and x multiplies that error: it peaks near |x| = 2.3, where the error is still about 0.009, "
                    "at about 0.02. Tiny per element, but far above float32 round-off: a "
                    "converter that writes the wrong hidden_act loads without complaint and fails a 1e-5 comparison "
                    "of the outputs, while a loose 1e-2 one could let it through.",
        verbose=False), verbose)


# -- Exercise 4 (4.1): predict, a converter that forgets to transpose -------------------------------

def transposeless_hf_state_dict(model: CLIP) -> dict[str, torch.Tensor]:
    """:func:`clip_tutorial.weights.hf.to_hf_state_dict` with one bug: the projections are not transposed.

    ``visual.proj`` and ``text_projection`` keep OpenAI's (in, out) layout, where Hugging Face's
    ``nn.Linear`` weights are (out, in). For the exercise "A converter that forgets to transpose"
    of Chapter 4.1.
    """
    state = to_hf_state_dict(model)
    for name in ("visual_projection.weight", "text_projection.weight"):
        state[name] = state[name].t().contiguous()  # back to OpenAI's layout: the bug
    return state


#: A ViT-B/32 in small: the text projection is square (transformer_width = embed_dim), the image one is not.
_SQUARE_TEXT = CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=1, vision_width=48, vision_patch_size=16,
                          context_length=8, vocab_size=40, transformer_width=32, transformer_heads=2,
                          transformer_layers=1)

FORGOT_TRANSPOSE_CHOICES = {
    "a": "Loading fails, and the error names both projections, visual_projection.weight and text_projection.weight",
    "b": "Loading fails, and the error names only visual_projection.weight; with that one fixed, the model loads, "
         "and its text embeddings are wrong without any error",
    "c": "Loading succeeds and every output agrees: a transpose only rearranges numbers the loader checks anyway",
    "d": "Loading succeeds, and only the image embeddings are wrong",
}


def _seeded(config: CLIPConfig, seed: int) -> CLIP:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIP(config).eval()


def _inputs(config: CLIPConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(3, 3, config.image_resolution, config.image_resolution, generator=g)
    texts = torch.randint(1, config.vocab_size - 1, (3, config.context_length), generator=g)
    texts[:, -1] = config.vocab_size - 1  # the end token, the highest id
    return images, texts


def _gaps(model: CLIP, other: CLIP, config: CLIPConfig, seed: int = 0) -> tuple[float, float]:
    """Max |difference| of the image and of the text embeddings of two models on the same inputs."""
    images, texts = _inputs(config, seed)
    with torch.no_grad():
        return (float((model.encode_image(images) - other.encode_image(images)).abs().max()),
                float((model.encode_text(texts) - other.encode_text(texts)).abs().max()))


def _measure_forgot_transpose() -> str:
    """Load the transposeless state dict strictly; fix what the error names; compare the outputs."""
    model = _seeded(_SQUARE_TEXT, 0)
    state = transposeless_hf_state_dict(model)
    try:
        loaded = from_hf_state_dict(state, _SQUARE_TEXT)
    except ValueError as err:
        named = [n for n in ("visual_projection.weight", "text_projection.weight") if n in str(err)]
        if len(named) == 2:
            return "a"
        if named != ["visual_projection.weight"]:
            raise RuntimeError(f"forgot_transpose: unexpected error {err}") from None
        state["visual_projection.weight"] = state["visual_projection.weight"].t().contiguous()
        image_gap, text_gap = _gaps(model, from_hf_state_dict(state, _SQUARE_TEXT), _SQUARE_TEXT)
        if image_gap <= 1e-6 and text_gap > 1e-3:
            return "b"
        raise RuntimeError(f"forgot_transpose: gaps {image_gap:.2g}, {text_gap:.2g} match no choice")
    image_gap, text_gap = _gaps(model, loaded, _SQUARE_TEXT)
    if max(image_gap, text_gap) <= 1e-6:
        return "c"
    if text_gap <= 1e-6:
        return "d"
    raise RuntimeError(f"forgot_transpose: gaps {image_gap:.2g}, {text_gap:.2g} match no choice")


def check_forgot_transpose(answer: object, *, verbose: bool = True) -> CheckResult:
    """Check your prediction of what a converter that forgets to transpose the projections does.

    The experiment converts a small random CLIP shaped like ViT-B/32 (a square text projection,
    a non-square image projection) with :func:`transposeless_hf_state_dict`, loads the result
    strictly with :func:`clip_tutorial.weights.hf.from_hf_state_dict` (which checks every name and
    shape, as ``transformers`` does with strict loading), fixes what the error names, and
    compares the embeddings with the original's. Explained in Chapter 4.1.

    Args:
        answer: ``"a"``, ``"b"``, ``"c"`` or ``"d"`` (``None`` before you choose).
        verbose: print the feedback.
    """
    return report(check_choice(
        answer, _measure_forgot_transpose, FORGOT_TRANSPOSE_CHOICES, name="forgot_transpose",
        explanation="A strict loader compares shapes, not contents. The image projection is 48 x 32 in OpenAI's "
                    "layout and 32 x 48 as a Linear weight, so its shape gives the bug away. The text projection is "
                    "32 x 32 either way: its transpose has the same shape and loads without a word, and every text "
                    "embedding comes out wrong. ViT-B/32 is built the same way (its text projection is 512 x 512), "
                    "so a converter tested only by loading would pass on its text tower. Only comparing the outputs "
                    "catches it.",
        verbose=False), verbose)


# -- Exercise 5 (4.1): diagnose, a converter with a silent bug --------------------------------------

def buggy_to_hf_state_dict(model: CLIP) -> dict[str, torch.Tensor]:
    """A converter to Hugging Face's names with one bug; its output loads without error."""
    state, config = model.state_dict(), model.config
    out = {}
    for ours, theirs in hf_names(config).items():  # every one-to-one renaming
        value = state[ours]
        out[theirs] = value.t() if ours in ("visual.proj", "text_projection") else value
    for ours, theirs, layers in hf_towers(config):  # both towers' attention blocks
        for i in range(layers):
            for kind in ("weight", "bias"):
                packed = state[f"{ours}.{i}.attn.in_proj_{kind}"]
                k, q, v = packed.chunk(3, dim=0)
                for name, part in zip("qkv", (q, k, v)):
                    out[f"{theirs}.{i}.self_attn.{name}_proj.{kind}"] = part
    return {name: value.detach().clone().contiguous() for name, value in out.items()}


def _converter(model: CLIP, *, order: str = "kqv", transpose: bool = True, dim: int = 0,
               split_bias: bool = True) -> dict[str, torch.Tensor]:
    """:func:`buggy_to_hf_state_dict` with each of the changes the exercise's choices propose."""
    state, config = model.state_dict(), model.config
    out = {}
    for ours, theirs in hf_names(config).items():
        value = state[ours]
        out[theirs] = value.t() if transpose and ours in ("visual.proj", "text_projection") else value
    for ours, theirs, layers in hf_towers(config):
        for i in range(layers):
            for kind in ("weight", "bias"):
                packed = state[f"{ours}.{i}.attn.in_proj_{kind}"]
                if kind == "bias" and not split_bias:
                    out[f"{theirs}.{i}.self_attn.in_proj_bias"] = packed
                    continue
                parts = dict(zip(order, packed.chunk(3, dim=dim if kind == "weight" else 0)))
                for name in "qkv":
                    out[f"{theirs}.{i}.self_attn.{name}_proj.{kind}"] = parts[name]
    return {name: value.detach().clone().contiguous() for name, value in out.items()}


SWAPPED_QK_CHOICES = {
    "a": "The projections into the joint space should not be transposed",
    "b": "The packed rows hold the queries, then the keys, then the values, but the split names them k, q, v: "
         "the query and key projections trade places",
    "c": "The packed matrix must be split along its columns (dim=1), not along its rows",
    "d": "The biases must stay packed: Hugging Face keeps one in_proj_bias per block",
}

#: Sizes with no square projection, biases made non-zero: any wrong tensor changes the outputs.
_NO_SQUARE = CLIPConfig(embed_dim=24, image_resolution=32, vision_layers=2, vision_width=48, vision_patch_size=16,
                        vision_heads=3, context_length=8, vocab_size=40, transformer_width=32, transformer_heads=4,
                        transformer_layers=2)


def _random_biases(model: CLIP, seed: int) -> CLIP:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


def _round_trip_gap(model: CLIP, state: dict[str, torch.Tensor]) -> float:
    """How far the model that ``state`` loads into is from ``model`` (inf when it does not load)."""
    try:
        loaded = from_hf_state_dict(state, model.config)
    except (ValueError, RuntimeError):
        return math.inf
    return max(_gaps(model, loaded, model.config))


def _measure_swapped_qk() -> str:
    """Apply each proposed change to the buggy converter; the right diagnosis is the one that mends it."""
    model = _random_biases(_seeded(_NO_SQUARE, 1), 2)
    buggy = buggy_to_hf_state_dict(model)
    variant = _converter(model)
    if buggy.keys() != variant.keys() or not all(torch.equal(buggy[k], variant[k]) for k in buggy):
        raise RuntimeError("swapped_qk: the experiment's copy of the converter differs from the one shown")
    if not 1e-3 < _round_trip_gap(model, buggy) < math.inf:
        raise RuntimeError("swapped_qk: the buggy converter should load and give different outputs")
    changes = {"a": dict(transpose=False), "b": dict(order="qkv"), "c": dict(dim=1), "d": dict(split_bias=False)}
    mended = [letter for letter, change in changes.items()
              if _round_trip_gap(model, _converter(model, **change)) <= 1e-6]
    if len(mended) != 1:
        raise RuntimeError(f"swapped_qk: the changes {mended} each mend the converter; expected exactly one")
    return mended[0]


def check_swapped_qk(answer: object, *, verbose: bool = True) -> CheckResult:
    """Check your diagnosis of :func:`buggy_to_hf_state_dict`, a converter whose output loads but is wrong.

    The experiment converts a small random CLIP with it (no projection square, biases non-zero),
    then makes the change each choice proposes, one at a time, and loads every result strictly
    with :func:`clip_tutorial.weights.hf.from_hf_state_dict`. The right diagnosis is the only change
    after which the loaded model's embeddings equal the original's. Explained in Chapter 4.1.

    Args:
        answer: ``"a"``, ``"b"``, ``"c"`` or ``"d"`` (``None`` before you choose).
        verbose: print the feedback.
    """
    return report(check_choice(
        answer, _measure_swapped_qk, SWAPPED_QK_CHOICES, name="swapped_qk",
        explanation="The packed in_proj_weight stacks the query, key and value projections in that order, and "
                    "`k, q, v = packed.chunk(3)` swaps the first two. Every shape still fits, so loading succeeds. "
                    "It is tempting to think it harmless, since a dot product q . k is symmetric, but the roles are "
                    "not: the softmax normalises each query's row over all keys, and swapping the projections "
                    "transposes the score matrix before that softmax. Of the four changes, only restoring the order "
                    "brings back the original embeddings; the other three stop the strict loader, by a shape or by "
                    "a name.",
        verbose=False), verbose)


# -- Exercise 6 (4.2): the centre crop's offsets ----------------------------------------------------

def reference_crop_offsets(width: int, height: int, size: int) -> tuple[int, int]:
    """``(left, top)`` of the ``size x size`` square that :func:`clip_tutorial.data.preprocess.center_crop` keeps.

    Measured on the package's own crop: an image whose pixel values are their own positions is
    cropped, and the crop's first pixel tells where it starts. Explained in Chapter 4.2.
    """
    width, height = check_positive_int("width", width), check_positive_int("height", height)
    size = check_positive_int("size", size)
    positions = np.arange(width * height, dtype=np.int32).reshape(height, width)
    first = int(center_crop(Image.fromarray(positions), size).getpixel((0, 0)))
    return first % width, first // width


def _offsets(round_: Callable[[float], Any]) -> Callable[[int, int, int], tuple]:
    return lambda w, h, s: (round_((w - s) / 2), round_((h - s) / 2))


_CROP_HINTS = [
    Hint("Round to the nearest pixel, ties to the even one, as torchvision's CenterCrop does with Python's "
         "round: round(1.5) is 2. Flooring (// 2 or int()) gives 1, which is what Hugging Face's processor "
         "does, one pixel away from OpenAI's crop.", mistake=_offsets(math.floor)),
    Hint("Ties go to the even neighbour, not always up: Python's round(0.5) is 0 and round(2.5) is 2, so "
         "use round, not int(x + 0.5) or math.ceil.", mistake=_offsets(lambda x: int(x + 0.5))),
    Hint("Return (left, top): the column offset first, as in PIL's crop box (left, top, right, bottom).",
         mistake=lambda w, h, s: reference_crop_offsets(w, h, s)[::-1]),
    Hint("The crop is centred: the spare pixels are shared between the two sides, so the offset is half of them.",
         mistake=lambda w, h, s: (w - s, h - s)),
    Hint("Offsets are whole pixels: round (width - size) / 2 to an integer.", mistake=_offsets(lambda x: x)),
    Hint("Return only the two offsets (left, top), not the whole crop box.",
         detect=lambda got, expected, inputs: isinstance(got, tuple) and len(got) == 4),
]

_CROP_TABLE = ((224, 262, 224), (262, 224, 224), (227, 224, 224), (229, 300, 224), (224, 225, 224),
               (300, 231, 224), (32, 32, 32), (96, 35, 32))


def _as_pair(fn: Callable[[int, int, int], Any]) -> Callable[[int, int, int], Any]:
    def pair(width: int, height: int, size: int) -> Any:
        got = fn(width, height, size)
        if isinstance(got, (list, tuple, np.ndarray, torch.Tensor)) and len(got) in (2, 4):
            values = [as_number(x, "crop_offsets(...)[i]") for x in got]
            return tuple(int(v) if float(v).is_integer() else v for v in values)
        return got
    return pair


def check_crop_offsets(fn: Callable[[int, int, int], tuple[int, int]], *, trials: int = 12, seed: int | None = None,
                       verbose: bool = True) -> CheckResult:
    """Check ``fn(width, height, size)``: the ``(left, top)`` offsets of the central ``size x size`` crop.

    The image sizes include spare pixel counts of every remainder modulo 4, where the three usual
    ways of rounding differ. The reference is :func:`reference_crop_offsets`, read off
    :func:`clip_tutorial.data.preprocess.center_crop`. Returns a
    :class:`~clip_tutorial.exercises.CheckResult`. Explained in Chapter 4.2.
    """
    ensure_callable(fn, "fn")

    def make(g: torch.Generator, trial: int) -> tuple:
        if trial < len(_CROP_TABLE):
            return _CROP_TABLE[trial]
        size = int(torch.randint(8, 300, (), generator=g))
        spare = torch.randint(0, 120, (2,), generator=g)
        return size + int(spare[0]), size + int(spare[1]), size

    result = run_check(_as_pair(fn), reference_crop_offsets, make, _CROP_HINTS, "crop_offsets", trials, seed, False)
    return report(finish_check(result, False, f"Your offsets match center_crop's on {trials} image sizes, ties "
                                              "included."), verbose)


# -- Exercise 7 (4.2): predict, what float16 storage costs -----------------------------------------

def _measure_fp16_error() -> float:
    """Round 10^6 log-uniform weights in [0.001, 10] to float16 and back; the largest relative error."""
    g = torch.Generator().manual_seed(0)
    weights = 10.0 ** (torch.rand(1_000_000, generator=g, dtype=torch.float64) * 4 - 3)
    return float(((weights.half().double() - weights).abs() / weights).max())


def check_fp16_error(prediction: object, *, verbose: bool = True) -> CheckResult:
    """Check your prediction of the largest relative error of storing a weight in float16.

    The experiment rounds a million weights, spread evenly on a log scale from 0.001 to 10, to
    float16 and back, as OpenAI's files and :func:`~clip_tutorial.load_pretrained` do, and takes
    the largest ``|rounded - w| / |w|``. A prediction within 1e-4 passes. Explained in Chapter 4.2.

    Args:
        prediction: your number (``None`` before you have written one).
        verbose: print the feedback.
    """
    return report(check_estimate(
        prediction, _measure_fp16_error, name="fp16_error", tolerance=1e-4,
        explanation="float16 keeps 10 bits after the leading 1 of the significand, so neighbouring values in "
                    "[1, 2) are 2^-10 apart, and the same relative spacing holds in every power of two. Rounding to "
                    "the nearest moves a number by at most half a spacing: a relative error of at most 2^-11, about "
                    "4.9e-4, reached just above a power of two. (2^-10, the machine epsilon, is the spacing, not the "
                    "error.) Below about 6e-5 the format runs out of exponent and the relative error grows; the "
                    "range here stays clear of that.",
        verbose=False), verbose)


#: The exercises of Chapter 4, in the book's order (the sections "Exercises" of 4.1 and 4.2).
EXERCISES = (
    Exercise("ch4.hf_name", "implement", check_hf_name, "A parameter's name in Hugging Face's format"),
    Exercise("ch4.count_parameters", "implement", check_count_parameters, "Count the parameters of a config"),
    Exercise("ch4.quick_gelu_gap", "predict", check_quick_gelu_gap, "Predict: how far is QuickGELU from GELU?"),
    Exercise("ch4.forgot_transpose", "predict", check_forgot_transpose,
             "Predict: a converter that forgets to transpose"),
    Exercise("ch4.swapped_qk", "diagnose", check_swapped_qk,
             "Break it and explain: a converter that loads but is wrong"),
    Exercise("ch4.crop_offsets", "implement", check_crop_offsets, "The centre crop's offsets"),
    Exercise("ch4.fp16_error", "predict", check_fp16_error, "Predict: what float16 storage costs"),
)
