"""Radiology images (DICOM, PNG, JPEG): decode one frame to grey [0, 1], make one tile of it."""

from pipeline.radiology.read import (
    ImageError,
    RadiologyImage,
    auto_window,
    frame_view,
    is_dicom,
    read_image,
)
from pipeline.radiology.tile import ImageTile, image_tile

__all__ = [
    "ImageError",
    "ImageTile",
    "RadiologyImage",
    "auto_window",
    "frame_view",
    "image_tile",
    "is_dicom",
    "read_image",
]
