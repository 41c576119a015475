"""Weights in other formats: OpenAI / open_clip state dicts and Hugging Face ``transformers``.

Our parameter names *are* OpenAI's (and open_clip's), so the OpenAI format needs no renaming:
converting is inferring the sizes from the tensors and checking every key and shape. Hugging Face
names things differently, splits the packed q/k/v projection into three and stores the two
projections into the joint space transposed (as ``nn.Linear`` weights).

Two things no tensor shape tells are the number of attention heads and the activation. OpenAI's
models use 64-wide heads and QuickGELU; open_clip's larger ones do not (ViT-H/14 has 80-wide
vision heads, ViT-g/14 88, ViT-bigG/14 104) and its models trained elsewhere use exact GELU. A
wrong guess loads without complaint and computes something else, so :func:`config_from_state_dict`
takes them from what it is told (:func:`config_facts`: a model name, an open_clip or Hugging Face
config, or the fields themselves) and guesses only where OpenAI's rule is safe to assume.

Explained in Chapter 4.
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from clip_tutorial.model import CLIP, CLIPConfig
from clip_tutorial.model.config import CONFIGS, OFFICIAL_MODELS

__all__ = [
    "OPEN_CLIP_ARCHITECTURES", "HEAD_WIDTH_FIELDS", "check_state_dict", "config_facts", "read_config_file",
    "config_from_state_dict", "from_openai_state_dict", "to_openai_state_dict", "hf_config", "config_from_hf",
    "hf_names", "hf_towers", "to_hf_state_dict", "from_hf_state_dict", "to_hf", "from_hf", "export_hf",
]

#: Scalar metadata entries of OpenAI's released files that are not parameters.
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
#: The two head sizes a caller may give instead of head counts (``width // head_width`` heads).
HEAD_WIDTH_FIELDS = ("vision_head_width", "transformer_head_width")
_SHOW = 10  # how many keys an error message lists before it only counts

# open_clip's plain CLIP architectures (its ``model_configs/*.json``): the width of one vision head
# (``vision_cfg.head_width``). All their text towers have 64-wide heads (``text_cfg.width / heads``).
_VISION_HEAD_WIDTHS = {"RN50": 64, "RN101": 64, "RN50x4": 64, "RN50x16": 64, "RN50x64": 64, "ViT-B-32": 64,
                       "ViT-B-16": 64, "ViT-L-14": 64, "ViT-L-14-336": 64, "ViT-H-14": 80, "ViT-H-14-378": 80,
                       "ViT-H-16": 80, "ViT-g-14": 88, "ViT-bigG-14": 104}
#: open_clip's name -> ``(vision head width, text head width, quick_gelu)``. A name ending in
#: ``-quickgelu`` uses QuickGELU (the weights OpenAI trained, or DFN's); the plain names use exact GELU,
#: open_clip's default (LAION's weights). OpenAI's own names (``"ViT-B/32"``, with a slash) are the
#: configs of :data:`clip_tutorial.model.config.CONFIGS`: 64-wide heads everywhere and QuickGELU.
OPEN_CLIP_ARCHITECTURES: dict[str, tuple[int, int, bool]] = {
    **{name: (width, 64, False) for name, width in _VISION_HEAD_WIDTHS.items()},
    **{f"{name}-quickgelu": (width, 64, True) for name, width in _VISION_HEAD_WIDTHS.items()
       if name not in ("ViT-H-16", "ViT-g-14")},  # the two without a QuickGELU config
}
_FIELDS = frozenset(CLIPConfig.__dataclass_fields__)
_SIZES = ("embed_dim", "image_resolution", "vision_layers", "vision_width", "vision_patch_size", "context_length",
          "vocab_size", "transformer_width", "transformer_layers", "mlp_ratio")


def _clean(state_dict: Mapping[str, Any], name: str = "state_dict") -> dict[str, Any]:
    """Drop a ``module.`` prefix (DistributedDataParallel), OpenAI's scalar metadata entries and causal masks.

    TorchScript cannot mark a buffer non-persistent, so an archive saved from *our* model carries
    the causal ``attn_mask``, which the model rebuilds itself; OpenAI's files have none.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"{name}: expected a mapping of parameter names to tensors, got {type(state_dict).__name__}")
    out = {}
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key not in OPENAI_EXTRA_KEYS and key.rsplit(".", 1)[-1] != "attn_mask":
            out[key] = value
    return out


def _listed(label: str, items: list[str]) -> str:
    more = f", ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return f"{len(items)} {label}: {', '.join(items[:_SHOW])}{more}"


def check_state_dict(expected: Mapping[str, torch.Tensor], got: Mapping[str, Any], name: str) -> None:
    """Raise a ``ValueError`` listing missing keys, unexpected keys and shape mismatches, if any.

    Args:
        expected: the state dict the model wants (e.g. ``model.state_dict()``).
        got: the tensors on offer.
        name: what ``got`` is, for the message (a file, an argument name).

    Raises:
        ValueError: naming, with counts, the missing keys, the unexpected keys and the shapes that differ.

    Explained in Chapter 4.
    """
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = [
        f"{k} (expected {tuple(expected[k].shape)}, got {tuple(getattr(got[k], 'shape', ()))})"
        for k in sorted(set(expected) & set(got))
        if not isinstance(got[k], torch.Tensor) or got[k].shape != expected[k].shape
    ]
    problems = [_listed(label, items) for label, items in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if items]
    if problems:
        raise ValueError(f"{name}: the tensors do not fit the model; " + "; ".join(problems))


# --------------------------------------------------------------------------------------------------
# What a configuration says that a state dict cannot
# --------------------------------------------------------------------------------------------------

def read_config_file(path: str | os.PathLike, name: str = "config") -> dict[str, Any]:
    """The JSON object in ``path`` (an open_clip model config, a Hugging Face ``config.json``, ...).

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if it is not a JSON object; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name}: expected a JSON config file, but {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{name}: expected a JSON config file, but {path} does not parse as JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{name}: expected a JSON object in {path}, got a {type(data).__name__}")
    return data


_OC_VISION = {"image_size": 224, "layers": 12, "width": 768, "head_width": 64, "mlp_ratio": 4.0, "patch_size": 16}
_OC_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12, "mlp_ratio": 4.0}
# Options that do not change what a trained model computes, and the values of the others that mean plain CLIP.
_OC_HARMLESS = {"patch_dropout", "output_tokens", "custom_text", "timm_model_pretrained", "hf_model_pretrained"}
_OC_PLAIN = {"vision_cfg": {"pool_type": "tok", "pos_embed_type": "learnable", "in_chans": 3, "block_type": "default"},
             "text_cfg": {"pool_type": "argmax", "text_arch": "clip", "proj_type": "linear", "block_type": "default"},
             "": {}}


def _unsupported(section: str, cfg: Mapping[str, Any], read: set[str]) -> list[str]:
    """Options in ``cfg`` this CLIP cannot honour (set, and not to what plain CLIP does)."""
    plain = _OC_PLAIN[section]
    return [f"{section + '.' if section else ''}{key}={value!r}" for key, value in cfg.items()
            if key not in read | _OC_HARMLESS and value not in (None, False, 0, "", {}, [])
            and plain.get(key, object()) != value]


def _open_clip_facts(cfg: Mapping[str, Any], name: str) -> dict[str, Any]:
    """CLIPConfig fields (and the vision head width) stated by an open_clip model config."""
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    if not isinstance(vision, Mapping) or not isinstance(text, Mapping) or "embed_dim" not in cfg:
        raise ValueError(f"{name}: expected an open_clip model config with embed_dim, vision_cfg and text_cfg, "
                         f"got the keys {sorted(cfg)}")
    problems = (_unsupported("", cfg, {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"})
                + _unsupported("vision_cfg", vision, set(_OC_VISION)) + _unsupported("text_cfg", text, set(_OC_TEXT)))
    if problems:
        raise ValueError(f"{name}: expected a plain CLIP, got options this CLIP does not implement: "
                         f"{', '.join(problems)}")
    v, t = {**_OC_VISION, **vision}, {**_OC_TEXT, **text}
    resnet = isinstance(v["layers"], (list, tuple))
    size = v["image_size"]
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"{name}: expected a square vision_cfg.image_size, got {size}")
        size = size[0]
    if not resnet and int(v["width"] * v["mlp_ratio"]) != int(v["width"] * t["mlp_ratio"]):
        raise ValueError(f"{name}: the towers have different MLP ratios (vision_cfg {v['mlp_ratio']}, text_cfg "
                         f"{t['mlp_ratio']}), but this CLIP has one mlp_ratio for both; it cannot hold this model")
    return dict(embed_dim=cfg["embed_dim"], image_resolution=size, vision_layers=tuple(v["layers"]) if resnet
                else v["layers"], vision_width=v["width"], vision_patch_size=None if resnet else v["patch_size"],
                vision_head_width=v["head_width"], context_length=t["context_length"], vocab_size=t["vocab_size"],
                transformer_width=t["width"], transformer_heads=t["heads"], transformer_layers=t["layers"],
                mlp_ratio=t["mlp_ratio"], quick_gelu=bool(cfg.get("quick_gelu", False)), eot_token_id=None)


def config_facts(source: Any, name: str = "config") -> dict[str, Any]:
    """What ``source`` says about a model, as :class:`~clip_tutorial.model.CLIPConfig` fields.

    The fields may include ``vision_head_width`` / ``transformer_head_width`` (see
    :data:`HEAD_WIDTH_FIELDS`), which :func:`config_from_state_dict` turns into head counts.
    Explained in Chapter 4.

    Args:
        source: ``None`` (nothing); a ``CLIPConfig``; a name: OpenAI's (``"ViT-B/32"``, every
            field) or open_clip's (``"ViT-H-14"``, :data:`OPEN_CLIP_ARCHITECTURES`: head widths and
            activation); an open_clip model config (``vision_cfg``/``text_cfg``, also wrapped in the
            hub's ``{"model_cfg": ...}``); a Hugging Face CLIP config (``vision_config``/``text_config``);
            a mapping of CLIPConfig fields; or the path of a JSON file holding one of these.
        name: the argument's name, for error messages.

    Raises:
        TypeError: for a source of another type.
        ValueError: for an unknown name, an unreadable file, or a config this CLIP cannot implement.
        FileNotFoundError: for a path that does not exist.
    """
    if source is None:
        return {}
    if isinstance(source, CLIPConfig):
        return source.to_dict()
    if isinstance(source, str) and source in CONFIGS:
        return CONFIGS[source].to_dict()
    if isinstance(source, str) and source in OPEN_CLIP_ARCHITECTURES:
        vision, text, quick = OPEN_CLIP_ARCHITECTURES[source]
        return {"vision_head_width": vision, "transformer_head_width": text, "quick_gelu": quick}
    if isinstance(source, str) and not source.endswith(".json") and not Path(source).exists():
        raise ValueError(f"{name}: expected an OpenAI model name {list(OFFICIAL_MODELS)}, an open_clip one "
                         f"{list(OPEN_CLIP_ARCHITECTURES)} or a config file, got {source!r}")
    if isinstance(source, (str, os.PathLike)):
        return config_facts(read_config_file(source, name), f"{name} ({source})")
    if not isinstance(source, Mapping):
        raise TypeError(f"{name}: expected a CLIPConfig, a model name, a config dict or a JSON file, "
                        f"got {type(source).__name__}")
    if isinstance(source.get("model_cfg"), Mapping):  # open_clip's open_clip_config.json on the hub
        return _open_clip_facts(source["model_cfg"], name)
    if "vision_cfg" in source or "text_cfg" in source:
        return _open_clip_facts(source, name)
    if "vision_config" in source or "text_config" in source or "model_type" in source:
        return config_from_hf(source, name).to_dict()
    unknown = set(source) - _FIELDS - set(HEAD_WIDTH_FIELDS)
    if unknown:
        raise ValueError(f"{name}: expected an open_clip config (vision_cfg, text_cfg), a Hugging Face config "
                         f"(vision_config, text_config) or CLIPConfig fields, got the keys {sorted(unknown)}")
    return dict(source)


def _count_blocks(sd: Mapping[str, Any], prefix: str, index: int = 2) -> int:  # distinct block numbers
    return len({k.split(".")[index] for k in sd if k.startswith(prefix)})


def _sizes(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Every size the tensors show, the way OpenAI's ``build_model`` reads them."""
    needed = ["text_projection", "positional_embedding", "token_embedding.weight", "ln_final.weight",
              "transformer.resblocks.0.mlp.c_fc.weight"]
    resnet = "visual.proj" not in sd
    needed += (["visual.layer1.0.conv1.weight", "visual.attnpool.positional_embedding"] if resnet
               else ["visual.conv1.weight", "visual.positional_embedding",
                     "visual.transformer.resblocks.0.mlp.c_fc.weight"])
    missing = [k for k in needed if k not in sd]
    if missing:
        raise ValueError(f"state_dict: cannot infer the model's sizes, missing keys {missing}")
    width = sd["ln_final.weight"].shape[0]
    sizes: dict[str, Any] = dict(
        embed_dim=sd["text_projection"].shape[1], context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0], transformer_width=width,
        transformer_layers=_count_blocks(sd, "transformer.resblocks."),
        mlp_ratio=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
    )
    if resnet:  # four stages of bottleneck blocks; the attention pool sees a 1/32 resolution grid
        grid = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        sizes.update(vision_layers=tuple(_count_blocks(sd, f"visual.layer{s}.") for s in (1, 2, 3, 4)),
                     vision_width=sd["visual.layer1.0.conv1.weight"].shape[0], image_resolution=32 * grid,
                     vision_patch_size=None)
    else:
        patch, vision_width = sd["visual.conv1.weight"].shape[-1], sd["visual.conv1.weight"].shape[0]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        sizes.update(vision_layers=_count_blocks(sd, "visual.transformer.resblocks.", 3), vision_width=vision_width,
                     vision_patch_size=patch, image_resolution=patch * grid)
        hidden = sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
        if hidden != int(vision_width * sizes["mlp_ratio"]):
            raise ValueError(
                f"state_dict: the towers have different MLP ratios (vision {hidden / vision_width:.4g}, text "
                f"{sizes['mlp_ratio']:.4g}), but this CLIP has one mlp_ratio for both (open_clip's ViT-g-14 and "
                "ViT-bigG-14 are such models); it cannot hold these weights")
    return {k: (v if v is None or isinstance(v, (float, tuple)) else int(v)) for k, v in sizes.items()}


def _differences(sizes: Mapping[str, Any], stated: Mapping[str, Any]) -> list[str]:
    """The stated sizes that the tensors contradict (an MLP ratio counts by the widths it gives)."""
    out = []
    for key in set(_SIZES) & set(stated):
        given, found = stated[key], sizes[key]
        given = tuple(given) if isinstance(given, list) else given
        same = (key == "mlp_ratio" and isinstance(given, (int, float))
                and int(sizes["transformer_width"] * given) == int(sizes["transformer_width"] * found))
        if given != found and not same:
            out.append(f"{key} (config {given!r}, tensors {found!r})")
    return sorted(out)


def _heads(sizes: Mapping[str, Any], stated: Mapping[str, Any]) -> dict[str, Any]:
    """``vision_heads`` and ``transformer_heads``: as stated, else known, else OpenAI's rule where it is safe."""
    resnet = isinstance(sizes["vision_layers"], tuple)
    known = next((c for c in CONFIGS.values() if all(getattr(c, k) == sizes[k] for k in _SIZES)), None)
    released = [CONFIGS[n] for n in OFFICIAL_MODELS]
    towers = (("vision_heads", "image", sizes["vision_width"] * (32 if resnet else 1), "vision_width",
               {c.vision_width for c in released if c.is_resnet == resnet}),
              ("transformer_heads", "text", sizes["transformer_width"], "transformer_width",
               {c.transformer_width for c in released}))
    heads, assumed, unknown = {}, [], []
    for field, tower, width, size, openai_widths in towers:
        rule, head_width = max(1, width // 64), stated.get(field.replace("heads", "head_width"))
        if head_width is not None:
            if isinstance(head_width, bool) or not isinstance(head_width, int) or head_width <= 0 or width % head_width:
                raise ValueError(f"{field.replace('heads', 'head_width')}: expected a positive int dividing the "
                                 f"{tower} tower's width {width}, got {head_width!r}")
            if stated.get(field) not in (None, width // head_width):
                raise ValueError(f"{field}: expected {width // head_width} heads, as the head width "
                                 f"{head_width} of the {tower} tower's width {width} gives, got {stated[field]}")
            heads[field] = None if field == "vision_heads" and width // head_width == rule else width // head_width
        elif field in stated:
            heads[field] = stated[field]
        elif known is not None:
            heads[field] = getattr(known, field)
        else:
            heads[field] = None if field == "vision_heads" else rule  # None: CLIPConfig's own spelling of the rule
            guess = f"{field}={rule} ({tower} width {width} / 64)"
            (assumed if sizes[size] in openai_widths else unknown).append(guess)
    if unknown:
        raise ValueError(
            f"state_dict: cannot tell the number of attention heads: {', '.join(unknown)} would follow OpenAI's rule "
            "of 64-wide heads, but no OpenAI model has this width, and a wrong count changes no tensor shape, only "
            "every output. Pass vision_heads=/transformer_heads= (or vision_head_width=/transformer_head_width=), "
            "or config=: an open_clip model name such as 'ViT-H-14', an open_clip model config (dict or JSON file) "
            "or a Hugging Face config.json")
    if assumed:
        warnings.warn(f"state_dict: assumed OpenAI's rule of 64-wide attention heads: {', '.join(assumed)}; the "
                      "widths are OpenAI's but the sizes are not those of a released model. Pass vision_heads=/"
                      "transformer_heads= or config= to state them", UserWarning, stacklevel=3)
    return heads


def config_from_state_dict(state_dict: Mapping[str, Any], **stated: Any) -> CLIPConfig:
    """Infer the :class:`~clip_tutorial.model.CLIPConfig` of an OpenAI / open_clip state dict.

    Every size is read off the tensors' shapes, the way OpenAI's ``build_model`` does it; sizes in
    ``stated`` must agree with them. The head counts, which no shape shows, are taken

    1. from ``stated`` (``vision_heads``/``transformer_heads``, or ``vision_head_width``/
       ``transformer_head_width``: each head's width), else
    2. from the named config of :data:`~clip_tutorial.model.config.CONFIGS` with exactly these sizes
       (OpenAI's nine models and the book's ``tiny``), else
    3. from OpenAI's rule ``width // 64`` with a warning naming it, for a tower whose width is one of
       OpenAI's released models'; for any other width this raises instead of guessing.

    QuickGELU and pooling at the highest token id (``eot_token_id=None``) are OpenAI's choices,
    kept unless ``stated`` says otherwise. Explained in Chapter 4.

    Args:
        state_dict: parameter names to tensors; a ``module.`` prefix and OpenAI's metadata
            entries (``input_resolution``, ``context_length``, ``vocab_size``) are ignored.
        **stated: CLIPConfig fields and head widths, e.g. ``transformer_heads=2, quick_gelu=False``,
            or ``**config_facts("ViT-H-14")``.

    Raises:
        ValueError: if a key needed to infer the sizes is missing, a stated size differs from the
            tensors', a head width does not divide its tower's width, the towers' MLP ratios differ,
            or the head counts cannot be told (step 3).
    """
    unknown = set(stated) - _FIELDS - set(HEAD_WIDTH_FIELDS)
    if unknown:
        raise ValueError(f"config_from_state_dict: unknown field(s) {sorted(unknown)}; expected CLIPConfig fields "
                         "or vision_head_width / transformer_head_width")
    sizes = _sizes(_clean(state_dict))
    differences = _differences(sizes, stated)
    if differences:
        raise ValueError("config: expected the sizes of the state dict's tensors, got differing fields: "
                         + "; ".join(differences))
    rest = {k: v for k, v in stated.items() if k not in _SIZES and k not in HEAD_WIDTH_FIELDS}
    return CLIPConfig(**{**sizes, **rest, **_heads(sizes, stated)})


def from_openai_state_dict(state_dict: Mapping[str, Any], config: Any = None, **stated: Any) -> CLIP:
    """Build a :class:`~clip_tutorial.model.CLIP` from an OpenAI / open_clip state dict (ViT or ResNet).

    The keys are ours already, so this checks every key and shape strictly and loads the tensors
    (cast to float32). Explained in Chapter 4.

    Args:
        state_dict: e.g. ``torch.jit.load(path).state_dict()`` or an open_clip checkpoint.
        config: a ``CLIPConfig`` is used as it is. Anything else :func:`config_facts` reads (a model
            name such as ``"ViT-H-14"``, an open_clip or Hugging Face config, its JSON file) states
            fields for :func:`config_from_state_dict`, which infers the rest; so does ``None``.
        **stated: more fields, e.g. ``vision_heads=16`` or ``vision_head_width=80, quick_gelu=False``.

    Returns:
        The model, in eval mode.

    Raises:
        ValueError: listing the missing keys, unexpected keys and shape mismatches; or when the
            sizes contradict ``config`` or the head counts cannot be told (see
            :func:`config_from_state_dict`).

    Warns:
        UserWarning: when neither ``config`` nor ``stated`` says which activation the model uses
            and QuickGELU (OpenAI's) is assumed: open_clip's models trained on LAION use GELU.
    """
    sd = _clean(state_dict)
    if isinstance(config, CLIPConfig) and not stated:
        model_config = config
    else:
        stated = {**config_facts(config), **stated}
        model_config = config_from_state_dict(sd, **stated)
        if "quick_gelu" not in stated:
            warnings.warn("state_dict: assumed OpenAI's QuickGELU activation; open_clip's models trained on other "
                          "data use exact GELU. Pass quick_gelu= or config= (e.g. 'ViT-B-32' for open_clip's GELU "
                          "model, 'ViT-B/32' for OpenAI's) to state it", UserWarning, stacklevel=2)
    model = CLIP(model_config)
    check_state_dict(model.state_dict(), sd, "state_dict")
    model.load_state_dict(sd, strict=True)
    return model.eval()


def to_openai_state_dict(model: CLIP) -> dict[str, torch.Tensor]:
    """The model's tensors under OpenAI's / open_clip's names (detached copies). Explained in Chapter 4."""
    if not isinstance(model, CLIP):
        raise TypeError(f"model: expected a clip_tutorial CLIP, got {type(model).__name__}")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------------------------------
# Hugging Face transformers (ViT only: transformers has no CLIP with OpenAI's ModifiedResNet)
# --------------------------------------------------------------------------------------------------

def _transformers():
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - transformers is a test dependency
        raise ImportError("the Hugging Face converters need transformers: pip install transformers safetensors") from err
    return transformers


def _vit_only(config: CLIPConfig) -> None:
    if config.is_resnet:
        raise ValueError(
            "config: expected a vision-transformer CLIP, got a ResNet one (vision_layers="
            f"{config.vision_layers}); Hugging Face transformers has no CLIP with OpenAI's ModifiedResNet, "
            "so use the OpenAI / open_clip format (to_openai_state_dict) for it"
        )


def hf_config(config: CLIPConfig) -> Any:
    """The ``transformers.CLIPConfig`` with the same sizes as ``config`` (ViT models only).

    ``eos_token_id`` is the token the text tower pools at: ``eot_token_id``, or the highest id when
    that is ``None`` (OpenAI's end token 49407 is the highest id). Explained in Chapter 4.

    Raises:
        ValueError: for a ResNet config (``transformers`` has none), or an end token of id 2 that is
            not the highest id (``transformers`` treats ``eos_token_id=2`` as a legacy "pool at the
            highest id" flag).
    """
    if not isinstance(config, CLIPConfig):
        raise TypeError(f"config: expected a clip_tutorial CLIPConfig, got {type(config).__name__}")
    _vit_only(config)
    eot = config.vocab_size - 1 if config.eot_token_id is None else config.eot_token_id
    if eot == 2 and config.vocab_size != 3:
        raise ValueError("config: eot_token_id=2 cannot be expressed in transformers, which reads "
                         "eos_token_id=2 as 'pool at the highest id'; give the end token another id")
    act = "quick_gelu" if config.quick_gelu else "gelu"
    common = dict(hidden_act=act, layer_norm_eps=1e-5)
    text = dict(vocab_size=config.vocab_size, hidden_size=config.transformer_width,
                intermediate_size=int(config.transformer_width * config.mlp_ratio),
                num_hidden_layers=config.transformer_layers, num_attention_heads=config.transformer_heads,
                max_position_embeddings=config.context_length, pad_token_id=0,
                bos_token_id=max(0, config.vocab_size - 2), eos_token_id=eot, **common)
    vision = dict(hidden_size=config.vision_width, intermediate_size=int(config.vision_width * config.mlp_ratio),
                  num_hidden_layers=config.vision_layers, num_attention_heads=config.num_vision_heads,
                  image_size=config.image_resolution, patch_size=config.vision_patch_size, num_channels=3, **common)
    return _transformers().CLIPConfig(text_config=text, vision_config=vision, projection_dim=config.embed_dim)


def config_from_hf(hf: Any, name: str = "hf_model") -> CLIPConfig:
    """Our :class:`~clip_tutorial.model.CLIPConfig` from a ``transformers.CLIPConfig`` or its ``config.json`` dict.

    Explained in Chapter 4.

    Raises:
        ValueError: for another model type, or sizes and activations our CLIP cannot express.
    """
    if isinstance(hf, Mapping):
        if hf.get("model_type", "clip") != "clip":
            raise ValueError(f"{name}: expected a Hugging Face CLIP config (model_type 'clip'), "
                             f"got model_type {hf.get('model_type')!r}")
        hf = _transformers().CLIPConfig.from_dict(dict(hf))
    text, vision = hf.text_config, hf.vision_config
    acts = {text.hidden_act, vision.hidden_act}
    if not acts <= {"quick_gelu", "gelu"} or len(acts) != 1:
        raise ValueError(f"{name}: expected hidden_act 'quick_gelu' or 'gelu' in both towers, got {sorted(acts)}")
    ratios = {text.intermediate_size / text.hidden_size, vision.intermediate_size / vision.hidden_size}
    if len(ratios) != 1:
        raise ValueError(f"{name}: expected the same MLP ratio in both towers, got {sorted(ratios)}")
    eos, heads = text.eos_token_id, vision.num_attention_heads
    return CLIPConfig(
        embed_dim=hf.projection_dim, image_resolution=vision.image_size, vision_layers=vision.num_hidden_layers,
        vision_width=vision.hidden_size, vision_patch_size=vision.patch_size,
        vision_heads=None if heads == max(1, vision.hidden_size // 64) else heads, context_length=text.max_position_embeddings,
        vocab_size=text.vocab_size, transformer_width=text.hidden_size, transformer_heads=text.num_attention_heads,
        transformer_layers=text.num_hidden_layers, mlp_ratio=ratios.pop(), quick_gelu=acts.pop() == "quick_gelu",
        # transformers pools at the first eos token; at the highest id that is where argmax pools too.
        eot_token_id=None if eos in (2, text.vocab_size - 1) else eos,
    )


_TRANSPOSED = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}
_BLOCK = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
          "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}


def hf_names(config: CLIPConfig) -> dict[str, str]:
    """Our name -> Hugging Face's name for every tensor except the packed q/k/v projections. Explained in Chapter 4."""
    v, t = "vision_model", "text_model"
    names = {"visual.conv1.weight": f"{v}.embeddings.patch_embedding.weight",
             "visual.class_embedding": f"{v}.embeddings.class_embedding",
             "visual.positional_embedding": f"{v}.embeddings.position_embedding.weight",
             "token_embedding.weight": f"{t}.embeddings.token_embedding.weight",
             "positional_embedding": f"{t}.embeddings.position_embedding.weight",
             "logit_scale": "logit_scale", **_TRANSPOSED}
    for ours, theirs in (("visual.ln_pre", f"{v}.pre_layrnorm"), ("visual.ln_post", f"{v}.post_layernorm"),
                         ("ln_final", f"{t}.final_layer_norm")):  # "layrnorm" (sic) is HF's spelling
        names.update({f"{ours}.{kind}": f"{theirs}.{kind}" for kind in ("weight", "bias")})
    for ours, theirs, layers in hf_towers(config):
        for i in range(layers):
            for a, b in _BLOCK.items():
                names.update({f"{ours}.{i}.{a}.{kind}": f"{theirs}.{i}.{b}.{kind}" for kind in ("weight", "bias")})
    return names


def hf_towers(config: CLIPConfig) -> list[tuple[str, str, int]]:
    """``(our prefix, Hugging Face's prefix, layers)`` of each tower's attention blocks (ViT models)."""
    return [("visual.transformer.resblocks", "vision_model.encoder.layers", config.vision_layers),
            ("transformer.resblocks", "text_model.encoder.layers", config.transformer_layers)]


_hf_names, _towers = hf_names, hf_towers  # the names these had before they were public


def _to_hf(sd: Mapping[str, torch.Tensor], config: CLIPConfig) -> dict[str, torch.Tensor]:
    out = {theirs: (sd[ours].t() if ours in _TRANSPOSED else sd[ours]) for ours, theirs in hf_names(config).items()}
    for ours, theirs, layers in hf_towers(config):
        for i in range(layers):
            for kind in ("weight", "bias"):  # the packed rows are q, then k, then v
                q, k, v = sd[f"{ours}.{i}.attn.in_proj_{kind}"].chunk(3, dim=0)
                out.update({f"{theirs}.{i}.self_attn.{n}_proj.{kind}": x for n, x in zip("qkv", (q, k, v))})
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def to_hf_state_dict(model: CLIP) -> dict[str, torch.Tensor]:
    """The model's tensors under ``transformers.CLIPModel``'s names (ViT models only). Explained in Chapter 4."""
    if not isinstance(model, CLIP):
        raise TypeError(f"model: expected a clip_tutorial CLIP, got {type(model).__name__}")
    _vit_only(model.config)
    return _to_hf(model.state_dict(), model.config)


def from_hf_state_dict(state_dict: Mapping[str, torch.Tensor], config: CLIPConfig) -> CLIP:
    """Build our CLIP from a ``transformers.CLIPModel`` state dict, checking every key and shape.

    Explained in Chapter 4.

    Args:
        state_dict: Hugging Face names to tensors (``position_ids`` buffers are ignored).
        config: the sizes, e.g. from :func:`from_hf`'s reading of the Hugging Face config.

    Raises:
        ValueError: for a ResNet config, or listing missing keys, unexpected keys and shape mismatches.
    """
    if not isinstance(config, CLIPConfig):
        raise TypeError(f"config: expected a clip_tutorial CLIPConfig, got {type(config).__name__}")
    _vit_only(config)
    sd = {k: v for k, v in _clean(state_dict).items() if not k.endswith("position_ids")}
    with torch.device("meta"):
        expected = _to_hf(CLIP(config).state_dict(), config)
    check_state_dict(expected, sd, "state_dict")
    ours = {o: (sd[h].t() if o in _TRANSPOSED else sd[h]) for o, h in hf_names(config).items()}
    for prefix, theirs, layers in hf_towers(config):
        for i in range(layers):
            for kind in ("weight", "bias"):
                ours[f"{prefix}.{i}.attn.in_proj_{kind}"] = torch.cat(
                    [sd[f"{theirs}.{i}.self_attn.{n}_proj.{kind}"] for n in "qkv"], dim=0)
    model = CLIP(config)
    model.load_state_dict(ours, strict=True)
    return model.eval()


def to_hf(model: CLIP) -> Any:
    """A ``transformers.CLIPModel`` (eval mode) computing what ``model`` computes. Explained in Chapter 4."""
    state = to_hf_state_dict(model)
    hf = _transformers().CLIPModel(hf_config(model.config))
    hf.load_state_dict(state, strict=True)
    return hf.to(model.logit_scale.device).eval()


def from_hf(hf_model: Any) -> CLIP:
    """Our :class:`~clip_tutorial.model.CLIP` (eval mode) from a ``transformers.CLIPModel``. Explained in Chapter 4."""
    if not all(hasattr(hf_model, a) for a in ("config", "state_dict", "text_model", "vision_model")):
        raise TypeError(f"hf_model: expected a transformers.CLIPModel, got {type(hf_model).__name__}")
    return from_hf_state_dict(hf_model.state_dict(), config_from_hf(hf_model.config))


def export_hf(model: CLIP, folder: str | os.PathLike) -> Path:
    """Write ``model`` to ``folder`` (``config.json``, ``model.safetensors``) and return its path.

    ``transformers.CLIPModel.from_pretrained(folder)`` loads it. ResNet models cannot be exported:
    ``transformers`` has no CLIP with OpenAI's ModifiedResNet. Explained in Chapter 4.
    """
    folder = Path(folder)
    to_hf(model).save_pretrained(folder)
    return folder
