"""Exponential moving average of generator weights (G_ema)."""

from __future__ import annotations

import torch
from torch import nn


def ema_beta(
    batch_size: int, cur_nimg: int, half_life_kimg: float = 10.0, rampup: float | None = 0.05
) -> float:
    """Per-step decay so the average has a half-life of ``half_life_kimg`` thousand images
    (ramped up early in training, as in stylegan2-ada)."""
    half_life = half_life_kimg * 1000
    if rampup is not None:
        half_life = min(half_life, cur_nimg * rampup)
    return 0.5 ** (batch_size / max(half_life, 1e-8))


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, beta: float) -> None:
    """target ← beta·target + (1−beta)·source for parameters; buffers are copied."""
    for p_t, p_s in zip(target.parameters(), source.parameters(), strict=True):
        p_t.copy_(p_s.lerp(p_t, beta))
    for b_t, b_s in zip(target.buffers(), source.buffers(), strict=True):
        b_t.copy_(b_s)
