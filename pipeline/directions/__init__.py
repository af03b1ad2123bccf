"""Directions in the generator's W space: the classifier's (fitted on synthesised samples),
metadata ones (fitted on inverted real tiles), principal and random ones; shifting latents
along them."""

from pipeline.directions.fit import (
    Direction,
    DirectionFitError,
    classifier_directions,
    covariance_directions,
    fit_grouped_direction,
    fit_linear_direction,
    metadata_directions,
    permutation_cosines,
    principal_directions,
    split_half_cosine,
    unit,
    within_strata,
)
from pipeline.directions.shift import latent_sigma, project_out, shift_latents

__all__ = [
    "Direction",
    "DirectionFitError",
    "classifier_directions",
    "covariance_directions",
    "fit_grouped_direction",
    "fit_linear_direction",
    "latent_sigma",
    "metadata_directions",
    "permutation_cosines",
    "principal_directions",
    "project_out",
    "shift_latents",
    "split_half_cosine",
    "unit",
    "within_strata",
]
