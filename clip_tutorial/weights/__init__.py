"""Weights on disk: our checkpoints, OpenAI's and Hugging Face's formats, TorchScript archives, the released models.

Explained in Chapter 4.
"""
from . import checkpoints, convert, pretrained, torchscript
from .checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from .convert import from_hf, from_openai_state_dict, to_hf, to_openai_state_dict
from .pretrained import PretrainedUnavailableError, list_pretrained, load_pretrained, read_state_dict

__all__ = ["checkpoints", "convert", "pretrained", "torchscript", "Checkpoint", "load_checkpoint", "save_checkpoint",
           "from_hf", "from_openai_state_dict", "to_hf", "to_openai_state_dict", "PretrainedUnavailableError",
           "list_pretrained", "load_pretrained", "read_state_dict"]
