"""Counterfactual renders of a planned slide: the same slide (seed, stain, center) with the
planted nuclear density and size set to their normal or tumor values one at a time. What a
classifier's logit does across them is the ground truth of what it uses, independent of any
generator (scripts/classifier_counterfactuals.py; docs/gan.md, "Session 13")."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from pipeline.synthetic.he import render_slide
from pipeline.synthetic.plan import NUCLEAR_RADIUS_UM, NUCLEI_PER_MM2

LABELS = ("normal", "tumor")


def counterfactual_renders(spec: Mapping[str, Any], side_px: int, mpp: float
                           ) -> Iterator[tuple[str, str, np.ndarray]]:  # fmt: skip
    """(density label, size label, uint8 [side_px, side_px, 3] render at ``mpp``) for the four
    combinations of planted density and nuclear size, everything else as in ``spec``."""
    for density in LABELS:
        for size in LABELS:
            yield density, size, render_slide({
                **spec, "width_px": side_px, "height_px": side_px, "mpp": mpp,
                "nuclei_per_mm2": NUCLEI_PER_MM2[density],
                "nuclear_radius_um": NUCLEAR_RADIUS_UM[size],
            })  # fmt: skip


def tissue_tiles(rgb: np.ndarray, size: int, min_tissue: float = 0.5) -> np.ndarray:
    """Non-overlapping ``size`` tiles of an [H, W, 3] render whose share of tissue pixels (any
    channel below 225) is above ``min_tissue``: [N, size, size, 3]."""
    n_y, n_x = rgb.shape[0] // size, rgb.shape[1] // size
    tiles = rgb[: n_y * size, : n_x * size].reshape(n_y, size, n_x, size, 3).swapaxes(1, 2)
    tiles = tiles.reshape(n_y * n_x, size, size, 3)
    return tiles[(tiles.min(axis=3) < 225).mean(axis=(1, 2)) > min_tissue]
