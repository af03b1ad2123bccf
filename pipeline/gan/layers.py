"""StyleGAN2 building blocks: equalised learning rate layers, modulated convolution with
weight demodulation, noise injection, resampling. The math is in small pure functions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_GAIN = math.sqrt(2.0)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU (0.2) with the gain that keeps unit variance."""
    return F.leaky_relu(x, 0.2) * LRELU_GAIN


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def upsample2d(x: torch.Tensor) -> torch.Tensor:
    """2x upsampling; bilinear equals zero insertion + the [1, 3, 3, 1] filter of the paper."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def downsample2d(x: torch.Tensor) -> torch.Tensor:
    """2x downsampling with the [1, 3, 3, 1] low-pass filter (separable, reflect padded)."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=x.dtype, device=x.device)
    k = (k[:, None] * k[None, :]) / 64.0
    c = x.shape[1]
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    return F.conv2d(x, k.expand(c, 1, 4, 4), stride=2, groups=c)  # [N, C, H/2, W/2]


def modulated_conv2d(
    x: torch.Tensor,  # [N, I, H, W]
    weight: torch.Tensor,  # [O, I, k, k]
    styles: torch.Tensor,  # [N, I]
    demodulate: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Modulated convolution (Karras et al. 2020, eq. 1–3), non-fused form.

    Scaling the input by the styles equals scaling the weight's input channels; demodulation
    rescales each output channel so that unit-variance input gives unit-variance output.
    """
    pad = weight.shape[-1] // 2
    y = F.conv2d(x * styles[:, :, None, None], weight, padding=pad)  # [N, O, H, W]
    if demodulate:
        w2 = weight.square().sum(dim=(2, 3))  # [O, I]
        dcoefs = (styles.square() @ w2.t() + eps).rsqrt()  # [N, O]
        y = y * dcoefs[:, :, None, None]
    return y


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate (weights scaled at run time)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        bias_init: float = 0.0,
        lr_mult: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mult)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.weight_gain = lr_mult / math.sqrt(in_dim)
        self.bias_gain = lr_mult
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return lrelu(y) if self.activation else y


class EqualConv2d(nn.Module):
    """Conv layer with equalised learning rate; optional 2x downsampling before the conv."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        *,
        bias: bool = True,
        activation: bool = True,
        down: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.activation = activation
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            x = downsample2d(x)
        pad = self.weight.shape[-1] // 2
        y = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=pad)
        return lrelu(y) if self.activation else y


class StyledConv(nn.Module):
    """Modulated 3x3 conv + per-pixel noise + bias + lrelu; optional 2x upsampling first."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, up: bool) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 3, 3))
        self.weight_gain = 1.0 / math.sqrt(in_ch * 9)
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.up = up
        self.resolution = resolution

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        if self.up:
            x = upsample2d(x)
        styles = self.affine(w)  # [N, I]
        y = modulated_conv2d(x, self.weight * self.weight_gain, styles, demodulate=True)
        if noise_mode == "random":
            n = torch.randn(y.shape[0], 1, self.resolution, self.resolution, device=y.device)
            y = y + n * self.noise_strength
        elif noise_mode == "const":
            y = y + self.noise_const * self.noise_strength
        return lrelu(y + self.bias[None, :, None, None])


class ToRGB(nn.Module):
    """Modulated 1x1 conv to image channels, without demodulation."""

    def __init__(self, in_ch: int, img_channels: int, w_dim: int) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_ch, 1, 1))
        self.weight_gain = 1.0 / math.sqrt(in_ch)
        self.bias = nn.Parameter(torch.zeros(img_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        y = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return y + self.bias[None, :, None, None]
