"""Features measured on tiles (histology first): the numbers behind biomarker and bias findings.

``compute_features(tiles, mpp)`` measures every registered feature; ``feature(...)`` registers
a new one (see ``pipeline.features.registry``)."""

from pipeline.features import histology as _histology  # noqa: F401  (registers the features)
from pipeline.features.registry import REGISTRY, compute_features, feature, feature_names

HISTOLOGY_FEATURES = (
    "hematoxylin_mean", "eosin_mean", "nuclei_density", "nuclear_area_mean",
    "nuclear_area_fraction", "nuclear_hematoxylin_mean", "nuclear_eccentricity_mean",
    "brightness", "saturation_mean", "hue_mean", "sharpness", "texture_contrast",
    "texture_homogeneity", "tissue_fraction",
)  # fmt: skip

__all__ = ["HISTOLOGY_FEATURES", "REGISTRY", "compute_features", "feature", "feature_names"]
