"""Image files for people: PNG grids of tiles or samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.io.files import atomic_write


def image_grid(images: np.ndarray, cols: int) -> np.ndarray:
    """uint8 [N, H, W, C] → one [rows·H, cols·W, C] mosaic (missing cells white)."""
    n, h, w, c = images.shape
    rows = -(-n // cols)
    grid = np.full((rows * h, cols * w, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        grid[r * h : (r + 1) * h, k * w : (k + 1) * w] = img
    return grid


def save_png(path: Path, image: np.ndarray) -> None:
    img = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    atomic_write(Path(path), lambda tmp: img.save(tmp, format="PNG"))
