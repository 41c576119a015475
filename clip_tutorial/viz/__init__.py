"""Presentation: the book's figures, the encoders' pictures, embedding maps, the temperature explorer,
the interactive widgets, and :func:`glue`, which puts computed numbers into the prose.
"""
from . import embedding_map, encoders, grid, layout, temperature, widgets
from .glue import glue
from .grid import show_image_table
from .layout import MAX_COLUMNS, MIN_FONTSIZE, PAGE_WIDTH, legible_fontsize, to_display_images
from .plots import plot_accuracy_bars, plot_history, plot_similarity, show_images

__all__ = ["embedding_map", "encoders", "grid", "layout", "temperature", "widgets", "glue", "MAX_COLUMNS",
           "MIN_FONTSIZE",
           "PAGE_WIDTH", "legible_fontsize", "plot_accuracy_bars", "plot_history", "plot_similarity", "show_images",
           "show_image_table", "to_display_images"]
