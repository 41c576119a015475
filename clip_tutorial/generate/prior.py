"""The modality gap, and DALL·E 2's prior: from a CLIP text embedding to a CLIP image embedding.

Explained in Chapter 7.5. A decoder that draws a picture from a CLIP *image* embedding cannot simply
be handed a *text* embedding: after contrastive training the two modalities occupy different
regions of the unit sphere (the "modality gap" of Liang et al., 2022), so a caption's embedding is
not where the embeddings of its pictures lie. :func:`modality_gap` measures the distance between the
two centroids; :func:`text_as_image_retrieval` measures what that costs when a text embedding is
used in place of an image embedding. DALL·E 2 bridges the gap with a *prior* that predicts the image
embedding from the text embedding; :class:`MLPPrior` is its deterministic miniature, a regression
network trained on (caption, image) pairs; :class:`DiffusionPrior` is a miniature of the diffusion
prior DALL·E 2 used, which samples an image embedding given the text embedding.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from clip_tutorial.core.checks import check_choice, check_int, check_number, check_positive_int, check_tensor
from clip_tutorial.generate.diffusion import NoiseSchedule, ddim_sample, diffusion_loss, make_schedule
from clip_tutorial.generate.unet import timestep_embedding
from clip_tutorial.train.fit import fit_minibatches

__all__ = ["modality_gap", "mean_cosine", "nearest_neighbour_accuracy", "text_as_image_retrieval", "MLPPrior",
           "train_prior", "DiffusionPrior", "train_diffusion_prior"]

LOSSES = ("cosine", "mse")


def _embeddings(name: str, value: object, dim: int | None = None) -> torch.Tensor:
    shape = (None, dim) if dim is not None else (None, None)
    check_tensor(name, value, shape=shape, floating=True, nonempty=True,
                 what="float embeddings (N, D)" if dim is None else f"float embeddings (N, {dim})")
    if not torch.isfinite(value).all():
        raise ValueError(f"{name}: expected finite embeddings, got nan or inf")
    if (value.norm(dim=1) == 0).any():
        raise ValueError(f"{name}: expected nonzero embeddings (they are put on the unit sphere), got a zero row")
    return value.float()


def _paired(image_embeddings: object, text_embeddings: object) -> tuple[torch.Tensor, torch.Tensor]:
    images = _embeddings("image_embeddings", image_embeddings)
    texts = _embeddings("text_embeddings", text_embeddings, images.shape[1])
    return images, texts


def modality_gap(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> float:
    """Distance between the centroids of the two modalities on the unit sphere.

    Explained in Chapter 7.5, after Liang et al. (2022): every embedding is L2-normalised, each
    modality is averaged, and the gap is the Euclidean norm of the difference of the two means.
    It is 0 when both clouds share a centroid and at most 2 (antipodal points). The two sets need
    the same width but not the same size, nor to be paired.

    Raises:
        TypeError: if an argument is not a float tensor.
        ValueError: for a wrong shape, mismatched widths, no rows, a zero row or non-finite values.
    """
    images, texts = _paired(image_embeddings, text_embeddings)
    return (F.normalize(images, dim=1).mean(dim=0) - F.normalize(texts, dim=1).mean(dim=0)).norm().item()


def mean_cosine(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """Mean cosine similarity between row ``i`` of ``predicted`` and row ``i`` of ``target`` (Chapter 7.5).

    Raises:
        ValueError: if the shapes differ, as well as for the reasons of :func:`modality_gap`.
    """
    predicted = _embeddings("predicted", predicted)
    target = _embeddings("target", target, predicted.shape[1])
    if target.shape != predicted.shape:
        raise ValueError(f"target: expected one row per predicted row {tuple(predicted.shape)}, "
                         f"got {tuple(target.shape)}")
    return F.cosine_similarity(predicted, target, dim=1).mean().item()


def _labels(name: str, value: object, n: int) -> torch.Tensor:
    return check_tensor(name, value, shape=(n,), dtype=torch.long, what=f"a LongTensor of {n} labels")


def nearest_neighbour_accuracy(queries: torch.Tensor, query_labels: torch.Tensor, gallery: torch.Tensor,
                               gallery_labels: torch.Tensor) -> float:
    """Fraction of queries whose most cosine-similar gallery row carries the query's label.

    Explained in Chapter 7.5: with image embeddings as the gallery and (colour, shape) classes as
    labels, it says whether a query embedding lands among pictures of the right thing.

    Raises:
        TypeError: for non-tensors, non-float embeddings or non-long labels.
        ValueError: for mismatched shapes, as well as for the reasons of :func:`modality_gap`.
    """
    gallery = _embeddings("gallery", gallery)
    queries = _embeddings("queries", queries, gallery.shape[1])
    query_labels = _labels("query_labels", query_labels, len(queries))
    gallery_labels = _labels("gallery_labels", gallery_labels, len(gallery))
    nearest = (F.normalize(queries, dim=1) @ F.normalize(gallery, dim=1).T).argmax(dim=1)
    return (gallery_labels[nearest] == query_labels).float().mean().item()


def text_as_image_retrieval(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, labels: torch.Tensor,
                            gallery: torch.Tensor, gallery_labels: torch.Tensor) -> dict[str, float]:
    """Nearest-neighbour accuracy in an image gallery, querying with the image or with its caption.

    Explained in Chapter 7.5. Row ``i`` of ``image_embeddings`` and of ``text_embeddings`` embed one
    picture and its caption, whose class is ``labels[i]``; ``gallery`` holds the embeddings of other
    pictures (not these, so that an image query cannot find itself), of classes ``gallery_labels``.
    Returns ``{"image": ..., "text": ...}``: how often the nearest gallery picture has the right class
    when the true image embedding is the query, and when the caption's embedding stands in for it.

    Raises:
        ValueError: for mismatched shapes, as well as for the reasons of :func:`nearest_neighbour_accuracy`.
    """
    images, texts = _paired(image_embeddings, text_embeddings)
    if len(texts) != len(images):
        raise ValueError(f"text_embeddings: expected one caption per image ({len(images)}), got {len(texts)}")
    return {"image": nearest_neighbour_accuracy(images, labels, gallery, gallery_labels),
            "text": nearest_neighbour_accuracy(texts, labels, gallery, gallery_labels)}


class MLPPrior(nn.Module):
    """A deterministic prior: a text embedding in, a predicted image embedding out (Chapter 7.5).

    ``linear(x) + mlp(x)`` of the L2-normalised input: a linear map, which alone can rotate and
    shift one cloud onto the other, plus a residual MLP (``depth`` hidden layers of ``hidden``
    units, GELU, last layer started at zero) for what is not linear. :meth:`forward` returns the raw
    output; :meth:`predict` puts it on the unit sphere, where CLIP's image embeddings live.

    Raises:
        TypeError, ValueError: if an argument is not a positive int.
    """

    def __init__(self, dim: int, hidden: int = 256, depth: int = 2) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        hidden, depth = check_positive_int("hidden", hidden), check_positive_int("depth", depth)
        self.linear = nn.Linear(dim, dim)
        sizes = [dim] + [hidden] * depth
        layers: list[nn.Module] = []
        for cin, cout in zip(sizes, sizes[1:]):
            layers += [nn.Linear(cin, cout), nn.GELU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(hidden, dim))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Raw predictions ``(N, dim)`` for text embeddings ``(N, dim)`` (normalised here first)."""
        x = F.normalize(_embeddings("text_embeddings", text_embeddings, self.dim), dim=1)
        return self.linear(x) + self.mlp(x)

    @torch.no_grad()
    def predict(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Predicted image embeddings ``(N, dim)``, L2-normalised, computed in eval mode."""
        was_training = self.training
        self.eval()
        out = F.normalize(self(text_embeddings), dim=1)
        self.train(was_training)
        return out


def _check_training(texts: object, images: object, steps: object, batch_size: object, lr: object,
                    seed: object) -> tuple[torch.Tensor, torch.Tensor, int, int, float, int]:
    images, texts = _paired(images, texts)
    if len(texts) != len(images):
        raise ValueError(f"text_embeddings: expected one text per image ({len(images)}), got {len(texts)}")
    return (images, texts, check_positive_int("steps", steps), check_int("batch_size", batch_size, 1, len(images)),
            check_number("lr", lr, 0.0, low_open=True), check_int("seed", seed, 0))


def train_prior(text_embeddings: torch.Tensor, image_embeddings: torch.Tensor, steps: int = 1000,
                batch_size: int = 256, lr: float = 1e-3, loss: str = "cosine", hidden: int = 256, depth: int = 2,
                weight_decay: float = 0.01, seed: int = 0, progress: bool = True) -> tuple[MLPPrior, list[float]]:
    """Fit an :class:`MLPPrior` mapping ``text_embeddings[i]`` to ``image_embeddings[i]``.

    Explained in Chapter 7.5. Targets are L2-normalised. ``loss="cosine"`` minimises one minus the
    cosine between output and target (the direction is all that matters on the sphere);
    ``loss="mse"`` the squared distance of the raw output to the unit target (DALL·E 2's diffusion
    prior was also trained to predict the embedding itself with a mean squared error). AdamW with
    warm-up and cosine decay, batches of pairs drawn without replacement, in an order seeded by ``seed``
    (:func:`~clip_tutorial.train.fit.fit_minibatches`).
    Returns the prior in eval mode and the loss of every step.

    Raises:
        TypeError, ValueError: for embeddings of the wrong kind or shape, a different number of
            texts and images, or hyper-parameters out of range.
    """
    images, texts, steps, batch_size, lr, seed = _check_training(texts=text_embeddings, images=image_embeddings,
                                                                 steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    loss = check_choice("loss", loss, LOSSES)
    torch.manual_seed(seed)
    prior = MLPPrior(images.shape[1], hidden=hidden, depth=depth).train()
    targets = F.normalize(images, dim=1)

    def loss_of(index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        out = prior(texts[index])
        if loss == "cosine":
            return (1 - F.cosine_similarity(out, targets[index], dim=1)).mean()
        return (out - targets[index]).pow(2).sum(dim=1).mean()

    losses = fit_minibatches(prior, len(images), loss_of, steps=steps, batch_size=batch_size, lr=lr,
                             weight_decay=weight_decay, seed=seed, progress=progress, desc="training the prior")
    return prior.eval(), losses


class DiffusionPrior(nn.Module):
    """A miniature of DALL·E 2's diffusion prior: denoises an image embedding given a text embedding.

    Explained in Chapter 7.5. A denoiser for :mod:`clip_tutorial.generate.diffusion`
    (``model(x_t, t, cond, uncond=mask)``) that predicts the clean embedding (``"x0"``, as DALL·E 2's
    prior): an MLP on the noisy embedding, a sinusoidal embedding of ``t`` and the text embedding
    (zeroed where ``uncond`` is set, so that classifier-free guidance can be used). Embeddings are
    handled at the scale ``sqrt(dim)`` (unit-norm vectors times ``sqrt(dim)``: coordinates of about
    unit variance, like the noise). Build and train it with :func:`train_diffusion_prior`.
    """

    def __init__(self, dim: int, hidden: int = 512, depth: int = 3) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        hidden, depth = check_positive_int("hidden", hidden), check_positive_int("depth", depth)
        sizes = [3 * dim] + [hidden] * depth
        layers: list[nn.Module] = []
        for cin, cout in zip(sizes, sizes[1:]):
            layers += [nn.Linear(cin, cout), nn.GELU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, dim))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                uncond: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted clean embeddings (at scale ``sqrt(dim)``) for noisy ones ``(B, dim)`` at steps ``t``."""
        text = F.normalize(_embeddings("cond", cond, self.dim), dim=1) * math.sqrt(self.dim)
        if uncond is not None:
            text = text * (~uncond).to(text.dtype).unsqueeze(1)
        return self.net(torch.cat([x_t, timestep_embedding(t, self.dim), text], dim=1))

    @torch.no_grad()
    def predict(self, text_embeddings: torch.Tensor, schedule: NoiseSchedule, steps: int = 50, guidance: float = 1.0,
                seed: int = 0) -> torch.Tensor:
        """Sample one image embedding per text embedding with DDIM; returns them L2-normalised (Chapter 7.5)."""
        texts = _embeddings("text_embeddings", text_embeddings, self.dim)
        was_training = self.training
        self.eval()
        out = ddim_sample(self, schedule, (len(texts), self.dim), texts, steps=steps, guidance=guidance,
                          parameterization="x0", generator=torch.Generator().manual_seed(check_int("seed", seed, 0)),
                          progress=False)
        self.train(was_training)
        return F.normalize(out, dim=1)


def train_diffusion_prior(text_embeddings: torch.Tensor, image_embeddings: torch.Tensor, steps: int = 2000,
                          batch_size: int = 256, lr: float = 1e-3, hidden: int = 512, depth: int = 3,
                          diffusion_steps: int = 1000, p_uncond: float = 0.1, seed: int = 0,
                          progress: bool = True) -> tuple[DiffusionPrior, NoiseSchedule, list[float]]:
    """Train a :class:`DiffusionPrior` on (text, image) embedding pairs; returns it, its schedule and the losses.

    Explained in Chapter 7.5. The loss is :func:`~clip_tutorial.generate.diffusion.diffusion_loss`
    with ``parameterization="x0"`` on a cosine schedule of ``diffusion_steps`` steps; the targets are
    the L2-normalised image embeddings times ``sqrt(dim)``. AdamW with warm-up and cosine decay.

    Raises:
        TypeError, ValueError: as :func:`train_prior`.
    """
    images, texts, steps, batch_size, lr, seed = _check_training(texts=text_embeddings, images=image_embeddings,
                                                                 steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    schedule = make_schedule("cosine", diffusion_steps)
    torch.manual_seed(seed)
    prior = DiffusionPrior(images.shape[1], hidden=hidden, depth=depth).train()
    targets = F.normalize(images, dim=1) * math.sqrt(images.shape[1])

    def loss_of(index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return diffusion_loss(prior, schedule, targets[index], texts[index], p_uncond=p_uncond,
                              parameterization="x0", generator=generator)

    losses = fit_minibatches(prior, len(images), loss_of, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                             progress=progress, desc="training the diffusion prior")
    return prior.eval(), schedule, losses
