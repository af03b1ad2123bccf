"""StyleGAN2 building blocks: equalised learning rate layers, modulated convolution with
weight demodulation, noise injection, resampling. The math is in small pure functions; the
modules only hold parameters (their names are part of the checkpoint format: keep them)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_GAIN = math.sqrt(2.0)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU (slope 0.2) times √2, which keeps the second moment of its input."""
    return F.leaky_relu(x, 0.2) * LRELU_GAIN


def clamp_act(x: torch.Tensor, limit: float | None) -> torch.Tensor:
    """``x`` clamped to ±``limit`` (None: unchanged). Mixed precision clamps every layer's
    output, as stylegan2-ada's ``conv_clamp``, so no activation overflows float16."""
    return x if limit is None else x.clamp(-limit, limit)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale each vector to unit mean square along ``dim`` (pixel norm of z)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def upsample2d(x: torch.Tensor) -> torch.Tensor:
    """2x upsampling: [N, C, H, W] → [N, C, 2H, 2W].

    Bilinear with ``align_corners=False`` is exactly zero insertion followed by the separable
    [1, 3, 3, 1] filter of the paper (edge-replicated at the border).
    """
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def shift_periodic(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Circularly shift each map by a fractional offset (band-limited, through the FFT):
    x [N, C, H, W], shift [N, 2] as (dy, dx) in pixels → [N, C, H, W]. Integer shifts equal
    ``torch.roll``; the Nyquist term keeps its cosine part (real output)."""
    h, w = x.shape[-2:]
    fy = torch.fft.fftfreq(h, device=x.device, dtype=x.dtype)  # cycles per pixel
    fx = torch.fft.fftfreq(w, device=x.device, dtype=x.dtype)
    phase = (
        shift[:, 0, None, None] * fy[None, :, None] + shift[:, 1, None, None] * fx[None, None, :]
    )
    rot = torch.polar(torch.ones_like(phase), -2 * math.pi * phase)  # [N, H, W]
    return torch.fft.ifft2(torch.fft.fft2(x) * rot[:, None]).real


def downsample2d(x: torch.Tensor) -> torch.Tensor:
    """2x downsampling with the [1, 3, 3, 1] low-pass filter (separable, reflect padded)."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=x.dtype, device=x.device)
    k = (k[:, None] * k[None, :]) / 64.0  # [4, 4], sums to 1
    c = x.shape[1]
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")  # [N, C, H+2, W+2]
    return F.conv2d(x, k.expand(c, 1, 4, 4), stride=2, groups=c)  # [N, C, H/2, W/2]


def modulated_conv2d(
    x: torch.Tensor,  # [N, I, H, W]
    weight: torch.Tensor,  # [O, I, k, k]
    styles: torch.Tensor,  # [N, I]
    demodulate: bool = True,
    *,
    padding: int | None = None,
    fused: bool = False,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Modulated convolution (Karras et al. 2020, eq. 1–3): [N, O, H', W'].

    Modulation scales the weight's input channels per sample by ``styles``; demodulation then
    divides each output channel by the norm of its modulated weights, so that unit-variance
    input gives unit-variance output. ``fused=False`` scales the activations instead of the
    weights and runs one ordinary convolution (faster on CPU); ``fused=True`` builds the
    per-sample weights and runs one grouped convolution (usual on GPU). Same math either way.
    """
    n, i, h, w = x.shape
    o, _, kh, kw = weight.shape
    pad = kh // 2 if padding is None else padding
    if fused:
        wts = weight[None] * styles[:, None, :, None, None]  # [N, O, I, k, k]
        if demodulate:
            wts = wts * (wts.square().sum(dim=(2, 3, 4), keepdim=True) + eps).rsqrt()
        y = F.conv2d(
            x.reshape(1, n * i, h, w), wts.reshape(n * o, i, kh, kw), padding=pad, groups=n
        )
        return y.reshape(n, o, y.shape[2], y.shape[3])  # [N, O, H', W']
    y = F.conv2d(x * styles[:, :, None, None], weight, padding=pad)  # [N, O, H', W']
    if demodulate:
        w2 = weight.square().sum(dim=(2, 3))  # [O, I]
        dcoefs = (styles.square() @ w2.t() + eps).rsqrt()  # [N, O]
        y = y * dcoefs[:, :, None, None]
    return y


def inject_noise(
    x: torch.Tensor,  # [N, C, H, W]
    strength: torch.Tensor,  # [] learned, per layer
    noise: torch.Tensor | None = None,  # broadcastable to [N, 1, H, W]; None: fresh N(0, 1)
) -> torch.Tensor:
    """Add single-channel per-pixel Gaussian noise, scaled by a learned strength."""
    if noise is None:
        n, _, h, w = x.shape
        noise = torch.randn(n, 1, h, w, dtype=x.dtype, device=x.device)
    return x + noise * strength


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weights ~ N(0, 1/lr_mult²), scaled by
    lr_mult/√fan_in at run time (so Adam's step is the same for every layer)."""

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
        y = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)  # [N, out]
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
        self.clamp: float | None = None  # clamp the output to ±clamp (mixed precision)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            x = downsample2d(x)
        pad = self.weight.shape[-1] // 2
        y = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=pad)  # [N, O, H, W]
        return clamp_act(lrelu(y) if self.activation else y, self.clamp)


class StyledConv(nn.Module):
    """Modulated 3x3 conv + per-pixel noise + bias + lrelu; optional 2x upsampling first.

    ``noise_mode``: "random" (fresh noise per sample), "shared" (one fresh map for the whole
    batch: samples differ only in w, at an input drawn like training's), "const" (a fixed
    buffer, for reproducible samples) or "none".
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        w_dim: int,
        resolution: int,
        up: bool,
        *,
        fused: bool = False,
    ) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 3, 3))
        self.weight_gain = 1.0 / math.sqrt(in_ch * 9)
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.up = up
        self.resolution = resolution
        self.fused = fused
        self.clamp: float | None = None  # clamp the output to ±clamp (mixed precision)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        if self.up:
            x = upsample2d(x)  # [N, I, R, R]
        styles = self.affine(w)  # [N, I]
        y = modulated_conv2d(x, self.weight * self.weight_gain, styles, fused=self.fused)
        if noise_mode == "random":
            y = inject_noise(y, self.noise_strength)
        elif noise_mode == "shared":
            h, w_ = y.shape[-2:]
            y = inject_noise(
                y, self.noise_strength, torch.randn(h, w_, dtype=y.dtype, device=y.device)
            )
        elif noise_mode == "const":
            y = inject_noise(y, self.noise_strength, self.noise_const)
        elif noise_mode != "none":
            raise ValueError(
                f"noise_mode must be random, shared, const or none, got {noise_mode!r}"
            )
        y = y + self.bias.to(y.dtype)[None, :, None, None]  # keeps autocast's low precision
        return clamp_act(lrelu(y), self.clamp)  # [N, O, R, R]


class ToRGB(nn.Module):
    """Modulated 1x1 conv to image channels, without demodulation."""

    def __init__(self, in_ch: int, img_channels: int, w_dim: int) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_ch, 1, 1))
        self.weight_gain = 1.0 / math.sqrt(in_ch)
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.clamp: float | None = None  # clamp the output to ±clamp (mixed precision)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain  # [N, I]
        y = modulated_conv2d(x, self.weight, styles, demodulate=False)  # [N, C, R, R]
        return clamp_act(y + self.bias.to(y.dtype)[None, :, None, None], self.clamp)
