"""Chapter 3.3's experiment helpers, and the loss floor of repeated captions against the loss itself."""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from clip_tutorial import TrainConfig
from clip_tutorial.apps.experiments import (ExperimentData, duplicate_loss_floor, expected_duplicate_floor,
                                       make_experiment_data, run_short, sweep)
from clip_tutorial.objectives.loss import caption_positives, clip_loss, multi_positive_clip_loss

WORDS = ["red circle", "blue square", "green star", "a photo of a red circle", "pink heart", "x"]


def ideal_logits(captions: list[str], scale: float) -> torch.Tensor:
    """The best model: each distinct caption gets its own orthogonal direction, each image sits on its caption's."""
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    vectors = F.one_hot(torch.tensor([ids[c] for c in captions]), len(ids)).double()
    return scale * vectors @ vectors.T


def brute_floor(captions: list[str]) -> float:
    counts = Counter(captions)
    return sum(math.log(counts[c]) for c in captions) / len(captions)


def test_floor_simple_cases():
    assert duplicate_loss_floor(["a", "b", "c"]) == 0.0
    assert math.isclose(duplicate_loss_floor(["a"] * 8), math.log(8), rel_tol=1e-12)
    assert math.isclose(duplicate_loss_floor(("a", "a", "b")), 2 * math.log(2) / 3, rel_tol=1e-12)


def test_ideal_model_approaches_the_floor_from_above():
    captions = ["a red circle"] * 5 + ["a blue square"] * 2 + ["a green star", "a pink heart"]
    floor = duplicate_loss_floor(captions)
    losses = [float(clip_loss(ideal_logits(captions, s))) for s in (1.0, 5.0, 20.0, 100.0)]
    assert all(a > b for a, b in zip(losses, losses[1:])), losses
    assert losses[0] > floor + 0.1
    assert abs(losses[-1] - floor) < 1e-9
    assert float(multi_positive_clip_loss(ideal_logits(captions, 100.0), caption_positives(captions))) < 1e-9


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=40), st.integers(0, 2**16), st.floats(0.5, 100.0))
def test_floor_is_a_lower_bound_and_is_reached(captions, seed, scale):
    floor = duplicate_loss_floor(captions)
    assert math.isclose(floor, brute_floor(captions), rel_tol=1e-9, abs_tol=1e-12)
    assert 0.0 <= floor <= math.log(len(captions)) + 1e-12
    # any model: arbitrary image features, text features equal for identical captions
    g = torch.Generator().manual_seed(seed)
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    texts = F.normalize(torch.randn(len(ids), 8, generator=g, dtype=torch.float64), dim=-1)
    texts = texts[[ids[c] for c in captions]]
    images = F.normalize(torch.randn(len(captions), 8, generator=g, dtype=torch.float64), dim=-1)
    assert float(clip_loss(scale * images @ texts.T)) >= floor - 1e-9
    # images on their caption's direction: the best model, at the floor once the scale is large
    assert float(clip_loss(scale * texts @ texts.T)) >= floor - 1e-9
    assert abs(float(clip_loss(ideal_logits(captions, 200.0))) - floor) < 1e-6


def hypergeometric_floor(captions: list[str], batch_size: int) -> float:
    """Exact expectation of the floor over batches drawn without replacement."""
    total = len(captions)
    expected = 0.0
    for m in Counter(captions).values():
        # given one copy in the batch, the other batch_size - 1 draws hold j more copies with hypergeometric odds
        denominator = math.comb(total - 1, batch_size - 1)
        inner = sum(math.comb(m - 1, j) * math.comb(total - m, batch_size - 1 - j) / denominator * math.log(1 + j)
                    for j in range(0, min(m - 1, batch_size - 1) + 1))
        expected += m / total * inner
    return expected


def test_expected_floor_matches_the_hypergeometric_expectation():
    captions = ["a"] * 30 + ["b"] * 12 + ["c"] * 5 + [f"unique {i}" for i in range(33)]
    for batch_size in (4, 16, 40):
        exact = hypergeometric_floor(captions, batch_size)
        estimate = expected_duplicate_floor(captions, batch_size, n_batches=3000, seed=1)
        assert abs(estimate - exact) < 0.02 + 0.02 * exact, (batch_size, estimate, exact)
    assert expected_duplicate_floor([f"{i}" for i in range(50)], 20, n_batches=5) == 0.0
    assert math.isclose(expected_duplicate_floor(["same"] * 50, 20, n_batches=5), math.log(20))


def test_floor_errors():
    with pytest.raises(TypeError, match="captions"):
        duplicate_loss_floor("a red circle")
    with pytest.raises(TypeError, match="captions"):
        expected_duplicate_floor("abc", 2)
    with pytest.raises(ValueError, match="batch_size"):
        expected_duplicate_floor(["a", "b"], 3)
    with pytest.raises(ValueError, match="n_batches"):
        expected_duplicate_floor(["a", "b"], 2, n_batches=0)


@pytest.fixture(scope="module")
def tiny_data() -> ExperimentData:
    return make_experiment_data(64, templates=["a photo of a {colour} {shape}"], seed=3)


def test_make_experiment_data(tiny_data):
    assert tiny_data.images.shape == (64, 3, 32, 32) and tiny_data.tokens.shape == (64, 12)
    assert all(c.startswith("a photo of a ") for c in tiny_data.captions)
    assert torch.equal(tiny_data.tokenizer(tiny_data.captions), tiny_data.tokens)
    assert len(tiny_data.heldout) == 16
    with pytest.raises(ValueError, match="n_train"):
        make_experiment_data(0)
    with pytest.raises(ValueError, match="recipe|name"):
        make_experiment_data(8, recipe="nope")


CONFIG = TrainConfig(steps=4, batch_size=8, lr=1e-2, warmup_steps=1)


def test_fixed_temperature_stays_fixed_and_learned_one_moves(tiny_data):
    fixed = run_short(tiny_data, CONFIG, fixed_temperature=0.5, n_eval=8)
    assert not fixed.model.logit_scale.requires_grad
    assert fixed.history.temperature == pytest.approx([0.5] * 4, rel=1e-6)
    learned = run_short(tiny_data, CONFIG, n_eval=8)
    assert learned.model.logit_scale.requires_grad
    assert abs(learned.history.temperature[-1] - 0.07) > 1e-4
    assert set(learned.metrics) == {"heldout_acc", "all_acc"}
    again = run_short(tiny_data, CONFIG, n_eval=8)
    assert again.history.loss == learned.history.loss, "one seed fixes the whole run"


def test_run_short_errors(tiny_data):
    with pytest.raises(TypeError, match="data"):
        run_short("data", CONFIG)
    with pytest.raises(TypeError, match="config"):
        run_short(tiny_data, {"steps": 3})
    for bad in (0.001, 2.0):
        with pytest.raises(ValueError, match="fixed_temperature"):
            run_short(tiny_data, CONFIG, fixed_temperature=bad)
    with pytest.raises(TypeError, match="fixed_temperature: expected a number"):
        run_short(tiny_data, CONFIG, fixed_temperature=True)
    with pytest.raises(ValueError, match="n_eval"):
        run_short(tiny_data, CONFIG, n_eval=0)


def test_sweep_rows(tiny_data):
    rows = sweep(tiny_data, [{"batch_size": 4}, {"batch_size": 8, "fixed_temperature": 1.0}], base=CONFIG, n_eval=8)
    assert [r["batch_size"] for r in rows] == [4, 8]
    assert rows[1]["fixed_temperature"] == 1.0 and rows[1]["final_temperature"] == pytest.approx(1.0)
    for row in rows:
        assert {"heldout_acc", "all_acc", "final_loss", "final_temperature", "seconds", "history", "model"} <= set(row)
        assert row["history"].steps == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="learning_rate"):
        sweep(tiny_data, [{"learning_rate": 1.0}], base=CONFIG)
    with pytest.raises(TypeError, match="settings"):
        sweep(tiny_data, {"batch_size": 4}, base=CONFIG)
    with pytest.raises(TypeError, match="base"):
        sweep(tiny_data, [{}], base={"steps": 3})
