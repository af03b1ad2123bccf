"""Pen marks on a rendered slide: a known shortcut in pathology (surgeons and pathologists ink
slides), and a property a generator trained on clean slides cannot draw."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Transmission of green marker ink per channel (R, G, B): it absorbs red and blue.
GREEN_INK = (0.42, 0.86, 0.55)


def add_ink(
    rgb: np.ndarray,
    seed: int,
    mpp: float,
    strokes: int = 3,
    width_um: float = 80.0,
    transmission: tuple[float, float, float] = GREEN_INK,
) -> np.ndarray:
    """``rgb`` (uint8 [H, W, 3]) with ``strokes`` smooth pen strokes ``width_um`` wide drawn
    across it (random walks, soft edges), multiplied by the ink's ``transmission``."""
    rng = np.random.default_rng(seed)
    h, w = rgb.shape[:2]
    scale = 8  # strokes are drawn on a grid 8× coarser, then blurred and upsampled
    ch, cw = -(-h // scale), -(-w // scale)
    canvas = np.zeros((ch, cw), np.float32)
    steps = 4 * max(ch, cw)
    for _ in range(strokes):
        y, x = rng.uniform(0.2, 0.8) * ch, rng.uniform(0, 0.2) * cw
        heading = rng.uniform(-0.4, 0.4)
        for _ in range(steps):
            heading += rng.normal(0, 0.05)
            y, x = y + np.sin(heading) * 0.5, x + np.cos(heading) * 0.5
            if not (0 <= y < ch and 0 <= x < cw):
                break
            canvas[int(y), int(x)] = 1.0
    radius = width_um / mpp / scale / 2
    mask = ndimage.gaussian_filter(
        ndimage.binary_dilation(canvas > 0, iterations=max(1, int(radius))).astype(np.float32),
        max(0.5, radius / 4),
    )
    mask = np.repeat(np.repeat(mask, scale, 0), scale, 1)[:h, :w, None]
    t = np.asarray(transmission, np.float32)
    out = rgb.astype(np.float32) * (1 - mask + mask * t)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
