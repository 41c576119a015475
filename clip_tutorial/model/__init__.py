"""CLIP's model: configs, the shared transformer, the vision tower and the whole model.

Explained in Chapter 2.
"""
from .clip import CLIP, CLIPOutput, MAX_LOGIT_SCALE
from .config import CONFIGS, CLIPConfig, get_config, list_configs
from .transformer import LayerNorm, MultiheadAttention, QuickGELU, ResidualAttentionBlock, Transformer, causal_mask
from .vision import VisionTransformer

__all__ = [
    "CLIP", "CLIPOutput", "MAX_LOGIT_SCALE", "CONFIGS", "CLIPConfig", "get_config", "list_configs",
    "LayerNorm", "MultiheadAttention", "QuickGELU", "ResidualAttentionBlock", "Transformer", "causal_mask",
    "VisionTransformer",
]
