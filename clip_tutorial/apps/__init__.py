"""What CLIP is used for, one module each: search (exact, and approximate with FAISS), calibrated thresholds,
linear probes, alt text, tagging, query arithmetic, the probes of CLIP's limitations, and the experiments and baselines the chapters run.

Import from the module: ``from clip_tutorial.apps.search import EmbeddingIndex``. Explained in Chapters 1 and 5.
"""
from . import (alt_text, ann, baselines, calibration, experiments, limitations, linear_probe, query_arithmetic,
               search, tagging, vectors)

__all__ = ["alt_text", "ann", "baselines", "calibration", "experiments", "limitations", "linear_probe",
           "query_arithmetic", "search", "tagging", "vectors"]
