"""Checks for the book's exercises: write a function, then let a check compare it with the reference.

In a notebook::

    from clip_tutorial.exercises import ch1

    def cosine_similarity(image_features, text_features):
        ...  # your code

    ch1.check_cosine_similarity(cosine_similarity)

The check prints ✅ or ❌ with an explanation and returns a :class:`CheckResult`, truthy when your
function passed. The checks of Chapter 1 live in ``clip_tutorial.exercises.ch1``:
``check_cosine_similarity``, ``check_contrastive_loss``, ``check_zero_shot_predict`` and
``check_temperature_scaled_logits``; those of Chapter 2 in ``clip_tutorial.exercises.ch2``:
``check_patchify``, ``check_causal_mask``, ``check_loss_gradient`` and ``check_eot_pooling``; those
of Chapter 3 in ``clip_tutorial.exercises.ch3``: ``check_lr_schedule``, ``check_recall_at_k``,
``check_local_clip_loss`` and ``check_loss_floor``; those of Chapter 5 in
``clip_tutorial.exercises.ch5``: ``check_zero_shot_weights``, ``check_recall_with_relevance``,
``check_threshold_for_precision`` and ``check_compose_query``.
:func:`check_function` is the general machinery they share; :func:`check_estimate` and
:func:`check_choice` check a prediction against an experiment they run. Solutions are not in the
notebooks: :func:`show_solution` prints one on request (see :mod:`clip_tutorial.exercises.registry`).

Explained in Chapter 1 (section "Summary and exercises").
"""
from . import ch1, ch2, ch3, ch4, ch5
from .core import CheckResult, Hint, check_function
from .predict import check_choice, check_estimate
from .registry import Exercise, exercises, show_solution, verify_solution

__all__ = ["CheckResult", "Hint", "check_function", "check_choice", "check_estimate", "Exercise", "exercises",
           "show_solution", "verify_solution", "ch1", "ch2", "ch3", "ch4", "ch5"]
