"""Solutions of the exercises of Chapter 3, one function per exercise, named after it.

Read one with ``clip_tutorial.exercises.show_solution("ch3.<name>")``. Explained in Chapter 3.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def lr_schedule(step, total_steps, warmup_steps, peak_lr):
    """The learning rate of a 0-based ``step``: a linear warm-up, then a cosine decay towards 0.

    Warm-up first (never reached when ``warmup_steps`` is 0, so there is no division by zero):
    step 0 already trains with ``peak_lr / warmup_steps``, and step ``warmup_steps - 1`` reaches
    the peak. The cosine's progress starts at 0 where the warm-up ends; ``max(1, ...)`` keeps a
    schedule that is all warm-up from dividing by zero.
    """
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * peak_lr * (1 + math.cos(math.pi * progress))


def recall_at_k(similarity, k):
    """The fraction of queries (rows) whose right item (column i) is among the row's k highest scores.

    A query's rank is the number of items that score strictly higher than its right item, and it
    is found in the top k when that rank is below k. Counting instead of sorting makes a ``k``
    larger than the number of items harmless.
    """
    right = similarity.diagonal()[:, None]
    ranks = (similarity > right).sum(dim=1)
    return (ranks < k).float().mean().item()


def local_clip_loss(all_image_features, all_text_features, logit_scale, rank, world_size):
    """Process ``rank``'s share of CLIP's loss, from the gathered features of all processes.

    My rows: my B images against all N texts, and my B texts against all N images, B x N logits
    in each direction. The right answer for my pair i sits at column ``rank * B + i``, and the two
    cross-entropies are averaged. Everything stays differentiable, so the gradient reaches the
    gathered features of the other processes too.
    """
    b = all_image_features.shape[0] // world_size
    my_images = all_image_features[rank * b:(rank + 1) * b]
    my_texts = all_text_features[rank * b:(rank + 1) * b]
    labels = torch.arange(b, device=all_image_features.device) + rank * b
    image_loss = F.cross_entropy(logit_scale * my_images @ all_text_features.T, labels)
    text_loss = F.cross_entropy(logit_scale * my_texts @ all_image_features.T, labels)
    return (image_loss + text_loss) / 2


def twin_captions_floor():
    """Predict: the lowest loss on eight pairs whose captions are all different except for one twin.

    Identical captions get identical text features, whatever the model. So each of the two image
    rows whose caption has a twin sees two equal logits, for its own caption and for the twin: the
    best its softmax can give its own caption is 1/2, which costs log 2. The two text rows of the
    twins are identical too, and they cannot both give their own image more than 1/2. The six
    other pairs can be made perfect: with their features on distinct directions and a logit scale
    of 100, their cost is practically 0. Each direction averages its 8 rows, and the loss averages
    the two directions: (log 2 + log 2) / 8 = log 2 / 4, about 0.173 nats.
    """
    return 2 * math.log(2) / 8


def loss_floor(captions):
    """The lowest loss any model can reach on a batch with these captions: the batch mean of log k.

    Count each caption once; then every pair pays the log of its caption's count (itself
    included), as in the twin exercise, and the floor is the mean over the pairs.
    """
    counts = {}
    for caption in captions:
        counts[caption] = counts.get(caption, 0) + 1
    return sum(math.log(counts[caption]) for caption in captions) / len(captions)


def growing_gradients():
    """Diagnose: the gradient norm grows step after step while the loss falls. Answer (b).

    ``loss.backward()`` adds the new gradient to whatever ``.grad`` already holds (that is what
    lets several small batches accumulate into one step). The loop never calls
    ``optimizer.zero_grad()``, so step t hands AdamW the sum of the gradients of steps 1 to t.
    The printed norm is the norm of that sum, which grows, and the optimiser keeps pushing in
    directions that were right long ago. A smaller learning rate (a) only slows everything down,
    with the sum still growing; the clamp of (c) never acts, since the scale stays far below 100.
    Resetting the gradients before each backward pass is the fix.
    """
    return "b"


def runaway_temperature():
    """Diagnose: the scale passes 100 although the loop clamps ``log_scale`` at 100. Answer (c).

    ``log_scale`` is the logarithm of the logit scale; the loss multiplies the similarities by
    ``log_scale.exp()``. A bound of 100 on the logarithm allows a scale of e^100, so the clamp
    never acts. The bound belongs on the parameter, at log(100), about 4.605. Clamping before the
    step (b) changes when the wrong bound is applied, not the bound. And (a) is false: OpenAI's
    released forward pass computes ``logit_scale.exp()`` with no cap; the cap at 100 is enforced
    in training, by clipping the parameter.
    """
    return "c"
