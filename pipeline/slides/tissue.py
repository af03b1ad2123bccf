"""Tissue detection on a low-resolution image: Otsu on HSV saturation + morphology."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.color import rgb2hsv
from skimage.filters import threshold_otsu
from skimage.morphology import disk, remove_small_holes, remove_small_objects

from pipeline.config import TissueConfig


def tissue_mask(rgb: np.ndarray, mpp: float, cfg: TissueConfig) -> np.ndarray:
    """Boolean mask of tissue in ``rgb`` (uint8 [H, W, 3]) whose pixels are ``mpp`` µm wide.

    Glass is bright and unsaturated; stained tissue is saturated. The Otsu threshold on
    saturation is clamped to ``[sat_min, sat_max]``: the floor keeps empty glass empty, the
    ceiling keeps pale stroma when a tile is all tissue (Otsu then splits tissue from tissue).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {rgb.shape}")
    sat = ndimage.median_filter(rgb2hsv(rgb)[..., 1], size=3)
    thresh = threshold_otsu(sat) if np.ptp(sat) > 1e-6 else cfg.sat_max
    mask = sat > float(np.clip(thresh, cfg.sat_min, cfg.sat_max))
    radius = int(round(cfg.closing_um / mpp))
    if radius >= 1:
        padded = np.pad(mask, radius, mode="edge")  # no erosion at the image border
        closed = ndimage.binary_closing(padded, structure=disk(radius))
        mask = closed[radius:-radius, radius:-radius]
    px_area = mpp * mpp
    if cfg.min_hole_um2 > 0:
        mask = remove_small_holes(mask, max_size=max(1, int(cfg.min_hole_um2 / px_area)))
    if cfg.min_object_um2 > 0:
        mask = remove_small_objects(mask, max_size=max(1, int(cfg.min_object_um2 / px_area)))
    return mask
