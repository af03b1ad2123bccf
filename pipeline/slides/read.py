"""Read regions and tiles as RGB numpy arrays."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline.slides.grid import TileGrid
from pipeline.slides.open import Slide


def rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """Composite RGBA over white (openslide marks areas outside the scan as transparent)."""
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    a = alpha[..., None].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def read_region_rgb(slide: Slide, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
    """Region at ``level`` of size ``w``×``h``, top-left at level-0 ``(x, y)``; uint8 [h, w, 3]."""
    region = slide.read_region((int(x), int(y)), int(level), (int(w), int(h)))
    return rgba_to_rgb(np.asarray(region))


def resize_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """Antialiased resize to ``size``×``size`` (PIL's bilinear widens its kernel on downscale)."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    img = Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img)


def read_tile(slide: Slide, grid: TileGrid, x: int, y: int) -> np.ndarray:
    """One tile of the grid at level-0 ``(x, y)``: uint8 [size, size, 3]."""
    rgb = read_region_rgb(slide, x, y, grid.level, grid.read_w, grid.read_h)
    return resize_rgb(rgb, grid.size)
