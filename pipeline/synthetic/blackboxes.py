"""Planted black-box classifiers for the controls: each reads one known property of the tile
(or nothing of its content) and is saved as TorchScript, as a user's model would be.

Each module maps float32 ``[N, 3, H, W]`` in [0, 1] to a logit ``[N]``:
``gain · (statistic − threshold)``. ``calibrated`` sets the threshold to the median of the
statistic over a cohort's tiles, so both classes occur.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

# Ruifrok & Johnston's H&E(-DAB) OD vectors (rows), as in scikit-image's rgb2hed.
RGB_FROM_HED = ((0.65, 0.70, 0.29), (0.07, 0.99, 0.11), (0.27, 0.57, 0.78))


class EosinScore(nn.Module):
    """Mean eosin optical density over the tissue pixels (colour deconvolution)."""

    def __init__(self, threshold: float = 0.0, gain: float = 20.0) -> None:
        super().__init__()
        self.register_buffer("unmix", torch.linalg.inv(torch.tensor(RGB_FROM_HED)))
        self.threshold, self.gain = float(threshold), float(gain)

    def statistic(self, x: torch.Tensor) -> torch.Tensor:
        od = -torch.log((x * 255.0 + 1.0) / 256.0)  # [N, 3, H, W]
        hed = torch.einsum("nchw,cd->ndhw", od, self.unmix)
        tissue = (od.sum(dim=1) > 0.15).float()
        return (hed[:, 1] * tissue).sum(dim=(1, 2)) / tissue.sum(dim=(1, 2)).clamp_min(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * (self.statistic(x) - self.threshold)


class InkScore(nn.Module):
    """Share of green pixels (green above both red and blue): pen ink, never tissue."""

    def __init__(self, threshold: float = 0.01, gain: float = 200.0) -> None:
        super().__init__()
        self.threshold, self.gain = float(threshold), float(gain)

    def statistic(self, x: torch.Tensor) -> torch.Tensor:
        excess = x[:, 1] - torch.maximum(x[:, 0], x[:, 2])
        return (excess > 0.03).float().mean(dim=(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * (self.statistic(x) - self.threshold)


class SharpnessScore(nn.Module):
    """Log variance of the Laplacian of the grey tile: focus, never stain or content."""

    def __init__(self, threshold: float = 0.0, gain: float = 2.0) -> None:
        super().__init__()
        lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
        self.register_buffer("lap", lap.view(1, 1, 3, 3))
        self.threshold, self.gain = float(threshold), float(gain)

    def statistic(self, x: torch.Tensor) -> torch.Tensor:
        grey = x.mean(dim=1, keepdim=True)
        edges = torch.nn.functional.conv2d(grey, self.lap)
        return torch.log(edges.var(dim=(1, 2, 3)) + 1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * (self.statistic(x) - self.threshold)


class PixelHash(nn.Module):
    """A logit unrelated to any histology: a sine of a random projection of the pixels, so
    tiles that differ by a grey level get unrelated outputs."""

    def __init__(
        self, threshold: float = 0.0, gain: float = 3.0, size: int = 64, seed: int = 0
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("proj", torch.randn(3, size, size, generator=g))
        self.threshold, self.gain = float(threshold), float(gain)

    def statistic(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(997.0 * (x * self.proj).sum(dim=(1, 2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * (self.statistic(x) - self.threshold)


BLACKBOXES: dict[str, type[nn.Module]] = {
    "eosin": EosinScore,
    "sharpness": SharpnessScore,
    "ink": InkScore,
    "hash": PixelHash,
}


def tiles_tensor(tiles: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] → float32 [N, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float() / 255.0


def calibrated(name: str, tiles: np.ndarray, **kwargs: float) -> nn.Module:
    """Black box ``name`` whose threshold is the median statistic over ``tiles`` (uint8
    [N, H, W, 3]); the ink box keeps its fixed threshold (most tiles carry no ink)."""
    cls = BLACKBOXES[name]
    if name == "ink":
        return cls(**kwargs)
    probe = cls(**kwargs)
    with torch.no_grad():
        stat = torch.cat(
            [probe.statistic(tiles_tensor(tiles[a : a + 256])) for a in range(0, len(tiles), 256)]
        )
    return cls(**{**kwargs, "threshold": float(stat.median())})


def save_blackbox(module: nn.Module, path: str | Path) -> Path:
    """TorchScript file at ``path``: what ``classifier.model`` points at."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    return path
