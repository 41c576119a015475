"""Solutions of the exercises of Chapter 4, one function per exercise, named after it.

Read one with ``clip_tutorial.exercises.show_solution("ch4.<name>")``. Explained in Chapter 4.
"""
from __future__ import annotations

import math


def hf_name(key: str) -> str:
    """Hugging Face's name for an OpenAI / open_clip parameter (all but the packed ``in_proj_*``).

    Three steps: find the tower (keys under ``visual.`` are the image tower's, all others but
    ``logit_scale`` the text tower's), rename the block path, then rename what sits outside the
    blocks. Hugging Face spells the norm before the vision transformer ``pre_layrnorm`` (sic).
    """
    if key == "logit_scale":
        return key
    if key in ("visual.proj", "text_projection"):  # nn.Linear layers there, stored transposed
        return {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}[key]
    tower, rest = ("vision_model", key[len("visual."):]) if key.startswith("visual.") else ("text_model", key)
    if rest.startswith("transformer.resblocks."):
        number, inner = rest[len("transformer.resblocks."):].split(".", 1)
        for old, new in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                         ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            if inner.startswith(old + "."):
                return f"{tower}.encoder.layers.{number}.{new}{inner[len(old):]}"
        raise ValueError(f"key: {key!r} is not renamed one to one (the packed q/k/v is split)")
    outside = {
        "conv1.weight": "embeddings.patch_embedding.weight",
        "class_embedding": "embeddings.class_embedding",
        "positional_embedding": "embeddings.position_embedding.weight",
        "token_embedding.weight": "embeddings.token_embedding.weight",
    }
    if rest in outside:
        return f"{tower}.{outside[rest]}"
    norm, _, kind = rest.partition(".")
    norms = {"ln_pre": "pre_layrnorm", "ln_post": "post_layernorm", "ln_final": "final_layer_norm"}
    return f"{tower}.{norms[norm]}.{kind}"


def count_parameters(config) -> int:
    """The parameters of a vision-transformer CLIP, counted from its config.

    A block of width w with MLP hidden width h = int(w * mlp_ratio) holds the packed q/k/v
    (3w x w weights, 3w biases), the attention output (w x w + w), the MLP (w x h + h, then
    h x w + w) and two LayerNorms (2w each). The image tower adds the bias-free patch
    convolution (3 x patch^2 x w), the class token (w), one position per patch plus one for the
    class token, ln_pre and ln_post, and the projection (w x embed_dim). The text tower adds the
    token and position embeddings, ln_final and its projection. The temperature is one more.
    """
    def block(w: int) -> int:
        h = int(w * config.mlp_ratio)
        return (3 * w * w + 3 * w) + (w * w + w) + (w * h + h) + (h * w + w) + 2 * (2 * w)

    wv, wt, e = config.vision_width, config.transformer_width, config.embed_dim
    patches = (config.image_resolution // config.vision_patch_size) ** 2
    image = (3 * config.vision_patch_size ** 2 * wv + wv + (patches + 1) * wv
             + config.vision_layers * block(wv) + 2 * (2 * wv) + wv * e)
    text = (config.vocab_size * wt + config.context_length * wt + config.transformer_layers * block(wt)
            + 2 * wt + wt * e)
    return image + text + 1


def quick_gelu_gap() -> float:
    """The largest absolute difference between x sigmoid(1.702 x) and x Phi(x): about 0.02.

    GELU is x Phi(x) with Phi the standard normal CDF, so the difference is
    x (sigmoid(1.702 x) - Phi(x)). The logistic curve approximates Phi to within about 0.01, and
    the factor x makes the gap largest where that error is still large and x is already about 2.
    Evaluating the formula on a grid (with math.erf for Phi) puts the peak near x = 2.3 (and, the
    gap being an even function of x, near x = -2.3).
    """
    def gap(x: float) -> float:
        return abs(x * (1 / (1 + math.exp(-1.702 * x)) - 0.5 * (1 + math.erf(x / math.sqrt(2)))))

    return max(gap(i / 1000) for i in range(0, 5001))


def forgot_transpose() -> str:
    """(b): only the non-square projection gives the bug away.

    A strict loader checks names and shapes. The image projection is (vision_width, embed_dim) in
    OpenAI's layout and (embed_dim, vision_width) as an nn.Linear weight: different shapes, so the
    error names visual_projection.weight. The text projection is square when transformer_width
    equals embed_dim (512 x 512 in ViT-B/32), so its untransposed copy has the right shape, loads
    silently, and every text embedding is computed with the wrong matrix.
    """
    return "b"


def swapped_qk() -> str:
    """(b): ``k, q, v = packed.chunk(3, dim=0)`` should be ``q, k, v = ...``.

    The packed rows are queries, then keys, then values. The other proposals cannot be it: the
    projections must be transposed for nn.Linear, splitting the (3w, w) matrix along dim=1 gives
    shapes that do not load, and Hugging Face has separate q/k/v biases. Swapping queries and keys
    is not harmless: the softmax normalises over keys, so the score matrix is transposed before it.
    """
    return "b"


def crop_offsets(width: int, height: int, size: int) -> tuple[int, int]:
    """Half the spare pixels on each side, rounded half to even as torchvision's CenterCrop does."""
    return round((width - size) / 2), round((height - size) / 2)


def fp16_error() -> float:
    """2^-11, about 4.9e-4: half the relative spacing of float16 numbers.

    float16 stores 10 bits after the leading 1, so numbers between two powers of two are spaced
    2^-10 of the lower power apart; rounding to the nearest moves one by at most half of that.
    """
    return 2.0 ** -11
