"""Histology features of a tile (registered in ``pipeline.features.registry``).

Units: optical densities (OD) for stain amounts; µm² for areas (from the tile's µm/px);
nuclei per 10,000 µm² of *tissue* for density; [0, 1] for fractions, brightness and
saturation; hue in turns [0, 1) as a circular mean; GLCM statistics of the grey image
quantised to 32 levels at distance 1 px, averaged over four angles.

Nuclei: ``pipeline.features.nuclei.segment_nuclei``, the segmentation the GAN quality bar uses
too (a stain threshold, then a distance-transform watershed).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
from scipy import ndimage
from skimage.color import rgb2hed, rgb2hsv
from skimage.feature import graycomatrix, graycoprops
from skimage.measure import regionprops

from pipeline.features.nuclei import segment_nuclei
from pipeline.features.registry import feature, register_context

TISSUE_SATURATION = 0.08  # HSV saturation above which a pixel is stained tissue
GLCM_LEVELS = 32


class TileContext:
    """Per-tile intermediate results, computed on first use and shared by all features."""

    def __init__(self, rgb: np.ndarray, mpp: float) -> None:
        if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected a uint8 RGB tile [H, W, 3], got {rgb.dtype} {rgb.shape}")
        self.rgb, self.mpp = rgb, float(mpp)

    @cached_property
    def hed(self) -> np.ndarray:
        return rgb2hed(self.rgb)

    @cached_property
    def hsv(self) -> np.ndarray:
        return rgb2hsv(self.rgb)

    @cached_property
    def grey(self) -> np.ndarray:
        return self.rgb.astype(np.float32) @ np.array([0.2125, 0.7154, 0.0721], np.float32) / 255

    @cached_property
    def tissue(self) -> np.ndarray:
        return self.hsv[..., 1] > TISSUE_SATURATION

    @cached_property
    def nuclei(self) -> np.ndarray:
        return segment_nuclei(self.rgb, self.mpp)

    @cached_property
    def props(self) -> list:
        return regionprops(self.nuclei, intensity_image=self.hed[..., 0])

    @cached_property
    def glcm(self) -> np.ndarray:
        q = np.clip((self.grey * GLCM_LEVELS).astype(np.uint8), 0, GLCM_LEVELS - 1)
        angles = [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4]
        return graycomatrix(q, [1], angles, levels=GLCM_LEVELS, symmetric=True, normed=True)


register_context("histology", TileContext)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


@feature("hematoxylin_mean", unit="OD", doc="mean hematoxylin OD over the tile (rgb2hed)")
def hematoxylin_mean(rgb: np.ndarray, c: TileContext) -> float:
    return float(c.hed[..., 0].mean())


@feature("eosin_mean", unit="OD", doc="mean eosin OD over the tile (rgb2hed)")
def eosin_mean(rgb: np.ndarray, c: TileContext) -> float:
    return float(c.hed[..., 1].mean())


@feature(
    "nuclei_density",
    unit="nuclei per 10,000 µm² of tissue",
    doc="segmented nuclei per 10,000 µm² of tissue (NaN without tissue)",
)
def nuclei_density(rgb: np.ndarray, c: TileContext) -> float:
    tissue_um2 = float(c.tissue.sum()) * c.mpp * c.mpp
    return len(c.props) / tissue_um2 * 1e4 if tissue_um2 > 0 else float("nan")


@feature("nuclear_area_mean", unit="µm²", doc="mean area of the segmented nuclei")
def nuclear_area_mean(rgb: np.ndarray, c: TileContext) -> float:
    return _mean([p.area * c.mpp * c.mpp for p in c.props])


@feature("nuclear_area_fraction", unit="fraction of tissue", doc="nuclear pixels / tissue pixels")
def nuclear_area_fraction(rgb: np.ndarray, c: TileContext) -> float:
    tissue = float(c.tissue.sum())
    return float((c.nuclei > 0).sum()) / tissue if tissue else float("nan")


@feature("nuclear_hematoxylin_mean", unit="OD", doc="mean hematoxylin OD inside nuclei")
def nuclear_hematoxylin_mean(rgb: np.ndarray, c: TileContext) -> float:
    inside = c.nuclei > 0
    return float(c.hed[..., 0][inside].mean()) if inside.any() else float("nan")


@feature(
    "nuclear_eccentricity_mean",
    unit="0 (circle) to 1",
    doc="mean eccentricity of the nuclei's fitted ellipses",
)
def nuclear_eccentricity_mean(rgb: np.ndarray, c: TileContext) -> float:
    return _mean([p.eccentricity for p in c.props])


@feature("brightness", unit="[0, 1]", doc="mean luminance (Rec. 709 weights)")
def brightness(rgb: np.ndarray, c: TileContext) -> float:
    return float(c.grey.mean())


@feature("saturation_mean", unit="[0, 1]", doc="mean HSV saturation")
def saturation_mean(rgb: np.ndarray, c: TileContext) -> float:
    return float(c.hsv[..., 1].mean())


@feature(
    "hue_mean", unit="turns [0, 1)", doc="circular mean HSV hue, weighted by saturation", period=1.0
)
def hue_mean(rgb: np.ndarray, c: TileContext) -> float:
    angle = c.hsv[..., 0] * 2 * np.pi
    weight = c.hsv[..., 1]
    z = (weight * np.exp(1j * angle)).sum()
    return float((np.angle(z) / (2 * np.pi)) % 1.0) if abs(z) > 0 else float("nan")


@feature("sharpness", unit="grey² (grey in [0, 1])", doc="variance of the Laplacian")
def sharpness(rgb: np.ndarray, c: TileContext) -> float:
    return float(ndimage.laplace(c.grey).var())


@feature("texture_contrast", unit="GLCM contrast", doc="GLCM contrast, 32 levels, d = 1 px")
def texture_contrast(rgb: np.ndarray, c: TileContext) -> float:
    return float(graycoprops(c.glcm, "contrast").mean())


@feature(
    "texture_homogeneity", unit="GLCM homogeneity", doc="GLCM homogeneity, 32 levels, d = 1 px"
)
def texture_homogeneity(rgb: np.ndarray, c: TileContext) -> float:
    return float(graycoprops(c.glcm, "homogeneity").mean())


@feature(
    "tissue_fraction",
    unit="fraction of tile",
    doc=f"pixels with HSV saturation > {TISSUE_SATURATION}",
)
def tissue_fraction(rgb: np.ndarray, c: TileContext) -> float:
    return float(c.tissue.mean())
