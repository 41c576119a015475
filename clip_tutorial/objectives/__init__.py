"""What training minimises: CLIP's symmetric contrastive loss, its gradient, and the loss across processes.

Explained in Chapters 2.3 (the loss) and 3.4 (gathering features across processes).
"""
from .loss import caption_positives, clip_loss, clip_loss_gradient, contrastive_accuracy, multi_positive_clip_loss
from .distributed import distributed_clip_loss, gather_features

__all__ = ["caption_positives", "clip_loss", "clip_loss_gradient", "contrastive_accuracy", "multi_positive_clip_loss",
           "distributed_clip_loss", "gather_features"]
