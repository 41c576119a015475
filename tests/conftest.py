"""Fixtures shared by several test files."""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

from clip_tutorial.model import CLIP, CLIPConfig
from clip_tutorial.train.recipes import make_tokenizer
from clip_tutorial.text.tokenizer import WordTokenizer

# In CI (the CI variable is set) every property test draws the same examples on every run, so a
# run is red only because of a change; run pytest locally to explore new examples.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


def make_tiny_clip(context_length: int = 16, seed: int = 0) -> tuple[CLIP, WordTokenizer]:
    """An untrained, very small CLIP over ShapesWorld's vocabulary, with its tokenizer."""
    tokenizer = make_tokenizer(context_length)
    torch.manual_seed(seed)
    config = CLIPConfig(embed_dim=16, image_resolution=32, vision_layers=1, vision_width=16, vision_patch_size=8,
                        vision_heads=2, context_length=context_length, transformer_width=16, transformer_heads=2,
                        transformer_layers=1, vocab_size=tokenizer.vocab_size, eot_token_id=tokenizer.eot_id)
    return CLIP(config).eval(), tokenizer


@pytest.fixture
def close_figures():
    """Close every matplotlib figure the test opened (a module that draws: ``usefixtures("close_figures")``)."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")
