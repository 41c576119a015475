"""CLIP's model: configs, the shared transformer, the vision towers, the whole model and its size and cost.

Explained in Chapter 2.
"""
from .clip import CLIP, CLIPOutput, MAX_LOGIT_SCALE, check_clip
from .config import CONFIGS, CLIPConfig, get_config, list_configs
from .transformer import LayerNorm, MultiheadAttention, QuickGELU, ResidualAttentionBlock, Transformer, causal_mask
from .vision import VisionTransformer
from .resnet import AttentionPool2d, Bottleneck, ModifiedResNet

__all__ = [
    "CLIP", "CLIPOutput", "MAX_LOGIT_SCALE", "check_clip", "CONFIGS", "CLIPConfig", "get_config", "list_configs",
    "LayerNorm", "MultiheadAttention", "QuickGELU", "ResidualAttentionBlock", "Transformer", "causal_mask",
    "VisionTransformer", "AttentionPool2d", "Bottleneck", "ModifiedResNet",
]
