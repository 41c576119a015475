"""Tests of clip_tutorial.generate.diffusion: schedule, forward noising, loss, samplers, guidance."""
from __future__ import annotations

import math

import pytest
import torch

from clip_tutorial.generate.diffusion import (NoiseSchedule, ddim_sample, ddpm_sample, diffusion_loss, guided_eps,
                                              make_schedule, q_sample, sampling_timesteps, split_prediction)


def oracle_for_point(schedule: NoiseSchedule, x0: torch.Tensor, parameterization: str = "eps"):
    """The exact denoiser when the data are the single point ``x0``: eps = (x_t - sqrt(ab) x0) / sqrt(1 - ab)."""
    def model(x, t, cond=None, uncond=None):
        if parameterization == "x0":
            return x0.expand_as(x).clone()
        ab = schedule.alpha_bar[t].to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        return eps if parameterization == "eps" else ab.sqrt() * eps - (1 - ab).sqrt() * x0
    return model


def oracle_for_gaussian(schedule: NoiseSchedule, mu: float, s: float):
    """E[eps | x_t] for data N(mu, s^2) per coordinate: sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab)."""
    def model(x, t, cond=None, uncond=None):
        ab = schedule.alpha_bar[t].view(-1, *([1] * (x.ndim - 1)))
        return ((1 - ab).sqrt() * (x.double() - ab.sqrt() * mu) / (ab * s ** 2 + 1 - ab)).to(x.dtype)
    return model


# ---------------------------------------------------------------- schedule
@pytest.mark.parametrize("T", [10, 1000])
def test_cosine_alpha_bar_matches_the_closed_form(T):
    schedule = make_schedule("cosine", T)
    f = [math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(T + 1)]
    betas = [1 - f[t + 1] / f[t] for t in range(T)]
    for t in range(T):
        if max(betas[: t + 1]) < 0.999:  # before any clipping, alpha_bar is f(t + 1) / f(0) exactly
            assert schedule.alpha_bar[t].item() == pytest.approx(f[t + 1] / f[0], rel=1e-12, abs=1e-15)
    assert schedule.betas.max().item() <= 0.999
    assert torch.all(schedule.alpha_bar[1:] < schedule.alpha_bar[:-1])
    assert schedule.T == T and schedule.alpha_bar[-1].item() < 1e-3  # the end is (almost) pure noise


def test_linear_schedule_is_ho_et_al():
    schedule = make_schedule("linear", 1000)
    assert schedule.betas[0].item() == pytest.approx(1e-4) and schedule.betas[-1].item() == pytest.approx(0.02)
    expected = 1.0
    for t in (0, 1, 499, 999):
        expected = math.prod(1 - (1e-4 + (0.02 - 1e-4) * s / 999) for s in range(t + 1))
        assert schedule.alpha_bar[t].item() == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------- q_sample
def test_q_sample_mean_and_variance():
    schedule = make_schedule("cosine", 1000)
    n, t_value = 200_000, 400
    x0 = torch.full((n, 2), 1.5)
    x0[:, 1] = -0.5
    t = torch.full((n,), t_value)
    xt = q_sample(schedule, x0, t, generator=torch.Generator().manual_seed(0))
    ab = schedule.alpha_bar[t_value].item()
    # standard errors: sqrt((1 - ab) / n) ~ 0.002 for the mean, (1 - ab) sqrt(2 / n) ~ 0.003 for the variance
    assert xt.mean(0).tolist() == pytest.approx([1.5 * math.sqrt(ab), -0.5 * math.sqrt(ab)], abs=0.01)
    assert xt.var(0).tolist() == pytest.approx([1 - ab, 1 - ab], abs=0.015)


def test_q_sample_with_given_noise_is_the_formula():
    schedule = make_schedule("linear", 100)
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(4, 3, 5, 5, generator=g), torch.randn(4, 3, 5, 5, generator=g)
    t = torch.tensor([0, 5, 50, 99])
    xt = q_sample(schedule, x0, t, noise)
    for i in range(4):
        ab = schedule.alpha_bar[t[i]].item()
        torch.testing.assert_close(xt[i], math.sqrt(ab) * x0[i] + math.sqrt(1 - ab) * noise[i])


def test_split_prediction_round_trip():
    schedule = make_schedule("cosine", 50)
    g = torch.Generator().manual_seed(2)
    x0, eps, t = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g), torch.tensor([0, 20, 49])
    xt = q_sample(schedule, x0, t, eps)
    ab = schedule.alpha_bar[t].float().view(-1, 1)
    for param, out in (("eps", eps), ("x0", x0), ("v", ab.sqrt() * eps - (1 - ab).sqrt() * x0)):
        got_x0, got_eps = split_prediction(schedule, xt, t, out, param)
        torch.testing.assert_close(got_x0, x0, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got_eps, eps, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- loss
@pytest.mark.parametrize("param", ["eps", "x0", "v"])
def test_loss_of_the_oracle_is_zero_and_of_zero_is_the_noise_power(param):
    schedule = make_schedule("cosine", 1000)
    x0 = torch.randn(256, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    loss = diffusion_loss(oracle_for_point(schedule, x0, param), schedule, x0, parameterization=param,
                          generator=torch.Generator().manual_seed(4))
    assert loss.item() < 1e-12
    zero = diffusion_loss(lambda x, t, c, uncond=None: torch.zeros_like(x), schedule, x0,
                          generator=torch.Generator().manual_seed(4))
    assert zero.item() == pytest.approx(1.0, abs=0.1)  # E[eps^2] = 1 over 1024 draws


def test_loss_drops_the_condition_at_the_given_rate():
    schedule, seen = make_schedule("cosine", 100), []

    def model(x, t, cond, uncond=None):
        seen.append((cond, uncond, t))
        return torch.zeros_like(x)
    x0, cond = torch.zeros(4000, 2), torch.ones(4000, 3)
    for p in (0.0, 0.25, 1.0):
        diffusion_loss(model, schedule, x0, cond, p_uncond=p, generator=torch.Generator().manual_seed(5))
        got, uncond, t = seen[-1]
        assert got is cond and uncond.dtype == torch.bool and uncond.shape == (4000,)
        assert uncond.float().mean().item() == pytest.approx(p, abs=0.03)  # binomial sd 0.007
        assert 0 <= t.min() and t.max() < 100
    diffusion_loss(model, schedule, x0, None)
    assert seen[-1][1] is None


# ---------------------------------------------------------------- samplers
@pytest.mark.parametrize("steps,param", [(1, "eps"), (7, "eps"), (50, "eps"), (10, "x0"), (10, "v")])
def test_ddim_with_the_true_epsilon_recovers_x0_exactly(steps, param):
    schedule = make_schedule("cosine", 1000)
    x0 = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    start = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    out = ddim_sample(oracle_for_point(schedule, x0, param), schedule, start, steps=steps, parameterization=param,
                      progress=False)
    torch.testing.assert_close(out, x0, atol=1e-9, rtol=0)


def test_ddim_maps_noise_to_the_gaussian_linearly():
    # for data N(mu, s^2) the probability-flow map is x0 = mu + s * x_T; DDIM with many steps follows it
    schedule, mu, s = make_schedule("cosine", 1000), 0.7, 0.3
    start = torch.randn(1000, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    out = ddim_sample(oracle_for_gaussian(schedule, mu, s), schedule, start, steps=1000, progress=False)
    torch.testing.assert_close(out, mu + s * start, atol=0.01, rtol=0)


def test_ddpm_samples_the_gaussian():
    schedule, mu, s = make_schedule("cosine", 200), -0.4, 0.5
    out = ddpm_sample(oracle_for_gaussian(schedule, mu, s), schedule, (20_000, 1),
                      generator=torch.Generator().manual_seed(9), progress=False)
    assert out.mean().item() == pytest.approx(mu, abs=0.02)  # standard error 0.0035
    assert out.std().item() == pytest.approx(s, abs=0.02)


def test_ddpm_step_is_ho_et_al_and_equals_ddim_with_eta_one():
    T = 6
    schedule = make_schedule("linear", T, beta_start=0.05, beta_end=0.4)
    model = oracle_for_gaussian(schedule, 0.2, 0.8)
    start = torch.randn(3, 4, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    got = ddpm_sample(model, schedule, start, generator=torch.Generator().manual_seed(11), progress=False)
    # by hand: x_{t-1} = (x_t - beta_t / sqrt(1 - ab_t) eps) / sqrt(alpha_t) + sigma_t z, sigma_t^2 = beta-tilde
    g, x = torch.Generator().manual_seed(11), start.clone()
    for t in reversed(range(T)):
        beta, ab = schedule.betas[t].item(), schedule.alpha_bar[t].item()
        eps = model(x, torch.full((3,), t))
        x = (x - beta / math.sqrt(1 - ab) * eps) / math.sqrt(1 - beta)
        if t > 0:
            x = x + math.sqrt(beta * (1 - schedule.alpha_bar[t - 1].item()) / (1 - ab)) * torch.randn(
                x.shape, generator=g).double()
    torch.testing.assert_close(got, x, atol=1e-10, rtol=0)
    eta1 = ddim_sample(model, schedule, start, steps=T, eta=1.0, generator=torch.Generator().manual_seed(11),
                       progress=False)
    torch.testing.assert_close(eta1, got, atol=1e-10, rtol=0)


def test_sampling_timesteps():
    schedule = make_schedule("cosine", 1000)
    path = sampling_timesteps(schedule, 50)
    assert path[0] == 999 and path[-1] == 0 and len(path) == 50
    assert torch.all(path[1:] < path[:-1])
    assert sampling_timesteps(schedule, 1000).tolist() == list(range(999, -1, -1))
    assert sampling_timesteps(schedule, 1).tolist() == [999]


def test_sampler_is_seeded_and_restores_training_mode():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear, self.modes = torch.nn.Linear(3, 3), []

        def forward(self, x, t, cond=None, uncond=None):
            self.modes.append(self.training)
            return self.linear(x)
    schedule, net = make_schedule("cosine", 20), Net()
    net.train()
    out = ddim_sample(net, schedule, (2, 3), steps=4, generator=torch.Generator().manual_seed(0), progress=False)
    again = ddim_sample(net, schedule, (2, 3), steps=4, generator=torch.Generator().manual_seed(0), progress=False)
    assert out.shape == (2, 3) and torch.equal(out, again)
    assert net.modes == [False] * 8 and net.training


# ---------------------------------------------------------------- guidance
def two_headed():
    calls = []

    def model(x, t, cond, uncond=None):
        calls.append(None if uncond is None else bool(uncond.all()))
        drop = torch.zeros(x.shape[0], dtype=torch.bool) if uncond is None else uncond
        return torch.where(drop.view(-1, 1), torch.full_like(x, -1.0), cond)
    return model, calls


def test_guidance_zero_and_one_are_the_unconditional_and_conditional_predictions():
    schedule, (model, calls) = make_schedule("cosine", 100), two_headed()
    x, t, cond = torch.zeros(2, 3), torch.tensor([10, 90]), torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    torch.testing.assert_close(guided_eps(model, schedule, x, t, cond, 0.0), torch.full((2, 3), -1.0))
    assert calls == [True]
    torch.testing.assert_close(guided_eps(model, schedule, x, t, cond, 1.0), cond)
    assert calls[-1] is False
    w = 3.0
    torch.testing.assert_close(guided_eps(model, schedule, x, t, cond, w), -1.0 + w * (cond + 1.0))
    assert calls[-2:] == [True, False]


def test_guidance_without_condition_calls_once_unconditionally():
    schedule, calls = make_schedule("cosine", 10), []

    def model(x, t, cond, uncond=None):
        calls.append((cond, uncond))
        return torch.zeros_like(x)
    guided_eps(model, schedule, torch.zeros(2, 2), torch.tensor([1, 2]), None, 4.0)
    assert calls == [(None, None)]


# ---------------------------------------------------------------- bad input
def test_bad_input():
    schedule = make_schedule("cosine", 10)
    model = oracle_for_point(schedule, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="kind"):
        make_schedule("quadratic")
    with pytest.raises(ValueError, match="steps"):
        make_schedule("cosine", 1)
    with pytest.raises(ValueError, match="beta_end"):
        make_schedule("linear", 10, beta_start=0.1, beta_end=0.05)
    with pytest.raises(TypeError, match="schedule"):
        q_sample("cosine", torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"t: expected steps in \[0, 9\]"):
        q_sample(schedule, torch.zeros(2, 3), torch.tensor([0, 10]))
    with pytest.raises(TypeError, match="t:"):
        q_sample(schedule, torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="t:"):
        q_sample(schedule, torch.zeros(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="noise"):
        q_sample(schedule, torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(2, 4))
    with pytest.raises(TypeError, match="x0"):
        q_sample(schedule, torch.zeros(2, 3, dtype=torch.long), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="steps"):
        ddim_sample(model, schedule, (2, 3), steps=11, progress=False)
    with pytest.raises(ValueError, match="eta"):
        ddim_sample(model, schedule, (2, 3), eta=1.5, steps=2, progress=False)
    with pytest.raises(TypeError, match="shape"):
        ddim_sample(model, schedule, "2x3", steps=2, progress=False)
    with pytest.raises(ValueError, match="parameterization"):
        ddim_sample(model, schedule, (2, 3), steps=2, parameterization="velocity", progress=False)
    with pytest.raises(TypeError, match="model"):
        ddpm_sample("unet", schedule, (2, 3), progress=False)
    with pytest.raises(ValueError, match="model: expected an output of shape"):
        ddim_sample(lambda x, t, c, uncond=None: x[:, :1], schedule, (2, 3), steps=2, progress=False)
    with pytest.raises(TypeError, match="guidance"):
        guided_eps(model, schedule, torch.zeros(2, 3), torch.tensor([0, 1]), None, "high")
    with pytest.raises(ValueError, match="p_uncond"):
        diffusion_loss(model, schedule, torch.zeros(2, 3), torch.zeros(2, 1), p_uncond=1.5)


# ---------------------------------------------------------------- the decoder's training loop
def test_pixel_round_trip_and_training_loop():
    from clip_tutorial.generate.decoder import to_model_pixels, to_uint8, train_denoiser
    from clip_tutorial.generate.unet import UNet
    pixels = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = to_model_pixels(pixels)
    assert x.min() >= -1 and x.max() <= 1 and torch.equal(to_uint8(x), pixels)
    assert torch.equal(to_uint8(torch.tensor([-3.0, 3.0])), torch.tensor([0, 255], dtype=torch.uint8))
    torch.manual_seed(0)
    net, schedule = UNet("pooled", cond_dim=4, channels=8, groups=4, mults=(1, 2)), make_schedule("cosine", 100)
    cond = torch.randn(8, 4)
    history = train_denoiser(net, schedule, x, cond, steps=3, batch_size=4, progress=False)
    again = train_denoiser(UNet("pooled", cond_dim=4, channels=8, groups=4, mults=(1, 2)), schedule, x, cond,
                           steps=3, batch_size=4, progress=False)
    assert len(history["loss"]) == 3 and history["seconds"] > 0 and not net.training
    assert history["loss"][0] == pytest.approx(again["loss"][0])  # same seed, same first batch, zero output
    with pytest.raises(ValueError, match="cond: expected 8 rows"):
        train_denoiser(net, schedule, x, cond[:5], steps=1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match=r"batch_size: expected an int in \[1, 8\]"):
        train_denoiser(net, schedule, x, cond, steps=1, batch_size=9, progress=False)
    with pytest.raises(TypeError, match="images"):
        to_model_pixels(x)


def test_conditions_from_the_shipped_clip():
    from clip_tutorial.data import ShapesWorld
    from clip_tutorial.generate.decoder import image_conditions, text_token_conditions
    from clip_tutorial.train import load_or_train
    trained = load_or_train("ch1-demo", progress=False)
    data = ShapesWorld(5, split="all", seed=3)
    pooled = image_conditions(trained.model, data.images, batch_size=2)
    assert pooled.shape == (5, trained.model.config.embed_dim)
    torch.testing.assert_close(pooled.norm(dim=1), torch.ones(5))
    tokens, mask = text_token_conditions(trained.model, trained.tokenizer, ["a red circle", "a big blue square"])
    assert tokens.shape[:2] == mask.shape and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [4, 5]  # the words and the end-of-text token; no start token, no padding
    torch.testing.assert_close(tokens[mask].norm(dim=1), torch.ones(9))
    with pytest.raises(TypeError, match="model"):
        image_conditions(trained, data.images)
    with pytest.raises(TypeError, match="texts"):
        text_token_conditions(trained.model, trained.tokenizer, "a red circle")
