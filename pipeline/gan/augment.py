"""Differentiable augmentation with an adaptive probability (ADA, Karras et al. 2020b).

Every op is applied to each image independently with probability ``p``; D sees augmented
reals and fakes alike, so for p below ~0.8 the augmentations do not leak into G. The ops:
x-flip, 90° rotations, integer-like translation, isotropic scaling, arbitrary rotation
(geometric, one resampling pass with reflection padding), brightness, contrast, luma flip
free hue rotation and saturation (one 4x4 colour matrix)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _eye(n: int, size: int, device: torch.device) -> torch.Tensor:
    return torch.eye(size, device=device).repeat(n, 1, 1)


def _translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = _eye(tx.shape[0], 3, tx.device)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def _scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = _eye(sx.shape[0], 3, sx.device)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _rotate2d(theta: torch.Tensor) -> torch.Tensor:
    m = _eye(theta.shape[0], 3, theta.device)
    c, s = torch.cos(theta), torch.sin(theta)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def _rotate3d(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotation about a unit axis [3] by angles [N]: [N, 4, 4] (Rodrigues)."""
    x, y, z = axis
    c, s = torch.cos(theta), torch.sin(theta)
    cc = 1 - c
    m = _eye(theta.shape[0], 4, theta.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = c + x * x * cc, x * y * cc - z * s, x * z * cc + y * s
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = y * x * cc + z * s, c + y * y * cc, y * z * cc - x * s
    m[:, 2, 0], m[:, 2, 1], m[:, 2, 2] = z * x * cc - y * s, z * y * cc + x * s, c + z * z * cc
    return m


class AugmentPipe(nn.Module):
    """ADA augmentation of images in [-1, 1], [N, C, H, W] (C = 3, or 1 for greyscale)."""

    def __init__(
        self,
        p: float = 0.0,
        *,
        xflip: float = 1,
        rotate90: float = 1,
        xint: float = 1,
        scale: float = 1,
        rotate: float = 1,
        brightness: float = 1,
        contrast: float = 1,
        hue: float = 1,
        saturation: float = 1,
        xint_max: float = 0.125,
        scale_std: float = 0.2,
        brightness_std: float = 0.2,
        contrast_std: float = 0.5,
        hue_max: float = 1.0,
        saturation_std: float = 1.0,
    ) -> None:
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)))
        self.w = {"xflip": xflip, "rotate90": rotate90, "xint": xint, "scale": scale,
                  "rotate": rotate, "brightness": brightness, "contrast": contrast, "hue": hue,
                  "saturation": saturation}  # fmt: skip
        self.xint_max, self.scale_std = xint_max, scale_std
        self.brightness_std, self.contrast_std = brightness_std, contrast_std
        self.hue_max, self.saturation_std = hue_max, saturation_std

    def _gate(self, name: str, n: int, device: torch.device) -> torch.Tensor:
        """1 for the samples that get op ``name`` this time, else 0: [N]."""
        return (torch.rand(n, device=device) < self.p * self.w[name]).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if float(self.p) <= 0:
            return images
        n, c, h, w = images.shape
        dev = images.device
        # Geometric: G maps output coordinates to input coordinates (normalised [-1, 1]).
        g = _eye(n, 3, dev)
        flip = 1 - 2 * (torch.randint(0, 2, (n,), device=dev) * self._gate("xflip", n, dev))
        g = g @ _scale2d(flip, torch.ones(n, device=dev))
        k90 = torch.randint(0, 4, (n,), device=dev) * self._gate("rotate90", n, dev)
        g = g @ _rotate2d(k90 * (math.pi / 2))
        t = (torch.rand(n, 2, device=dev) * 2 - 1) * self.xint_max * 2
        t = t * self._gate("xint", n, dev)[:, None]
        g = g @ _translate2d(t[:, 0], t[:, 1])
        s = torch.exp2(torch.randn(n, device=dev) * self.scale_std * self._gate("scale", n, dev))
        g = g @ _scale2d(s, s)
        theta = (torch.rand(n, device=dev) * 2 - 1) * math.pi * self._gate("rotate", n, dev)
        g = g @ _rotate2d(theta)
        if not torch.allclose(g, _eye(n, 3, dev)):
            grid = F.affine_grid(g[:, :2, :], [n, c, h, w], align_corners=False)
            images = F.grid_sample(
                images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
            )
        # Colour: a 4x4 affine matrix on (r, g, b, 1).
        if c != 3:
            b = torch.randn(n, device=dev) * self.brightness_std * self._gate("brightness", n, dev)
            cst = torch.exp2(
                torch.randn(n, device=dev) * self.contrast_std * self._gate("contrast", n, dev)
            )
            return images * cst[:, None, None, None] + b[:, None, None, None]
        m = _eye(n, 4, dev)
        b = torch.randn(n, device=dev) * self.brightness_std * self._gate("brightness", n, dev)
        m[:, :3, 3] += b[:, None]
        cst = torch.exp2(
            torch.randn(n, device=dev) * self.contrast_std * self._gate("contrast", n, dev)
        )
        m = _scale_color(cst) @ m
        luma = torch.ones(3, device=dev) / math.sqrt(3)
        hue = (torch.rand(n, device=dev) * 2 - 1) * math.pi * self.hue_max
        m = _rotate3d(luma, hue * self._gate("hue", n, dev)) @ m
        sat = torch.exp2(
            torch.randn(n, device=dev) * self.saturation_std * self._gate("saturation", n, dev)
        )
        vv = torch.zeros(4, 4, device=dev)
        vv[:3, :3] = torch.outer(luma, luma)
        sat_m = vv[None] + (torch.eye(4, device=dev)[None] - vv[None]) * sat[:, None, None]
        sat_m[:, 3, 3] = 1
        m = sat_m @ m
        pix = images.reshape(n, 3, h * w)
        pix = m[:, :3, :3] @ pix + m[:, :3, 3:]
        return pix.reshape(n, 3, h, w)


def _scale_color(s: torch.Tensor) -> torch.Tensor:
    m = _eye(s.shape[0], 4, s.device)
    m[:, 0, 0] = m[:, 1, 1] = m[:, 2, 2] = s
    return m


def adjust_p(
    p: float,
    rt: float,
    *,
    target: float = 0.6,
    batch_size: int,
    interval: int,
    speed_kimg: float = 500.0,
) -> float:
    """ADA heuristic: raise p when D is overconfident on reals (r_t = E[sign D(x)] > target),
    lower it otherwise, so p can go from 0 to 1 in ``speed_kimg`` thousand images."""
    step = math.copysign(batch_size * interval / (speed_kimg * 1000), rt - target)
    return float(min(max(p + step, 0.0), 1.0))
