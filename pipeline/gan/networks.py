"""StyleGAN2 networks (Karras et al. 2020): mapping z→w, skip-architecture synthesis,
residual discriminator with minibatch standard deviation. Modules only; losses and the
training step live elsewhere. Module and parameter names are the checkpoint format."""

from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from pipeline.gan.layers import (
    EqualConv2d,
    EqualLinear,
    StyledConv,
    ToRGB,
    normalize_2nd_moment,
    shift_periodic,
    upsample2d,
)
from pipeline.gan.presets import NetworkSpec

SHIFT_SEED = 2020  # the fixed projection w → input shift (not a weight: rebuilt identically)
# The shift of ``noise_mode="const"`` with ``shift_source="noise"``, in units of input_shift: a
# typical draw of N(0, I₂), at its median radius √(2 ln 2) ≈ 1.18. Zero, the earlier
# choice, is a point training hardly visits: its images came out overexposed (docs/results.md).
CONST_SHIFT = (math.sqrt(math.log(2.0)), math.sqrt(math.log(2.0)))


CONV_CLAMP = 256.0  # mixed precision: every layer's output is clamped to ±this (stylegan2-ada)


def low_precision(device: torch.device) -> torch.dtype:
    """The type mixed precision computes in: float16 on CUDA (stylegan2-ada's), bfloat16 on
    other devices (what CPU autocast supports; CPU training itself stays float32)."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def _autocast_call(fn, *args: object) -> object:
    device = next(a.device for a in args if isinstance(a, torch.Tensor))
    with torch.autocast(device.type, dtype=low_precision(device)):
        return fn(*args)


def run_block(fn, *args: object, recompute: bool, mixed: bool = False) -> object:
    """``fn(*args)``; with ``mixed`` under autocast in ``low_precision`` (convolutions and
    linear layers in that type, its activations kept in it); with ``recompute`` (and
    gradients on) its activations are not kept but recomputed in the backward pass
    (activation checkpointing; the RNG state is replayed, so random noise inputs are drawn the
    same twice, and double backward — R1, path length — works)."""
    if mixed:
        fn = functools.partial(_autocast_call, fn)
    if recompute and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def set_mixed_precision(G: Generator, D: Discriminator, fp16_res: int) -> None:
    """G's and D's blocks at ``fp16_res`` px and finer compute in ``low_precision``, each of
    their layers' outputs clamped to ±``CONV_CLAMP`` (stylegan2-ada's mixed precision); 0: all
    in float32, unclamped. Attributes only: the weights and checkpoints are unchanged."""
    G.synthesis.fp16_res = D.fp16_res = fp16_res

    def clamp(res: int) -> float | None:
        return CONV_CLAMP if 0 < fp16_res <= res else None

    for conv in G.synthesis.convs:
        conv.clamp = clamp(conv.resolution)
    for res, torgb in zip(G.spec.resolutions, G.synthesis.torgbs, strict=True):
        torgb.clamp = clamp(res)
    D.from_rgb.clamp = clamp(D.spec.resolution)
    for res, block in zip(reversed(D.spec.resolutions[1:]), D.blocks, strict=True):
        for layer in (block.conv0, block.conv1, block.skip):
            layer.clamp = clamp(res)


class MappingNetwork(nn.Module):
    """z → w through an MLP (equalised lr, lr multiplier 0.01); in training mode it tracks the
    running mean ``w_avg`` of w (decay ``w_avg_beta`` per call) for the truncation trick."""

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        num_layers: int,
        lr_mult: float = 0.01,
        w_avg_beta: float = 0.995,
    ) -> None:
        super().__init__()
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.Sequential(
            *[
                EqualLinear(a, b, lr_mult=lr_mult, activation=True)
                for a, b in zip(dims, dims[1:], strict=False)
            ]
        )
        self.w_avg_beta = w_avg_beta
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """z [N, z_dim] → w [N, w_dim]; w ← w_avg + ψ·(w − w_avg) (ψ = 0: w_avg itself)."""
        w = self.layers(normalize_2nd_moment(z))  # [N, w_dim]
        if self.training:
            with torch.no_grad():
                self.w_avg.copy_(w.mean(0).lerp(self.w_avg, self.w_avg_beta))
        if truncation_psi != 1.0:
            w = self.w_avg.lerp(w, truncation_psi)
        return w


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] → images [N, C, R, R] (skip architecture).

    A learned 4×4 constant, then per resolution two modulated 3×3 convs (the first one
    upsampling) with per-pixel noise, and a toRGB whose output is added to the upsampled sum
    of the coarser ones. Images target [-1, 1] but are not squashed (as in the paper): clamp
    for display, never inside training. With ``spec.input_shift`` the constant is shifted per
    sample by ``input_shift · P·ws[:, 0]`` cells (P: two fixed random unit vectors), so the
    layout varies with w and cannot settle on the pixel grid (StyleGAN2's "texture sticking").
    With ``spec.shift_source == "noise"`` the shift is drawn like the noise inputs instead:
    N(0, input_shift²) cells per sample with ``noise_mode="random"`` (one draw for the whole
    batch with ``"shared"``), one fixed typical draw (``CONST_SHIFT``) with ``"const"``, and
    zero with ``"none"``.
    """

    def __init__(self, spec: NetworkSpec, *, fused_modconv: bool = False) -> None:
        super().__init__()
        self.spec = spec
        ch, w_dim = spec.channels, spec.w_dim
        self.const = nn.Parameter(torch.randn(ch[4], 4, 4))
        self.convs = nn.ModuleList()
        self.torgbs = nn.ModuleList()
        self.convs.append(StyledConv(ch[4], ch[4], w_dim, 4, up=False, fused=fused_modconv))
        self.torgbs.append(ToRGB(ch[4], spec.img_channels, w_dim))
        for res in spec.resolutions[1:]:
            for in_ch, up in ((ch[res // 2], True), (ch[res], False)):
                self.convs.append(StyledConv(in_ch, ch[res], w_dim, res, up, fused=fused_modconv))
            self.torgbs.append(ToRGB(ch[res], spec.img_channels, w_dim))
        self.num_ws = spec.num_ws
        self.checkpoint_res = 0  # blocks at this resolution and finer recompute (0: none)
        self.fp16_res = 0  # blocks at this resolution and finer in low precision (0: none)
        proj = torch.randn(2, w_dim, generator=torch.Generator().manual_seed(SHIFT_SEED))
        self.register_buffer("shift_proj", proj / proj.norm(dim=1, keepdim=True), persistent=False)

    def input_shift(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        """The constant's per-sample shift in cells: [N, 2] (zeros without ``input_shift``)."""
        if self.spec.shift_source == "noise":
            if noise_mode == "const":
                return self.spec.input_shift * ws.new_tensor(CONST_SHIFT).expand(ws.shape[0], 2)
            if noise_mode == "shared":  # one fresh draw for the whole batch
                return self.spec.input_shift * torch.randn(1, 2, device=ws.device).expand(
                    ws.shape[0], 2
                )
            if noise_mode != "random":
                return ws.new_zeros(ws.shape[0], 2)
            return self.spec.input_shift * torch.randn(ws.shape[0], 2, device=ws.device)
        return self.spec.input_shift * ws[:, 0] @ self.shift_proj.T

    def input(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        """What the first conv reads: the constant (shifted by ``input_shift``), [N, C, 4, 4]."""
        x = self.const[None].expand(ws.shape[0], -1, -1, -1)  # [N, C, 4, 4]
        if self.spec.input_shift:
            x = shift_periodic(x, self.input_shift(ws, noise_mode))
        return x

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1] != self.num_ws:
            raise ValueError(f"ws must be [N, {self.num_ws}, w_dim], got {tuple(ws.shape)}")
        x = self.input(ws, noise_mode)
        x = self.convs[0](x, ws[:, 0], noise_mode)
        img = self.torgbs[0](x, ws[:, 1])  # [N, img_channels, 4, 4]
        for i, res in enumerate(self.spec.resolutions[1:]):
            recompute = 0 < self.checkpoint_res <= res
            mixed = 0 < self.fp16_res <= res
            x, img = run_block(
                self._block, i, x, img, ws, noise_mode, recompute=recompute, mixed=mixed
            )
        return img  # float32: each block adds its toRGB to the float32 image so far

    def _block(
        self, i: int, x: torch.Tensor, img: torch.Tensor, ws: torch.Tensor, noise_mode: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Resolution block ``i`` (0: 8 px): two convs and the toRGB added to the upsampled
        image so far."""
        k = 1 + 2 * i  # conv0 uses ws[k], conv1 ws[k+1], toRGB ws[k+2]
        x = self.convs[k](x, ws[:, k], noise_mode)
        x = self.convs[k + 1](x, ws[:, k + 1], noise_mode)
        return x, upsample2d(img) + self.torgbs[i + 1](x, ws[:, k + 2])  # [N, C, R, R]


class Generator(nn.Module):
    """G(z) = synthesis(mapping(z)), with truncation and style mixing."""

    def __init__(self, spec: NetworkSpec, *, fused_modconv: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.mapping = MappingNetwork(
            spec.z_dim, spec.w_dim, spec.mapping_layers, lr_mult=spec.mapping_lr_mult
        )
        self.synthesis = SynthesisNetwork(spec, fused_modconv=fused_modconv)
        self.num_ws = spec.num_ws
        self.z_dim = spec.z_dim
        self.w_dim = spec.w_dim

    def ws_from_z(
        self, z: torch.Tensor, truncation_psi: float = 1.0, style_mixing_prob: float = 0.0
    ) -> torch.Tensor:
        """[N, z_dim] → [N, num_ws, w_dim]; with probability ``style_mixing_prob`` a second
        latent takes over from a random layer on (regularises layer independence)."""
        w = self.mapping(z, truncation_psi)  # [N, w_dim]
        ws = w[:, None].repeat(1, self.num_ws, 1)
        if style_mixing_prob > 0:
            z2 = torch.randn_like(z)
            w2 = self.mapping(z2, truncation_psi)
            ws = mix_styles(ws, w2, style_mixing_prob)
        return ws

    def forward(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        style_mixing_prob: float = 0.0,
        noise_mode: str = "random",
    ) -> torch.Tensor:
        """z [N, z_dim] → images [N, C, R, R] (see ``SynthesisNetwork``)."""
        return self.synthesis(self.ws_from_z(z, truncation_psi, style_mixing_prob), noise_mode)


def mix_styles(ws: torch.Tensor, w2: torch.Tensor, prob: float) -> torch.Tensor:
    """Replace ws[i, c:] by w2[i] for a random cutoff c ∈ [1, num_ws), in a ``prob`` fraction
    of the samples (each sample draws its own cutoff): [N, num_ws, w_dim]."""
    n, num_ws, _ = ws.shape
    cutoff = torch.randint(1, num_ws, (n,), device=ws.device)
    cutoff = torch.where(torch.rand(n, device=ws.device) < prob, cutoff, num_ws)
    layer = torch.arange(num_ws, device=ws.device)[None, :]  # [1, num_ws]
    use2 = (layer >= cutoff[:, None])[:, :, None]  # [N, num_ws, 1]
    return torch.where(use2, w2[:, None, :].expand_as(ws), ws)


def minibatch_stddev(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Append the mean over features of the per-group standard deviation as one channel:
    [N, C, H, W] → [N, C+1, H, W]. Sample n is grouped with n ± M, n ± 2M, … (M = N / G); the
    group shrinks until it divides N."""
    n, c, h, w = x.shape
    g = min(group_size, n)
    while n % g:
        g -= 1
    y = x.reshape(g, -1, c, h, w)  # [G, M, C, H, W]
    y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()  # [M, C, H, W]
    y = y.mean(dim=(1, 2, 3))  # [M]
    y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)  # [N, 1, H, W]
    return torch.cat([x, y], dim=1)


class DiscriminatorBlock(nn.Module):
    """Two 3x3 convs, the second downsampling, plus a 1x1 downsampling skip (residual)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv0 = EqualConv2d(in_ch, in_ch, 3)
        self.conv1 = EqualConv2d(in_ch, out_ch, 3, down=True)
        self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False, activation=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.skip(x) + self.conv1(self.conv0(x))) * (0.5**0.5)


class Discriminator(nn.Module):
    """Residual discriminator: image [N, C, R, R] → logits [N]."""

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.spec = spec
        ch = spec.channels
        res = spec.resolution
        self.from_rgb = EqualConv2d(spec.img_channels, ch[res], 1)
        self.blocks = nn.Sequential(
            *[DiscriminatorBlock(ch[r], ch[r // 2]) for r in reversed(spec.resolutions[1:])]
        )
        self.mbstd_group = spec.mbstd_group
        self.checkpoint_res = 0  # blocks at this input resolution and finer recompute (0: none)
        self.fp16_res = 0  # blocks at this input resolution and finer in low precision
        self.conv = EqualConv2d(ch[4] + 1, ch[4], 3)
        self.fc = EqualLinear(ch[4] * 16, ch[4], activation=True)
        self.out = EqualLinear(ch[4], 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        res, cut, low = self.spec.resolution, self.checkpoint_res, self.fp16_res
        x = run_block(self.from_rgb, img, recompute=0 < cut <= res, mixed=0 < low <= res)
        for block in self.blocks:
            if not 0 < low <= res:
                x = x.to(img.dtype)  # leaving the low-precision blocks
            x = run_block(block, x, recompute=0 < cut <= res, mixed=0 < low <= res)
            res //= 2  # [N, C4, 4, 4] after the last
        x = self.conv(minibatch_stddev(x.to(img.dtype), self.mbstd_group))
        return self.out(self.fc(x.flatten(1))).squeeze(1)  # [N]
