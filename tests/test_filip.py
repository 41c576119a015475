"""FILIP's token-wise late interaction (Chapter 7.3): the token encoders, the similarity against a brute-force
loop, the loss against CLIP's cross-entropies written out, the training branch and the zero-shot helper."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from clip_tutorial.model import CLIP, CLIPConfig
from clip_tutorial.objectives.filip import (filip_candidate_scores, filip_logits, filip_loss, filip_scores,
                                            filip_similarity, filip_zero_shot_predict)
from clip_tutorial.train.config import TrainConfig
from clip_tutorial.train.loop import train_clip

VIT = CLIPConfig(embed_dim=16, image_resolution=16, vision_layers=1, vision_width=32, vision_patch_size=8,
                 vision_heads=2, context_length=8, vocab_size=20, transformer_width=32, transformer_heads=2,
                 transformer_layers=1, eot_token_id=19)
SOT, EOT = 18, 19


def brute_force(image_tokens, text_tokens, text_mask, image_mask=None):
    """Both similarities with explicit loops over pairs and tokens, in float64 Python numbers."""
    n_img, n_patch, _ = image_tokens.shape
    n_txt, length, _ = text_tokens.shape
    image_mask = torch.ones(n_img, n_patch, dtype=torch.bool) if image_mask is None else image_mask
    i2t = torch.zeros(n_img, n_txt, dtype=torch.float64)
    t2i = torch.zeros(n_img, n_txt, dtype=torch.float64)
    for i in range(n_img):
        patches = [p for p in range(n_patch) if image_mask[i, p]]
        for j in range(n_txt):
            words = [w for w in range(length) if text_mask[j, w]]

            def dot(p, w):
                return sum(float(a) * float(b) for a, b in zip(image_tokens[i, p], text_tokens[j, w]))
            i2t[i, j] = sum(max(dot(p, w) for w in words) for p in patches) / len(patches)
            t2i[i, j] = sum(max(dot(p, w) for p in patches) for w in words) / len(words)
    return i2t, t2i


def random_mask(rows, length, g):
    """A mask whose rows keep a random-length prefix of at least one True (text-like padding)."""
    keep = torch.randint(1, length + 1, (rows,), generator=g)
    return torch.arange(length)[None, :] < keep[:, None]


def random_tokens(n, length, dim, g):
    return F.normalize(torch.randn(n, length, dim, generator=g, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_similarity_matches_brute_force_with_masks(seed):
    g = torch.Generator().manual_seed(seed)
    images, texts = random_tokens(4, 5, 6, g), random_tokens(3, 7, 6, g)
    text_mask, image_mask = random_mask(3, 7, g), random_mask(4, 5, g)
    text_mask[0] = False
    text_mask[0, 3] = True  # a real token after padding-like gaps: masks need not be prefixes
    for mask in (None, image_mask):
        got = filip_similarity(images, texts, text_mask, mask)
        want = brute_force(images, texts, text_mask, mask)
        for g_, w_ in zip(got, want):
            torch.testing.assert_close(g_, w_, rtol=1e-12, atol=1e-12)


def test_padding_is_never_chosen_as_best_match():
    # Padding tokens identical to the image tokens would win every max if they were considered.
    g = torch.Generator().manual_seed(3)
    images = random_tokens(2, 4, 8, g)
    texts = random_tokens(2, 6, 8, g)
    texts[:, 3:] = images[0, 0] * 10  # huge similarity, but masked
    text_mask = torch.tensor([[True] * 3 + [False] * 3] * 2)
    padded = filip_similarity(images, texts, text_mask)
    trimmed = filip_similarity(images, texts[:, :3].contiguous(), text_mask[:, :3])
    for a, b in zip(padded, trimmed):
        torch.testing.assert_close(a, b)
    assert float(padded[0].max()) < 1.01  # unit tokens: no cosine similarity above one was picked


def test_directions_differ_and_are_not_transposes():
    g = torch.Generator().manual_seed(4)
    images, texts = random_tokens(3, 5, 4, g), random_tokens(3, 2, 4, g)
    i2t, t2i = filip_similarity(images, texts, torch.ones(3, 2, dtype=torch.bool))
    assert not torch.allclose(i2t, t2i)
    # one token on each side: both directions are the single cosine similarity
    one_i, one_t = images[:, :1], texts[:, :1]
    i2t, t2i = filip_similarity(one_i, one_t, torch.ones(3, 1, dtype=torch.bool))
    torch.testing.assert_close(i2t, one_i[:, 0] @ one_t[:, 0].t())
    torch.testing.assert_close(t2i, i2t)


def test_loss_is_clip_cross_entropies_on_the_two_directions():
    g = torch.Generator().manual_seed(5)
    images, texts = random_tokens(5, 4, 6, g), random_tokens(5, 6, 6, g)
    mask = random_mask(5, 6, g)
    scale = 13.0
    i2t, t2i = brute_force(images, texts, mask)
    labels = torch.arange(5)
    want = (F.cross_entropy(scale * i2t, labels) + F.cross_entropy(scale * t2i.t(), labels)) / 2
    torch.testing.assert_close(filip_loss(images, texts, mask, scale), want)
    per_image, per_text = filip_logits(images, texts, mask, scale)
    assert per_image.shape == (5, 5) and per_text.shape == (5, 5)
    # gradients reach both sets of tokens
    images.requires_grad_(True)
    texts.requires_grad_(True)
    filip_loss(images, texts, mask, scale).backward()
    assert images.grad.abs().sum() > 0 and texts.grad.abs().sum() > 0
    assert texts.grad[~mask].abs().max() == 0  # padding gets no gradient


def test_bad_inputs():
    g = torch.Generator().manual_seed(6)
    images, texts = random_tokens(2, 3, 4, g).float(), random_tokens(2, 5, 4, g).float()
    mask = torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="image_tokens"):
        filip_similarity(images[0], texts, mask)
    with pytest.raises(ValueError, match="text_tokens"):
        filip_similarity(images, texts[..., :3], mask)
    with pytest.raises(TypeError, match="text_tokens"):
        filip_similarity(images, texts.double(), mask)
    with pytest.raises(TypeError, match="image_tokens"):
        filip_similarity(images.long(), texts, mask)
    with pytest.raises(TypeError, match="text_mask"):
        filip_similarity(images, texts, mask.long())
    with pytest.raises(ValueError, match="text_mask"):
        filip_similarity(images, texts, mask[:, :4])
    empty = mask.clone()
    empty[1] = False
    with pytest.raises(ValueError, match="text_mask.*first: 1"):
        filip_similarity(images, texts, empty)
    with pytest.raises(ValueError, match="image_mask"):
        filip_similarity(images, texts, mask, torch.zeros(2, 3, dtype=torch.bool))


def _model(seed=0, **changes):
    torch.manual_seed(seed)
    return CLIP(VIT.replace(**changes) if changes else VIT).eval()


def _texts():
    return torch.tensor([[SOT, 3, 4, EOT, 0, 0, 0, 0], [SOT, 5, EOT, 0, 0, 0, 0, 0], [SOT, 6, 7, 8, 9, EOT, 0, 0]])


def test_token_encoders_share_the_pooled_computation():
    model = _model()
    images, text = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)), _texts()
    with torch.no_grad():
        pooled_image = model.encode_image(images)
        image_tokens = model.encode_image_tokens(images)
        pooled_text = model.encode_text(text)
        text_tokens, mask = model.encode_text_tokens(text)
        # the pooled outputs are bit-identical to a by-hand forward pass of the unchanged computation
        visual = model.visual
        by_hand = visual.ln_post(visual.transformer(visual.ln_pre(visual.tokens(images)))[:, 0]) @ visual.proj
        assert torch.equal(pooled_image, by_hand)
        x = model.token_embedding(text) + model.positional_embedding[:8]
        x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
        by_hand = x[torch.arange(3), (text == EOT).int().argmax(dim=-1)] @ model.text_projection
        assert torch.equal(pooled_text, by_hand)
    assert image_tokens.shape == (3, 1 + 4, 16)  # class token + (16 / 8)^2 patches
    torch.testing.assert_close(image_tokens[:, 0], pooled_image)
    assert text_tokens.shape == (3, 8, 16)
    assert mask.tolist() == [[False, True, True, True] + [False] * 4, [False, True, True] + [False] * 5,
                             [False, True, True, True, True, True, False, False]]
    eot = torch.tensor([3, 2, 5])
    torch.testing.assert_close(text_tokens[torch.arange(3), eot], pooled_text)
    # why the start token is left out: under the causal mask it is the same vector for every text
    torch.testing.assert_close(text_tokens[0, 0], text_tokens[1, 0])
    unit, _ = model.encode_text_tokens(text, normalize=True)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(3, 8))


def test_resnet_has_no_tokens():
    model = CLIP(VIT.replace(vision_layers=(1, 1, 1, 1), vision_width=16, image_resolution=32, vision_heads=2))
    with pytest.raises(TypeError, match="ViT"):
        model.encode_image_tokens(torch.zeros(1, 3, 32, 32))
    images, text = torch.zeros(4, 3, 32, 32), _texts()[[0, 1, 2, 0]]
    with pytest.raises(ValueError, match="ViT"):
        train_clip(model, images, text, TrainConfig(steps=1, batch_size=4, warmup_steps=0, loss="filip"),
                   progress=False)


def test_filip_training_branch_lowers_the_loss_and_rejects_negatives():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(8, 3, 16, 16, generator=g)
    text = torch.cat([_texts(), _texts(), _texts()[:2]])
    text[:, 1] = torch.arange(8) + 1  # every caption different
    config = TrainConfig(steps=30, batch_size=8, lr=3e-3, warmup_steps=0, loss="filip")
    model = _model()
    history = train_clip(model, images, text, config, progress=False)
    assert history.loss[-1] < history.loss[0] / 3  # it fits eight pairs, as CLIP's loss does
    assert math.exp(float(model.logit_scale.detach())) <= 100 + 1e-4
    with pytest.raises(ValueError, match="negatives"):
        train_clip(_model(), images, text, config, progress=False, negatives=text)
    clip_run = train_clip(_model(), images, text, replace(config, loss="clip", steps=1), progress=False)
    filip_run = train_clip(_model(), images, text, replace(config, steps=1), progress=False)
    assert clip_run.loss[0] != filip_run.loss[0]  # the branch really changes the objective


def test_scores_and_zero_shot_predict():
    model = _model()
    g = torch.Generator().manual_seed(2)
    images, prompts = torch.randn(5, 3, 16, 16, generator=g), _texts()
    with torch.no_grad():
        tokens, mask = model.encode_text_tokens(prompts, normalize=True)
        i2t, t2i = filip_similarity(model.encode_image_tokens(images, normalize=True), tokens, mask)
    model.train()
    scores = filip_scores(model, images, prompts, batch_size=2)
    assert model.training  # put back in its mode
    torch.testing.assert_close(scores, i2t)
    torch.testing.assert_close(filip_scores(model, images, prompts, direction="text"), t2i)
    torch.testing.assert_close(filip_scores(model, images, prompts, direction="mean"), (i2t + t2i) / 2)
    assert filip_zero_shot_predict(model, images, prompts).tolist() == i2t.argmax(dim=1).tolist()
    uint8 = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=g)
    assert filip_zero_shot_predict(model, uint8, prompts).shape == (2,)
    with pytest.raises(ValueError, match="direction"):
        filip_scores(model, images, prompts, direction="both")
    with pytest.raises(TypeError, match="text"):
        filip_scores(model, images, prompts.float())
    with pytest.raises(TypeError, match="model"):
        filip_scores("model", images, prompts)


@pytest.mark.parametrize("direction", ["image", "text", "mean"])
def test_candidate_scores_are_each_images_row_of_the_full_scores(direction):
    model = _model()
    g = torch.Generator().manual_seed(7)
    images = torch.randn(5, 3, 16, 16, generator=g)
    texts = _texts()
    # image n gets its own candidates: different texts per row, in different orders, one repeated
    candidates = torch.stack([texts[[n % 3, (n + 1) % 3, n % 2]] for n in range(5)])
    model.train()
    got = filip_candidate_scores(model, images, candidates, direction=direction, batch_size=2)
    assert model.training and got.shape == (5, 3) and got.dtype == torch.float32
    for n in range(5):  # the reference: every image against every text, then pick row n's candidates
        want = filip_scores(model, images[n: n + 1], candidates[n], direction=direction)[0]
        torch.testing.assert_close(got[n], want)
    uint8 = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8, generator=g)
    assert filip_candidate_scores(model, uint8, candidates).shape == (5, 3)


def test_candidate_scores_bad_inputs():
    model, images, texts = _model(), torch.zeros(2, 3, 16, 16), _texts()
    candidates = torch.stack([texts[:2], texts[1:]])
    with pytest.raises(ValueError, match="candidates"):
        filip_candidate_scores(model, images, candidates[:1])
    with pytest.raises(ValueError, match="candidates"):
        filip_candidate_scores(model, images, texts[:2])
    with pytest.raises(TypeError, match="candidates"):
        filip_candidate_scores(model, images, candidates.float())
    with pytest.raises(ValueError, match="direction"):
        filip_candidate_scores(model, images, candidates, direction="both")
    with pytest.raises(ValueError, match="batch_size"):
        filip_candidate_scores(model, images, candidates, batch_size=0)
