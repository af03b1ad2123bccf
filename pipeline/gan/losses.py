"""GAN losses as small pure functions (non-saturating logistic, lazy R1, path length)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """softplus(D(G(z))) + softplus(−D(x)), averaged."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """softplus(−D(G(z))), averaged."""
    return F.softplus(-fake_logits).mean()


def d_r1_penalty(real_images: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ‖∇ₓ D(x)‖² (R1, Mescheder et al. 2018).

    ``real_images`` must require grad and ``real_logits`` be computed from it. The caller
    scales by γ/2 and, for lazy regularisation, by the interval.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3)).mean()


def g_path_length_penalty(
    fake_images: torch.Tensor,  # [N, C, H, W] computed from ws
    ws: torch.Tensor,  # [N, num_ws, w_dim], requires grad
    mean_path_length: torch.Tensor,  # scalar running mean
    decay: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Path length regularisation: (penalty, new running mean, per-sample path lengths)."""
    noise = torch.randn_like(fake_images) / math.sqrt(fake_images.shape[2] * fake_images.shape[3])
    (grad,) = torch.autograd.grad((fake_images * noise).sum(), ws, create_graph=True)
    lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()  # [N]
    new_mean = mean_path_length + decay * (lengths.detach().mean() - mean_path_length)
    penalty = (lengths - new_mean).square().mean()
    return penalty, new_mean.detach(), lengths.detach()
