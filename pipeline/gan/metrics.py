"""Sample quality without downloaded weights: sliced Wasserstein distance between
Laplacian-pyramid patch descriptors of real and generated images (Karras et al. 2018).

One deliberate difference from ProGAN: descriptors of both sets are normalised together
(per level and channel), not each set on its own, so a global colour shift between the sets
still shows (in the coarsest level) instead of being normalised away."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: torch.Tensor) -> torch.Tensor:
    """5×5 binomial low-pass, reflect padded: [N, C, H, W] → same shape."""
    c = x.shape[1]
    k = (_BINOMIAL[:, None] * _BINOMIAL[None, :]).to(x)  # [5, 5]
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k.expand(c, 1, 5, 5), groups=c)


def laplacian_pyramid(images: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """``levels`` tensors, finest first: band-pass [N, C, H/2^k, W/2^k] for k < levels−1,
    then the final low-pass. Upsampling every level back and summing gives the images."""
    out = []
    x = images  # [N, C, H, W]
    for _ in range(levels - 1):
        low = _blur(x)[:, :, ::2, ::2]  # [N, C, H/2, W/2]
        up = F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
        out.append(x - up)
        x = low
    out.append(x)
    return out


def sample_patch_descriptors(
    level: torch.Tensor,  # [N, C, H, W]
    n_descriptors: int,
    patch: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """``n_descriptors`` random ``patch``×``patch`` neighbourhoods (random image and position
    each, drawn from ``rng``), flattened: float32 [n_descriptors, C·patch²]."""
    n, c, h, w = level.shape
    patch = min(patch, h, w)
    idx = rng.integers(0, n, size=n_descriptors)
    ys = rng.integers(0, h - patch + 1, size=n_descriptors)
    xs = rng.integers(0, w - patch + 1, size=n_descriptors)
    arr = level.detach().cpu().numpy()
    d = np.arange(patch)
    out = arr[
        idx[:, None, None, None],
        np.arange(c)[None, :, None, None],
        (ys[:, None] + d)[:, None, :, None],
        (xs[:, None] + d)[:, None, None, :],
    ]  # [D, C, patch, patch]
    return out.reshape(n_descriptors, -1).astype(np.float32)


def _normalise(desc: np.ndarray, channels: int) -> np.ndarray:
    """Zero mean and unit SD per colour channel over all descriptors: [D, C·p²]."""
    d = desc.reshape(len(desc), channels, -1)
    mean = d.mean(axis=(0, 2), keepdims=True)
    std = d.std(axis=(0, 2), keepdims=True) + 1e-8
    return ((d - mean) / std).reshape(len(desc), -1)


def sliced_wasserstein(
    a: np.ndarray,  # [D, F]
    b: np.ndarray,  # [D, F]
    n_projections: int,
    rng: np.random.Generator,
) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance between the
    projections of two equal-sized sets (sorted samples compared pairwise)."""
    dirs = rng.standard_normal((a.shape[1], n_projections)).astype(np.float32)  # [F, P]
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    pa = np.sort(a @ dirs, axis=0)  # [D, P]
    pb = np.sort(b @ dirs, axis=0)
    return float(np.abs(pa - pb).mean())


def to_float_images(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, C] or float [N, C, H, W] in [-1, 1] → float [N, C, H, W] in [-1, 1]."""
    if isinstance(images, np.ndarray) and images.dtype == np.uint8:
        return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return torch.as_tensor(images).float()


def swd(
    real_images: np.ndarray | torch.Tensor,
    fake_images: np.ndarray | torch.Tensor,
    *,
    n_descriptors: int | None = None,
    n_projections: int = 512,
    patch: int = 7,
    min_res: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """SWD ×10³ per pyramid level (keyed by its resolution, "32", "16", …) and their mean
    (key ``"mean"``). Lower is better; 0 for identical sets.

    Images: uint8 [N, H, W, C] or float [N, C, H, W] in [-1, 1]; the sets are cut to the same
    size. ``n_descriptors`` per set and level defaults to 64 per image. Both sets use the same
    random images/positions (common random numbers: less noise, and SWD(x, x) = 0).
    Deterministic for a seed.
    """
    r, f = to_float_images(real_images), to_float_images(fake_images)
    n = min(len(r), len(f))  # equal-size sets (the 1-D distances compare sorted samples)
    r, f = r[:n], f[:n]
    if r.shape[1:] != f.shape[1:]:
        raise ValueError(f"real {tuple(r.shape)} and fake {tuple(f.shape)} images differ in shape")
    n_desc = n_descriptors or 64 * n
    levels = max(1, int(np.log2(r.shape[-1] // min_res)) + 1)
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    for lr, lf in zip(laplacian_pyramid(r, levels), laplacian_pyramid(f, levels), strict=True):
        pos_seed = int(rng.integers(2**31))
        dr = sample_patch_descriptors(lr, n_desc, patch, np.random.default_rng(pos_seed))
        df = sample_patch_descriptors(lf, n_desc, patch, np.random.default_rng(pos_seed))
        both = _normalise(np.concatenate([dr, df]), lr.shape[1])
        out[str(lr.shape[-1])] = 1e3 * sliced_wasserstein(
            both[:n_desc], both[n_desc:], n_projections, rng
        )
    out["mean"] = float(np.mean(list(out.values())))
    return out


def layout_correlation(images: np.ndarray | torch.Tensor, max_images: int = 256) -> float:
    """Mean pairwise correlation of the images' spatial layouts: [-1, 1].

    Each image is reduced to its luminance with its own mean removed and scaled to unit norm;
    the value is the mean correlation over all pairs. Tiles cut at random places from tissue
    share no layout (≈ 0); a generator that draws the same arrangement of nuclei in every
    sample scores near 1, even when its colours and textures vary (which the per-pixel
    spread and SWD do not catch). Images as in ``swd``; at most ``max_images`` are used.
    """
    x = to_float_images(images)[:max_images]  # [N, C, H, W]
    if len(x) < 2:
        raise ValueError("layout_correlation needs at least two images")
    g = x.mean(dim=1).flatten(1).double()  # [N, H*W] luminance-like
    g = g - g.mean(dim=1, keepdim=True)
    g = g / (g.norm(dim=1, keepdim=True) + 1e-8)
    c = g @ g.T  # [N, N]
    n = len(g)
    return float((c.sum() - c.diagonal().sum()) / (n * (n - 1)))
