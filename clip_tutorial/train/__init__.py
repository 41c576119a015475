"""Training: the loop of Chapter 3.2 and its resumable state, the named recipes, and the models shipped with the package.

``python -m clip_tutorial.train`` runs the command line (see :mod:`clip_tutorial.cli`).
"""
from .config import PRECISIONS, History, TrainConfig, lr_at, param_groups
from .loop import LoopState, train_clip
from .state import TrainingState, load_training_state, save_training_state
from .recipes import RECIPES, Recipe, TrainedCLIP, evaluate_zero_shot, get_recipe, make_tokenizer, train_recipe
from .shipped import list_shipped, load_or_train, load_shipped, shipped_card, shipped_grid, shipped_recipe
from . import recipes, shipped

__all__ = ["PRECISIONS", "History", "TrainConfig", "lr_at", "param_groups", "LoopState", "train_clip", "TrainingState",
           "load_training_state", "save_training_state", "RECIPES", "Recipe", "TrainedCLIP", "evaluate_zero_shot",
           "get_recipe", "make_tokenizer", "train_recipe", "list_shipped", "load_or_train", "load_shipped",
           "shipped_card", "shipped_grid", "shipped_recipe", "recipes", "shipped"]
