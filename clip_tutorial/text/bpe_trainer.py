"""Learning byte-pair-encoding merges from a corpus, one merge at a time, for teaching.

:func:`learn_bpe` uses the same clean-up, pre-tokenizer, byte symbols and ``</w>`` marker as
CLIP's tokenizer (:mod:`clip_tutorial.text.bpe`), so its merges plug straight into
:meth:`BPETokenizer.from_merges <clip_tutorial.text.bpe.BPETokenizer.from_merges>`. Each step counts
every adjacent pair of symbols over the corpus (each word weighted by how often it occurs),
merges the most frequent pair everywhere, and records what happened. Counting from scratch at
every step is slow on a large corpus but easy to follow; a caption corpus has few distinct words.

Explained in Chapter 2.2.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from clip_tutorial.core.checks import check_int, check_sequence

from .bpe import merge_pair, pretokenize, spell

__all__ = ["BPEStep", "BPETrainingResult", "learn_bpe"]


@dataclass(frozen=True)
class BPEStep:
    """One merge of :func:`learn_bpe`.

    Attributes:
        pair: the two symbols merged.
        count: how often the pair occurred in the corpus when it was chosen.
        token: the new symbol, ``pair[0] + pair[1]``.
        num_tokens: the total number of tokens in the corpus after this merge.
    """

    pair: tuple[str, str]
    count: int
    token: str
    num_tokens: int


@dataclass(frozen=True)
class BPETrainingResult:
    """What :func:`learn_bpe` learned.

    Attributes:
        merges: the merged pairs in the order they were learned (pass to ``BPETokenizer.from_merges``).
        steps: one :class:`BPEStep` per merge.
        initial_tokens: the number of tokens in the corpus before any merge (one per byte).
        num_texts: the number of texts in the corpus.
        words: how every distinct piece of the corpus is split at the end, with its count.
    """

    merges: list[tuple[str, str]]
    steps: list[BPEStep]
    initial_tokens: int
    num_texts: int
    words: dict[str, tuple[tuple[str, ...], int]]

    def tokens_per_text(self) -> list[float]:
        """Mean tokens per text after 0, 1, ..., ``len(merges)`` merges."""
        totals = [self.initial_tokens, *(s.num_tokens for s in self.steps)]
        return [t / max(self.num_texts, 1) for t in totals]


def learn_bpe(texts: Iterable[str], num_merges: int, min_count: int = 2) -> BPETrainingResult:
    """Learn up to ``num_merges`` byte-level BPE merges from ``texts``.

    At each step the most frequent adjacent pair is merged; ties go to the pair that sorts first
    (so results are deterministic). Training stops early when no pair occurs ``min_count`` times,
    e.g. once every word is a single token.

    Args:
        texts: the corpus (cleaned and pre-tokenized exactly as CLIP's tokenizer does).
        num_merges: the largest number of merges to learn (>= 0).
        min_count: the smallest pair count worth merging (>= 1).

    Returns:
        A :class:`BPETrainingResult` with the merges in order and one :class:`BPEStep` per merge.

    Raises:
        TypeError: if ``texts`` is a single str or holds something that is not a str, or
            ``num_merges`` or ``min_count`` is not an int.
        ValueError: if ``num_merges`` < 0 or ``min_count`` < 1.
    """
    texts = check_sequence("texts", texts, str, iterable=True, expected="an iterable of str (a list of captions)")
    num_merges, min_count = check_int("num_merges", num_merges, 0), check_int("min_count", min_count, 1)
    piece_counts: Counter[str] = Counter()
    for text in texts:
        piece_counts.update(pretokenize(text))
    num_texts = len(texts)
    words = {piece: tuple(spell(piece)) for piece in piece_counts}
    initial = sum(len(words[p]) * c for p, c in piece_counts.items())
    merges: list[tuple[str, str]] = []
    steps: list[BPEStep] = []
    total = initial
    while len(merges) < num_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for piece, symbols in words.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += piece_counts[piece]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < min_count:
            break
        for piece, symbols in words.items():
            if len(symbols) > 1:
                merged = tuple(merge_pair(symbols, best))
                total -= (len(symbols) - len(merged)) * piece_counts[piece]
                words[piece] = merged
        merges.append(best)
        steps.append(BPEStep(best, pairs[best], best[0] + best[1], total))
    final = {piece: (words[piece], piece_counts[piece]) for piece in sorted(piece_counts, key=lambda p: -piece_counts[p])}
    return BPETrainingResult(merges, steps, initial, num_texts, final)
