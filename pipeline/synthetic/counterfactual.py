"""Counterfactual renders of a planned slide: the same slide (seed, stain, center) with the
planted nuclear density and size set to their normal or tumor values one at a time, or with
another center's stain. What a classifier's logit does across them is the ground truth of
what it uses, independent of any generator (scripts/classifier_counterfactuals.py;
docs/results.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import TilingConfig
from pipeline.slides.grid import tile_grid, tissue_fractions
from pipeline.slides.tissue import tissue_mask
from pipeline.synthetic.he import CENTER_STAINS, render_slide
from pipeline.synthetic.plan import NUCLEAR_RADIUS_UM, NUCLEI_PER_MM2

LABELS = ("normal", "tumor")


def counterfactual_renders(
    spec: Mapping[str, Any], side_px: int, mpp: float
) -> Iterator[tuple[str, str, np.ndarray]]:
    """(density label, size label, uint8 [side_px, side_px, 3] render at ``mpp``) for the four
    combinations of planted density and nuclear size, everything else as in ``spec``."""
    for density in LABELS:
        for size in LABELS:
            yield (
                density,
                size,
                _render(
                    spec,
                    side_px,
                    mpp,
                    nuclei_per_mm2=NUCLEI_PER_MM2[density],
                    nuclear_radius_um=NUCLEAR_RADIUS_UM[size],
                ),
            )


def _render(spec: Mapping[str, Any], side_px: int, mpp: float, **changes: Any) -> np.ndarray:
    """A ``side_px`` square of the slide at ``mpp``, with ``changes`` to its plan."""
    return render_slide({**spec, "width_px": side_px, "height_px": side_px, "mpp": mpp, **changes})


def tissue_tiles(rgb: np.ndarray, tiling: TilingConfig) -> np.ndarray:
    """The tiles ``tile`` would keep from a render at ``tiling.mpp``: the same grid, tissue
    mask and ``min_tissue`` rule (pipeline.slides), read from the array: [N, size, size, 3]."""
    h, w = rgb.shape[:2]
    grid = tile_grid(
        w,
        h,
        mpp_x=tiling.mpp,
        mpp_y=tiling.mpp,
        target_mpp=tiling.mpp,
        size=tiling.size,
        step=tiling.step,
        level_downsamples=[1.0],
    )
    frac = tissue_fractions(tissue_mask(rgb, tiling.mpp, tiling.tissue), 1.0, 1.0, grid)
    keep = grid.subset(frac >= tiling.min_tissue)
    n = tiling.size
    tiles = [rgb[y : y + n, x : x + n] for x, y in zip(keep.xs, keep.ys, strict=True)]
    return np.stack(tiles) if tiles else np.zeros((0, n, n, 3), np.uint8)


def counterfactual_logits(
    specs: Iterable[Mapping[str, Any]],
    score: Callable[[np.ndarray], np.ndarray],
    tiling: TilingConfig,
    side_um: float = 512.0,
) -> pd.DataFrame:
    """Mean ``score`` (uint8 tiles [N, H, W, 3] → logits [N]) over each slide's counterfactual
    renders: one row per slide × planted density × nuclear size (columns slide_id, center,
    density, size, logit, n_tiles)."""
    side = int(round(side_um / tiling.mpp))
    rows = []
    for spec in specs:
        for density, size, rgb in counterfactual_renders(spec, side, tiling.mpp):
            rows.append(
                {
                    "slide_id": spec["slide_id"],
                    "center": spec["center"],
                    "density": density,
                    "size": size,
                    **_mean_score(rgb, score, tiling),
                }
            )
    return pd.DataFrame(rows)


def stain_counterfactual_logits(
    specs: Iterable[Mapping[str, Any]],
    score: Callable[[np.ndarray], np.ndarray],
    tiling: TilingConfig,
    centers: Iterable[str],
    side_um: float = 512.0,
) -> pd.DataFrame:
    """Mean ``score`` over each slide rendered with each center's stain (``CENTER_STAINS``),
    its planted nuclei and layout unchanged: one row per slide × stain center (columns
    slide_id, center, stain_center, logit, n_tiles). How far the logit moves with the stain
    alone is the classifier's site bias."""
    side = int(round(side_um / tiling.mpp))
    rows = []
    for spec in specs:
        for c in centers:
            rgb = _render(spec, side, tiling.mpp, stain=CENTER_STAINS[c])
            rows.append(
                {
                    "slide_id": spec["slide_id"],
                    "center": spec["center"],
                    "stain_center": c,
                    **_mean_score(rgb, score, tiling),
                }
            )
    return pd.DataFrame(rows)


def _mean_score(
    rgb: np.ndarray, score: Callable[[np.ndarray], np.ndarray], tiling: TilingConfig
) -> dict[str, Any]:
    tiles = tissue_tiles(rgb, tiling)
    return {"n_tiles": len(tiles), "logit": float(np.mean(score(tiles))) if len(tiles) else np.nan}
