"""Denoising diffusion: a noise schedule, forward noising, the training loss, two samplers and guidance.

Explained in Chapter 7.5 (the decoder of DALL·E 2 in miniature: schedule, loss, DDIM and DDPM samplers)
and Chapter 7.6 (classifier-free guidance and the condition dropout that makes it possible).

Every function works on tensors of shape ``(B, ...)``: images ``(B, 3, H, W)`` for a decoder,
embeddings ``(B, D)`` for a diffusion prior. Timesteps are integers ``t`` in ``[0, T)``; the noisy
sample at step ``t`` is ``x_t = sqrt(alpha_bar[t]) * x0 + sqrt(1 - alpha_bar[t]) * eps`` with
``alpha_bar[t] = prod_{s <= t} (1 - beta[s])`` (Ho et al., 2020).

The denoiser is any callable ``model(x_t, t, cond, uncond=mask)`` that returns a tensor shaped like
``x_t``: the predicted noise (``parameterization="eps"``), the predicted clean sample (``"x0"``)
or the velocity (``"v"``), as discussed below. ``cond`` is passed through
untouched (a tensor, a tuple, ``None``); ``uncond`` is ``None`` or a boolean tensor ``(B,)`` that is
``True`` for the rows whose condition the model must ignore.

Three parameterizations are offered, because they are one affine map apart
(:func:`split_prediction`) and every sampler accepts each: ``"eps"`` (the default: the one in
which Ho et al. derived the simple loss and in which DDIM and guidance are written), ``"x0"``
(DALL·E 2's prior predicts the clean embedding) and ``"v"`` (Salimans & Ho, 2022). For a decoder
trained for only a few hundred steps, ``"x0"`` or ``"v"`` is the better choice: an
epsilon-model's error at high noise is multiplied by ``1 / sqrt(alpha_bar)`` in the clean image it
implies, and shows as colour casts and grain over the whole picture (Chapter 7.5 measures it).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from clip_tutorial.core.checks import check_callable, check_choice, check_int, check_number, check_tensor, check_type
from clip_tutorial.core.progress import progress_bar

__all__ = ["NoiseSchedule", "make_schedule", "q_sample", "split_prediction", "diffusion_loss", "guided_eps",
           "sampling_timesteps", "ddim_sample", "ddpm_sample", "SCHEDULES", "PARAMETERIZATIONS"]

SCHEDULES = ("cosine", "linear")
PARAMETERIZATIONS = ("eps", "x0", "v")
_MAX_BETA = 0.999  # Nichol & Dhariwal clip the cosine schedule's betas here to avoid a singular last step

Denoiser = Callable[..., torch.Tensor]


@dataclass(frozen=True, eq=False, repr=False)
class NoiseSchedule:
    """A discrete noise schedule: ``betas`` and ``alpha_bar`` (float64 tensors of length ``T``).

    Explained in Chapter 7.5. Build one with :func:`make_schedule`.
    """

    kind: str
    betas: torch.Tensor
    alpha_bar: torch.Tensor

    @property
    def T(self) -> int:  # noqa: N802 - the papers' name
        """The number of diffusion steps."""
        return int(self.betas.numel())

    def __repr__(self) -> str:
        return f"NoiseSchedule(kind={self.kind!r}, T={self.T}, alpha_bar[-1]={self.alpha_bar[-1].item():.3g})"

    def at(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``alpha_bar[t]`` shaped ``(B, 1, ..., 1)`` to broadcast against ``like`` (B, ...), in its dtype."""
        return self.alpha_bar.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def make_schedule(kind: str = "cosine", steps: int = 1000, *, s: float = 0.008, beta_start: float = 1e-4,
                  beta_end: float = 0.02) -> NoiseSchedule:
    """The cosine schedule of Nichol & Dhariwal (2021) or the linear one of Ho et al. (2020).

    Explained in Chapter 7.5. Cosine (the default): ``alpha_bar(t) = f(t) / f(0)`` with
    ``f(t) = cos^2(((t / T + s) / (1 + s)) * pi / 2)``, read at ``t = 1, ..., T`` for the steps
    ``0, ..., T - 1``; each ``beta = 1 - alpha_bar(t) / alpha_bar(t - 1)`` is clipped at 0.999. It
    destroys information more evenly than the linear schedule, which at 32 x 32 pixels leaves the
    last quarter of the steps as almost pure noise. Linear: ``beta`` rises evenly from
    ``beta_start`` to ``beta_end``.

    Raises:
        TypeError, ValueError: for an unknown ``kind``, a ``steps`` below 2 or out-of-range numbers.
    """
    check_choice("kind", kind, SCHEDULES)
    steps = check_int("steps", steps, 2)
    if kind == "cosine":
        s = check_number("s", s, 0.0, low_open=True)
        grid = torch.arange(steps + 1, dtype=torch.float64) / steps
        f = torch.cos((grid + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=_MAX_BETA)
    else:
        beta_start = check_number("beta_start", beta_start, 0.0, 1.0, low_open=True, high_open=True)
        beta_end = check_number("beta_end", beta_end, beta_start, 1.0, high_open=True)
        betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    return NoiseSchedule(kind, betas, torch.cumprod(1 - betas, 0))


def _check_schedule(schedule: object) -> NoiseSchedule:
    return check_type("schedule", schedule, NoiseSchedule, "a NoiseSchedule (see make_schedule)")


def _check_t(t: object, schedule: NoiseSchedule, batch: int) -> torch.Tensor:
    t = check_tensor("t", t, shape=(batch,), dtype=(torch.int64, torch.int32),
                     what=f"an integer tensor of shape ({batch},)")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= schedule.T):
        raise ValueError(f"t: expected steps in [0, {schedule.T - 1}], got min {int(t.min())}, max {int(t.max())}")
    return t.long()


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None, *,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Forward noising ``x_t = sqrt(alpha_bar[t]) x0 + sqrt(1 - alpha_bar[t]) noise`` (Ho et al., 2020).

    Explained in Chapter 7.5. ``x0`` is ``(B, ...)``, ``t`` an integer tensor ``(B,)``, ``noise``
    standard normal noise shaped like ``x0`` (drawn with ``generator`` when ``None``).
    """
    schedule = _check_schedule(schedule)
    x0 = check_tensor("x0", x0, floating=True, nonempty=True)
    if x0.ndim < 1:
        raise ValueError("x0: expected a tensor of shape (B, ...), got a scalar")
    t = _check_t(t, schedule, x0.shape[0])
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    check_tensor("noise", noise, shape=tuple(x0.shape), floating=True)
    ab = schedule.at(t, x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def split_prediction(schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, output: torch.Tensor,
                     parameterization: str = "eps") -> tuple[torch.Tensor, torch.Tensor]:
    """``(x0, eps)`` implied by a model ``output`` at ``(x_t, t)``, whichever of the two it predicts.

    Explained in Chapter 7.5: ``x_t = sqrt(ab) x0 + sqrt(1 - ab) eps`` links the two, so a model
    that predicts one predicts the other; ``"v"`` is the velocity ``sqrt(ab) eps - sqrt(1 - ab) x0``
    of Salimans & Ho (2022), from which ``x0 = sqrt(ab) x_t - sqrt(1 - ab) v``.
    """
    check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    ab = schedule.at(t, x_t)
    if parameterization == "eps":
        return (x_t - (1 - ab).sqrt() * output) / ab.sqrt(), output
    if parameterization == "v":  # v = sqrt(ab) eps - sqrt(1 - ab) x0 (Salimans & Ho, 2022)
        return ab.sqrt() * x_t - (1 - ab).sqrt() * output, (1 - ab).sqrt() * x_t + ab.sqrt() * output
    return output, (x_t - ab.sqrt() * output) / (1 - ab).sqrt()


def diffusion_loss(model: Denoiser, schedule: NoiseSchedule, x0: torch.Tensor, cond: Any = None, *,
                   p_uncond: float = 0.1, parameterization: str = "eps",
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """The simple diffusion loss: mean squared error between the model's output and its target.

    Explained in Chapter 7.5 (the loss) and 7.6 (the dropout). A step ``t`` is drawn uniformly per
    sample, ``x0`` is noised with :func:`q_sample`, and the target is the noise (``"eps"``, Ho et
    al.'s "simple" loss), ``x0`` itself (``"x0"``) or the velocity (``"v"``). With a condition, each row's condition is
    dropped with probability ``p_uncond`` (the ``uncond`` mask), so that one network learns both
    the conditional and the unconditional prediction that classifier-free guidance needs (Ho &
    Salimans, 2022).
    """
    check_callable("model", model)
    schedule = _check_schedule(schedule)
    x0 = check_tensor("x0", x0, floating=True, nonempty=True)
    p_uncond = check_number("p_uncond", p_uncond, 0.0, 1.0)
    check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    batch, device = x0.shape[0], x0.device
    t = torch.randint(0, schedule.T, (batch,), generator=generator).to(device)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(device)
    uncond = None if cond is None else (torch.rand(batch, generator=generator) < p_uncond).to(device)
    x_t = q_sample(schedule, x0, t, noise)
    output = model(x_t, t, cond, uncond=uncond)
    ab = schedule.at(t, x0)
    target = {"eps": noise, "x0": x0, "v": ab.sqrt() * noise - (1 - ab).sqrt() * x0}[parameterization]
    return torch.mean((output - target) ** 2)


def guided_eps(model: Denoiser, schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, cond: Any = None,
               guidance: float = 1.0, parameterization: str = "eps") -> torch.Tensor:
    """Classifier-free guidance: ``eps = eps_uncond + w * (eps_cond - eps_uncond)`` (Ho & Salimans, 2022).

    Explained in Chapter 7.6. ``w = guidance``: 0 gives the unconditional prediction, 1 the
    conditional one, more than 1 pushes the sample further towards its condition. Without a
    condition the model is called once, unconditionally. The model is called once when ``w`` is 0
    or 1, else twice (conditional and unconditional).
    """
    guidance = check_number("guidance", guidance)
    batch = x_t.shape[0]

    def eps(drop: bool) -> torch.Tensor:
        uncond = None if cond is None else torch.full((batch,), drop, dtype=torch.bool, device=x_t.device)
        out = model(x_t, t, cond, uncond=uncond)
        if out.shape != x_t.shape:
            raise ValueError(f"model: expected an output of shape {tuple(x_t.shape)}, got {tuple(out.shape)}")
        return split_prediction(schedule, x_t, t, out, parameterization)[1]

    if cond is None or guidance == 1.0:
        return eps(cond is None)
    uncond = eps(True)
    return uncond if guidance == 0.0 else uncond + guidance * (eps(False) - uncond)


def sampling_timesteps(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    """``steps`` timesteps from ``T - 1`` down to 0, evenly spaced (rounded): the sampler's path.

    Explained in Chapter 7.5: DDIM (Song et al., 2021) may skip steps; DDPM takes all ``T``.
    """
    steps = check_int("steps", steps, 1, schedule.T)
    if steps == 1:
        return torch.tensor([schedule.T - 1])
    return torch.linspace(schedule.T - 1, 0, steps, dtype=torch.float64).round().long()


def _start(schedule: object, shape: Sequence[int] | torch.Tensor, generator: torch.Generator | None,
           device: torch.device | str | None) -> tuple[NoiseSchedule, torch.Tensor]:
    schedule = _check_schedule(schedule)
    if isinstance(shape, torch.Tensor):
        return schedule, check_tensor("x_T", shape, floating=True, nonempty=True).clone()
    dims = [check_int(f"shape[{i}]", d, 1) for i, d in enumerate(check_type(
        "shape", shape, (tuple, list, torch.Size), "a shape (B, ...) or a starting tensor x_T"))]
    if not dims:
        raise ValueError("shape: expected a shape (B, ...) with at least one dimension, got ()")
    return schedule, torch.randn(dims, generator=generator).to(device or "cpu")


def _sample(model: Denoiser, schedule: NoiseSchedule, x: torch.Tensor, cond: Any, steps: int, guidance: float,
            eta: float, ancestral: bool, clip: float | None, parameterization: str, generator: torch.Generator | None,
            progress: bool, desc: str) -> torch.Tensor:
    check_callable("model", model)
    check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    eta = check_number("eta", eta, 0.0, 1.0)
    clip = None if clip is None else check_number("clip", clip, 0.0, low_open=True)
    path = sampling_timesteps(schedule, steps).tolist()
    alpha_bar = schedule.alpha_bar.tolist()
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    try:
        with torch.no_grad():
            for i in progress_bar(range(len(path)), enabled=progress, desc=desc, leave=False):
                ab, ab_prev = alpha_bar[path[i]], (alpha_bar[path[i + 1]] if i + 1 < len(path) else 1.0)
                t = torch.full((x.shape[0],), path[i], dtype=torch.long, device=x.device)
                eps = guided_eps(model, schedule, x, t, cond, guidance, parameterization)
                x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
                if clip is not None:  # keep the predicted clean sample in range, and the noise consistent with it
                    x0 = x0.clamp(-clip, clip)
                    eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
                if ancestral:  # Ho et al.'s posterior q(x_prev | x_t, x0), with the betas of the path taken
                    beta = 1 - ab / ab_prev
                    mean = (math.sqrt(ab_prev) * beta * x0 + math.sqrt(1 - beta) * (1 - ab_prev) * x) / (1 - ab)
                    sigma = math.sqrt(beta * (1 - ab_prev) / (1 - ab))
                    x = mean
                else:  # Song et al.'s DDIM update (eta = 0: deterministic)
                    sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
                    x = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma ** 2, 0.0)) * eps
                if sigma > 0:
                    x = x + sigma * torch.randn(x.shape, generator=generator).to(x)
    finally:
        if was_training:
            model.train()
    return x


def ddim_sample(model: Denoiser, schedule: NoiseSchedule, shape: Sequence[int] | torch.Tensor, cond: Any = None, *,
                steps: int = 50, guidance: float = 1.0, eta: float = 0.0, clip: float | None = None,
                parameterization: str = "eps", generator: torch.Generator | None = None,
                device: torch.device | str | None = None, progress: bool = True) -> torch.Tensor:
    """DDIM sampling (Song et al., 2021): deterministic for ``eta = 0``, in ``steps`` of the ``T``.

    Explained in Chapter 7.5 (the sampler) and 7.6 (``guidance``, see :func:`guided_eps`).

    Args:
        model: the denoiser, ``model(x_t, t, cond, uncond=mask)``; put in eval mode while sampling.
        schedule: the schedule it was trained with.
        shape: the shape ``(B, ...)`` to sample (start from noise drawn with ``generator``), or the
            starting tensor ``x_T`` itself (then the sampler draws no noise when ``eta = 0``).
        cond: the condition, passed to the model as is (``None``: unconditional).
        steps: the number of model evaluations (times two with guidance other than 0 or 1).
        guidance: the classifier-free guidance weight ``w``.
        eta: 0 for DDIM, 1 for a DDPM-like stochastic sampler on the same steps.
        clip: clamp each predicted clean sample to ``[-clip, clip]`` (1.0 for images in [-1, 1]).
        parameterization: what the model predicts, ``"eps"``, ``"x0"`` or ``"v"``.
        progress: show a progress bar.

    Returns:
        The samples, shaped like ``shape``.
    """
    schedule, x = _start(schedule, shape, generator, device)
    return _sample(model, schedule, x, cond, steps, guidance, eta, False, clip, parameterization, generator,
                   progress, "DDIM")


def ddpm_sample(model: Denoiser, schedule: NoiseSchedule, shape: Sequence[int] | torch.Tensor, cond: Any = None, *,
                steps: int | None = None, guidance: float = 1.0, clip: float | None = None,
                parameterization: str = "eps", generator: torch.Generator | None = None,
                device: torch.device | str | None = None, progress: bool = True) -> torch.Tensor:
    """Ancestral DDPM sampling (Ho et al., 2020): each step draws from the posterior ``q(x_prev | x_t, x0)``.

    Explained in Chapter 7.5. ``steps=None`` takes all ``T`` steps; fewer steps use the posterior
    of the shortened path (the betas ``1 - alpha_bar[t] / alpha_bar[prev]``), which equals DDIM with
    ``eta = 1``. Other arguments as in :func:`ddim_sample`.
    """
    schedule, x = _start(schedule, shape, generator, device)
    return _sample(model, schedule, x, cond, schedule.T if steps is None else steps, guidance, 1.0, True, clip,
                   parameterization, generator, progress, "DDPM")
