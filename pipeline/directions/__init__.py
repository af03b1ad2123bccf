"""Directions in the generator's W space: the classifier's (fitted on synthesised samples),
metadata ones (fitted on inverted real tiles) and principal ones; shifting latents along them."""

from pipeline.directions.fit import (
    Direction,
    DirectionFitError,
    classifier_directions,
    fit_linear_direction,
    metadata_directions,
    principal_directions,
    random_cosine_null,
)
from pipeline.directions.shift import latent_sigma, project_out, shift_latents

__all__ = [
    "Direction", "DirectionFitError", "classifier_directions", "fit_linear_direction",
    "latent_sigma", "metadata_directions", "principal_directions", "project_out",
    "random_cosine_null", "shift_latents",
]  # fmt: skip
