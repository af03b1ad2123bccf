"""Per-tile reconstruction losses: pixel MSE, SSIM (Gaussian window), multi-scale structural
loss and a feature loss on the trained discriminator's activations. Every function returns one
value per tile (``[N]``), never a batch mean, so a batch of independent problems can be summed
without coupling their gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.features.soft import soft_nuclei_mask, tile_statistics
from pipeline.gan.networks import Discriminator

_C1, _C2 = 0.01**2, 0.03**2
# What the encoder and refinement losses compare, part of the encoder's cache key (and so of
# the inverted parts' fingerprint): work made under another version is redone. 1: the raw
# synthesis; 2: the image as shown (``as_displayed``).
LOSS_VERSION = 2


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian ``[size]``."""
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filter of every channel: [N, C, H, W] → [N, C, H-k+1, W-k+1]."""
    c = x.shape[1]
    k = len(g)
    x = F.conv2d(x, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004) per tile of images in [0, 1]: [N, C, H, W] × 2 → [N].

    The window shrinks to the image side for small images (σ scaled with it)."""
    size = min(window, x.shape[-1], x.shape[-2])
    g = gaussian_window(size, sigma * size / window).to(x)
    mu_x, mu_y = _blur(x, g), _blur(y, g)
    sxx = _blur(x * x, g) - mu_x**2
    syy = _blur(y * y, g) - mu_y**2
    sxy = _blur(x * y, g) - mu_x * mu_y
    num = (2 * mu_x * mu_y + _C1) * (2 * sxy + _C2)
    den = (mu_x**2 + mu_y**2 + _C1) * (sxx + syy + _C2)
    return (num / den).flatten(1).mean(1)


def ms_ssim_loss(x: torch.Tensor, y: torch.Tensor, scales: int = 3) -> torch.Tensor:
    """Multi-scale structural loss per tile: mean over ``scales`` (halving each time, while the
    side is ≥ 8 px) of 1 − SSIM → [N]."""
    losses = []
    for s in range(scales):
        if s:
            if min(x.shape[-2:]) < 16:
                break
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        losses.append(1 - ssim(x, y))
    return torch.stack(losses).mean(0)


def as_displayed(img: torch.Tensor) -> torch.Tensor:
    """A raw generator image as it is shown, clamped to [0, 1], with the identity's gradient
    (straight-through): a pixel past the range costs only as far as it is wrong as shown (a
    raw 3 against a white target costs nothing), yet is still pulled back when it is wrong.
    On the raw image, an overexposed generator's out-of-range whites dominate the loss."""
    return img + (img.clamp(0, 1) - img).detach()


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per tile → [N]."""
    return (x - y).square().flatten(1).mean(1)


class DFeatures(nn.Module):
    """Activations of the trained discriminator's ``from_rgb`` and residual blocks (no
    minibatch-stddev layer, so tiles stay independent): a perceptual space we own the weights
    of. Input [0, 1] images; D sees them in [-1, 1] as in training."""

    def __init__(self, D: Discriminator, n_blocks: int | None = None) -> None:
        super().__init__()
        self.from_rgb = D.from_rgb
        blocks = list(D.blocks)
        self.blocks = nn.ModuleList(blocks[: n_blocks or len(blocks)])
        self.eval().requires_grad_(False)

    def forward(self, img: torch.Tensor) -> list[torch.Tensor]:
        x = self.from_rgb(img * 2 - 1)
        feats = [x]
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats


def feature_loss(fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of the per-tile mean squared feature difference, each layer divided
    by the mean square of the target's features (scale-free) → [N]."""
    out = []
    for a, b in zip(fx, fy, strict=True):
        scale = b.detach().square().flatten(1).mean(1).clamp_min(1e-8)
        out.append((a - b).square().flatten(1).mean(1) / scale)
    return torch.stack(out).mean(0)


def soft_opening(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Grey-scale morphological opening of a soft mask [N, 1, H, W] with a ``size`` × ``size``
    square (erosion = min-pool, then dilation = max-pool): what survives lies in objects at
    least ``size`` px wide."""
    pad = size // 2
    eroded = -F.max_pool2d(-mask, size, 1, pad)
    return F.max_pool2d(eroded, size, 1, pad)[..., : mask.shape[-2], : mask.shape[-1]]


def statistics_loss(x: torch.Tensor, y: torch.Tensor, open_px: int = 7) -> torch.Tensor:
    """Squared difference of tile-level statistics per tile → [N], images in [0, 1]: for
    RGB the soft nuclear area fraction, the share of it in nuclei at least ``open_px`` wide
    (``soft_opening``: many small nuclei and a few large ones differ here) and the mean R, G,
    B (``tile_statistics``); otherwise the mean of each channel. Pixel and SSIM losses cannot
    place nuclei the generator draws elsewhere, and pay least for drawing none (the mean
    image): this term keeps how much nucleus, how large, and which stain the tile has, which
    is what the analysis measures."""
    if x.shape[1] != 3:
        return (x.mean(dim=(2, 3)) - y.mean(dim=(2, 3))).square().sum(1)

    def stats(img: torch.Tensor) -> torch.Tensor:
        large = soft_opening(soft_nuclei_mask(img * 2 - 1), open_px).mean(dim=(1, 2, 3))
        return torch.cat([tile_statistics(img * 2 - 1), large[:, None]], dim=1)

    return (stats(x) - stats(y)).square().sum(1)
