"""Solutions of the exercises of Chapter 7, one function per exercise, named after it.

Read one with ``clip_tutorial.exercises.show_solution("ch7.<name>")``. Explained in
Chapter 7. Lines stay within 88 columns: ``show_solution`` prints them on the page.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sigmoid_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                 t: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SigLIP's loss: every image-text pair of the batch is its own yes-or-no question.

    Normalise the features, so that their dot products are cosines; the logits are
    the temperature times the cosines, plus the bias. A pair's label is +1 when it
    matches (the diagonal) and -1 otherwise, and its loss is -log sigmoid(label *
    logit): small when the logit has the label's sign. Sum over all N^2 pairs and
    divide by the batch size N, as Zhai et al. (2023) do. No softmax couples the pairs.
    """
    img = F.normalize(image_features, dim=-1)
    txt = F.normalize(text_features, dim=-1)
    logits = t * img @ txt.T + b                       # (N, N)
    labels = 2 * torch.eye(len(logits)) - 1            # +1 on the diagonal, else -1
    return -F.logsigmoid(labels * logits).sum() / len(logits)


def initial_sigmoid_loss() -> float:
    """SigLIP's loss at t = 10, b = -10 on 1024 pairs of random unit features in 64-D.

    Two random unit vectors in D = 64 dimensions are nearly orthogonal: their cosine
    has mean 0 and variance 1 / D. So every logit 10 cos - 10 is close to -10.

    - Each row has one matching pair. Its term is -log sigmoid(10 cos - 10), which is
      softplus(10 - 10 cos): about softplus(10) = 10.00005, as the cosines average
      out over the rows.
    - Each row also has B - 1 = 1023 negative pairs. Their terms are
      softplus(10 cos - 10), about e^-10 e^(10 cos), since the logit is far below 0.
      For a Gaussian cosine of variance 1/64, the mean of e^(10 cos) is e^(100 / 128),
      about 2.2, so each negative costs about 1e-4.

    The sum over the rows divided by B is one row's loss: 10 + 1023 * 1e-4, about 10.1.
    """
    t, b, batch, dim = 10.0, -10.0, 1024, 64
    positive = math.log1p(math.exp(-b))                  # softplus(-b), at cos = 0
    negative = math.exp(b) * math.exp(t ** 2 / (2 * dim))  # softplus(z) ~ e^z, z << 0
    return positive + (batch - 1) * negative


def filip_similarity(image_tokens: torch.Tensor, text_tokens: torch.Tensor,
                     text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FILIP's late interaction: each token finds its best partner, then a mean.

    Compute every token-to-token similarity at once. Image to text: for each image
    token, the best of the text's real tokens (padding set to -inf, so that it never
    wins), averaged over the image's tokens. Text to image: for each text token, the
    best of the image's tokens, averaged over the text's real tokens only (padding
    multiplied by 0, and the sum divided by the number of real tokens).
    """
    sim = torch.einsum("ipd,jld->ijpl", image_tokens, text_tokens)  # (I, J, P, L)
    real = text_mask[None, :, None, :]                 # broadcast over images, patches
    image_to_text = sim.masked_fill(~real, float("-inf")).amax(dim=3).mean(dim=2)
    best_image = sim.amax(dim=2)                       # (N_img, N_txt, L)
    text_to_image = (best_image * text_mask).sum(dim=2) / text_mask.sum(dim=1)
    return image_to_text, text_to_image


def padded_mean() -> str:
    """The diagnosis of a text-to-image mean that zeroes the padding, then averages.

    A zero token adds nothing to the sum, but the mean still divides by L, so a prompt
    with n real tokens scores n / L of its true similarity: not (a). Is that factor a
    loss or a gain? Each real token's term is its best match, a max over the image's
    tokens, so it is positive unless every image token points away from it. Averaging
    in zeros lowers the score, and lowers it most for the short prompts, which rules
    out (c). So images drift to the longest prompts: (b). All the scores of one prompt
    shrink by the same factor, so that prompt still ranks the images in the same
    order; the bug shows where prompts are compared, as in classification.
    """
    return "b"


def guidance_step(x_t: torch.Tensor, eps_cond: torch.Tensor, eps_uncond: torch.Tensor,
                  w: float, alpha_bar_t: float, alpha_bar_prev: float) -> torch.Tensor:
    """One DDIM step (eta = 0) with classifier-free guidance.

    Guide the noise: start from the unconditional prediction and go w times the way
    to the conditional one (w = 0 ignores the prompt, w = 1 is the plain conditional
    model). Read off the clean sample that this noise implies, from
    x_t = sqrt(a) x0 + sqrt(1 - a) eps. Then put the same noise back at the next,
    lower noise level.
    """
    eps = eps_uncond + w * (eps_cond - eps_uncond)
    x0 = (x_t - math.sqrt(1 - alpha_bar_t) * eps) / math.sqrt(alpha_bar_t)
    return math.sqrt(alpha_bar_prev) * x0 + math.sqrt(1 - alpha_bar_prev) * eps


def strong_guidance() -> str:
    """What guidance 3 does to samples of class B, N(1, 0.5^2), beside A, N(-1, 0.5^2).

    The noise prediction is minus a scaled score (the gradient of the log density),
    so guidance mixes scores: score_u + w (score_c - score_u), which is
    score_c + (w - 1) (score_c - score_u). By Bayes's rule, score_c - score_u is the
    gradient of log p(B | x), which points away from A. With w = 1 the exact denoiser
    samples B itself, mean 1 and spread 0.5, so guidance 3 does change something:
    not (a). It makes every sample also climb log p(B | x) twice over: a push towards
    where B is surest, not a random kick, so the samples do not spread out (not (c)).
    Roughly, they come from p(x | B) p(B | x)^2, which lies further from A and is
    narrower than p(x | B): (b).
    """
    return "b"
