"""Radiology features of a grey tile (registered under ``modality="radiology"``).

A radiology tile is one whole image (CT slice, radiograph) resized to the GAN resolution and
stored as one channel, intensities in [0, 1] after the modality LUT and windowing
(``pipeline.radiology``). Every feature here is measured on that grey image ``g``:

- ``intensity_mean``, ``intensity_std``: mean and SD of ``g`` (the windowed attenuation or
  exposure: a denser organ, an opacity, a brighter bone raise the mean);
- ``edge_density``: share of pixels on Canny edges (σ = 1 px, hysteresis thresholds
  ``EDGE_LOW`` / ``EDGE_HIGH`` on the gradient magnitude of ``g``);
- ``local_contrast``: mean over pixels of the SD of ``g`` in a square window of about 1/16 of
  the image side (≥ 3 px): fine structure, independent of the global level;
- ``sharpness``: variance of the Laplacian of ``g``;
- ``texture_contrast``, ``texture_homogeneity``: GLCM of ``g`` quantised to 32 levels, distance
  1 px, mean over four angles (scikit-image ``graycomatrix``/``graycoprops``).

A user adds a task-specific measurement (a joint-space width, a cardiothoracic ratio) with
``@feature("name", unit=..., doc=..., modality="radiology")`` on a function
``(grey uint8 [H, W], ctx: RadiologyContext) -> float``; ``ctx.grey`` is the image in [0, 1]
and ``ctx.mpp`` its µm per pixel (NaN when the file gave no pixel spacing).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
from scipy import ndimage
from skimage.feature import canny, graycomatrix, graycoprops

from pipeline.features.registry import feature, register_context

GLCM_LEVELS = 32
EDGE_SIGMA, EDGE_LOW, EDGE_HIGH = 1.0, 0.05, 0.10


class RadiologyContext:
    """Per-tile intermediate results of a grey image, computed on first use."""

    def __init__(self, grey: np.ndarray, mpp: float) -> None:
        if grey.ndim == 3 and grey.shape[-1] == 1:
            grey = grey[..., 0]
        if grey.ndim != 2 or grey.dtype != np.uint8:
            raise ValueError(f"expected a uint8 grey tile [H, W], got {grey.dtype} {grey.shape}")
        self.image, self.mpp = grey, float(mpp)

    @cached_property
    def grey(self) -> np.ndarray:
        return self.image.astype(np.float32) / 255.0

    @cached_property
    def window(self) -> int:
        """Side of the local-contrast window: ~1/16 of the image, odd, ≥ 3 px."""
        side = max(3, int(round(min(self.image.shape) / 16)))
        return side + 1 - side % 2

    @cached_property
    def edges(self) -> np.ndarray:
        return canny(self.grey, sigma=EDGE_SIGMA, low_threshold=EDGE_LOW, high_threshold=EDGE_HIGH)

    @cached_property
    def glcm(self) -> np.ndarray:
        q = np.clip((self.grey * GLCM_LEVELS).astype(np.uint8), 0, GLCM_LEVELS - 1)
        angles = [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4]
        return graycomatrix(q, [1], angles, levels=GLCM_LEVELS, symmetric=True, normed=True)


register_context("radiology", RadiologyContext)


@feature(
    "intensity_mean",
    unit="[0, 1] (windowed)",
    doc="mean grey level of the image",
    modality="radiology",
)
def intensity_mean(grey: np.ndarray, c: RadiologyContext) -> float:
    return float(c.grey.mean())


@feature(
    "intensity_std", unit="[0, 1] (windowed)", doc="SD of the grey levels", modality="radiology"
)
def intensity_std(grey: np.ndarray, c: RadiologyContext) -> float:
    return float(c.grey.std())


@feature(
    "edge_density",
    unit="fraction of pixels",
    doc=f"share of Canny edge pixels (σ {EDGE_SIGMA} px, thresholds {EDGE_LOW}/{EDGE_HIGH})",
    modality="radiology",
)
def edge_density(grey: np.ndarray, c: RadiologyContext) -> float:
    return float(c.edges.mean())


@feature(
    "local_contrast",
    unit="[0, 1] (windowed)",
    doc="mean local SD of the grey levels (window ~1/16 of the image side, ≥ 3 px)",
    modality="radiology",
)
def local_contrast(grey: np.ndarray, c: RadiologyContext) -> float:
    g = c.grey.astype(np.float64)
    m = ndimage.uniform_filter(g, c.window, mode="reflect")
    m2 = ndimage.uniform_filter(g * g, c.window, mode="reflect")
    return float(np.sqrt(np.clip(m2 - m * m, 0, None)).mean())


@feature(
    "sharpness",
    unit="grey² (grey in [0, 1])",
    doc="variance of the Laplacian",
    modality="radiology",
)
def sharpness(grey: np.ndarray, c: RadiologyContext) -> float:
    return float(ndimage.laplace(c.grey).var())


@feature(
    "texture_contrast",
    unit="GLCM contrast",
    doc="GLCM contrast, 32 levels, d = 1 px",
    modality="radiology",
)
def texture_contrast(grey: np.ndarray, c: RadiologyContext) -> float:
    return float(graycoprops(c.glcm, "contrast").mean())


@feature(
    "texture_homogeneity",
    unit="GLCM homogeneity",
    doc="GLCM homogeneity, 32 levels, d = 1 px",
    modality="radiology",
)
def texture_homogeneity(grey: np.ndarray, c: RadiologyContext) -> float:
    return float(graycoprops(c.glcm, "homogeneity").mean())
