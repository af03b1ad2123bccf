"""Sample quality without downloaded weights: sliced Wasserstein distance between
Laplacian-pyramid patch descriptors of real and generated images (Karras et al. 2018)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = (_BINOMIAL[:, None] * _BINOMIAL[None, :]).to(x)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k.expand(c, 1, 5, 5), groups=c)


def laplacian_pyramid(images: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass levels (finest first) plus the final low-pass: ``levels`` tensors."""
    out = []
    x = images
    for _ in range(levels - 1):
        low = _blur(x)[:, :, ::2, ::2]
        up = F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
        out.append(x - up)
        x = low
    out.append(x)
    return out


def patch_descriptors(
    level: torch.Tensor, per_image: int, patch: int, rng: np.random.Generator
) -> np.ndarray:
    """Random ``patch``×``patch`` neighbourhoods: [N·per_image, C·patch²]."""
    n, c, h, w = level.shape
    ys = rng.integers(0, h - patch + 1, size=(n, per_image))
    xs = rng.integers(0, w - patch + 1, size=(n, per_image))
    arr = level.detach().cpu().numpy()
    out = np.empty((n, per_image, c, patch, patch), dtype=np.float32)
    for i in range(n):
        for j in range(per_image):
            out[i, j] = arr[i, :, ys[i, j] : ys[i, j] + patch, xs[i, j] : xs[i, j] + patch]
    return out.reshape(n * per_image, -1)


def _normalise(desc: np.ndarray, channels: int) -> np.ndarray:
    d = desc.reshape(len(desc), channels, -1)
    mean = d.mean(axis=(0, 2), keepdims=True)
    std = d.std(axis=(0, 2), keepdims=True) + 1e-8
    return ((d - mean) / std).reshape(len(desc), -1)


def sliced_wasserstein(
    a: np.ndarray, b: np.ndarray, n_projections: int, rng: np.random.Generator
) -> float:
    """Mean over random unit directions of the 1-D Wasserstein distance of the projections."""
    dirs = rng.standard_normal((a.shape[1], n_projections)).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    pa = np.sort(a @ dirs, axis=0)
    pb = np.sort(b @ dirs, axis=0)
    return float(np.abs(pa - pb).mean())


def to_float_images(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, C] or float [N, C, H, W] in [-1, 1] → float [N, C, H, W] in [-1, 1]."""
    if isinstance(images, np.ndarray) and images.dtype == np.uint8:
        return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return torch.as_tensor(images).float()


def swd(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    *,
    per_image: int = 64,
    patch: int = 7,
    n_projections: int = 512,
    min_res: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """SWD ×10³ per pyramid level (keyed by resolution) and their mean (``"mean"``).

    Both sets are normalised together per level and channel, as in ProGAN; equal sizes give
    comparable values. Deterministic for a seed.
    """
    r, f = to_float_images(real), to_float_images(fake)
    n = min(len(r), len(f))  # equal-size sets (the 1-D distances compare sorted samples)
    r, f = r[:n], f[:n]
    if r.shape[1:] != f.shape[1:]:
        raise ValueError(f"real {tuple(r.shape)} and fake {tuple(f.shape)} images differ in shape")
    res = r.shape[-1]
    levels = max(1, int(np.log2(res // min_res)) + 1)
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    for lr, lf in zip(laplacian_pyramid(r, levels), laplacian_pyramid(f, levels), strict=True):
        # Same patch positions in both sets (common random numbers): less noise, SWD(x, x) = 0.
        pos_seed = int(rng.integers(2**31))
        dr = patch_descriptors(lr, per_image, patch, np.random.default_rng(pos_seed))
        df = patch_descriptors(lf, per_image, patch, np.random.default_rng(pos_seed))
        both = _normalise(np.concatenate([dr, df]), lr.shape[1])
        out[str(lr.shape[-1])] = 1e3 * sliced_wasserstein(
            both[: len(dr)], both[len(dr) :], n_projections, rng
        )
    out["mean"] = float(np.mean(list(out.values())))
    return out
