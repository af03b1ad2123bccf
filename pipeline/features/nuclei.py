"""Nuclei, the one segmentation every stage uses: a threshold on dense, basophilic stain, then
a watershed on the distance transform seeded at its peaks (touching nuclei are split).

Checked against the nuclei the synthetic renderer planted (``pipeline.synthetic.planted_nuclei``,
tests/pipeline/test_nuclei.py): on the demo cohort's 64 µm tiles the count is off by 0.6
nuclei per tile on average, r 0.98 (docs/gan.md, "The quality bar")."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.measure import regionprops
from skimage.segmentation import watershed

MIN_NUCLEUS_UM2 = 12.0  # smaller objects are stain noise (a nucleus of radius 2 µm)
MIN_SEPARATION_UM = 3.0  # two nuclei's centres lie at least this far apart
MIN_CORE_UM = 1.0  # a nucleus' centre lies at least this far inside its mask
OD_THRESHOLD = 1.2  # summed optical density of dense stain
RED_FRACTION = 0.26  # share of red absorbance of basophilic (hematoxylin) stain


def nuclei_mask(
    rgb: np.ndarray, od_threshold: float = OD_THRESHOLD, red_fraction: float = RED_FRACTION
) -> np.ndarray:
    """Pixels of dense, basophilic stain: summed OD above ``od_threshold`` and a share of red
    absorbance above ``red_fraction`` (hematoxylin absorbs red, eosin hardly does). Unlike a
    fixed colour deconvolution this holds across the stain-vector shifts between centers."""
    od = -np.log(np.maximum(rgb, 1).astype(np.float32) / 255.0)  # [.., H, W, 3]
    total = od.sum(axis=-1)
    return (total > od_threshold) & (od[..., 0] > red_fraction * total)


def _drop_small(labels: np.ndarray, min_px: float) -> np.ndarray:
    """Labels of ``labels`` with fewer than ``min_px`` pixels go to 0; the rest become 1..n."""
    sizes = np.bincount(labels.ravel())
    keep = np.flatnonzero(sizes >= min_px)
    keep = keep[keep > 0]
    relabel = np.zeros(len(sizes), dtype=np.int32)
    relabel[keep] = np.arange(1, len(keep) + 1)
    return relabel[labels]


def segment_nuclei(rgb: np.ndarray, mpp: float) -> np.ndarray:
    """Label image (0 background, nuclei 1..n) of one uint8 [H, W, 3] tile at ``mpp`` µm/px."""
    min_px = MIN_NUCLEUS_UM2 / (mpp * mpp)
    objects = _drop_small(ndimage.label(nuclei_mask(rgb))[0], min_px)
    mask = objects > 0
    if not mask.any():
        return objects
    dist = ndimage.distance_transform_edt(mask)
    peaks = peak_local_max(
        dist,
        min_distance=max(1, int(round(MIN_SEPARATION_UM / mpp))),
        threshold_abs=MIN_CORE_UM / mpp,
        labels=objects,
        exclude_border=False,
    )
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # Watershed pieces too small to be nuclei go back to background.
    return _drop_small(watershed(-dist, markers, mask=mask), min_px)


def tile_nuclei(rgb: np.ndarray, mpp: float) -> dict[str, float]:
    """Nuclear statistics of one uint8 [H, W, 3] tile at ``mpp`` µm/px (per tile area)."""
    labels = segment_nuclei(rgb, mpp)
    count = int(labels.max())
    nuclear_px = int((labels > 0).sum())
    tile_mm2 = rgb.shape[0] * rgb.shape[1] * (mpp / 1000) ** 2
    return {
        "nuclei_count": float(count),
        "nuclei_density": count / tile_mm2,  # per mm² of tile
        "nuclear_area_fraction": nuclear_px / labels.size,
        # NaN without nuclei (as the ``nuclear_area_mean`` feature): an empty tile has no
        # nuclear size, and statistics over tiles skip it (its count of 0 still counts).
        "mean_nuclear_area_um2": nuclear_px * mpp * mpp / count if count else float("nan"),
        # Area / convex-hull area, mean over nuclei: ~0.93 for the demo's ellipses; ragged
        # clusters of dark speckle, which can have the right count and size, score far lower.
        "nuclear_solidity": mean_solidity(regionprops(labels)),
    }


def mean_solidity(props: list) -> float:
    """Mean area / convex-hull area over a tile's nuclei (``regionprops``); NaN without."""
    return float(np.mean([p.solidity for p in props])) if props else float("nan")


def nuclei_table(tiles: np.ndarray, mpp: float) -> pd.DataFrame:
    """One row of nuclear statistics per tile of uint8 [N, H, W, 3]."""
    return pd.DataFrame([tile_nuclei(t, mpp) for t in tiles])
