"""Tests of the modality gap and the regression prior (clip_tutorial.generate.prior), Chapter 7.5."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clip_tutorial.generate.diffusion import make_schedule
from clip_tutorial.generate.prior import (DiffusionPrior, MLPPrior, train_diffusion_prior, mean_cosine, modality_gap, nearest_neighbour_accuracy,
                                          text_as_image_retrieval, train_prior)


def test_gap_of_toy_vectors_by_hand():
    # images at (1, 0) and (0, 1): centroid (0.5, 0.5); texts at (-1, 0) and (0, 1): centroid (-0.5, 0.5)
    images = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # lengths do not matter: put on the sphere first
    texts = torch.tensor([[-1.0, 0.0], [0.0, 0.5]])
    assert modality_gap(images, texts) == pytest.approx(1.0)
    assert modality_gap(images, images * 7) == pytest.approx(0.0, abs=1e-7)
    # antipodal clouds: the largest gap, 2
    assert modality_gap(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, -4.0]])) == pytest.approx(2.0)
    # unpaired sets of different sizes: centroids (1, 0) and (0, 1/3 + 2/3 * 0)...
    texts3 = torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])  # centroid (0, 1/3)
    assert modality_gap(torch.tensor([[1.0, 0.0]]), texts3) == pytest.approx(math.sqrt(1 + 1 / 9))


def test_gap_is_invariant_to_rotating_both_clouds():
    g = torch.Generator().manual_seed(1)
    images, texts = torch.randn(50, 8, generator=g) + 1.0, torch.randn(40, 8, generator=g)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    assert modality_gap(images @ rotation, texts @ rotation) == pytest.approx(modality_gap(images, texts), abs=1e-5)


def test_nearest_neighbour_accuracy_against_brute_force():
    g = torch.Generator().manual_seed(2)
    gallery, queries = torch.randn(30, 5, generator=g), torch.randn(20, 5, generator=g)
    gallery_labels, query_labels = torch.randint(3, (30,), generator=g), torch.randint(3, (20,), generator=g)
    hits = 0
    for q, label in zip(queries, query_labels):
        cosines = [float(torch.dot(q, v) / (q.norm() * v.norm())) for v in gallery]
        hits += int(gallery_labels[max(range(30), key=cosines.__getitem__)] == label)
    assert nearest_neighbour_accuracy(queries, query_labels, gallery, gallery_labels) == pytest.approx(hits / 20)


def test_text_as_image_retrieval_with_a_shifted_text_cloud():
    # class c's images sit near axis c; captions are the images pushed along a common direction
    # (a modality gap), here towards class 0: a small push leaves retrieval intact; a large one sends
    # every caption to class 0's pictures, right only for the 10 captions of class 0 (a quarter)
    g = torch.Generator().manual_seed(3)
    labels = torch.arange(4).repeat(10)
    images = F.one_hot(labels, 6).float() + 0.05 * torch.randn(40, 6, generator=g)
    gallery_labels = torch.arange(4).repeat(5)
    gallery = F.one_hot(gallery_labels, 6).float() + 0.05 * torch.randn(20, 6, generator=g)
    push = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    near = text_as_image_retrieval(images, images + 0.2 * push, labels, gallery, gallery_labels)
    assert near == {"image": 1.0, "text": 1.0}
    far = text_as_image_retrieval(images, images + 5.0 * push, labels, gallery, gallery_labels)
    assert far == {"image": 1.0, "text": 0.25}


def test_mean_cosine_by_hand():
    predicted = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    target = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    assert mean_cosine(predicted, target) == pytest.approx((1.0 + 1 / math.sqrt(2)) / 2)


@pytest.mark.parametrize("loss", ["cosine", "mse"])
def test_prior_learns_a_known_linear_map(loss):
    # image = normalise(A @ text) for a fixed random A: a map the prior's linear part can represent
    g = torch.Generator().manual_seed(4)
    dim, a = 16, torch.randn(16, 16, generator=g)
    texts = torch.randn(2048, dim, generator=g)
    images = F.normalize(texts @ a.T, dim=1)
    prior, losses = train_prior(texts, images, steps=300, batch_size=128, lr=1e-2, loss=loss, hidden=32,
                                progress=False)
    fresh = torch.randn(500, dim, generator=g)
    truth = F.normalize(fresh @ a.T, dim=1)
    assert mean_cosine(fresh, truth) < 0.5  # the baseline "use the text as the image" is poor
    assert mean_cosine(prior.predict(fresh), truth) > 0.98
    assert len(losses) == 300 and losses[-1] < 0.1 * losses[0]
    predicted = prior.predict(fresh)
    assert torch.allclose(predicted.norm(dim=1), torch.ones(500), atol=1e-5) and not prior.training


def test_prior_training_is_deterministic_for_a_seed():
    g = torch.Generator().manual_seed(6)
    texts, images = torch.randn(64, 8, generator=g), torch.randn(64, 8, generator=g)
    a, _ = train_prior(texts, images, steps=5, batch_size=16, hidden=8, seed=2, progress=False)
    b, _ = train_prior(texts, images, steps=5, batch_size=16, hidden=8, seed=2, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_bad_input_is_refused():
    x = torch.randn(4, 3)
    with pytest.raises(TypeError, match="image_embeddings"):
        modality_gap([[1.0, 0.0]], x)
    with pytest.raises(TypeError, match="float"):
        modality_gap(torch.ones(2, 3, dtype=torch.long), x)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        modality_gap(x, torch.randn(4, 5))
    with pytest.raises(ValueError, match="zero row"):
        modality_gap(torch.zeros(2, 3), x)
    with pytest.raises(ValueError, match="finite"):
        modality_gap(x, torch.full((2, 3), float("nan")))
    with pytest.raises(ValueError, match="at least one"):
        modality_gap(torch.randn(0, 3), x)
    with pytest.raises(ValueError, match="target"):
        mean_cosine(x, torch.randn(5, 3))
    with pytest.raises(ValueError, match="query_labels"):
        nearest_neighbour_accuracy(x, torch.zeros(3, dtype=torch.long), x, torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="gallery_labels"):
        nearest_neighbour_accuracy(x, torch.zeros(4, dtype=torch.long), x, torch.zeros(4))
    with pytest.raises(ValueError, match="one caption per image"):
        text_as_image_retrieval(x, torch.randn(5, 3), torch.zeros(4, dtype=torch.long), x,
                                torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="one text per image"):
        train_prior(torch.randn(5, 3), x, progress=False)
    with pytest.raises(ValueError, match="loss"):
        train_prior(x, x, batch_size=2, loss="l1", progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        train_prior(x, x, batch_size=8, progress=False)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        MLPPrior(3)(torch.randn(2, 4))


def test_diffusion_prior_denoiser_contract():
    torch.manual_seed(0)
    prior = DiffusionPrior(8, hidden=16, depth=2)
    x_t, t = torch.randn(4, 8), torch.tensor([0, 5, 50, 99])
    cond_a, cond_b = torch.randn(4, 8), torch.randn(4, 8)
    assert prior(x_t, t, cond_a).shape == (4, 8)
    # rows marked unconditional ignore their text; the others do not
    mask = torch.tensor([True, True, False, False])
    a, b = prior(x_t, t, cond_a, uncond=mask), prior(x_t, t, cond_b, uncond=mask)
    assert torch.equal(a[:2], b[:2]) and not torch.allclose(a[2:], b[2:])
    schedule = make_schedule("cosine", 100)
    first, again = prior.predict(cond_a, schedule, steps=5, seed=3), prior.predict(cond_a, schedule, steps=5, seed=3)
    assert torch.equal(first, again) and torch.allclose(first.norm(dim=1), torch.ones(4), atol=1e-5)


def test_diffusion_prior_training_lowers_the_loss():
    g = torch.Generator().manual_seed(7)
    texts = torch.randn(512, 8, generator=g)
    images = F.normalize(texts @ torch.randn(8, 8, generator=g), dim=1)
    prior, schedule, losses = train_diffusion_prior(texts, images, steps=150, batch_size=64, lr=3e-3, hidden=64,
                                                    diffusion_steps=100, progress=False)
    assert schedule.T == 100 and len(losses) == 150 and not prior.training
    assert sum(losses[-20:]) / 20 < 0.7 * sum(losses[:20]) / 20
    with pytest.raises(ValueError, match="one text per image"):
        train_diffusion_prior(texts[:5], images, progress=False)
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        prior(torch.randn(2, 8), torch.tensor([1, 2]), torch.randn(2, 5))
