"""Synthetic abdominal CT slices with a planted factor (docs/radiology.md).

One axial slice in Hounsfield units (HU): air around a body ellipse with a subcutaneous fat
ring, soft tissue inside, the liver (patient's right = image left), the spleen, a vertebral
body and the aorta, a few bowel-gas pockets, and correlated CT noise. The planted factor is the
**liver attenuation**: hepatic steatosis (fatty liver) lowers it (``LIVER_HU``), everything else
is drawn independently of the label. The two sites differ in noise only (``NOISE_HU``).
Deterministic: the same spec gives the same pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

AIR_HU, FAT_HU, SOFT_HU, SPLEEN_HU, BONE_HU, AORTA_HU = -1000, -100, 40, 45, 450, 160
LIVER_HU = {"normal": (55.0, 70.0), "steatosis": (5.0, 30.0)}  # U(lo, hi) per label
NOISE_HU = {"A": 10.0, "B": 25.0}  # SD of the (smoothed) noise per site
WINDOW = (40.0, 400.0)  # the abdomen window (centre, width) stored in the DICOM files
ROWS, COLS = 96, 96  # pixels of one slice
SPACING_MM = 3.2  # in-plane pixel spacing


def _soft_ellipse(
    yy: np.ndarray,
    xx: np.ndarray,
    cy: float,
    cx: float,
    ry: float,
    rx: float,
    angle: float = 0.0,
    edge_px: float = 1.0,
) -> np.ndarray:
    """Coverage in [0, 1] of an ellipse with an anti-aliased edge about ``edge_px`` wide."""
    c, s = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * c + (yy - cy) * s) / rx
    v = (-(xx - cx) * s + (yy - cy) * c) / ry
    r = np.sqrt(u * u + v * v)
    return np.clip((1.0 - r) * min(rx, ry) / edge_px + 0.5, 0.0, 1.0)


def render_ct(spec: dict[str, Any]) -> np.ndarray:
    """The slice of one cohort row (``seed``, ``liver_hu``, ``noise_hu``): float32 HU [H, W]."""
    rng = np.random.default_rng(int(spec["seed"]))
    h, w = int(spec.get("rows", ROWS)), int(spec.get("cols", COLS))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = h / 2 + rng.uniform(-2, 2), w / 2 + rng.uniform(-2, 2)
    ry, rx = 0.62 * h * rng.uniform(0.98, 1.02), 0.66 * w * rng.uniform(0.98, 1.02)
    img = np.full((h, w), AIR_HU, np.float32)

    def paint(cover: np.ndarray, hu: float) -> None:
        img[:] = img + cover * (hu - img)

    paint(_soft_ellipse(yy, xx, cy, cx, ry, rx), FAT_HU)
    fat = rng.uniform(0.05, 0.08)
    iy, ix = ry * (1 - fat), rx * (1 - fat)
    paint(_soft_ellipse(yy, xx, cy, cx, iy, ix), SOFT_HU)
    # Liver: large, image left and anterior; spleen: small, image right and posterior.
    ly, lx = cy - 0.10 * iy + rng.uniform(-1.5, 1.5), cx - 0.36 * ix + rng.uniform(-1.5, 1.5)
    lry, lrx = 0.60 * iy * rng.uniform(0.95, 1.05), 0.42 * ix * rng.uniform(0.95, 1.05)
    paint(
        _soft_ellipse(yy, xx, ly, lx, lry, lrx, rng.uniform(-0.3, 0.3), 1.5),
        float(spec["liver_hu"]),
    )
    paint(
        _soft_ellipse(
            yy,
            xx,
            cy + 0.15 * iy,
            cx + 0.55 * ix,
            0.28 * iy * rng.uniform(0.85, 1.15),
            0.18 * ix * rng.uniform(0.85, 1.15),
            rng.uniform(-0.5, 0.5),
            1.2,
        ),
        SPLEEN_HU,
    )
    sy, sx = cy + 0.55 * iy, cx + rng.uniform(-1, 1)
    paint(_soft_ellipse(yy, xx, sy, sx, 0.14 * iy, 0.11 * ix), BONE_HU)
    paint(_soft_ellipse(yy, xx, sy - 0.27 * iy, sx + 0.05 * ix, 0.06 * iy, 0.05 * ix), AORTA_HU)
    for _ in range(int(rng.integers(0, 4))):  # bowel gas, image right and anterior
        gy = cy + rng.uniform(-0.5, 0.2) * iy
        gx = cx + rng.uniform(0.05, 0.45) * ix
        r = rng.uniform(1.5, 3.0)
        paint(_soft_ellipse(yy, xx, gy, gx, r, r * rng.uniform(0.8, 1.3)), AIR_HU)
    noise = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), 0.8)
    noise *= float(spec["noise_hu"]) / (noise.std() + 1e-8)
    return img + noise


def window_to_unit(
    hu: np.ndarray, center: float = WINDOW[0], width: float = WINDOW[1]
) -> np.ndarray:
    """Linear window (DICOM PS3.3 C.11.2.1.2.1, "LINEAR"), as the radiology reader applies it:
    HU → [0, 1]."""
    lo = center - 0.5 - (width - 1) / 2
    return np.clip((hu - lo) / (width - 1), 0.0, 1.0).astype(np.float32)


def plan_ct_cohort(
    n_images: int = 240,
    seed: int = 0,
    *,
    steatosis_fraction: float = 0.5,
    png_fraction: float = 0.25,
) -> list[dict[str, Any]]:
    """One dict per image: id, label, site, patient, seed, liver_hu, noise_hu, format.

    Labels are balanced by ``steatosis_fraction``; site and file format (DICOM or PNG) are
    drawn independently of the label, so only the liver attenuation tells the classes apart.
    """
    if n_images < 4:
        raise ValueError("n_images must be >= 4")
    rng = np.random.default_rng(seed)
    n_pos = int(round(n_images * steatosis_fraction))
    labels = rng.permutation(["steatosis"] * n_pos + ["normal"] * (n_images - n_pos))
    rows = []
    for i, label in enumerate(labels):
        site = "A" if rng.random() < 0.5 else "B"
        rows.append(
            {
                "slide_id": f"ct_{i:04d}",
                "label": str(label),
                "site": site,
                "patient": f"patient_{i:04d}",
                "seed": int(rng.integers(0, 2**31 - 1)),
                "liver_hu": round(float(rng.uniform(*LIVER_HU[str(label)])), 1),
                "noise_hu": NOISE_HU[site],
                "format": "png" if rng.random() < png_fraction else "dcm",
            }
        )
    return rows
