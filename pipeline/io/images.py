"""Image files for people: PNG grids of tiles or samples."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline.io.files import atomic_write
from pipeline.io.paths import WorkPath


def as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 [..., H, W, 1] grey (or [..., H, W] ) → [..., H, W, 3] for display; RGB passes."""
    if image.shape[-1] == 3:
        return image
    grey = image[..., 0] if image.shape[-1] == 1 else image
    return np.repeat(grey[..., None], 3, axis=-1)


def image_grid(images: np.ndarray, cols: int) -> np.ndarray:
    """uint8 [N, H, W, C] → one [rows·H, cols·W, C] mosaic (missing cells white)."""
    n, h, w, c = images.shape
    rows = -(-n // cols)
    grid = np.full((rows * h, cols * w, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        grid[r * h : (r + 1) * h, k * w : (k + 1) * w] = img
    return grid


def save_png(path: WorkPath | str, image: np.ndarray) -> None:
    img = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 [H, W, C] → PNG file bytes (for embedding in a report)."""
    import io

    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG")
    return buf.getvalue()


def save_gif(
    path: WorkPath | str, frames: np.ndarray, ms_per_frame: int = 250, scale: int = 1
) -> None:
    """uint8 [A, H, W, 3] (or grey [A, H, W, 1]) → a looping GIF that plays forward and back."""
    frames = as_rgb(frames)
    imgs = [
        Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST)
        for f in frames
    ]
    seq = imgs + imgs[-2:0:-1]
    atomic_write(
        path,
        lambda tmp: seq[0].save(
            tmp, format="GIF", save_all=True, append_images=seq[1:], loop=0, duration=ms_per_frame
        ),
    )
