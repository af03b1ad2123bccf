"""Plan the synthetic demo cohort: which slide is tumor, from which center, with what truth."""

from __future__ import annotations

import numpy as np
import pandas as pd

# Planted factors (documented in docs/demo_cohort.md).
NUCLEI_PER_MM2 = {"normal": 1300.0, "tumor": 3000.0}  # in tissue
NUCLEAR_RADIUS_UM = {"normal": 3.4, "tumor": 5.2}  # mean semi-axis radius
CENTERS = ("A", "B")
SLIDE_JITTER = 0.10  # per-slide relative jitter of density, radius and stain amounts


def plan_cohort(
    n_slides: int = 16,
    seed: int = 0,
    *,
    size_um: float = 2048.0,
    mpp: float = 0.5,
    tumor_fraction: float = 0.5,
    confound: float = 0.75,
) -> pd.DataFrame:
    """One row per slide with its label, center and planted ground truth (deterministic in seed).

    ``confound`` is the share of tumor slides from center A (and of normal slides from B).
    """
    if n_slides < 1:
        raise ValueError("n_slides must be >= 1")
    if not 0 <= tumor_fraction <= 1 or not 0 <= confound <= 1:
        raise ValueError("tumor_fraction and confound must be in [0, 1]")
    rng = np.random.default_rng(seed)
    n_tumor = int(round(n_slides * tumor_fraction))
    n_normal = n_slides - n_tumor
    a_tumor = int(round(n_tumor * confound))
    b_normal = int(round(n_normal * confound))
    labels = ["tumor"] * n_tumor + ["normal"] * n_normal
    centers = (
        ["A"] * a_tumor
        + ["B"] * (n_tumor - a_tumor)
        + ["B"] * b_normal
        + ["A"] * (n_normal - b_normal)
    )
    order = rng.permutation(n_slides)
    side = int(round(size_um / mpp))
    rows = []
    for i, k in enumerate(order):
        label, center = labels[k], centers[k]
        jitter = 1.0 + SLIDE_JITTER * rng.uniform(-1, 1, size=3)
        rows.append(
            {
                "slide_id": f"synth_{i:03d}",
                "label": label,
                "center": center,
                "scanner": f"scanner_{center}",
                "patient": f"patient_{i:03d}",
                "slide_seed": int(rng.integers(0, 2**31 - 1)),
                "mpp": float(mpp),
                "width_px": side,
                "height_px": side,
                "nuclei_per_mm2": round(NUCLEI_PER_MM2[label] * jitter[0], 1),
                "nuclear_radius_um": round(NUCLEAR_RADIUS_UM[label] * jitter[1], 3),
                "stain_amount": round(float(jitter[2]), 3),
            }
        )
    return pd.DataFrame(rows)
