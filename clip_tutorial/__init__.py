"""clip_tutorial: CLIP built piece by piece, the package behind the CLIP tutorial book.

The names most notebooks need are importable from the top level; each lives in a module named
after the concept it implements (see the API reference).
"""
__version__ = "0.1.0"

import warnings  # noqa: E402

# `python -m clip_tutorial.train` runs a module this package has already imported; Python warns
# about that, harmlessly (the command-line entry point lives in clip_tutorial.cli).
warnings.filterwarnings("ignore", message=r"'clip_tutorial\.train' found in sys\.modules", category=RuntimeWarning)

from .device import get_device, seed_everything, setup_notebook  # noqa: E402
from .book import glue  # noqa: E402
from .data import ShapesWorld, class_names, heldout_combinations, vocabulary  # noqa: E402
from .tokenizer import WordTokenizer  # noqa: E402
from .bpe import BPETokenizer  # noqa: E402
from .bpe_trainer import learn_bpe  # noqa: E402
from .model import CLIP, CLIPConfig, ModifiedResNet, VisionTransformer, get_config, list_configs  # noqa: E402
from .model.stats import count_flops, count_parameters, model_table  # noqa: E402
from .loss import clip_loss, clip_loss_gradient  # noqa: E402
from .train import History, TrainConfig, train_clip  # noqa: E402
from .zeroshot import build_zero_shot_classifier, encode_images, encode_texts, zero_shot_accuracy, zero_shot_predict  # noqa: E402
from .retrieval import recall_at_k, retrieval_metrics  # noqa: E402
from .search import EmbeddingIndex, SearchResult, build_image_index  # noqa: E402
from .linear_probe import LinearProbe, fit_linear_probe, k_shot_indices  # noqa: E402
from .alt_text import compose_alt_text, describe_images  # noqa: E402
from .composition import compose_query, slerp  # noqa: E402
from .checkpoints import load_checkpoint, save_checkpoint  # noqa: E402
from .preprocess import Preprocess  # noqa: E402
from .pretrained import PretrainedUnavailableError, list_pretrained, load_pretrained  # noqa: E402
from .recipes import RECIPES, TrainedCLIP, load_or_train, train_recipe  # noqa: E402
from .shipped import list_shipped, load_shipped  # noqa: E402
from .baselines import FixedClassCNN, classifier_accuracy, train_classifier  # noqa: E402
from . import (alt_text, calibration, composition, convert, embedding_map, exercises, experiments, linear_probe,  # noqa: E402
               probes, shipped, tagging, temperature, viz, viz_encoders, widgets)

__all__ = [
    "__version__", "get_device", "seed_everything", "setup_notebook", "glue", "ShapesWorld", "class_names",
    "heldout_combinations", "vocabulary", "WordTokenizer", "BPETokenizer", "learn_bpe", "CLIP", "CLIPConfig",
    "ModifiedResNet", "VisionTransformer", "get_config", "list_configs", "count_flops", "count_parameters",
    "model_table", "clip_loss", "clip_loss_gradient", "History", "TrainConfig", "train_clip", "build_zero_shot_classifier", "encode_images",
    "encode_texts", "zero_shot_accuracy", "zero_shot_predict", "recall_at_k", "retrieval_metrics", "EmbeddingIndex", "SearchResult", "build_image_index",
    "LinearProbe", "fit_linear_probe", "k_shot_indices", "compose_alt_text", "describe_images", "compose_query", "slerp",
    "load_checkpoint", "save_checkpoint", "Preprocess",
    "PretrainedUnavailableError", "list_pretrained", "load_pretrained", "RECIPES",
    "TrainedCLIP", "load_or_train", "train_recipe", "list_shipped", "load_shipped", "FixedClassCNN", "classifier_accuracy", "train_classifier",
    "alt_text", "calibration", "composition", "convert", "embedding_map", "exercises", "experiments", "linear_probe", "probes",
    "shipped", "tagging", "temperature", "viz", "viz_encoders", "widgets",
]
