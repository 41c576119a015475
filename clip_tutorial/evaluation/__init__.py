"""How a CLIP model is judged: zero-shot classification and retrieval recall.

These sit below training because the recipes measure every model they train with them.
Explained in Chapters 1.3 and 3.5.
"""
from .zeroshot import (DEFAULT_TEMPLATES, ENSEMBLE_TEMPLATES, build_zero_shot_classifier, encode_images, encode_texts,
                       ensemble_prompt_embeddings, zero_shot_accuracy, zero_shot_predict)
from .retrieval import ranked_recall_precision, recall_at_k, retrieval_metrics, retrieval_ranks

__all__ = ["DEFAULT_TEMPLATES", "ENSEMBLE_TEMPLATES", "build_zero_shot_classifier", "encode_images", "encode_texts",
           "ensemble_prompt_embeddings", "zero_shot_accuracy", "zero_shot_predict", "ranked_recall_precision",
           "recall_at_k", "retrieval_metrics", "retrieval_ranks"]
