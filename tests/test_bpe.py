"""CLIP's byte-level BPE tokenizer against open_clip's reference, and the teaching BPE trainer."""
from __future__ import annotations

import functools
import hashlib
import random
import string
from collections import Counter

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from clip_tutorial.text.bpe import END_OF_WORD, BPETokenizer, bytes_to_unicode, clean_text, load_merges, pretokenize
from clip_tutorial.text.bpe_trainer import learn_bpe
from clip_tutorial.text.tokenizer import WordTokenizer
from reference_impl import official_vocab_path, open_clip_module

ASSET = "clip_tutorial/assets/bpe_simple_vocab_16e6.txt.gz"


@pytest.fixture(scope="module")
def reference():
    module = open_clip_module("tokenizer")
    return module, module.SimpleTokenizer(str(official_vocab_path()))


@pytest.fixture(scope="module")
def ours() -> BPETokenizer:
    return BPETokenizer()


POOLS = {
    "ascii": ["a", "photo", "of", "the", "Cat", "DOG", "running", "x", "tokenization", "ShapesWorld", "I", "don't",
              "we'll", "it's", "they're", "I'M", "you'VE", "he'd", "can't"],
    "accents": ["café", "naïve", "Ångström", "crème brûlée", "façade", "Øresund", "señor", "ŽIŽEK", "résumé"],
    "scripts": ["日本語", "中文字符", "한국어", "Русский", "ελληνικά", "العربية", "हिन्दी", "ไทย", "עברית"],
    "emoji": ["🙂", "🐈", "👍🏽", "👨‍👩‍👧", "🇫🇷", "❤️", "🎉🎉", "🧑🏿‍🚀"],
    "numbers": ["0", "42", "3.14159", "1,000,000", "2026", "-7", "1e-5", "٣", "½", "²"],
    "punct": [".", ",", "!!!", "?!", "...", "—", "–", "(", ")", "[x]", "{}", "@#$%", "'", '"', "“quoted”", "‘single’",
              "«»", "…", "/", "\\", "<", ">", "|", "~"],
    "html": ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&nbsp;", "&amp;amp;", "&amp;lt;b&amp;gt;", "&eacute;",
             "&#x1F600;", "&copy;", "AT&amp;T", "&NotAnEntity;", "&amp;amp;amp;"],
    "space": [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2003", "\u3000", "\u200b", "\x0b", "\x0c"],
    "odd": ["cafÃ©", "â€™", "\x00", "\x1b[31m", "\ufeff", "ﬁ", "Ｆｕｌｌｗｉｄｔｈ", "e\u0301", "\ud7ff", "\x7f", "\x85"],
}


def varied_strings(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    names = sorted(POOLS)
    out = ["", " ", "\n\t ", "a", "A", "&amp;"]
    while len(out) < n:
        k = rng.choice([1, 2, 4, 8, 16, 40, 120])  # 40 and 120 pieces overflow 77 tokens: truncation
        parts = []
        for _ in range(k):
            piece = rng.choice(POOLS[rng.choice(names)])
            piece = piece.upper() if rng.random() < 0.1 else piece.title() if rng.random() < 0.1 else piece
            parts.append(piece + rng.choice(["", " ", " ", " ", "  "]))
        out.append("".join(parts))
    return out


STRINGS = varied_strings(1200)
SMALL = functools.lru_cache(maxsize=1)(lambda: BPETokenizer.from_merges(load_merges()[:2000]))


def test_asset_is_the_official_vocabulary():
    digest = hashlib.sha256
    assert digest(open(ASSET, "rb").read()).hexdigest() == digest(official_vocab_path().read_bytes()).hexdigest()


def test_vocabulary_layout(ours, reference):
    _, ref = reference
    assert (ours.vocab_size, ours.sot_id, ours.eot_id) == (49408, 49406, 49407)
    assert ours.vocab_size == ref.vocab_size and ref.sot_token_id == ours.sot_id and ref.eot_token_id == ours.eot_id
    assert ours.itos[:-2] == list(ref.encoder)[:-2]  # every non-special token at the same id
    assert bytes_to_unicode() == open_clip_module("tokenizer").bytes_to_unicode()
    assert len(load_merges()) == 48894 and ours.merges == list(ref.bpe_ranks)


def test_encode_matches_reference_on_varied_strings(ours, reference):
    _, ref = reference
    lengths = []
    for text in STRINGS:
        ids = ours.encode(text)
        assert ids == ref.encode(text), repr(text)
        lengths.append(len(ids))
    assert min(lengths) == 0 and max(lengths) > 200  # the corpus covers empty and far-too-long texts


def test_call_matches_open_clip_tokenize(ours, reference):
    module, _ = reference
    texts = STRINGS[::3]
    for length in (77, 5):
        got = ours(texts, context_length=length)
        assert got.dtype == torch.long and got.shape == (len(texts), length)
        assert torch.equal(got, module.tokenize(texts, context_length=length))


def test_decode_matches_reference(ours, reference):
    _, ref = reference
    for text in STRINGS[:300]:
        ids = ours.encode(text)
        assert ours.decode(ids) == ref.decode(ids), repr(text)
    assert ours.decode(torch.tensor(ours.encode("Hello"))) == "hello "


def test_fresh_tokenizer_gives_same_ids_as_warm_one(ours):
    fresh = BPETokenizer.from_merges(load_merges())
    assert [fresh.encode(t) for t in STRINGS[:200]] == [ours.encode(t) for t in STRINGS[:200]]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=60))
def test_random_text_matches_reference(ours, reference, text):
    module, ref = reference
    # Written special tokens are the one place open_clip departs from OpenAI's tokenizer (see below).
    assume(not any(token in text.lower() for token in ("<|startoftext|>", "<|endoftext|>")))
    assert ours.encode(text) == ref.encode(text)
    assert torch.equal(ours(text, context_length=12), module.tokenize([text], context_length=12))


def test_special_tokens_written_in_the_text_follow_openai(ours, reference):
    # OpenAI's tokenizer matches "<|startoftext|>" and "<|endoftext|>" in the lower-cased text and maps
    # them to their ids; open_clip renamed its special tokens ("<start_of_text>"), so it spells them out.
    _, ref = reference
    for text, special in (("<|startoftext|>", 49406), ("a <|EndOfText|> b", 49407)):
        ids = ours.encode(text)
        assert special in ids and special not in ref.encode(text), (text, ids)
    assert ours.encode("a <|EndOfText|> b") == [ours.encode("a")[0], 49407, ours.encode("b")[0]]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=[chr(c) for c in range(128)], max_size=40))
def test_ascii_fast_path_is_the_full_clean_up(text):
    module = open_clip_module("tokenizer")
    assert clean_text(text) == module._clean_lower(text)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet=string.ascii_letters + "àâäéèêëïîôöùûüçñåøæß", min_size=1, max_size=12),
                min_size=1, max_size=8))
def test_decode_inverts_encode_for_ordinary_text(words):
    # Letters only (no pair that ftfy would read as mis-decoded UTF-8); a small vocabulary splits more words.
    tok = SMALL()
    text = " ".join(words)
    assert tok.decode(tok.encode(text)) == clean_text(text) + " "


def test_padding_truncation_and_end_token(ours):
    rows = ours(["a cat", "word " * 100, ""], context_length=10)
    assert rows.shape == (3, 10)
    assert rows[0].tolist() == [49406, 320, 2368, 49407] + [0] * 6
    assert rows[1, 0] == 49406 and rows[1, -1] == 49407 and (rows[1, 1:-1] == ours.encode("word")[0]).all()
    assert rows[2].tolist() == [49406, 49407] + [0] * 8
    exact = ours("a b c d", context_length=6)  # 4 words + 2 specials fit exactly
    assert exact[0].tolist() == [49406, *ours.encode("a b c d"), 49407]
    assert ours("a cat").shape == (1, 77)
    long_a, long_b = "a " * 76 + "cat", "a " * 76 + "dog"
    assert torch.equal(ours(long_a), ours(long_b))  # what lies past the context is lost


def test_special_tokens_in_text(ours):
    assert ours.encode("<|startoftext|>hi<|endoftext|>") == [49406, ours.encode("hi")[0], 49407]
    assert ours.tokens("Hello, world") == ["hello</w>", ",</w>", "world</w>"]
    assert pretokenize("It's 2026!") == ["it", "'s", "2", "0", "2", "6", "!"]


def test_bad_inputs_raise_clear_errors(ours):
    with pytest.raises(TypeError, match="text"):
        ours.encode(3)
    with pytest.raises(TypeError, match="texts"):
        ours([1, 2])
    with pytest.raises(TypeError, match="texts"):
        ours(None)
    with pytest.raises(ValueError, match="texts"):
        ours([])
    for bad, error in ((1, ValueError), (0, ValueError), (-5, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="context_length"):
            ours("a", context_length=bad)
    with pytest.raises(ValueError, match="ids"):
        ours.decode([49408])
    with pytest.raises(ValueError, match="ids"):
        ours.decode(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="ids"):
        ours.decode("abc")
    with pytest.raises(TypeError, match="merges"):
        BPETokenizer.from_merges([("a",)])
    with pytest.raises(ValueError, match="merges"):
        BPETokenizer.from_merges([("a", "b"), ("a", "b")])
    with pytest.raises(TypeError, match="texts"):
        learn_bpe("a cat", 3)
    with pytest.raises(ValueError, match="num_merges"):
        learn_bpe(["a cat"], -1)


def test_same_interface_as_word_tokenizer(ours):
    word = WordTokenizer(["cat"])
    for name in ("vocab_size", "pad_id", "sot_id", "eot_id", "context_length", "itos", "stoi", "decode"):
        assert hasattr(word, name) and hasattr(ours, name), name
    assert ours.eot_id == ours.vocab_size - 1 == max(ours.stoi.values())  # pooling at the largest id works


def brute_force_pair_counts(texts: list[str]) -> Counter:
    table, counts = bytes_to_unicode(), Counter()
    for text in texts:
        for piece in pretokenize(text):
            symbols = [table[b] for b in piece.encode("utf-8")]
            symbols[-1] += END_OF_WORD
            counts.update(zip(symbols, symbols[1:]))
    return counts


def test_trainer_merges_the_most_frequent_pair_first():
    rng = random.Random(1)
    texts = [" ".join(rng.choice(["red", "green", "circle", "square", "ünïcode", "日本", "🙂🙂"]) for _ in range(4))
             for _ in range(200)]
    result = learn_bpe(texts, 5)
    counts = brute_force_pair_counts(texts)
    top = max(counts.values())
    assert result.steps[0].count == top and result.merges[0] == min(p for p, c in counts.items() if c == top)
    assert result.initial_tokens == sum(len(p.encode("utf-8")) for t in texts for p in pretokenize(t))
    tok = BPETokenizer.from_merges(result.merges, context_length=8)
    assert tok.vocab_size == 512 + 5 + 2
    assert sum(len(tok.encode(t)) for t in texts) == result.steps[-1].num_tokens


def test_trainer_reproduces_a_hand_worked_example():
    # The classic corpus: low x5, lower x2, newest x6, widest x3. By hand: e+s (9, ties with s+t</w>
    # and wins alphabetically), es+t</w> (9), l+o (7), e+w (6), ew+est</w> (6), n+ewest</w> (6), lo+w</w> (5).
    corpus = ["low " * 5 + "lower " * 2 + "newest " * 6 + "widest " * 3]
    result = learn_bpe(corpus, 100)
    assert result.merges[:7] == [("e", "s"), ("es", "t</w>"), ("l", "o"), ("e", "w"), ("ew", "est</w>"),
                                 ("n", "ewest</w>"), ("lo", "w</w>")]
    assert [s.count for s in result.steps[:7]] == [9, 9, 7, 6, 6, 6, 5]
    assert [s.token for s in result.steps[:2]] == ["es", "est</w>"]
    assert result.words["newest"] == (("newest</w>",), 6)
    assert all(len(symbols) == 1 for symbols, _ in result.words.values())  # stopped when every word was whole
    tok = BPETokenizer.from_merges(result.merges)
    assert tok.tokens("lowest newest") == ["low", "est</w>", "newest</w>"]
    assert result.tokens_per_text()[0] == 3 * 5 + 5 * 2 + 6 * 6 + 6 * 3
