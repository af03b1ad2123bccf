"""Batched latent refinement: one Adam over a whole batch of independent latents.

Per-tile losses are summed, so every tile's latent gets exactly its own gradient (the
generator and the feature network have no cross-sample layers). Learning rate ramps up then
down (cosine), latent noise (scaled by the generator's ``w_std``) decays quadratically, as in
stylegan2-ada's projector. A tile whose loss turns non-finite is frozen at its last finite
latent and reported as failed; the others continue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from pipeline.gan.generator import TrainedGenerator
from pipeline.inversion.losses import (
    DFeatures,
    as_displayed,
    feature_loss,
    ms_ssim_loss,
    mse,
    statistics_loss,
)


@dataclass(frozen=True)
class RefineSettings:
    steps: int = 20
    lr: float = 0.05
    noise: float = 0.05  # initial latent noise, × w_std
    noise_ramp: float = 0.75  # fraction of the steps over which the noise decays to 0
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    pixel_weight: float = 1.0
    ssim_weight: float = 1.0
    feature_weight: float = 0.1
    stats_weight: float = 0.0
    stats_open_px: int = 7
    ssim_scales: int = 3


@dataclass
class RefineResult:
    w: torch.Tensor  # [N, w_dim] or [N, num_ws, w_dim]
    loss: torch.Tensor  # [N] final per-tile loss (NaN where failed)
    history: torch.Tensor  # [steps + 1, N]: loss before each step, and after the last
    failed: list[str | None] = field(default_factory=list)  # per tile: None or the reason
    img: torch.Tensor | None = None  # [N, 3, R, R] G(w) in [0, 1] (saves a synthesis pass)


def lr_at(step: int, steps: int, s: RefineSettings) -> float:
    """stylegan2-ada's schedule at the step's midpoint (so 1–3 step runs get a full lr)."""
    t = (step + 0.5) / steps
    ramp = min(1.0, (1.0 - t) / s.lr_rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return s.lr * ramp * min(1.0, t / s.lr_rampup)


def tile_loss(
    gen: TrainedGenerator,
    w: torch.Tensor,
    target: torch.Tensor,
    s: RefineSettings,
    feats: DFeatures | None,
    target_feats: list[torch.Tensor] | None,
    img: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-tile reconstruction loss of latents ``w`` (or of their image ``img``, unclamped)
    against target images → [N]."""
    img = gen.synthesis(w, clamp=False) if img is None else img
    shown = as_displayed(img)
    loss = s.pixel_weight * mse(shown, target)
    if s.ssim_weight:
        loss = loss + s.ssim_weight * ms_ssim_loss(shown, target, s.ssim_scales)
    if s.feature_weight and feats is not None and target_feats is not None:
        loss = loss + s.feature_weight * feature_loss(feats(img), target_feats)
    if s.stats_weight:
        loss = loss + s.stats_weight * statistics_loss(shown, target, s.stats_open_px)
    return loss


def refine(
    gen: TrainedGenerator,
    w0: torch.Tensor,
    target: torch.Tensor,
    s: RefineSettings,
    feats: DFeatures | None = None,
    seed: int = 0,
) -> RefineResult:
    """Refine latents ``w0`` (W [N, w_dim] or W+ [N, num_ws, w_dim]) towards ``target``
    images [N, 3, R, R] in [0, 1] with ``s.steps`` Adam steps; see the module docstring."""
    n = len(w0)
    w = w0.detach().clone().float().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=s.lr, betas=(0.9, 0.999))
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        target_feats = feats(target) if (feats is not None and s.feature_weight) else None
    failed: list[str | None] = [None] * n
    bad = torch.zeros(n, dtype=torch.bool, device=w.device)
    history = []
    shape = (n,) + (1,) * (w.ndim - 1)
    for step in range(s.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, s.steps, s)
        frac = max(0.0, 1.0 - step / max(1, s.steps * s.noise_ramp))
        noise_scale = s.noise * frac**2
        noise = torch.randn(w.shape, generator=rng).to(w) * gen.w_std * noise_scale
        loss = tile_loss(gen, w + noise, target, s, feats, target_feats)
        history.append(loss.detach())
        newly = ~torch.isfinite(loss) & ~bad
        for i in torch.nonzero(newly).flatten().tolist():
            failed[i] = f"non-finite loss at refinement step {step}"
        bad |= newly
        opt.zero_grad(set_to_none=True)
        torch.where(bad, torch.zeros_like(loss), loss).sum().backward()
        with torch.no_grad():
            w.grad[bad.view(shape).expand_as(w)] = 0.0  # frozen: no NaN enters Adam's state
        last = w.detach().clone()
        opt.step()
        with torch.no_grad():
            w[bad] = last[bad]
    with torch.no_grad():
        raw = gen.synthesis(w, clamp=False)
        final = tile_loss(gen, w, target, s, feats, target_feats, raw)
        newly = ~torch.isfinite(final) & ~bad
        for i in torch.nonzero(newly).flatten().tolist():
            failed[i] = "non-finite loss after refinement"
        bad |= newly
    history.append(final)
    return RefineResult(
        w=w.detach(),
        loss=torch.where(bad, torch.nan, final),
        history=torch.stack(history),
        failed=failed,
        img=raw.clamp(0, 1),
    )
