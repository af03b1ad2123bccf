"""One radiology image → one square grey tile: physical aspect kept, padded, resized."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.radiology.read import RadiologyImage


@dataclass(frozen=True)
class ImageTile:
    """The tile and how it maps back to the image."""

    tile: np.ndarray  # uint8 [size, size, 1]
    content_fraction: float  # share of the tile covered by the image (the rest is padding)
    tile_mpp: float  # µm per tile pixel (NaN without pixel spacing)
    content_h: int  # image rows and columns inside the tile
    content_w: int


def image_tile(img: RadiologyImage, size: int, pad_value: float = 0.0) -> ImageTile:
    """Resize ``img`` so that its longer *physical* side spans ``size`` px (non-square pixels
    are honoured: a 0.5 × 1.0 mm pixel grid is stretched to its true shape), centre it on a
    ``size``² canvas filled with ``pad_value`` and quantise to uint8. Resampling is bilinear
    in float32, antialiased when shrinking (Pillow widens its kernel on downscale)."""
    h, w = img.grey.shape
    sy, sx = img.spacing_mm if img.spacing_mm is not None else (1.0, 1.0)
    phys_h, phys_w = h * sy, w * sx
    px = max(phys_h, phys_w) / size  # mm (or source px) per tile pixel
    nh = min(size, max(1, round(phys_h / px)))
    nw = min(size, max(1, round(phys_w / px)))
    grey = np.ascontiguousarray(img.grey, dtype=np.float32)
    if (nh, nw) != (h, w):
        resized = Image.fromarray(grey, mode="F").resize((nw, nh), Image.Resampling.BILINEAR)
        grey = np.asarray(resized)
    canvas = np.full((size, size), float(pad_value), np.float32)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    canvas[y0 : y0 + nh, x0 : x0 + nw] = grey
    tile = np.clip(np.round(canvas * 255.0), 0, 255).astype(np.uint8)[..., None]
    mpp = px * 1000.0 if img.spacing_mm is not None else math.nan
    return ImageTile(tile, nh * nw / (size * size), mpp, nh, nw)
