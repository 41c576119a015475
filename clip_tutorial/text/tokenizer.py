"""A word-level tokenizer for the book's tiny vocabularies.

CLIP itself uses a byte-level BPE over 49,408 ids (Chapter 2.2). Our procedural captions use a few
dozen words, so one id per word is enough and keeps the text tower small. The conventions are
CLIP's: every text starts with a start token and ends with an end token, short texts are padded
with zeros, long texts are truncated so that the end token survives, and the end token has the
highest id, so pooling "at the largest id" finds it exactly as OpenAI's code does.

Explained in Chapter 1 and, for BPE, Chapter 2.2.
"""
from __future__ import annotations

import array
import json
from collections.abc import Iterable, Sequence

import torch

from clip_tutorial.core.checks import check_int, check_sequence, check_tensor, check_type

__all__ = ["BaseTokenizer", "WordTokenizer"]


class BaseTokenizer:
    """What every tokenizer of the package shares: the id layout and the padded, truncated batches.

    Subclasses set ``itos`` (the token string of every id, the start and end tokens last) and
    ``context_length``, and implement :meth:`encode_one`. Padding uses id 0 and the end token has
    the highest id, so pooling "at the largest id" finds it, as OpenAI's code does.
    """

    itos: list[str]
    context_length: int

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return len(self.itos)

    @property
    def pad_id(self) -> int:
        """Id of the padding token (0)."""
        return 0

    @property
    def sot_id(self) -> int:
        """Id of the start-of-text token."""
        return self.vocab_size - 2

    @property
    def eot_id(self) -> int:
        """Id of the end-of-text token, the highest id."""
        return self.vocab_size - 1

    @staticmethod
    def check_context_length(length: object) -> int:
        """Return ``length`` if it is an int >= 2 (room for the start and end tokens).

        Raises ``TypeError`` for a non-int and ``ValueError`` for an int below 2.
        """
        return check_int("context_length", length, minimum=2, expected="an int >= 2 (room for start and end tokens)")

    def check_ids(self, ids: Sequence[int] | torch.Tensor) -> list[int]:
        """Return ``ids`` (a sequence of ints or a 1-D tensor) as a list of ints, each in ``[0, vocab_size)``.

        Raises ``TypeError`` for something that is not a sequence of ints and ``ValueError`` for a
        tensor that is not 1-D or an id out of range.
        """
        if isinstance(ids, torch.Tensor):
            ids = check_tensor("ids", ids, ndim=1, what="a 1-D sequence of ids").tolist()
        ids = check_sequence("ids", ids, expected="a sequence of int or a 1-D tensor")
        return [check_int(f"ids[{i}]", t, 0, self.vocab_size - 1, expected=f"an id in [0, {self.vocab_size})")
                for i, t in enumerate(ids)]

    def encode_one(self, text: str) -> list[int]:
        """Ids of one text with start and end tokens, no padding or truncation."""
        raise NotImplementedError

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        """Encode text(s) into a LongTensor (batch, context_length), padded with zeros.

        A text longer than the context is truncated and its last id replaced by the end token,
        as ``open_clip.tokenize`` does, so the text tower still has an end token to read.

        Raises:
            TypeError: if ``texts`` is not a str or a sequence of str, or ``context_length`` is not an int.
            ValueError: if ``texts`` is empty or ``context_length`` is < 2.
        """
        texts = check_sequence("texts", [texts] if isinstance(texts, str) else texts, str, nonempty=True,
                               expected="a str or a list of str")
        length = self.context_length if context_length is None else self.check_context_length(context_length)
        flat = array.array("q")  # one flat int64 buffer: much faster to turn into a tensor than nested lists
        for text in texts:
            ids = self.encode_one(text)
            if len(ids) > length:
                ids = ids[:length]
                ids[-1] = self.eot_id
            flat.extend(ids)
            flat.extend([self.pad_id] * (length - len(ids)))
        return torch.frombuffer(flat, dtype=torch.long).clone().view(len(texts), length)


class WordTokenizer(BaseTokenizer):
    """Map lower-case, whitespace-separated words to ids, CLIP style.

    Ids: ``<pad>`` = 0, ``<unk>`` = 1, the words from 2 on, then ``<start>`` and ``<end>`` last.

    Args:
        words: the vocabulary (duplicates and order do not matter; it is sorted).
        context_length: default number of ids per encoded text, start and end tokens included.
    """

    PAD, UNK, SOT, EOT = "<pad>", "<unk>", "<start>", "<end>"

    def __init__(self, words: Iterable[str], context_length: int = 16) -> None:
        words = check_sequence("words", words, str, iterable=True, nonempty=True,
                               expected="an iterable of words (a single str must be split first)")
        vocab = sorted({w.lower() for w in words})
        specials = (self.PAD, self.UNK, self.SOT, self.EOT)
        bad = [w for w in vocab if w in specials or self.split(w) != [w]]
        if bad:
            raise ValueError(f"words: expected single words (letters, digits, '-' or ''') that are not special tokens, got {bad[:5]}")
        self.context_length = self.check_context_length(context_length)
        self.itos = [self.PAD, self.UNK, *vocab, self.SOT, self.EOT]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @property
    def unk_id(self) -> int:
        """Id every unknown word maps to."""
        return 1

    def split(self, text: str) -> list[str]:
        """Lower-case ``text`` and split it into words (punctuation other than letters is dropped)."""
        check_type("text", text, str)
        cleaned = "".join(ch if ch.isalnum() or ch.isspace() or ch in "-'" else " " for ch in text.lower())
        return cleaned.split()

    def encode_one(self, text: str) -> list[int]:
        """Ids of one text with start and end tokens, no padding or truncation."""
        return [self.sot_id, *(self.stoi.get(w, self.unk_id) for w in self.split(text)), self.eot_id]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Words of one encoded text, without start, end and padding tokens."""
        words = []
        for i in self.check_ids(ids):
            if i in (self.pad_id, self.sot_id):
                continue
            if i == self.eot_id:
                break
            words.append(self.itos[i])
        return " ".join(words)

    def to_json(self) -> str:
        """Serialise the vocabulary and context length (saved beside checkpoints)."""
        return json.dumps({"words": self.itos[2:-2], "context_length": self.context_length})

    @classmethod
    def from_json(cls, data: str) -> "WordTokenizer":
        """Rebuild a tokenizer from :meth:`to_json`'s output."""
        try:
            obj = json.loads(data)
            return cls(obj["words"], obj["context_length"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"data: expected a JSON tokenizer description with 'words' and 'context_length' ({err})") from err

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size}, context_length={self.context_length})"
