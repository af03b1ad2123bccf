"""Tiling one slide: plan the grid (MPP, tissue, level) and read tiles; plus the stage's
bookkeeping (fingerprints, which slides are pending, the cohort manifests)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.cohort import metadata_columns
from pipeline.config import RadiologyConfig, TilingConfig
from pipeline.radiology import ImageError, image_tile, read_image
from pipeline.slides import (
    SlideError,
    SlideInfo,
    TileGrid,
    read_tile,
    resolve_mpp,
    slide_info,
    tile_grid,
    tissue_fractions,
    tissue_mask,
)
from pipeline.slides.open import Slide

# Bump when the tiling algorithm changes in a way that changes pixels or the grid.
TILING_VERSION = 1

TILE_COLUMNS = {
    "tile_id": "string",
    "slide_id": "string",
    "index": "int64",
    "x": "int64",
    "y": "int64",
    "level": "int64",
    "mpp": "float64",
    "tissue_fraction": "float32",
}
SLIDE_COLUMNS = {
    "slide_id": "string",
    "status": "string",
    "error": "string",
    "note": "string",
    "n_tiles": "int64",
    "mpp": "float64",
    "mpp_source": "string",
    "level": "int64",
    "width": "int64",
    "height": "int64",
    "vendor": "string",
    "seconds": "float64",
    "path": "string",
    "fingerprint": "string",
}


@dataclass
class SlidePlan:
    """Everything needed to read a slide's tiles; small enough to ship to workers."""

    slide_id: str
    path: str
    info: SlideInfo
    mpp_x: float
    mpp_y: float
    mpp_source: str
    grid: TileGrid
    tissue_fraction: np.ndarray  # [N] float32
    target_mpp: float
    note: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_tiles(self) -> int:
        return len(self.grid)


def tissue_thumbnail(slide: Slide, info: SlideInfo, mpp_x: float, mask_mpp: float):
    """Low-resolution RGB image for tissue detection; returns (rgb, µm/px, scale_x, scale_y)."""
    factor = max(1.0, mask_mpp / mpp_x)
    tw = max(1, round(info.width / factor))
    th = max(1, round(info.height / factor))
    thumb = np.asarray(slide.get_thumbnail((tw, th)).convert("RGB"))
    scale_x = info.width / thumb.shape[1]
    scale_y = info.height / thumb.shape[0]
    return thumb, mpp_x * scale_x, scale_x, scale_y


def plan_slide(
    slide: Slide, slide_id: str, path: str, cohort_mpp: float | None, cfg: TilingConfig
) -> SlidePlan:
    """Resolve MPP, detect tissue and lay out the tiles to read (raises ``SlideError``)."""
    info = slide_info(slide)
    resolved = resolve_mpp(
        file_mpp_x=info.mpp_x,
        file_mpp_y=info.mpp_y,
        objective_power=info.objective_power,
        cohort_mpp=cohort_mpp,
        default_mpp=cfg.default_mpp,
    )
    if resolved is None:
        raise SlideError(
            path,
            "no MPP: the file has neither openslide.mpp-x nor an objective power, the cohort "
            "gives no mpp for it, and tiling.default_mpp is not set",
        )
    mpp_x, mpp_y, source = resolved
    full = tile_grid(
        info.width,
        info.height,
        mpp_x=mpp_x,
        mpp_y=mpp_y,
        target_mpp=cfg.mpp,
        size=cfg.size,
        step=cfg.step,
        level_downsamples=info.level_downsamples,
    )
    try:
        thumb, thumb_mpp, sx, sy = tissue_thumbnail(slide, info, mpp_x, cfg.tissue.mask_mpp)
    except Exception as exc:  # noqa: BLE001 - decode errors of a damaged file
        raise SlideError(path, f"cannot read a thumbnail for tissue detection: {exc}") from None
    mask = tissue_mask(thumb, thumb_mpp, cfg.tissue)
    frac = tissue_fractions(mask, sx, sy, full)
    keep = frac >= cfg.min_tissue if cfg.min_tissue > 0 else np.ones(len(full), dtype=bool)
    grid = full.subset(keep)
    note = ""
    if len(full) == 0:
        note = "slide smaller than one tile"
    elif not mask.any():
        note = "no tissue"
    elif len(grid) == 0:
        note = f"no tile reaches min_tissue={cfg.min_tissue}"
    return SlidePlan(
        slide_id=slide_id,
        path=path,
        info=info,
        mpp_x=mpp_x,
        mpp_y=mpp_y,
        mpp_source=source,
        grid=grid,
        tissue_fraction=frac[keep],
        target_mpp=cfg.mpp,
        note=note,
    )


def read_tiles(slide: Slide, plan: SlidePlan, start: int, stop: int) -> np.ndarray:
    """Tiles ``start:stop`` of the plan: uint8 [n, size, size, 3] (raises ``SlideError``)."""
    grid = plan.grid
    out = np.empty((stop - start, grid.size, grid.size, 3), dtype=np.uint8)
    for k, i in enumerate(range(start, stop)):
        x, y = int(grid.xs[i]), int(grid.ys[i])
        try:
            out[k] = read_tile(slide, grid, x, y)
        except Exception as exc:  # noqa: BLE001 - openslide/PIL decode errors
            raise SlideError(plan.path, f"cannot read tile at ({x}, {y}): {exc}") from None
    return out


def tile_rows(plan: SlidePlan) -> pd.DataFrame:
    """One row per planned tile (index = position in the slide's tile array)."""
    n = plan.n_tiles
    xs, ys = plan.grid.xs, plan.grid.ys
    df = pd.DataFrame(
        {
            "tile_id": [f"{plan.slide_id}_{x}_{y}" for x, y in zip(xs, ys, strict=True)],
            "slide_id": [plan.slide_id] * n,
            "index": np.arange(n, dtype=np.int64),
            "x": xs.astype(np.int64),
            "y": ys.astype(np.int64),
            "level": np.full(n, plan.grid.level, dtype=np.int64),
            "mpp": np.full(n, plan.target_mpp, dtype=np.float64),
            "tissue_fraction": plan.tissue_fraction.astype(np.float32),
        }
    )
    return df.astype(TILE_COLUMNS)


def slide_record(
    slide_id: str,
    path: str,
    fingerprint: str,
    *,
    plan: SlidePlan | None = None,
    error: str = "",
    cacheable: bool = True,
    seconds: float = 0.0,
) -> dict[str, Any]:
    """The row of ``slides.parquet`` for one slide (ok when ``plan`` is given and no error)."""
    ok = plan is not None and not error
    info = plan.info if plan is not None else None
    return {
        "slide_id": slide_id,
        "status": "ok" if ok else "failed",
        "error": error,
        "note": plan.note if plan is not None else "",
        "n_tiles": plan.n_tiles if ok else 0,
        "mpp": plan.mpp_x if plan is not None else None,
        "mpp_source": plan.mpp_source if plan is not None else "",
        "level": plan.grid.level if plan is not None else None,
        "width": info.width if info else None,
        "height": info.height if info else None,
        "vendor": info.vendor if info else "",
        "seconds": round(float(seconds), 3),
        "path": path,
        "fingerprint": fingerprint,
        "cacheable": bool(cacheable),
    }


# -- radiology: one image → one tile ---------------------------------------------------------------
@dataclass
class ImagePlan:
    """A radiology image tiled: its one tile and what the manifests record about it."""

    slide_id: str
    path: str
    tile: np.ndarray  # uint8 [size, size, 1]
    kind: str  # "DICOM CT", "PNG", …
    width: int  # of the decoded frame
    height: int
    mpp: float | None  # source µm/px (columns) after overrides; None when unknown
    mpp_source: str  # cohort, PixelSpacing, ImagerPixelSpacing, config_default, none
    tile_mpp: float  # µm per tile pixel (NaN when unknown)
    content_fraction: float  # share of the tile that is image, not padding
    note: str = ""

    @property
    def n_tiles(self) -> int:
        return 1


def plan_image(
    slide_id: str,
    path: str,
    cohort_mpp: float | None,
    frame: int | None,
    tiling: TilingConfig,
    radiology: RadiologyConfig,
) -> ImagePlan:
    """Decode and tile one radiology image (raises ``ImageError``).

    Pixel spacing is the MPP equivalent: the cohort's ``mpp`` (µm/px, square pixels), else the
    file's PixelSpacing / ImagerPixelSpacing (mm → µm), else ``tiling.default_mpp``; an image
    without any is still tiled (its tile µm/px is NaN)."""
    img = read_image(path, radiology, frame)
    source = img.spacing_source or "none"
    if cohort_mpp is not None and np.isfinite(cohort_mpp) and cohort_mpp > 0:
        img.spacing_mm, source = (cohort_mpp / 1000.0, cohort_mpp / 1000.0), "cohort"
    elif img.spacing_mm is None and tiling.default_mpp:
        d = tiling.default_mpp / 1000.0
        img.spacing_mm, source = (d, d), "config_default"
    t = image_tile(img, tiling.size, radiology.pad_value)
    notes = [*img.notes, img.window]
    if img.spacing_mm is not None and abs(img.spacing_mm[0] - img.spacing_mm[1]) > 1e-9:
        notes.append(f"non-square pixels {img.spacing_mm[0]:g} x {img.spacing_mm[1]:g} mm")
    return ImagePlan(
        slide_id=slide_id,
        path=path,
        tile=t.tile,
        kind=img.kind,
        width=img.width,
        height=img.height,
        mpp=img.spacing_mm[1] * 1000.0 if img.spacing_mm else None,
        mpp_source=source,
        tile_mpp=t.tile_mpp,
        content_fraction=t.content_fraction,
        note="; ".join(n for n in notes if n),
    )


def image_rows(plan: ImagePlan) -> pd.DataFrame:
    """The one tile row of a radiology image: x = y = level = 0, ``mpp`` = the tile's µm/px,
    ``tissue_fraction`` = the share of the tile covered by the image (not padding)."""
    df = pd.DataFrame(
        {
            "tile_id": [f"{plan.slide_id}_0_0"],
            "slide_id": [plan.slide_id],
            "index": np.zeros(1, np.int64),
            "x": np.zeros(1, np.int64),
            "y": np.zeros(1, np.int64),
            "level": np.zeros(1, np.int64),
            "mpp": [plan.tile_mpp],
            "tissue_fraction": np.float32([plan.content_fraction]),
        }
    )
    return df.astype(TILE_COLUMNS)


def image_record(
    slide_id: str,
    path: str,
    fingerprint: str,
    *,
    plan: ImagePlan | None = None,
    error: str = "",
    cacheable: bool = True,
    seconds: float = 0.0,
) -> dict[str, Any]:
    """The ``slides.parquet`` row of a radiology image (same columns as a slide's)."""
    ok = plan is not None and not error
    return {
        "slide_id": slide_id,
        "status": "ok" if ok else "failed",
        "error": error,
        "note": plan.note if plan is not None else "",
        "n_tiles": 1 if ok else 0,
        "mpp": plan.mpp if plan is not None else None,
        "mpp_source": plan.mpp_source if plan is not None else "",
        "level": 0 if plan is not None else None,
        "width": plan.width if plan is not None else None,
        "height": plan.height if plan is not None else None,
        "vendor": plan.kind if plan is not None else "",
        "seconds": round(float(seconds), 3),
        "path": path,
        "fingerprint": fingerprint,
        "cacheable": bool(cacheable),
    }


def try_plan_image(
    slide_id: str,
    path: str,
    cohort_mpp: float | None,
    frame: int | None,
    tiling: TilingConfig,
    radiology: RadiologyConfig,
) -> tuple[ImagePlan | None, str]:
    """``plan_image`` with the file's problems returned as the error string."""
    try:
        return plan_image(slide_id, path, cohort_mpp, frame, tiling, radiology), ""
    except ImageError as exc:
        return None, str(exc)


def file_signature(path: str | Path) -> str:
    """Size and modification time of a file (``missing`` when absent)."""
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}-{st.st_mtime_ns}"


def slide_fingerprint(
    path: str, cohort_mpp: float | None, config_hash: str, frame: int | None = None
) -> str:
    """What a slide's tiles depend on: the file, its MPP override, the tiling config, the code
    (and for radiology the cohort's frame choice)."""
    mpp = "" if cohort_mpp is None or pd.isna(cohort_mpp) else repr(float(cohort_mpp))
    fp = f"v{TILING_VERSION}:{config_hash}:{file_signature(path)}:{mpp}"
    return fp if frame is None else f"{fp}:f{int(frame)}"


def is_done(record: dict[str, Any] | None, fingerprint: str) -> bool:
    """A slide needs no work if its record has the same fingerprint and is final.

    Failures caused by the file (corrupt, no MPP, …) are final for an unchanged file; failures
    of the system (a worker lost after all retries) are retried on the next run.
    """
    return (
        record is not None
        and record.get("fingerprint") == fingerprint
        and (record.get("status") == "ok" or bool(record.get("cacheable")))
    )


def slides_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """``slides.parquet``: one row per cohort slide, in cohort order."""
    df = pd.DataFrame(records, columns=list(SLIDE_COLUMNS))
    for col in ("error", "note", "mpp_source", "vendor", "path", "fingerprint"):
        df[col] = df[col].fillna("")
    for col in ("n_tiles",):
        df[col] = df[col].fillna(0)
    return df.astype({k: ("Int64" if v == "int64" else v) for k, v in SLIDE_COLUMNS.items()})


def tiles_table(cohort: pd.DataFrame, parts: list[pd.DataFrame]) -> pd.DataFrame:
    """``tiles.parquet``: all tiles of ok slides, in cohort order, with the cohort's metadata."""
    frames = [p for p in parts if len(p)]
    tiles = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(TILE_COLUMNS))
    )
    tiles = tiles.astype(TILE_COLUMNS)
    meta = cohort[metadata_columns(cohort)].copy()
    meta["slide_id"] = meta["slide_id"].astype("string")
    return tiles.merge(meta, on="slide_id", how="left", validate="many_to_one")
