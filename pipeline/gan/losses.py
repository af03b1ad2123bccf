"""GAN losses as small pure functions: non-saturating logistic loss, R1 and path-length
regularisers (Karras et al. 2020), a spread penalty that makes w (not the noise) carry the
tiles' per-tile statistics, and the style-mixing ws used by the G loss."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

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
    colour inflation by which G met a mode-seeking penalty, docs/results.md). Scale-free, so
    every statistic counts alike whatever its units.
    """
    if len(fake_stats) < 2 or len(real_stats) < 2:
        raise ValueError("need at least 2 samples and 2 reals to take an SD")
    log_ratio = (fake_stats.std(dim=0) + eps).log() - (real_stats.std(dim=0) + eps).log()
    below = (math.log(low) - log_ratio).relu()
    above = (log_ratio - math.log(high)).relu()
    return (below.square() + above.square()).mean()


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
