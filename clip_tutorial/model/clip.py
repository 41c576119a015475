"""The whole CLIP model: two towers, one joint space, a learnable temperature.

Explained in Chapter 1.3 (the idea) and Chapter 2 (every piece).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from clip_tutorial.core.checks import check_tensor, check_type

from .config import CLIPConfig
from .resnet import ModifiedResNet
from .transformer import LayerNorm, Transformer, causal_mask
from .vision import VisionTransformer

__all__ = ["CLIP", "CLIPOutput", "MAX_LOGIT_SCALE", "check_clip"]

#: CLIP's training clips the learned logit scale so that it never exceeds 100 (a temperature of 0.01);
#: the forward pass itself applies no clamp, as in OpenAI's released code (see ``train_clip``).
MAX_LOGIT_SCALE = 100.0
#: Largest absolute pixel value ``encode_image`` accepts; normalised images stay far below it.
MAX_PIXEL = 20.0


class CLIPOutput(tuple):
    """``(logits_per_image, logits_per_text)``: a plain tuple with named fields for readability."""

    def __new__(cls, logits_per_image: torch.Tensor, logits_per_text: torch.Tensor) -> "CLIPOutput":
        return super().__new__(cls, (logits_per_image, logits_per_text))

    @property
    def logits_per_image(self) -> torch.Tensor:
        """(images, texts): scaled cosine similarity of each image with each text."""
        return self[0]

    @property
    def logits_per_text(self) -> torch.Tensor:
        """(texts, images): the transpose of :attr:`logits_per_image`."""
        return self[1]


class CLIP(nn.Module):
    """Contrastive Language-Image Pre-training, with the layout and parameter names of OpenAI's model.

    Args:
        config: the sizes, a :class:`~clip_tutorial.model.config.CLIPConfig`.

    The image tower is a :class:`~clip_tutorial.model.vision.VisionTransformer`, or a
    :class:`~clip_tutorial.model.resnet.ModifiedResNet` when ``config.vision_layers`` is a tuple of
    four stage depths (``config.is_resnet``), as in OpenAI's RN50 family. The text tower is a
    causal transformer over token embeddings plus learned positions; it is read out at the
    end-of-text token, normalised by ``ln_final`` and projected by ``text_projection``. The logit
    scale is stored as ``log(1 / 0.07)``; the forward pass multiplies by its exponential unclamped,
    as OpenAI's released code does, and training keeps it at most :data:`MAX_LOGIT_SCALE`.
    With ``config.init_logit_bias`` set, the model also has SigLIP's learned ``logit_bias``, added to
    every logit (Chapter 7.1); without it there is no such parameter and the state dict is CLIP's.
    """

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__()
        self.config = c = check_type("config", config, CLIPConfig)
        self.visual: VisionTransformer | ModifiedResNet
        if c.is_resnet:  # initialised as OpenAI does by its own constructor (see ModifiedResNet.init_openai_)
            self.visual = ModifiedResNet(c.vision_layers, c.embed_dim, c.num_vision_heads, c.image_resolution,
                                         c.vision_width)
        else:
            self.visual = VisionTransformer(
                c.image_resolution, c.vision_patch_size, c.vision_width, c.vision_layers, c.num_vision_heads,
                c.embed_dim, c.mlp_ratio, c.quick_gelu,
            )
        self.token_embedding = nn.Embedding(c.vocab_size, c.transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(c.context_length, c.transformer_width))
        self.transformer = Transformer(c.transformer_width, c.transformer_layers, c.transformer_heads,
                                       c.mlp_ratio, c.quick_gelu)
        self.ln_final = LayerNorm(c.transformer_width)
        self.text_projection = nn.Parameter(torch.empty(c.transformer_width, c.embed_dim))
        scale = math.log(1 / 0.07) if c.init_logit_scale is None else c.init_logit_scale
        self.logit_scale = nn.Parameter(torch.tensor(float(scale)))
        self.logit_bias: nn.Parameter | None  # SigLIP's learned bias (Chapter 7.1), named as in HF's SiglipModel
        self.register_parameter("logit_bias", None if c.init_logit_bias is None
                                else nn.Parameter(torch.tensor(float(c.init_logit_bias))))
        self.register_buffer("attn_mask", causal_mask(c.context_length), persistent=False)
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        """OpenAI's initialisation of the text tower (either vision tower initialises itself as OpenAI's does)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        self.transformer.init_openai_()
        nn.init.normal_(self.text_projection, std=self.config.transformer_width**-0.5)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights (float32 unless the model was cast)."""
        return self.visual.conv1.weight.dtype

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Image features (batch, embed_dim) from normalised pixels (batch, 3, H, W).

        Args:
            images: float pixels already normalised with the dataset mean and std.
            normalize: L2-normalise the features (the joint-space embedding).
        """
        self._check_images(images)
        features = self.visual(images.to(self.dtype))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Text features (batch, embed_dim) from token ids (batch, tokens), read at the end-of-text token.

        Args:
            text: token ids, one row per text, padded; see :mod:`clip_tutorial.text.tokenizer`.
            normalize: L2-normalise the features (the joint-space embedding).
        """
        x, eot = self._text_hidden(text)
        features = x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection
        return F.normalize(features, dim=-1) if normalize else features

    def encode_image_tokens(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Every output token of the vision transformer in the joint space: (batch, 1 + patches, embed_dim).

        Explained in Chapter 7.3 (FILIP). Each token goes through ``ln_post`` and ``proj`` as the class
        token does in :meth:`encode_image`. The class token is kept (first): FILIP's image tokens are all
        the encoder's outputs, and an image has no padding.

        Raises:
            TypeError: for a ResNet image tower, which has no tokens (its attention pool gives one vector).
        """
        if not isinstance(self.visual, VisionTransformer):
            raise TypeError(f"encode_image_tokens: expected a ViT image tower, got {type(self.visual).__name__}; "
                            "a ResNet's attention pool returns one vector per image, not tokens")
        self._check_images(images)
        tokens = self.visual.forward_tokens(images.to(self.dtype))
        return F.normalize(tokens, dim=-1) if normalize else tokens

    def encode_text_tokens(self, text: torch.Tensor, normalize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Every text position in the joint space, and which positions are real words.

        Explained in Chapter 7.3 (FILIP). Each position goes through ``ln_final`` and
        ``text_projection`` as the end-of-text token does in :meth:`encode_text`.

        Returns:
            ``(tokens, mask)``: tokens (batch, length, embed_dim); mask (batch, length), ``True`` from
            the first word up to and including the end-of-text token. Padding is left out, as in FILIP;
            so is the start token: under the causal mask it sees only itself, so its output is the same
            vector for every text and says nothing about it.
        """
        x, eot = self._text_hidden(text)
        tokens = x @ self.text_projection
        position = torch.arange(text.shape[1], device=text.device)
        mask = (position[None, :] >= 1) & (position[None, :] <= eot[:, None])
        return (F.normalize(tokens, dim=-1) if normalize else tokens), mask

    def _text_hidden(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The text transformer's output after ``ln_final`` (batch, length, width), and each row's end-of-text index."""
        self._check_tokens(text)
        length = text.shape[1]
        x = self.token_embedding(text).to(self.dtype) + self.positional_embedding[:length].to(self.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        x = self.ln_final(x)
        if self.config.eot_token_id is None:
            eot = text.argmax(dim=-1)
        else:
            eot = (text == self.config.eot_token_id).int().argmax(dim=-1)
        return x, eot

    def logit_scale_value(self) -> torch.Tensor:
        """``exp(logit_scale)``, the multiplier 1 / temperature, unclamped as in OpenAI's forward pass.

        Training clips the stored parameter at ``log(MAX_LOGIT_SCALE)`` after each step instead.
        """
        return self.logit_scale.exp()

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> CLIPOutput:
        """Return ``(logits_per_image, logits_per_text)``: scaled cosine similarities of every pair."""
        image_features = self.encode_image(images, normalize=True)
        text_features = self.encode_text(text, normalize=True)
        logits_per_image = self.logit_scale_value() * image_features @ text_features.t()
        if self.logit_bias is not None:  # SigLIP (Chapter 7.1): z = t * cos + b
            logits_per_image = logits_per_image + self.logit_bias
        return CLIPOutput(logits_per_image, logits_per_image.t())

    def num_parameters(self) -> int:
        """Total number of parameters (works on the meta device too)."""
        return sum(p.numel() for p in self.parameters())

    def _check_images(self, images: torch.Tensor) -> None:
        res = self.config.image_resolution
        if isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[1] != 3 and images.shape[-1] == 3:
            raise ValueError(f"images: expected channels first, (batch, 3, {res}, {res}), got shape "
                             f"{tuple(images.shape)}; use images.permute(0, 3, 1, 2)")
        check_tensor("images", images, shape=(None, 3, res, res), floating=True, nonempty=True,
                     what=f"normalised float pixels (batch, 3, {res}, {res}), e.g. from ShapesWorld.tensors()")
        if images.is_meta:  # shapes only (parameter and FLOP counting): there are no values to check
            return
        # Normalised pixels lie within about +-3; values in the tens mean 0-255 pixels slipped through.
        low, high = (float(v) for v in torch.aminmax(images.detach()))
        if low < -MAX_PIXEL or high > MAX_PIXEL:
            raise ValueError(
                f"images: expected normalised pixels (roughly -3 to 3), got values in [{low:.1f}, {high:.1f}]; "
                "scale 0-255 pixels to [0, 1] and normalise with the dataset mean and std first"
            )

    def _check_tokens(self, text: torch.Tensor) -> None:
        check_tensor("text", text, ndim=2, dtype=(torch.int64, torch.int32), nonempty=True,
                     what="integer token ids (batch, tokens), e.g. from a tokenizer")
        if text.shape[1] > self.config.context_length:
            raise ValueError(
                f"text: expected at most context_length={self.config.context_length} tokens, got {text.shape[1]}; "
                "tokenize with truncation"
            )
        if text.is_meta:  # shapes only (FLOP counting): there are no ids to check
            return
        lo, hi = int(text.min()), int(text.max())
        if lo < 0 or hi >= self.config.vocab_size:
            raise ValueError(f"text: expected token ids in [0, {self.config.vocab_size}), got values in [{lo}, {hi}]")


def check_clip(name: str, value: object) -> CLIP:
    """Return ``value`` if it is a :class:`CLIP`, else raise a ``TypeError`` naming the argument ``name``."""
    return check_type(name, value, CLIP, expected="a clip_tutorial.CLIP")
