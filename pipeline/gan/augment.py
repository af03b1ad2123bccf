"""Differentiable augmentation with an adaptive probability (ADA, Karras et al. 2020b).

Every op is applied to each image independently with probability ``p`` (times the op's
weight); D sees augmented reals and fakes alike, so for p below ~0.8 the augmentations do
not leak into G. Geometric ops (x/y-flip, 90° rotations, integer translation, isotropic
scaling, rotation) are composed into one matrix and resampled once (bilinear, reflection
padding); colour ops (brightness, contrast, hue rotation about the luma axis, saturation)
into one 4×4 affine colour matrix. Identity, bit for bit, at p = 0."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import ADA_OPS

# --- small pure matrix builders: batched [N, 3, 3] (2-D homogeneous), [N, 4, 4] (colour) ---


def _eye(n: int, size: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(size, dtype=like.dtype, device=like.device).repeat(n, 1, 1)


def translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """[N] shifts → [N, 3, 3]."""
    m = _eye(tx.shape[0], 3, tx)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """[N] factors → [N, 3, 3]."""
    m = _eye(sx.shape[0], 3, sx)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def rotate2d(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """[N] cosines and sines (exact values for 90° steps) → [N, 3, 3]."""
    m = _eye(cos.shape[0], 3, cos)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
    return m


def rotate3d(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotation of colour space about a unit axis [3] by angles [N]: [N, 4, 4] (Rodrigues)."""
    x, y, z = axis
    c, s = torch.cos(theta), torch.sin(theta)
    cc = 1 - c
    m = _eye(theta.shape[0], 4, theta)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = c + x * x * cc, x * y * cc - z * s, x * z * cc + y * s
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = y * x * cc + z * s, c + y * y * cc, y * z * cc - x * s
    m[:, 2, 0], m[:, 2, 1], m[:, 2, 2] = z * x * cc - y * s, z * y * cc + x * s, c + z * z * cc
    return m


def _where(gate: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Per sample: m where gated, the exact identity elsewhere ([N, k, k])."""
    return torch.where(gate[:, None, None], m, _eye(m.shape[0], m.shape[1], m))


class AugmentPipe(nn.Module):
    """ADA augmentation of images [N, C, H, W] in [-1, 1] (C = 3; other C: geometric ops,
    brightness and contrast only). ``p`` is a buffer, so it is saved with the module.

    Strengths (stylegan2-ada defaults unless noted): translation up to ``xint_max`` of the
    image size in whole pixels; scale 2^N(0, scale_std); rotation uniform within
    ±``rotate_max``·π (±45° by default: with the 90° rotations every angle is reachable while
    little reflected border shows); brightness +N(0, brightness_std); contrast
    2^N(0, contrast_std); hue rotation uniform within ±``hue_max``·π; saturation
    2^N(0, saturation_std).
    """

    OPS = ADA_OPS  # named once, in the config's type of ``gan.ada_ops``

    def __init__(
        self,
        p: float = 0.0,
        *,
        xflip: float = 1,
        yflip: float = 1,
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
        rotate_max: float = 0.25,
        brightness_std: float = 0.2,
        contrast_std: float = 0.5,
        hue_max: float = 1.0,
        saturation_std: float = 1.0,
    ) -> None:
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)))
        self.w = {
            "xflip": xflip,
            "yflip": yflip,
            "rotate90": rotate90,
            "xint": xint,
            "scale": scale,
            "rotate": rotate,
            "brightness": brightness,
            "contrast": contrast,
            "hue": hue,
            "saturation": saturation,
        }
        self.xint_max, self.scale_std, self.rotate_max = xint_max, scale_std, rotate_max
        self.brightness_std, self.contrast_std = brightness_std, contrast_std
        self.hue_max, self.saturation_std = hue_max, saturation_std

    def _gate(self, name: str, n: int, device: torch.device) -> torch.Tensor:
        """True for the samples that get op ``name`` this time: bool [N]."""
        return torch.rand(n, device=device) < self.p * self.w[name]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if float(self.p) <= 0:
            return images
        images = self._geometric(images)
        return self._colour(images)

    def _geometric(self, images: torch.Tensor) -> torch.Tensor:
        n, c, h, w = images.shape
        dev, ref = images.device, images.new_empty(n)  # ref: dtype and device for matrices
        one = torch.ones_like(ref)
        # g maps output pixel coordinates (origin at the image centre) to input coordinates.
        g = _eye(n, 3, ref)
        flip = torch.randint(0, 2, (n,), device=dev) * 2 - 1
        g = g @ _where(self._gate("xflip", n, dev), scale2d(flip.to(ref), one))
        flip = torch.randint(0, 2, (n,), device=dev) * 2 - 1
        g = g @ _where(self._gate("yflip", n, dev), scale2d(one, flip.to(ref)))
        k = torch.randint(0, 4, (n,), device=dev)
        cos = torch.tensor([1.0, 0.0, -1.0, 0.0]).to(ref)[k]
        sin = torch.tensor([0.0, 1.0, 0.0, -1.0]).to(ref)[k]
        g = g @ _where(self._gate("rotate90", n, dev), rotate2d(cos, sin))
        t = (torch.rand(n, 2, device=dev).to(ref) * 2 - 1) * self.xint_max
        t = torch.round(t * torch.tensor([w, h]).to(ref))  # whole pixels
        g = g @ _where(self._gate("xint", n, dev), translate2d(t[:, 0], t[:, 1]))
        s = torch.exp2(torch.randn(n, device=dev).to(ref) * self.scale_std)
        g = g @ _where(self._gate("scale", n, dev), scale2d(s, s))
        theta = (torch.rand(n, device=dev).to(ref) * 2 - 1) * math.pi * self.rotate_max
        g = g @ _where(self._gate("rotate", n, dev), rotate2d(torch.cos(theta), torch.sin(theta)))
        if torch.equal(g, _eye(n, 3, ref)):
            return images
        # To affine_grid's normalised coordinates (align_corners=False: ±1 at the outer edges).
        to_norm = torch.diag(torch.tensor([2.0 / w, 2.0 / h, 1.0])).to(ref)
        from_norm = torch.diag(torch.tensor([w / 2.0, h / 2.0, 1.0])).to(ref)
        theta_n = (to_norm @ g @ from_norm)[:, :2, :]  # [N, 2, 3]
        grid = F.affine_grid(theta_n, [n, c, h, w], align_corners=False)  # [N, H, W, 2]
        return F.grid_sample(
            images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )  # [N, C, H, W]

    def _colour(self, images: torch.Tensor) -> torch.Tensor:
        n, c, h, w = images.shape
        dev, ref = images.device, images.new_empty(n)
        b = torch.randn(n, device=dev).to(ref) * self.brightness_std
        b = torch.where(self._gate("brightness", n, dev), b, torch.zeros_like(b))
        cst = torch.exp2(torch.randn(n, device=dev).to(ref) * self.contrast_std)
        cst = torch.where(self._gate("contrast", n, dev), cst, torch.ones_like(cst))
        if c != 3:
            return images * cst[:, None, None, None] + b[:, None, None, None]
        m = _eye(n, 4, ref)  # acts on (r, g, b, 1)
        m[:, :3, 3] = b[:, None]
        m = torch.diag_embed(torch.stack([cst, cst, cst, torch.ones_like(cst)], dim=1)) @ m
        luma = torch.ones(3).to(ref) / math.sqrt(3)  # grey axis
        hue = (torch.rand(n, device=dev).to(ref) * 2 - 1) * math.pi * self.hue_max
        m = _where(self._gate("hue", n, dev), rotate3d(luma, hue)) @ m
        sat = torch.exp2(torch.randn(n, device=dev).to(ref) * self.saturation_std)
        vv = torch.zeros(4, 4).to(ref)
        vv[:3, :3] = torch.outer(luma, luma)  # projection onto the grey axis
        sat_m = vv + (torch.eye(4).to(ref) - vv) * sat[:, None, None]  # [N, 4, 4]
        sat_m[:, 3, 3] = 1
        m = _where(self._gate("saturation", n, dev), sat_m) @ m
        if torch.equal(m, _eye(n, 4, ref)):
            return images
        pix = images.reshape(n, 3, h * w)
        pix = m[:, :3, :3] @ pix + m[:, :3, 3:]  # [N, 3, H·W]
        return pix.reshape(n, 3, h, w)


def adjust_p(
    p: float,
    rt: float,
    *,
    target: float = 0.6,
    batch_size: int,
    interval: int = 1,
    speed_kimg: float = 500.0,
) -> float:
    """ADA heuristic, once every ``interval`` steps: r_t = E[sign D(x_real)] above ``target``
    means D is overfitting, so raise p, otherwise lower it; fast enough to go from 0 to 1 in
    ``speed_kimg`` thousand images. Clamped to [0, 1]."""
    sign = (rt > target) - (rt < target)
    step = sign * batch_size * interval / (speed_kimg * 1000)
    return float(min(max(p + step, 0.0), 1.0))
