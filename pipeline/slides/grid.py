"""The tile grid at a target resolution, and the pyramid level to read it from."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TileGrid:
    """Tiles of ``size`` px at the target MPP; positions in level-0 pixels (row-major order)."""

    xs: np.ndarray  # [N] int64, level-0 x of the top-left corner
    ys: np.ndarray  # [N] int64
    footprint_w0: float  # tile width in level-0 px
    footprint_h0: float
    level: int  # pyramid level read
    read_w: int  # region size read at `level`, resized to `size`
    read_h: int
    size: int

    def __len__(self) -> int:
        return int(self.xs.shape[0])

    def subset(self, keep: np.ndarray) -> TileGrid:
        return TileGrid(
            self.xs[keep],
            self.ys[keep],
            self.footprint_w0,
            self.footprint_h0,
            self.level,
            self.read_w,
            self.read_h,
            self.size,
        )


def choose_level(level_downsamples: Sequence[float], factor: float, rtol: float = 2e-3) -> int:
    """The coarsest level whose downsample does not exceed ``factor`` (never coarser than target).

    ``rtol`` absorbs the rounding of level sizes (a "2x" level is often 2.0003x).
    """
    best = 0
    for i, ds in enumerate(level_downsamples):
        if ds <= factor * (1.0 + rtol) and ds > level_downsamples[best]:
            best = i
    return best


def _positions(extent: int, footprint: float, step: float) -> np.ndarray:
    if extent + 1e-6 < footprint:
        return np.zeros(0, dtype=np.int64)
    n = int(math.floor((extent - footprint) / step + 1e-6)) + 1
    pos = np.floor(np.arange(n) * step + 1e-6).astype(np.int64)
    return np.minimum(pos, max(0, extent - math.ceil(footprint - 1e-6)))


def tile_grid(
    width: int,
    height: int,
    *,
    mpp_x: float,
    mpp_y: float,
    target_mpp: float,
    size: int,
    step: int,
    level_downsamples: Sequence[float],
) -> TileGrid:
    """Every full tile of ``size`` px at ``target_mpp`` that fits in a ``width``×``height`` slide.

    A 0.25 and a 0.5 µm/px slide give tiles of the same physical size: the footprint in
    level-0 pixels is ``size * target_mpp / mpp``. Positions are rounded per tile, so there is
    no drift across the grid.
    """
    fx, fy = target_mpp / mpp_x, target_mpp / mpp_y
    w0, h0 = size * fx, size * fy
    xs = _positions(width, w0, step * fx)
    ys = _positions(height, h0, step * fy)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    level = choose_level(level_downsamples, min(fx, fy))
    ds = level_downsamples[level]
    return TileGrid(
        xs=gx.ravel(),
        ys=gy.ravel(),
        footprint_w0=w0,
        footprint_h0=h0,
        level=level,
        read_w=max(1, round(w0 / ds)),
        read_h=max(1, round(h0 / ds)),
        size=size,
    )


def tissue_fractions(
    mask: np.ndarray, scale_x: float, scale_y: float, grid: TileGrid
) -> np.ndarray:
    """Fraction of tissue under each tile; ``mask`` pixel (i, j) covers level-0 ``j*scale_x``…"""
    if len(grid) == 0:
        return np.zeros(0, dtype=np.float32)
    h, w = mask.shape
    integral = np.zeros((h + 1, w + 1), dtype=np.int64)
    integral[1:, 1:] = np.cumsum(np.cumsum(mask.astype(np.int64), axis=0), axis=1)
    x0 = np.clip(np.floor(grid.xs / scale_x).astype(np.int64), 0, w - 1)
    y0 = np.clip(np.floor(grid.ys / scale_y).astype(np.int64), 0, h - 1)
    x1 = np.clip(np.ceil((grid.xs + grid.footprint_w0) / scale_x).astype(np.int64), x0 + 1, w)
    y1 = np.clip(np.ceil((grid.ys + grid.footprint_h0) / scale_y).astype(np.int64), y0 + 1, h)
    total = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return (total / ((x1 - x0) * (y1 - y0))).astype(np.float32)
