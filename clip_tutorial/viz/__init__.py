"""Presentation: the book's figures, the encoders' pictures, embedding maps, the temperature explorer,
the interactive widgets, and :func:`glue`, which puts computed numbers into the prose.
"""
from . import embedding_map, encoders, glue as _glue_module, temperature, widgets
from .glue import glue
from .plots import (MAX_COLUMNS, MIN_FONTSIZE, PAGE_WIDTH, legible_fontsize, plot_accuracy_bars, plot_history,
                    plot_similarity, show_images, to_display_images)

__all__ = ["embedding_map", "encoders", "temperature", "widgets", "glue", "MAX_COLUMNS", "MIN_FONTSIZE", "PAGE_WIDTH",
           "legible_fontsize", "plot_accuracy_bars", "plot_history", "plot_similarity", "show_images",
           "to_display_images"]
