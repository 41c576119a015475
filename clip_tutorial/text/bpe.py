"""CLIP's byte-level byte-pair-encoding (BPE) tokenizer, written out in full.

A text goes through four stages before it becomes ids:

1. **Clean-up** (:func:`clean_text`): repair broken Unicode with ``ftfy``, undo HTML escaping
   (twice, so ``&amp;amp;`` becomes ``&``), collapse runs of whitespace and lower-case.
2. **Pre-tokenizing** (:func:`pretokenize`): a regular expression cuts the text into words,
   single digits, runs of punctuation and a few English contractions (``'s``, ``'ll``, ...).
3. **Bytes** (:func:`bytes_to_unicode`): each piece is written as its UTF-8 bytes, every byte
   shown as one printable character, so any text at all (emoji, CJK, accents) can be spelt with
   256 base symbols and no token is ever unknown.
4. **Merges**: adjacent symbols are merged, always the pair that was learned earliest, until no
   learned pair is left. The last symbol of a word carries the end-of-word marker ``</w>``.

With the official merge list (shipped as ``clip_tutorial/assets/bpe_simple_vocab_16e6.txt.gz``)
the ids are exactly those of OpenAI's ``clip.tokenize`` and ``open_clip.tokenize``: 256 byte
symbols, the same 256 with ``</w>``, 48,894 merged symbols, then ``<|startoftext|>`` = 49406
and ``<|endoftext|>`` = 49407, 49,408 ids in all.

Explained in Chapter 2.2.
"""
from __future__ import annotations

import gzip
import html
import importlib.resources
import os
import re as _re
from collections.abc import Sequence
from functools import lru_cache

import ftfy
import regex
import torch

from clip_tutorial.core.checks import check_sequence, check_type

from .tokenizer import BaseTokenizer

__all__ = [
    "BPETokenizer", "OFFICIAL_NUM_MERGES", "END_OF_WORD", "bytes_to_unicode", "clean_text", "pretokenize",
    "spell", "merge_pair", "load_merges",
]

#: Marker appended to the last symbol of every word, so "a" inside a word and "a" alone differ.
END_OF_WORD = "</w>"
#: Number of merges CLIP uses from its vocabulary file: 49,408 ids - 2 x 256 byte symbols - 2 specials.
OFFICIAL_NUM_MERGES = 49408 - 2 * 256 - 2
SOT, EOT = "<|startoftext|>", "<|endoftext|>"

_PATTERN = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+", regex.IGNORECASE
)
# Printable ASCII and ordinary whitespace without '&': ftfy and HTML unescaping leave such text unchanged.
_NEEDS_FIXING = _re.compile(r"[^\t\n\r\x20-\x25\x27-\x7e]")


def bytes_to_unicode() -> dict[int, str]:
    """The table from each of the 256 byte values to one printable character.

    Bytes that are printable Latin-1 characters (``!`` to ``~``, ``¡`` to ``¬``, ``®`` to ``ÿ``)
    stand for themselves; the other 68 (control characters, space, ...) are shifted to ``chr(256)``
    and beyond, in byte order, so no symbol is whitespace or invisible. The table's order (the
    printable bytes first, then the shifted ones) is the order of the first 256 ids.
    """
    return dict(_byte_table())


@lru_cache(maxsize=None)
def _byte_table() -> dict[int, str]:
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    shifted = (b for b in range(256) if b not in table)
    table.update({b: chr(256 + n) for n, b in enumerate(shifted)})
    return table


def clean_text(text: str) -> str:
    """CLIP's clean-up: ``ftfy.fix_text``, HTML unescape twice, collapse whitespace, strip, lower-case.

    Plain printable ASCII without ``&`` is already clean, so it skips ``ftfy`` (which would return
    it unchanged) and only has its whitespace collapsed and its letters lower-cased.
    """
    check_type("text", text, str)
    if _NEEDS_FIXING.search(text):
        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


def pretokenize(text: str) -> list[str]:
    """Clean ``text`` and cut it into the pieces BPE works on (words, digits, punctuation runs)."""
    return _PATTERN.findall(clean_text(text))


def spell(piece: str) -> list[str]:
    """The byte symbols of one pre-tokenized piece, ``</w>`` appended to the last: BPE's starting point."""
    table = _byte_table()
    symbols = [table[b] for b in piece.encode("utf-8")]
    symbols[-1] += END_OF_WORD
    return symbols


def merge_pair(symbols: Sequence[str], pair: tuple[str, str]) -> list[str]:
    """Replace every occurrence of ``pair`` in ``symbols`` by the merged symbol, scanning left to right."""
    first, second = pair
    merged, i, n = [], 0, len(symbols)
    while i < n:
        if i + 1 < n and symbols[i] == first and symbols[i + 1] == second:
            merged.append(first + second)
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


def load_merges(path: str | os.PathLike | None = None, num_merges: int = OFFICIAL_NUM_MERGES) -> list[tuple[str, str]]:
    """Read the first ``num_merges`` merges of a gzipped CLIP vocabulary file (default: the shipped one).

    The file has a header line, then one merge per line: two symbols separated by a space.
    """
    if path is None:
        path = importlib.resources.files("clip_tutorial") / "assets" / "bpe_simple_vocab_16e6.txt.gz"
    else:
        check_type("path", path, (str, os.PathLike), expected="a path to a .txt.gz merge file or None")
    with gzip.open(path, "rt", encoding="utf-8") as f:  # type: ignore[arg-type]
        lines = f.read().split("\n")[1: num_merges + 1]
    merges = [tuple(line.split()) for line in lines]
    if len(merges) != num_merges or any(len(m) != 2 for m in merges):
        raise ValueError(f"path: expected at least {num_merges} merges of two symbols in {path}, got a different file")
    return merges  # type: ignore[return-value]


class BPETokenizer(BaseTokenizer):
    """CLIP's tokenizer: text -> cleaned pieces -> byte symbols -> merged BPE tokens -> ids.

    Ids: the 256 byte symbols, the same followed by ``</w>``, one id per merge in merge order,
    then ``<|startoftext|>`` and ``<|endoftext|>`` (the highest id, so pooling at the largest id
    finds it). Calling the tokenizer (inherited from
    :class:`~clip_tutorial.text.tokenizer.BaseTokenizer`) returns a (batch, context_length) LongTensor,
    padded with zeros and truncated exactly as ``open_clip.tokenize`` does. Padding id 0 is also the
    byte symbol ``!``; that is harmless because the text tower never reads past the end token.

    Args:
        merges: the merges in the order they were learned; ``None`` loads CLIP's official 48,894.
        context_length: default number of ids per encoded text, start and end tokens included.

    Attributes:
        merges: the merges, in order.
        itos: the token string of every id.
        stoi: the id of every token string.
        context_length: default length of the rows a call returns.
    """

    def __init__(self, merges: Sequence[tuple[str, str]] | None = None, context_length: int = 77) -> None:
        merges = check_sequence("merges", load_merges() if merges is None else merges, (tuple, list),
                                expected="a sequence of (str, str) pairs")
        bad = [m for m in merges if len(m) != 2 or not all(isinstance(s, str) and s for s in m)]
        if bad:
            raise TypeError(f"merges: expected pairs of two non-empty str, got e.g. {bad[0]!r}")
        self.merges = [(a, b) for a, b in merges]
        if len(set(self.merges)) != len(self.merges):
            raise ValueError("merges: expected each pair once, got duplicates")
        self.context_length = self.check_context_length(context_length)
        symbols = list(bytes_to_unicode().values())
        self.itos = [*symbols, *(s + END_OF_WORD for s in symbols), *(a + b for a, b in self.merges), SOT, EOT]
        self.stoi = {s: i for i, s in enumerate(self.itos)}  # a string made by two merges maps to the later id
        self._ranks = {m: r for r, m in enumerate(self.merges)}
        self._byte_decoder = {c: b for b, c in _byte_table().items()}
        self._cache: dict[str, list[int]] = {SOT: [self.sot_id], EOT: [self.eot_id]}

    @classmethod
    def from_merges(cls, merges: Sequence[tuple[str, str]], context_length: int = 77) -> "BPETokenizer":
        """A tokenizer with a vocabulary of your own (e.g. from :func:`~clip_tutorial.text.bpe_trainer.learn_bpe`)."""
        return cls(merges, context_length)

    def bpe(self, piece: str) -> list[str]:
        """Merge the byte symbols of one pre-tokenized piece into BPE tokens (the last ends in ``</w>``).

        Repeatedly finds the adjacent pair with the earliest merge rank and merges every
        occurrence of it, left to right, until no adjacent pair has been learned.
        """
        symbols = spell(piece)
        ranks = self._ranks
        while len(symbols) > 1:
            best, best_rank = None, len(ranks)
            for pair in zip(symbols, symbols[1:]):
                rank = ranks.get(pair, best_rank)
                if rank < best_rank:
                    best, best_rank = pair, rank
            if best is None:
                break
            symbols = merge_pair(symbols, best)
        return symbols

    def encode(self, text: str) -> list[int]:
        """Ids of one text, without start and end tokens, padding or truncation."""
        cache, ids = self._cache, []
        for piece in pretokenize(text):
            piece_ids = cache.get(piece)
            if piece_ids is None:
                piece_ids = [self.stoi[t] for t in self.bpe(piece)]
                if len(cache) < 1_000_000:
                    cache[piece] = piece_ids
            ids.extend(piece_ids)
        return ids

    def tokens(self, text: str) -> list[str]:
        """The token strings of one text (``</w>`` marks word ends), to see how it is split."""
        return [self.itos[i] for i in self.encode(text)]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of a sequence of ids, as CLIP's ``decode``: ``</w>`` becomes a space, bytes become UTF-8.

        Special ids decode to their names; invalid UTF-8 (a cut multi-byte character) becomes ``�``.
        """
        text = "".join(self.itos[i] for i in self.check_ids(ids))
        raw = bytearray(self._byte_decoder[c] for c in text)
        return raw.decode("utf-8", errors="replace").replace(END_OF_WORD, " ")

    def encode_one(self, text: str) -> list[int]:
        """Ids of one text with ``<|startoftext|>`` and ``<|endoftext|>``, no padding or truncation."""
        return [self.sot_id, *self.encode(text), self.eot_id]

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, context_length={self.context_length})"
