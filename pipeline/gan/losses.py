"""GAN losses as small pure functions: non-saturating logistic loss, R1 and path-length
regularisers (Karras et al. 2020), a curvature penalty that keeps coarse image content
linear in w, a mode-seeking penalty that keeps z (and so w) in control of the samples
(Mao et al. 2019), a spread penalty that makes w (not the noise) carry the tiles'
per-tile statistics, and the style-mixing ws used by the G loss."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from pipeline.features.soft import soft_nuclei_mask
from pipeline.gan.networks import mix_styles


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """softplus(D(G(z))) + softplus(−D(x)), each averaged over its batch."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """softplus(−D(G(z))), averaged."""
    return F.softplus(-fake_logits).mean()


def d_r1_penalty(real_images: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ‖∇ₓ D(x)‖² (R1, Mescheder et al. 2018): a scalar.

    ``real_images`` [N, C, H, W] must require grad and ``real_logits`` [N] be computed from
    it. The graph is kept (``create_graph``) so the penalty can be back-propagated into D.
    The caller scales by γ/2 and, for lazy regularisation, by the interval.
    """
    if not real_images.requires_grad:
        raise ValueError("real_images must require grad (call .requires_grad_() before D)")
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3)).mean()  # mean_i ‖∂D(x_i)/∂x_i‖²


def g_path_length_penalty(
    fake_images: torch.Tensor,  # [N, C, H, W] computed from ws
    ws: torch.Tensor,  # [N, num_ws, w_dim], part of the graph of fake_images
    mean_path_length: torch.Tensor,  # [] running mean a
    decay: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Path length regularisation: (penalty, new running mean, per-sample path lengths).

    Lengths ‖J_wᵀ y‖ with y ~ N(0, I)/√(H·W), J_w the Jacobian of the image w.r.t. ws
    (squared norm summed over w_dim, averaged over the num_ws layers); the penalty is
    mean (length − a)², with a the running mean updated by ``decay``.
    """
    h, w = fake_images.shape[2], fake_images.shape[3]
    noise = torch.randn_like(fake_images) / math.sqrt(h * w)  # [N, C, H, W]
    (grad,) = torch.autograd.grad((fake_images * noise).sum(), ws, create_graph=True)
    lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()  # [N]
    new_mean = mean_path_length + decay * (lengths.detach().mean() - mean_path_length)
    penalty = (lengths - new_mean).square().mean()
    return penalty, new_mean.detach(), lengths.detach()


def g_mode_seeking_penalty(
    images: torch.Tensor,
    z: torch.Tensor,
    size: int | None = None,
    hinge: float | None = None,
    value_range: tuple[float, float] | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Mode seeking (MSGAN, Mao et al. 2019): 1 / (mean |G(z₁) − G(z₂)| / mean |z₁ − z₂|).

    ``images`` [2M, C, H, W] are G's samples of the latents ``z`` [2M, z_dim]; the first
    half is paired with the second. The ratio falls toward 0 as G stops following its
    latent (the samples collapse onto one, or another input such as the noise takes over),
    and the penalty then grows as its inverse. With ``size`` the images are average-pooled
    to size × size first, so only coarser content (layout, density, stain) counts, not
    pixel-level texture, which G could otherwise vary to lower the penalty. With ``hinge``
    only the part above it counts (0 below): a collapse is stopped, healthy samples are not
    pushed further apart. With ``value_range`` the images are clamped to it first, so they
    are compared as shown: differences past white or black are invisible and earn nothing
    (G could otherwise meet the penalty by overexposing).
    """
    if value_range is not None:
        images = images.clamp(*value_range)
    if size is not None:
        images = F.adaptive_avg_pool2d(images, size)
    a, b = images.flatten(1).chunk(2)
    za, zb = z.flatten(1).chunk(2)
    if len(a) == 0 or len(a) != len(b):
        raise ValueError(f"need an even number >= 2 of images, got {len(images)}")
    ratio = (a - b).abs().mean() / (za - zb).abs().mean()
    penalty = 1.0 / (ratio + eps)
    return penalty if hinge is None else (penalty - hinge).relu()


def g_spread_penalty(
    fake_stats: torch.Tensor,  # [M, K] of samples that differ only in w (one shared noise draw)
    real_stats: torch.Tensor,  # [N, K] of real tiles
    low: float = 0.7,
    high: float = 1.3,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Mean over the K statistics of the squared log-ratio of the samples' SD to the reals'
    SD outside [``low``, ``high``] (0 inside): a scalar.

    Drawn at one shared noise draw, the samples differ only in w, so this asks w to carry
    the tiles' spread of each statistic, neither less (the noise or input shift carrying it,
    so that moving along W changes nothing: MSH2 in docs/results.md) nor more (the
    colour inflation by which G met the mode-seeking penalty). Scale-free, so
    every statistic counts alike whatever its units.
    """
    if len(fake_stats) < 2 or len(real_stats) < 2:
        raise ValueError("need at least 2 samples and 2 reals to take an SD")
    log_ratio = (fake_stats.std(dim=0) + eps).log() - (real_stats.std(dim=0) + eps).log()
    below = (math.log(low) - log_ratio).relu()
    above = (log_ratio - math.log(high)).relu()
    return (below.square() + above.square()).mean()


def g_curvature_penalty(
    synthesis: Callable[[torch.Tensor], torch.Tensor],  # ws [N, num_ws, w_dim] → images
    w: torch.Tensor,  # [N, w_dim]
    num_ws: int,
    eps: float = 0.5,
    size: int = 8,
    nuclei: float = 0.0,
    nuclei_size: int = 8,
    relative: bool = False,
) -> torch.Tensor:
    """Mean squared second difference of G along random directions in W (a scalar).

    For each w a direction v ~ N(0, diag SD(w)²) (SD over the batch, so the step is
    ``eps`` of the samples' spread in every dimension) gives
    ``d = G(w + eps·v) + G(w − eps·v) − 2 G(w)``, the curvature of the map w → image at the
    scale of the samples. It is taken on images average-pooled to ``size`` × ``size`` (stain
    colour, brightness, tissue composition: what the analysis measures along a straight
    shift, not where each nucleus sits) and averaged over pixels and channels. Zero when G
    is affine in w. ``synthesis`` must draw the three images with the same noise (e.g.
    ``noise_mode="const"``). A finite-difference directional Hessian, as in the Hessian
    penalty of Peebles et al. 2020, but on all curvature, not only its off-diagonal part.

    ``nuclei`` > 0 adds that weight times the same term on the images' soft nuclear mask
    (``soft_nuclei_mask``) pooled to ``nuclei_size``: the nuclei as the segmentation sees
    them, whose count and size fold in w while the pooled image stays smooth (docs/results.md).

    ``relative`` divides each term by the mean squared first difference
    ``(G(w + eps·v) − G(w − eps·v)) / 2`` of the same pooled view: scale-free, so G cannot
    lower it by making a view insensitive to w (with the plain term, the nuclei of a fine-tuned
    generator came to follow w half as much: docs/results.md).
    """
    v = torch.randn_like(w) * w.detach().std(dim=0, keepdim=True) * eps
    stacked = torch.cat([w - v, w, w + v])[:, None].expand(-1, num_ws, -1)
    images = synthesis(stacked)
    penalty = _second_difference(images, size, relative)
    if nuclei > 0:
        penalty = penalty + nuclei * _second_difference(
            soft_nuclei_mask(images), nuclei_size, relative
        )
    return penalty


def _second_difference(views: torch.Tensor, size: int, relative: bool) -> torch.Tensor:
    """Mean squared ``lo + hi − 2·mid`` of ``views`` stacked as [lo; mid; hi] and pooled to
    ``size``; over the mean squared ``(hi − lo) / 2`` when ``relative``."""
    lo, mid, hi = F.adaptive_avg_pool2d(views, size).chunk(3)
    curvature = (lo + hi - 2 * mid).square().mean()
    if not relative:
        return curvature
    return curvature / ((hi - lo) / 2).square().mean().clamp_min(1e-12)


def mixing_ws(
    mapping: Callable[..., torch.Tensor],
    z1: torch.Tensor,  # [N, z_dim]
    z2: torch.Tensor,  # [N, z_dim]
    num_ws: int,
    prob: float,
    truncation_psi: float = 1.0,
) -> torch.Tensor:
    """Style mixing regularisation: ws [N, num_ws, w_dim] from mapping(z1), with the layers
    from a random cutoff on taken from mapping(z2) in a ``prob`` fraction of the samples."""
    ws = mapping(z1, truncation_psi)[:, None].repeat(1, num_ws, 1)  # [N, num_ws, w_dim]
    if prob <= 0:
        return ws
    return mix_styles(ws, mapping(z2, truncation_psi), prob)
