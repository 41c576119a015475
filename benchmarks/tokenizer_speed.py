#!/usr/bin/env python3
"""Time the book's BPE tokenizer against open_clip's, on the same 10,000 captions, in one run.

The captions are ShapesWorld captions plus varied text (mixed case, punctuation, numbers,
accents, CJK, emoji, HTML entities), tokenized into a (10000, 77) LongTensor. Two conditions:

* **cold**: a freshly built tokenizer, so every distinct word goes through the BPE merge loop
  (building the tokenizer, i.e. reading the vocabulary file, is timed separately);
* **warm**: the same tokenizer a second time, so every word comes from its cache.

Both are also measured on the varied captions alone ("varied cold", "varied warm"): text that is
not plain ASCII, where ours cannot skip ``ftfy``'s repairs and the difference is smaller.

Each condition is repeated ``--repeat`` times (a fresh tokenizer for every cold repeat); the
table shows the medians in milliseconds and the ratio ours / reference (below 1: ours is faster).
Both tokenizers must return identical tensors, or the script stops. The figures and a
description of the machine go to ``data/benchmarks/tokenizer_speed.json``.

Usage::

    .venv/bin/python benchmarks/tokenizer_speed.py
    .venv/bin/python benchmarks/tokenizer_speed.py --repeat 7 --no-write
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from _report import ROOT, write_report  # noqa: E402  (benchmarks/ is on sys.path when a script runs)
DEFAULT_OUTPUT = ROOT / "data" / "benchmarks" / "tokenizer_speed.json"
sys.path.insert(0, str(ROOT / "tests"))

VARIED = [
    "A Photo of a {} in the rain!", "two {}s, side by side...", "the {} is 3.5 metres tall (approx.)",
    "café au lait & a {}", "une crème brûlée près du {}", "日本の{}の写真", "귀여운 {} 사진", "a {} 🙂🐈 #cute",
    "\"{}\" — she said; it's 2026", "&lt;b&gt;{}&lt;/b&gt; &amp;amp; friends", "WE'LL SEE THE {} AT 10:45",
    "Ein {} über der Straße", "un {} en el año 1999", "фото: {}", "{}\tand\na  tab", "x{}y_{}-z",
]
WORDS = ["cat", "dog", "bicycle", "sunset", "mountain", "teapot", "robot", "violin", "lighthouse", "pizza",
         "skyscraper", "hummingbird", "origami", "kaleidoscope", "chrysanthemum", "Zürich", "naïveté"]


def captions(n: int = 10_000, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` captions (70 % ShapesWorld, 30 % varied text, shuffled with a fixed seed) and the varied ones."""
    from clip_tutorial import ShapesWorld

    n_shapes = int(n * 0.7)
    texts = list(ShapesWorld(n_shapes, seed=seed, max_objects=2).captions)
    rng = random.Random(seed)
    varied = []
    while len(texts) + len(varied) < n:
        template = rng.choice(VARIED)
        varied.append(template.replace("{}", rng.choice(WORDS), 1).replace("{}", rng.choice(WORDS)))
    texts += varied
    rng.shuffle(texts)
    return texts, varied


def median_ms(samples: list[float]) -> float:
    return 1000 * statistics.median(samples)


def measure(make, texts: list[str], repeat: int) -> dict:
    """Build, cold and warm timings (seconds lists) of one tokenizer factory."""
    build, cold, warm, out = [], [], [], None
    for _ in range(repeat):
        start = time.perf_counter()
        tokenizer = make()
        build.append(time.perf_counter() - start)
        start = time.perf_counter()
        out = tokenizer(texts, context_length=77)
        cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        tokenizer(texts, context_length=77)
        warm.append(time.perf_counter() - start)
    return {"build": build, "cold": cold, "warm": warm, "tokens": out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="repeats per condition (default 5)")
    parser.add_argument("--n", type=int, default=10_000, help="number of captions (default 10000)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the JSON")
    parser.add_argument("--no-write", action="store_true", help="print the table, write no JSON")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.n < 1:
        parser.error("--repeat and --n must be >= 1")
    torch.set_num_threads(1)

    from clip_tutorial.text.bpe import BPETokenizer, load_merges, pretokenize
    from reference_impl import official_vocab_path, open_clip_module

    reference = open_clip_module("tokenizer")
    texts, varied = captions(args.n)
    merges = load_merges()
    factories = {"ours": lambda: BPETokenizer(merges),
                 "reference": lambda: reference.SimpleTokenizer(str(official_vocab_path()))}
    figures = {}
    for corpus, prefix in ((texts, ""), (varied, "varied ")):
        results = {name: measure(make, corpus, args.repeat) for name, make in factories.items()}
        if not torch.equal(results["ours"]["tokens"], results["reference"]["tokens"]):
            print("error: the two tokenizers disagree", file=sys.stderr)
            return 1
        for phase in ("cold", "warm", "build")[: 3 if not prefix else 2]:
            ours, ref = median_ms(results["ours"][phase]), median_ms(results["reference"][phase])
            figures[prefix + phase] = {"ours_ms": round(ours, 2), "reference_ms": round(ref, 2),
                                       "ratio": round(ours / ref, 3), "captions": len(corpus)}
    print(f"Tokenizing captions to (N, 77), median of {args.repeat} (ms):\n")
    print("| phase | captions | ours | open_clip | ours / open_clip |\n|---|---:|---:|---:|---:|")
    for phase, row in figures.items():
        label = "build (read vocabulary)" if phase == "build" else phase
        print(f"| {label} | {row['captions']} | {row['ours_ms']:.1f} | {row['reference_ms']:.1f} | {row['ratio']:.2f} |")
    if args.no_write:
        return 0
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "benchmarks/tokenizer_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "captions": len(texts),
        "distinct_pieces": len({p for t in texts for p in pretokenize(t)}),
        "repeat": args.repeat,
        "figures": figures,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "processor": platform.processor()
                    or platform.machine(), "torch_threads": torch.get_num_threads()},
    }
    write_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
