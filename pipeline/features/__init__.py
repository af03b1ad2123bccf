"""Features measured on tiles: the numbers behind biomarker and bias findings, per modality.

``compute_features(tiles, mpp, modality=...)`` measures every registered feature of a modality;
``feature(...)`` registers a new one (see ``pipeline.features.registry``)."""

from pipeline.features import histology as _histology  # noqa: F401  (registers the features)
from pipeline.features import radiology as _radiology  # noqa: F401
from pipeline.features.registry import (
    REGISTRIES,
    REGISTRY,
    circular_mean,
    compute_features,
    feature,
    feature_names,
    unwrap_circular,
)

HISTOLOGY_FEATURES = (
    "hematoxylin_mean",
    "eosin_mean",
    "nuclei_density",
    "nuclear_area_mean",
    "nuclear_area_fraction",
    "nuclear_hematoxylin_mean",
    "nuclear_eccentricity_mean",
    "brightness",
    "saturation_mean",
    "hue_mean",
    "sharpness",
    "texture_contrast",
    "texture_homogeneity",
    "tissue_fraction",
)
RADIOLOGY_FEATURES = (
    "intensity_mean",
    "intensity_std",
    "edge_density",
    "local_contrast",
    "sharpness",
    "texture_contrast",
    "texture_homogeneity",
)

__all__ = [
    "HISTOLOGY_FEATURES",
    "RADIOLOGY_FEATURES",
    "REGISTRIES",
    "REGISTRY",
    "circular_mean",
    "compute_features",
    "feature",
    "feature_names",
    "unwrap_circular",
]
