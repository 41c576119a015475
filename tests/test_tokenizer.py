"""The word tokenizer: CLIP's id conventions, padding and truncation, and pooling with the model."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clip_tutorial.model import CLIP, CLIPConfig
from clip_tutorial.text.tokenizer import WordTokenizer

WORDS = ["a", "red", "green", "blue", "circle", "square", "triangle", "small", "large", "left", "of", "the",
         "above", "x-ray", "don't", "3d"]


@pytest.fixture
def tok() -> WordTokenizer:
    return WordTokenizer(WORDS, context_length=12)


def test_id_layout(tok):
    vocab = sorted(set(WORDS))
    assert tok.vocab_size == len(vocab) + 4
    assert (tok.pad_id, tok.unk_id) == (0, 1)
    assert tok.sot_id == tok.vocab_size - 2
    assert tok.eot_id == tok.vocab_size - 1
    # Words take the ids from 2 on, in sorted order, between the unknown and the start token.
    assert [tok.stoi[w] for w in vocab] == list(range(2, 2 + len(vocab)))
    assert tok.itos[0] == "<pad>" and tok.itos[1] == "<unk>"
    assert tok.itos[-2] == "<start>" and tok.itos[-1] == "<end>"


def test_vocabulary_order_and_duplicates_do_not_matter():
    a = WordTokenizer(["blue", "red", "Red", "circle"])
    b = WordTokenizer(["circle", "red", "blue"])
    assert a.itos == b.itos
    assert torch.equal(a("red circle"), b("red circle"))


def test_encode_layout_and_padding(tok):
    ids = tok("a red circle")
    assert ids.dtype == torch.long and ids.shape == (1, 12)
    expected = [tok.sot_id, tok.stoi["a"], tok.stoi["red"], tok.stoi["circle"], tok.eot_id] + [0] * 7
    assert ids[0].tolist() == expected


def test_batch_of_texts(tok):
    ids = tok(["red", "a small blue square", ""])
    assert ids.shape == (3, 12)
    assert ids[0, :3].tolist() == [tok.sot_id, tok.stoi["red"], tok.eot_id]
    assert ids[1, 5] == tok.eot_id
    assert ids[2, :2].tolist() == [tok.sot_id, tok.eot_id]  # an empty text still has start and end
    for row in ids:
        end = row.tolist().index(tok.eot_id)
        assert (row[end + 1:] == 0).all()


def test_context_length_argument_overrides_default(tok):
    ids = tok(["red circle"], context_length=5)
    assert ids.shape == (1, 5)
    assert ids[0].tolist() == [tok.sot_id, tok.stoi["red"], tok.stoi["circle"], tok.eot_id, 0]


def test_unknown_words_map_to_unk(tok):
    ids = tok("a purple hexagon")[0].tolist()
    assert ids[:5] == [tok.sot_id, tok.stoi["a"], tok.unk_id, tok.unk_id, tok.eot_id]
    assert tok.decode(ids) == "a <unk> <unk>"


def test_case_and_punctuation_insensitive(tok):
    assert torch.equal(tok("A RED Circle."), tok("a red circle"))
    assert torch.equal(tok("The  small, green\ttriangle!"), tok("the small green triangle"))


def test_hyphens_apostrophes_and_digits_are_part_of_words(tok):
    ids = tok("x-ray don't 3d")[0].tolist()
    assert ids[1:4] == [tok.stoi["x-ray"], tok.stoi["don't"], tok.stoi["3d"]]


def test_truncation_keeps_the_end_token(tok):
    words = ["red", "green", "blue", "circle", "square", "triangle", "small", "large", "left", "of", "the",
             "above", "a", "red"]
    ids = tok(" ".join(words))[0].tolist()
    assert len(ids) == tok.context_length == 12
    # As open_clip.tokenize: keep the first context_length ids and overwrite the last with the end token.
    assert ids == [tok.sot_id] + [tok.stoi[w] for w in words[:10]] + [tok.eot_id]


def test_exactly_full_text_is_not_truncated(tok):
    words = ["red", "green", "blue", "circle", "square", "triangle", "small", "large", "left", "of"]
    ids = tok(" ".join(words))[0].tolist()
    assert ids == [tok.sot_id] + [tok.stoi[w] for w in words] + [tok.eot_id]
    assert tok.decode(ids) == " ".join(words)


def test_context_length_two_holds_only_start_and_end(tok):
    assert tok("red circle", context_length=2)[0].tolist() == [tok.sot_id, tok.eot_id]


@pytest.mark.parametrize("bad", [[], ()])
def test_empty_list_raises(tok, bad):
    with pytest.raises(ValueError, match="texts"):
        tok(bad)


@pytest.mark.parametrize("bad", [None, 3, ["red", 3], [b"red"], {"red"}])
def test_non_str_raises(tok, bad):
    with pytest.raises(TypeError, match="texts"):
        tok(bad)


@pytest.mark.parametrize("length, error", [(1, ValueError), (0, ValueError), (-3, ValueError), (2.5, TypeError),
                                           (True, TypeError)])
def test_bad_context_length(tok, length, error):
    with pytest.raises(error, match="context_length"):
        tok("red", context_length=length)
    with pytest.raises(error, match="context_length"):
        WordTokenizer(WORDS, context_length=length)


def test_bad_vocabularies():
    with pytest.raises(TypeError, match="words"):
        WordTokenizer("red green")
    with pytest.raises(ValueError, match="words"):
        WordTokenizer([])
    with pytest.raises(ValueError, match="words"):
        WordTokenizer(["red circle"])
    with pytest.raises(ValueError, match="words"):
        WordTokenizer(["red", "<end>"])
    with pytest.raises(ValueError, match="words"):
        WordTokenizer(["red", ""])


def test_every_vocabulary_word_encodes_to_its_own_id(tok):
    for word in tok.itos[2:-2]:
        assert tok(word)[0, :3].tolist() == [tok.sot_id, tok.stoi[word], tok.eot_id], word


@pytest.mark.parametrize("word", ["red.", "snake_case", "a/b", "c++", "e=mc2"])
def test_vocabulary_word_the_splitter_would_break_is_rejected_or_reachable(word):
    # A word that split() breaks up could never be encoded to its id: the constructor should refuse it.
    try:
        tok = WordTokenizer(["blue", word])
    except ValueError as err:
        assert "words" in str(err)
        return
    assert tok(word)[0, :3].tolist() == [tok.sot_id, tok.stoi[word], tok.eot_id], (
        f"vocabulary word {word!r} was accepted but encodes to {tok(word)[0].tolist()}"
    )


def test_decode_stops_at_end_and_skips_specials(tok):
    ids = [tok.sot_id, tok.stoi["red"], 0, tok.stoi["circle"], tok.eot_id, tok.stoi["blue"]]
    assert tok.decode(ids) == "red circle"
    assert tok.decode(torch.tensor(ids)) == "red circle"


def test_decode_rejects_bad_ids(tok):
    with pytest.raises(ValueError, match="ids"):
        tok.decode([tok.vocab_size])
    with pytest.raises(ValueError, match="ids"):
        tok.decode([-1])
    with pytest.raises(ValueError, match="ids"):
        tok.decode(torch.zeros(2, 3, dtype=torch.long))


_vocab = st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8),
                  min_size=1, max_size=30, unique=True)


@settings(max_examples=80, deadline=None)
@given(data=st.data(), vocab=_vocab, context_length=st.integers(2, 20))
def test_round_trip_random_sentences(data, vocab, context_length):
    tok = WordTokenizer(vocab, context_length=context_length)
    words = data.draw(st.lists(st.sampled_from(vocab), max_size=context_length - 2))
    # Random capitalisation must not matter.
    shown = [w.upper() if data.draw(st.booleans()) else w for w in words]
    ids = tok(" ".join(shown))
    assert ids.shape == (1, context_length)
    row = ids[0].tolist()
    assert row[: len(words) + 2] == [tok.sot_id, *(tok.stoi[w] for w in words), tok.eot_id]
    assert all(i == 0 for i in row[len(words) + 2:])
    assert tok.decode(ids[0]) == " ".join(words)
    # The end token is the highest id, so argmax finds it (what the model pools at).
    assert int(ids[0].argmax()) == len(words) + 1


@settings(max_examples=40, deadline=None)
@given(data=st.data(), vocab=_vocab, context_length=st.integers(2, 12))
def test_truncated_sentences_keep_prefix_and_end(data, vocab, context_length):
    tok = WordTokenizer(vocab, context_length=context_length)
    words = data.draw(st.lists(st.sampled_from(vocab), min_size=context_length - 1, max_size=context_length + 10))
    row = tok(" ".join(words))[0].tolist()
    assert len(row) == context_length
    assert row[0] == tok.sot_id and row[-1] == tok.eot_id
    assert row[1:-1] == [tok.stoi[w] for w in words[: context_length - 2]]


def test_json_round_trip(tok):
    again = WordTokenizer.from_json(tok.to_json())
    assert again.itos == tok.itos
    assert again.context_length == tok.context_length
    texts = ["a red circle", "the large x-ray of don't", "purple"]
    assert torch.equal(again(texts), tok(texts))


@pytest.mark.parametrize("bad", ["not json", "{}", '{"words": ["a"]}', "[1, 2]"])
def test_from_json_rejects_bad_data(bad):
    with pytest.raises(ValueError, match="data"):
        WordTokenizer.from_json(bad)


def test_model_pools_at_the_end_token():
    tok = WordTokenizer(WORDS, context_length=12)
    config = CLIPConfig(vocab_size=tok.vocab_size, context_length=tok.context_length, embed_dim=16,
                        transformer_width=32, transformer_heads=2, transformer_layers=2)
    torch.manual_seed(0)
    model = CLIP(config).eval()
    texts = ["red", "a small blue square", "the large green triangle left of the red circle", "3d x-ray",
             "circle above the square of a triangle left of the blue"]  # the last one is truncated
    ids = tok(texts)
    ends = [min(len(tok.encode_one(t)), tok.context_length) - 1 for t in texts]
    assert [row.tolist().index(tok.eot_id) for row in ids] == ends
    with torch.no_grad():
        features = model.encode_text(ids)
        # The feature at each end position, computed step by step from the model's modules.
        x = model.token_embedding(ids) + model.positional_embedding
        x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
        expected = torch.stack([x[i, end] for i, end in enumerate(ends)]) @ model.text_projection
        torch.testing.assert_close(features, expected, atol=1e-6, rtol=0)
        # Cutting each text right after its end token gives the same feature.
        for i, end in enumerate(ends):
            torch.testing.assert_close(model.encode_text(ids[i: i + 1, : end + 1]), features[i: i + 1],
                                       atol=1e-5, rtol=0)
