"""Weights on disk: our checkpoints, OpenAI's and Hugging Face's formats, TorchScript archives, the released models.

:func:`load` loads any of them, with the model's tokenizer and preprocessing. Explained in Chapter 4.
"""
from . import architecture, checkpoints, configs, convert, hf, loader, pretrained, torchscript
from .checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from .configs import config_facts
from .convert import from_openai_state_dict, to_openai_state_dict
from .hf import from_hf, to_hf
from .loader import LoadedCLIP, load
from .pretrained import PretrainedUnavailableError, list_pretrained, load_pretrained, read_state_dict

__all__ = ["architecture", "checkpoints", "configs", "convert", "hf", "loader", "pretrained", "torchscript",
           "Checkpoint", "load_checkpoint", "save_checkpoint", "config_facts", "from_hf", "from_openai_state_dict",
           "to_hf", "to_openai_state_dict", "LoadedCLIP", "load", "PretrainedUnavailableError", "list_pretrained",
           "load_pretrained", "read_state_dict"]
