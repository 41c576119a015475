"""Tests of clip_tutorial.generate.unet: shapes, conditioning paths, the null condition, bad input."""
from __future__ import annotations

import math

import pytest
import torch

from clip_tutorial.generate.unet import UNet, timestep_embedding

D = 12


def make(mode: str, seed: int = 0, **kw) -> UNet:
    """A tiny UNet whose zero-initialised layers are randomised, so that every path shows in the output."""
    torch.manual_seed(seed)
    net = UNet(mode, cond_dim=D, channels=8, groups=4, heads=2, **kw)
    with torch.no_grad():
        for p in net.parameters():
            if not p.abs().sum():
                p.normal_(0, 0.3)
    return net.eval()


def inputs(batch: int = 3, size: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=g), torch.randint(0, 1000, (batch,), generator=g)


def tokens(batch: int = 3, length: int = 5, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[:, 3:] = False  # the last two positions are padding
    return torch.randn(batch, length, D, generator=g), mask


def test_timestep_embedding_reference():
    emb = timestep_embedding(torch.tensor([0, 7]), 6)
    assert emb.shape == (2, 6)
    torch.testing.assert_close(emb[0], torch.tensor([1.0, 1, 1, 0, 0, 0]))
    freqs = [10_000 ** (-k / 3) for k in range(3)]
    expected = [math.cos(7 * f) for f in freqs] + [math.sin(7 * f) for f in freqs]
    torch.testing.assert_close(emb[1], torch.tensor(expected))


@pytest.mark.parametrize("mode", ["pooled", "tokens", "none"])
@pytest.mark.parametrize("size", [16, 32])
def test_shapes(mode, size):
    net = make(mode)
    x, t = inputs(size=size)
    cond = {"pooled": torch.randn(3, D), "tokens": tokens(), "none": None}[mode]
    out = net(x, t, cond)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_a_fresh_unet_predicts_zero_and_has_a_stated_size():
    net = UNet("pooled", cond_dim=64, channels=16)
    x, t = inputs()
    assert torch.equal(net(x, t, torch.randn(3, 64)), torch.zeros_like(x))  # zero-initialised output layer
    assert 100_000 < net.num_parameters() < 250_000
    assert UNet("tokens", cond_dim=64, channels=16).num_parameters() > net.num_parameters()  # the attention


def test_pooled_output_depends_on_the_condition_and_the_step():
    net = make("pooled")
    x, t = inputs()
    c = torch.randn(3, D)
    base = net(x, t, c)
    assert not torch.allclose(base, net(x, t, c + 0.5))
    assert not torch.allclose(base, net(x, (t + 100) % 1000, c))
    changed = c.clone()
    changed[1] += 1.0
    out = net(x, t, changed)  # rows are independent: only row 1 moves
    assert torch.equal(out[0], base[0]) and torch.equal(out[2], base[2]) and not torch.allclose(out[1], base[1])


def test_pooled_dropped_condition_is_the_unconditional_path():
    net = make("pooled")
    x, t = inputs()
    c = torch.randn(3, D)
    uncond = net(x, t, None)
    dropped = net(x, t, c, uncond=torch.tensor([True, False, True]))
    torch.testing.assert_close(dropped[[0, 2]], uncond[[0, 2]])
    torch.testing.assert_close(dropped[1], net(x, t, c)[1])
    torch.testing.assert_close(net(x, t, c * 7, uncond=torch.ones(3, dtype=torch.bool)), uncond)


def test_tokens_masked_tokens_do_not_matter_and_visible_ones_do():
    net = make("tokens")
    x, t = inputs()
    tok, mask = tokens()
    base = net(x, t, (tok, mask))
    padded = tok.clone()
    padded[:, 3:] = torch.randn(3, 2, D) * 10
    torch.testing.assert_close(net(x, t, (padded, mask)), base, atol=1e-5, rtol=1e-5)
    visible = tok.clone()
    visible[:, 1] += 1.0
    assert not torch.allclose(net(x, t, (visible, mask)), base)
    swapped = tok[:, [1, 0, 2, 3, 4]]  # cross-attention has no positions: the order of tokens does not matter
    torch.testing.assert_close(net(x, t, (swapped, mask)), base, atol=1e-5, rtol=1e-5)


def test_tokens_dropped_condition_is_the_unconditional_path():
    net = make("tokens")
    x, t = inputs()
    tok, mask = tokens()
    uncond = net(x, t, None)
    torch.testing.assert_close(net(x, t, (tok, mask), uncond=torch.ones(3, dtype=torch.bool)), uncond,
                               atol=1e-5, rtol=1e-5)
    empty = torch.zeros(3, 5, dtype=torch.bool)  # every token masked: only the null token is left
    torch.testing.assert_close(net(x, t, (tok, empty)), uncond, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(net(x, t, (tok, mask)), uncond)


def test_gradients_reach_every_parameter():
    net = make("tokens").train()
    x, t = inputs()
    net(x, t, tokens(), uncond=torch.tensor([True, False, False])).pow(2).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert missing == []


def test_bad_input():
    with pytest.raises(ValueError, match="cond_mode"):
        UNet("text")
    with pytest.raises(ValueError, match="groups"):
        UNet(channels=12, groups=8)
    with pytest.raises(ValueError, match="channels"):
        UNet(channels=7, groups=7)
    with pytest.raises(ValueError, match="attention_levels"):
        UNet("tokens", attention_levels=(3,))
    pooled, tokened, plain = make("pooled"), make("tokens"), make("none")
    x, t = inputs()
    with pytest.raises(ValueError, match="cond"):
        pooled(x, t, torch.randn(3, D + 1))
    with pytest.raises(TypeError, match="cond"):
        pooled(x, t, torch.ones(3, D, dtype=torch.long))
    with pytest.raises(TypeError, match="cond: expected a pair"):
        tokened(x, t, torch.randn(3, 5, D))
    with pytest.raises(TypeError, match="cond mask"):
        tokened(x, t, (torch.randn(3, 5, D), torch.ones(3, 5)))
    with pytest.raises(ValueError, match="cond mask"):
        tokened(x, t, (torch.randn(3, 5, D), torch.ones(3, 4, dtype=torch.bool)))
    with pytest.raises(ValueError, match="cond: expected None"):
        plain(x, t, torch.randn(3, D))
    with pytest.raises(ValueError, match="divisible by 4"):
        pooled(torch.randn(3, 3, 18, 18), t, None)
    with pytest.raises(ValueError, match="x:"):
        pooled(torch.randn(3, 1, 16, 16), t, None)
    with pytest.raises(TypeError, match="t:"):
        pooled(x, t.float(), None)
    with pytest.raises(ValueError, match="uncond"):
        pooled(x, t, torch.randn(3, D), uncond=torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="dim"):
        timestep_embedding(t, 5)
