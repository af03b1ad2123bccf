"""A second synthetic H&E renderer, written independently of ``he.py``: sheets of polygonal
epithelial cells, for cohorts the demo generator was not trained on (the controls of the
trust gates, transfer training).

Cells are the Voronoi regions of jittered-grid centres (``cell_um`` apart): eosin cytoplasm
with a darker membrane where two regions meet, one nucleus per cell near its centre, irregular
(radius modulated by two random harmonics of the angle), with a hematoxylin gradient toward
its edge; some cells are lumens (no nucleus, pale). Tissue is a thresholded sum of Gaussian
blobs. Colour is Beer–Lambert with the renderer's own stain vectors, then a Gaussian blur of
``blur_um`` (a scanner's focus) and 8-bit sensor noise. Drawn on a 1 µm grid and repeated to
level 0; deterministic in ``slide_seed``.

Where ``he.py`` varies nuclear density and size, a ``cells`` cohort varies the cytoplasm's
eosin per slide (``eosin``) independently of the nuclei, so a model that reads the stain has
a known answer that is not the nuclei.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

# Unit OD vectors (R, G, B) of this renderer's two protocols: neither is he.py's.
CELL_STAINS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "rose": ((0.55, 0.76, 0.34), (0.12, 0.95, 0.29)),
    "violet": ((0.44, 0.73, 0.52), (0.28, 0.92, 0.27)),
}
OD_GLASS = np.array([0.02, 0.025, 0.02])
NOISE_SD = 2.0  # grey levels


def _unit(v: tuple[float, float, float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    return a / np.linalg.norm(a)


def _tissue(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """About 60 % of the slide: blobs ~200 µm wide summed and thresholded, off the borders."""
    coarse = (shape[0] // 16 + 1, shape[1] // 16 + 1)
    field = ndimage.gaussian_filter(rng.standard_normal(coarse), 6.0)
    field = ndimage.zoom(field, (shape[0] / coarse[0], shape[1] / coarse[1]), order=1)
    field = field[: shape[0], : shape[1]]
    yy, xx = np.ogrid[-1 : 1 : shape[0] * 1j, -1 : 1 : shape[1] * 1j]
    field = field / (field.std() + 1e-9) - 4.0 * np.clip(
        np.maximum(abs(yy), abs(xx)) - 0.8, 0, None
    )
    return field > np.quantile(field, 0.4)


def _cells(
    rng: np.random.Generator, shape: tuple[int, int], cell_um: float, lumen_share: float
) -> tuple[np.ndarray, ...]:
    """On the 1 µm grid: distance to the nearest cell centre, the gap to the second nearest
    (membranes where it is small), the angle to the nearest centre, and per pixel the
    nearest cell's index; plus per cell a lumen flag and nuclear shape parameters."""
    gy, gx = np.mgrid[0 : shape[0] : cell_um, 0 : shape[1] : cell_um]
    centres = np.c_[gy.ravel(), gx.ravel()] + rng.uniform(-0.35, 0.35, (gy.size, 2)) * cell_um
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    pix = np.c_[yy.ravel(), xx.ravel()].astype(np.float64) + 0.5
    dist, idx = cKDTree(centres).query(pix, k=2, workers=1)
    d1 = dist[:, 0].reshape(shape)
    gap = (dist[:, 1] - dist[:, 0]).reshape(shape)
    near = idx[:, 0].reshape(shape)
    off = pix - centres[idx[:, 0]]
    angle = np.arctan2(off[:, 0], off[:, 1]).reshape(shape)
    n = len(centres)
    lumen = ndimage.gaussian_filter(
        rng.standard_normal((shape[0] // 40 + 2, shape[1] // 40 + 2)), 1.0
    )
    at = np.clip((centres / 40).astype(int), 0, np.array(lumen.shape) - 1)
    lum_field = lumen[at[:, 0], at[:, 1]]
    is_lumen = lum_field > np.quantile(lum_field, 1 - lumen_share)
    shape_par = np.c_[
        rng.uniform(0.85, 1.2, n),
        rng.uniform(0, 0.18, n),
        rng.uniform(0, 2 * np.pi, n),
        rng.uniform(0, 0.12, n),
        rng.uniform(0, 2 * np.pi, n),
        rng.uniform(0.9, 1.35, n),
    ]
    return d1, gap, angle, near, is_lumen, shape_par


def render_cells(spec: Mapping[str, Any]) -> np.ndarray:
    """One slide of a ``plan_cells_cohort`` row as uint8 RGB [H, W, 3].

    Uses ``slide_seed, width_px, height_px, mpp, stain, cell_um, nuclear_radius_um, eosin,
    hematoxylin, blur_um`` (and ``lumen_share``, default 0.15)."""
    rng = np.random.default_rng(int(spec["slide_seed"]))
    h, w, mpp = int(spec["height_px"]), int(spec["width_px"]), float(spec["mpp"])
    f = max(1, int(round(1.0 / mpp)))
    low = (-(-h // f), -(-w // f))
    tissue = _tissue(rng, low)
    d1, gap, angle, near, is_lumen, par = _cells(
        rng, low, float(spec["cell_um"]), float(spec.get("lumen_share", 0.15))
    )
    p = par[near]  # per pixel: the nearest cell's parameters
    radius = (
        float(spec["nuclear_radius_um"])
        * p[..., 0]
        * (
            1
            + p[..., 1] * np.cos(2 * angle + p[..., 2])
            + p[..., 3] * np.cos(3 * angle + p[..., 4])
        )
    )
    inside = np.clip((radius - d1) / 0.7 + 0.5, 0, 1)  # anti-aliased nuclear edge
    lumen = is_lumen[near] & tissue
    c_h = inside * p[..., 5] * (0.8 + 0.4 * np.clip(d1 / np.maximum(radius, 1e-6), 0, 1))
    c_h *= float(spec["hematoxylin"]) * (tissue & ~lumen)
    cyto = float(spec["eosin"]) * (
        0.55 + 0.12 * ndimage.gaussian_filter(rng.standard_normal(low), 2.0)
    )
    membrane = np.exp(-((gap / 1.2) ** 2))
    c_e = np.where(tissue & ~lumen, cyto * (1 + 0.8 * membrane) * (1 - inside), 0.04 * tissue)
    hv, ev = (_unit(v) for v in CELL_STAINS[str(spec["stain"])])
    od = c_h[..., None] * hv + c_e[..., None] * ev + OD_GLASS
    rgb = 255.0 * np.exp(-od)
    rgb = np.repeat(np.repeat(rgb, f, axis=0), f, axis=1)[:h, :w]
    sigma_px = float(spec.get("blur_um", 0.0)) / mpp
    if sigma_px > 0:
        rgb = ndimage.gaussian_filter(rgb, (sigma_px, sigma_px, 0))
    rgb += rng.normal(0.0, NOISE_SD, rgb.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def plan_cells_cohort(
    n_slides: int = 16, seed: int = 0, *, size_um: float = 2048.0, mpp: float = 0.5
) -> list[dict[str, Any]]:
    """One dict per slide: half the slides (``label`` high) carry 1.6× more cytoplasmic
    eosin, drawn independently of the nuclei (cell size and nuclear radius jitter per slide);
    two centers (``rose``, ``violet``) split evenly across labels; focus blur 0.3–0.9 µm."""
    if n_slides < 1:
        raise ValueError("n_slides must be >= 1")
    rng = np.random.default_rng(seed)
    side = int(round(size_um / mpp))
    labels = np.array(["high" if k % 2 else "low" for k in range(n_slides)])[
        rng.permutation(n_slides)
    ]
    rows = []
    for i, label in enumerate(labels):
        center = "A" if (i // 2) % 2 == 0 else "B"
        rows.append(
            {
                "slide_id": f"cells_{i:03d}",
                "label": str(label),
                "center": center,
                "scanner": f"scanner_{center}",
                "patient": f"patient_{i:03d}",
                "slide_seed": int(rng.integers(0, 2**31 - 1)),
                "mpp": float(mpp),
                "width_px": side,
                "height_px": side,
                "stain": "rose" if center == "A" else "violet",
                "cell_um": round(float(rng.uniform(11.0, 15.0)), 2),
                "nuclear_radius_um": round(float(rng.uniform(3.0, 4.4)), 2),
                "eosin": round(float(rng.uniform(0.9, 1.1) * (1.6 if label == "high" else 1.0)), 3),
                "hematoxylin": round(float(rng.uniform(0.9, 1.1)), 3),
                "blur_um": round(float(rng.uniform(0.3, 0.9)), 2),
            }
        )
    return rows
