"""Plan the synthetic demo cohort: which slide is tumor, from which center, with what truth."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.synthetic.he import CENTER_STAINS

# Planted factors (documented in docs/demo_cohort.md).
NUCLEI_PER_MM2 = {"normal": 1300.0, "tumor": 3000.0}  # nuclei per mm² of tissue
NUCLEAR_RADIUS_UM = {"normal": 3.4, "tumor": 5.2}  # equivalent-area radius √(a·b)
CENTERS = tuple(CENTER_STAINS)  # ("A", "B", "C", "D"); plan_cohort uses the first `centers`
SLIDE_JITTER = 0.10  # per-slide relative jitter (uniform ±) of density, radius and stain amount


def _assign_centers(n: int, home: int, centers: int, confound: float) -> list[str]:
    """``round(n · confound)`` slides from center ``home``, the rest round-robin over the others."""
    names = CENTERS[:centers]
    if centers == 1:
        return [names[0]] * n
    n_home = int(round(n * confound))
    others = [c for k, c in enumerate(names) if k != home]
    return [names[home]] * n_home + [others[k % len(others)] for k in range(n - n_home)]


def plan_cohort(
    n_slides: int = 16,
    seed: int = 0,
    *,
    size_um: float = 2048.0,
    mpp: float = 0.5,
    tumor_fraction: float = 0.5,
    centers: int = 2,
    confound: float = 0.75,
) -> pd.DataFrame:
    """One row per slide with its label, center and planted ground truth (deterministic in seed).

    ``round(n_slides · tumor_fraction)`` slides are tumor. ``confound`` is the share of tumor
    slides from center A and of normal slides from center B (the rest of each label is spread
    round-robin over the other centers); 0.5 with 2 centers means no confounding.
    Columns: slide_id, label, center, scanner, patient, slide_seed, mpp, width_px, height_px,
    stain, nuclei_per_mm2, nuclear_radius_um, stain_amount.
    """
    if n_slides < 1:
        raise ValueError("n_slides must be >= 1")
    if not 1 <= centers <= len(CENTERS):
        raise ValueError(f"centers must be in [1, {len(CENTERS)}]")
    if not 0 <= tumor_fraction <= 1 or not 0 <= confound <= 1:
        raise ValueError("tumor_fraction and confound must be in [0, 1]")
    if size_um <= 0 or mpp <= 0:
        raise ValueError("size_um and mpp must be > 0")
    rng = np.random.default_rng(seed)
    n_tumor = int(round(n_slides * tumor_fraction))
    n_normal = n_slides - n_tumor
    labels = ["tumor"] * n_tumor + ["normal"] * n_normal
    slide_centers = _assign_centers(n_tumor, 0, centers, confound) + _assign_centers(
        n_normal, min(1, centers - 1), centers, confound
    )
    order = rng.permutation(n_slides)
    jitter = 1.0 + SLIDE_JITTER * rng.uniform(-1.0, 1.0, size=(n_slides, 3))
    seeds = rng.integers(0, 2**31 - 1, size=n_slides)
    side = int(round(size_um / mpp))
    rows = []
    for i, k in enumerate(order):
        label, center = labels[k], slide_centers[k]
        rows.append(
            {
                "slide_id": f"synth_{i:03d}",
                "label": label,
                "center": center,
                "scanner": f"scanner_{center}",
                "patient": f"patient_{i:03d}",
                "slide_seed": int(seeds[i]),
                "mpp": float(mpp),
                "width_px": side,
                "height_px": side,
                "stain": CENTER_STAINS[center],
                "nuclei_per_mm2": round(NUCLEI_PER_MM2[label] * jitter[i, 0], 1),
                "nuclear_radius_um": round(NUCLEAR_RADIUS_UM[label] * jitter[i, 1], 3),
                "stain_amount": round(float(jitter[i, 2]), 3),
            }
        )
    return pd.DataFrame(rows)
