"""Differentiable copies of the histology statistics the analysis measures, for losses that
must see a tile as the features do: the nuclear mask of ``pipeline.features.nuclei`` as a
soft mask, and per-tile nuclear fraction and colour (the GAN's spread penalty, the
inversion's statistics term). Torch tensors in G's range [-1, 1]."""

from __future__ import annotations

import torch

from pipeline.features.nuclei import OD_THRESHOLD, RED_FRACTION


def soft_nuclei_mask(
    images: torch.Tensor,  # [N, 3, H, W], G's range [-1, 1]
    od_threshold: float = OD_THRESHOLD,
    red_fraction: float = RED_FRACTION,
    od_width: float = 0.1,
    fraction_width: float = 0.02,
) -> torch.Tensor:
    """A differentiable ``pipeline.features.nuclei.nuclei_mask`` [N, 1, H, W] in (0, 1): the
    same optical-density rule (summed OD above ``od_threshold``, red absorbance share above
    ``red_fraction``) with each step made a sigmoid of the given width, so the segmentation's
    view of an image, the mask it thresholds and splits into nuclei, has a gradient."""
    rgb = ((images + 1) / 2).clamp(1 / 255, 1)  # as nuclei_mask: max(x, 1) / 255
    od = -rgb.log()
    total = od.sum(dim=1, keepdim=True)
    share = od[:, :1] / total.clamp_min(1e-3)
    return torch.sigmoid((total - od_threshold) / od_width) * torch.sigmoid(
        (share - red_fraction) / fraction_width
    )


def tile_statistics(images: torch.Tensor) -> torch.Tensor:
    """Per-tile statistics [N, 4] of images in G's range [-1, 1], as shown (clamped): the
    soft nuclear area fraction (``soft_nuclei_mask``) and the mean R, G, B in [0, 1]. The
    tile-level content the analysis measures along a shift: how much nucleus, which stain."""
    shown = images.clamp(-1, 1)
    nuclear = soft_nuclei_mask(shown).mean(dim=(1, 2, 3))
    return torch.cat([nuclear[:, None], ((shown + 1) / 2).mean(dim=(2, 3))], dim=1)
