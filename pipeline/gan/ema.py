"""Exponential moving average of generator weights (G_ema, Karras et al. 2018/2020)."""

from __future__ import annotations

import torch
from torch import nn


def ema_beta(
    batch_size: int,
    cur_nimg: int | None = None,
    half_life_kimg: float = 10.0,
    rampup: float | None = 0.05,
) -> float:
    """Per-step decay so that the average has a half-life of ``half_life_kimg`` thousand
    images: beta = 0.5 ** (batch_size / half-life in images).

    With ``rampup`` (stylegan2-ada) and ``cur_nimg`` given, the half-life is capped at
    ``rampup`` × images seen so far, so early G_ema does not lag behind a fast-moving G.
    """
    half_life = half_life_kimg * 1000
    if rampup is not None and cur_nimg is not None:
        half_life = min(half_life, cur_nimg * rampup)
    return 0.5 ** (batch_size / max(half_life, 1e-8))


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, beta: float) -> None:
    """In place: target ← beta·target + (1−beta)·source for parameters; buffers (w_avg,
    constant noise) are copied. The two modules must have the same architecture."""
    for p_t, p_s in zip(target.parameters(), source.parameters(), strict=True):
        p_t.copy_(p_s.lerp(p_t, beta))  # exact at beta 0 and 1
    for b_t, b_s in zip(target.buffers(), source.buffers(), strict=True):
        b_t.copy_(b_s)
