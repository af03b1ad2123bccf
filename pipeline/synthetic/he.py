"""Render synthetic H&E whole-slide images in optical-density space (Beer–Lambert).

RGB = 255 · exp(−(c_H · v_H + c_E · v_E + od_background)), with per-center stain vectors.
Tissue regions come from thresholded smooth noise; stroma is fibrous eosin; nuclei are
elliptical hematoxylin blobs with chromatin texture, placed with a minimum spacing so that
they stay discrete and countable at 1 µm/px.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy import ndimage
from scipy.spatial import cKDTree


def _unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


# Optical-density stain vectors (R, G, B) per center. A: Ruifrok & Johnston's H&E.
# B: hematoxylin shifted toward blue, eosin toward magenta/purple, and more eosin.
STAINS: dict[str, dict[str, Any]] = {
    "A": {"H": _unit([0.650, 0.704, 0.286]), "E": _unit([0.072, 0.990, 0.105]), "eosin": 1.0},
    "B": {"H": _unit([0.480, 0.760, 0.440]), "E": _unit([0.300, 0.930, 0.060]), "eosin": 1.45},
}
OD_BACKGROUND = np.array([0.03, 0.035, 0.03], dtype=np.float32)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Zero-mean, unit-SD noise with features ~``scale_px`` wide: float32 [H, W].

    Drawn on a coarse grid and upsampled, so large scales cost no more than small ones.
    """
    step = max(1, int(scale_px / 3))
    low = (shape[0] // step + 2, shape[1] // step + 2)
    field = ndimage.gaussian_filter(rng.standard_normal(low, dtype=np.float32), 1.5)
    if step > 1:
        field = ndimage.zoom(field, step, order=1, mode="nearest", grid_mode=True)
    field = field[: shape[0], : shape[1]]
    return (field - field.mean()) / (field.std() + 1e-8)


def _repeat(a: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Nearest upsampling by an integer factor (fast), cropped to ``shape``."""
    if factor > 1:
        a = np.repeat(np.repeat(a, factor, axis=0), factor, axis=1)
    return a[: shape[0], : shape[1]]


def tissue_region(rng: np.random.Generator, shape: tuple[int, int], mpp: float) -> np.ndarray:
    """Irregular tissue mask (~60 % of the slide) with ragged edges and a few holes: bool."""
    f = 4
    low = (shape[0] // f + 1, shape[1] // f + 1)
    px_um = mpp * f
    field = smooth_noise(rng, low, 500.0 / px_um) + 0.3 * smooth_noise(rng, low, 30.0 / px_um)
    yy, xx = np.mgrid[0 : low[0], 0 : low[1]]
    r = np.hypot((yy / low[0] - 0.5) * 2, (xx / low[1] - 0.5) * 2)
    field -= 5.0 * np.clip(r - 0.8, 0, None)  # tissue stays off the slide's edges
    # Threshold at 2x the grid (smooth edges at 1 µm), then repeat up to level 0.
    field = ndimage.zoom(field, 2, order=1, mode="nearest", grid_mode=True)
    mask = field > np.quantile(field[::4, ::4], 0.40)
    return _repeat(mask, f // 2, shape)


def _line_kernel(length: float, width: float, angle: float) -> np.ndarray:
    half = int(np.ceil(length))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    along = xx * np.cos(angle) + yy * np.sin(angle)
    across = -xx * np.sin(angle) + yy * np.cos(angle)
    k = np.exp(-0.5 * (along / (length / 2)) ** 2 - 0.5 * (across / width) ** 2)
    return k / k.sum()


N_FIBRE_ANGLES = 4


@lru_cache(maxsize=4)
def _kernel_spectra(shape: tuple[int, int], px_um: float) -> tuple[np.ndarray, ...]:
    """FFTs of the fibre kernels (12 µm long, ~1 µm wide) at each angle, centred at the origin."""
    out = []
    for k in range(N_FIBRE_ANGLES):
        kern = _line_kernel(12.0 / px_um, 0.9 / px_um, k * np.pi / N_FIBRE_ANGLES)
        half = kern.shape[0] // 2
        pad = np.zeros(shape, dtype=np.float32)
        pad[: half + 1, : half + 1] = kern[half:, half:]
        pad[: half + 1, -half:] = kern[half:, :half]
        pad[-half:, : half + 1] = kern[:half, half:]
        pad[-half:, -half:] = kern[:half, :half]
        out.append(sfft.rfft2(pad))
    return tuple(out)


def stroma_eosin(rng: np.random.Generator, shape: tuple[int, int], mpp: float) -> np.ndarray:
    """Eosin concentration of fibrous stroma, [0, ~1]: wavy collagen streaks whose direction
    changes smoothly across the slide (noise smeared along 4 directions, blended by a smooth
    orientation field), computed at 1 µm/px and upsampled."""
    f = max(1, int(round(1.0 / mpp)))
    low = (shape[0] // f + 1, shape[1] // f + 1)
    px_um = mpp * f
    noise = rng.standard_normal(low, dtype=np.float32)
    theta = smooth_noise(rng, low, 120.0 / px_um) * 1.2
    angles = (np.arange(N_FIBRE_ANGLES) * np.pi / N_FIBRE_ANGLES).astype(np.float32)
    weights = np.exp(3.0 * np.cos(2 * (theta[None] - angles[:, None, None])))
    weights /= weights.sum(axis=0, keepdims=True)
    streaks = np.zeros(low, dtype=np.float32)
    spectrum = sfft.rfft2(noise)
    for k, kernel_spectrum in enumerate(_kernel_spectra(low, px_um)):
        streaks += weights[k] * sfft.irfft2(spectrum * kernel_spectrum, s=low)
    streaks /= streaks.std() + 1e-8
    fibres = np.clip(streaks, 0, None) ** 1.5
    density = 0.5 + 0.5 * np.tanh(smooth_noise(rng, low, 60.0 / px_um))
    eosin = 0.22 + 0.22 * fibres * (0.4 + density)
    return _repeat(eosin.astype(np.float32), f, shape)


def place_nuclei(
    rng: np.random.Generator, tissue: np.ndarray, mpp: float, per_mm2: float, radius_um: float
) -> np.ndarray:
    """Nucleus centres [K, 2] (row, col) in tissue, at least ~2.3 radii apart."""
    h, w = tissue.shape
    area_mm2 = tissue.mean() * h * w * (mpp / 1000.0) ** 2
    target = int(round(per_mm2 * area_mm2))
    if target == 0:
        return np.zeros((0, 2), dtype=np.float32)
    cand = rng.uniform(0, 1, size=(int(target * 1.8) + 16, 2)) * np.array([h - 1, w - 1])
    inside = tissue[cand[:, 0].astype(int), cand[:, 1].astype(int)]
    cand = cand[inside]
    min_dist = 2.3 * radius_um / mpp
    keep = np.ones(len(cand), dtype=bool)
    for i, j in sorted(cKDTree(cand).query_pairs(min_dist)):
        if keep[i] and keep[j]:
            keep[j] = False
    return cand[keep][:target].astype(np.float32)


def stamp_nuclei(
    rng: np.random.Generator, shape: tuple[int, int], centres: np.ndarray, mpp: float,
    radius_um: float,
) -> np.ndarray:  # fmt: skip
    """Hematoxylin concentration of elliptical nuclei with chromatin texture and a dark rim."""
    conc = np.zeros(shape, dtype=np.float32)
    h, w = shape
    r_px = radius_um / mpp
    for cy, cx in centres:
        r = r_px * rng.uniform(0.85, 1.15)
        ecc = rng.uniform(1.0, 1.6)
        a, b = r * np.sqrt(ecc), r / np.sqrt(ecc)
        ang = rng.uniform(0, np.pi)
        half = int(np.ceil(a)) + 2
        y0, y1 = max(0, int(cy) - half), min(h, int(cy) + half + 1)
        x0, x1 = max(0, int(cx) - half), min(w, int(cx) + half + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(ang) + dy * np.sin(ang)) / a
        v = (-dx * np.sin(ang) + dy * np.cos(ang)) / b
        d = np.sqrt(u * u + v * v)  # 1 on the boundary
        edge = np.clip((1.0 - d) * r, 0.0, 1.0)  # ~1 px antialiased edge
        rim = 1.0 + 0.35 * np.exp(-(((d - 0.85) / 0.12) ** 2))
        chromatin = 1.0 + 0.25 * rng.standard_normal(d.shape).astype(np.float32)
        value = rng.uniform(0.9, 1.25) * edge * rim * np.clip(chromatin, 0.5, 1.5)
        np.maximum(conc[y0:y1, x0:x1], value, out=conc[y0:y1, x0:x1])
    return conc


def compose_rgb(
    c_h: np.ndarray, c_e: np.ndarray, stain: Mapping[str, Any], rng: np.random.Generator
) -> np.ndarray:
    """Beer–Lambert: concentrations [H, W] → uint8 RGB [H, W, 3] (channel by channel)."""
    out = np.empty((*c_h.shape, 3), dtype=np.uint8)
    noise = rng.standard_normal(c_h.shape, dtype=np.float32) * 1.5
    for ch in range(3):
        od = c_h * stain["H"][ch] + c_e * stain["E"][ch] + OD_BACKGROUND[ch]
        np.negative(od, out=od)
        np.exp(od, out=od)
        od *= 255.0
        od += noise
        np.clip(od, 0, 255, out=od)
        out[..., ch] = od
    return out


def render_slide(spec: Mapping[str, Any]) -> np.ndarray:
    """Render one row of ``plan_cohort`` as uint8 RGB [H, W, 3]; deterministic in its seed."""
    rng = np.random.default_rng(int(spec["slide_seed"]))
    shape = (int(spec["height_px"]), int(spec["width_px"]))
    mpp = float(spec["mpp"])
    stain = STAINS[str(spec["center"])]
    amount = float(spec.get("stain_amount", 1.0))
    tissue = tissue_region(rng, shape, mpp)
    centres = place_nuclei(
        rng, tissue, mpp, float(spec["nuclei_per_mm2"]), float(spec["nuclear_radius_um"])
    )
    c_h = stamp_nuclei(rng, shape, centres, mpp, float(spec["nuclear_radius_um"]))
    c_e = stroma_eosin(rng, shape, mpp) * (1.0 - np.clip(c_h, 0, 1))  # nuclei displace stroma
    c_e *= stain["eosin"] * amount * tissue
    c_h *= 1.15 * amount * tissue
    return compose_rgb(c_h, c_e, stain, rng)
