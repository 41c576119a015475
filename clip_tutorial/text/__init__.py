"""Text to token ids: the word tokenizer of the ShapesWorld models, CLIP's byte-pair encoding and its trainer.

Explained in Chapter 2.2.
"""
from .tokenizer import BaseTokenizer, WordTokenizer
from .bpe import BPETokenizer
from .bpe_trainer import learn_bpe

__all__ = ["BaseTokenizer", "WordTokenizer", "BPETokenizer", "learn_bpe"]
