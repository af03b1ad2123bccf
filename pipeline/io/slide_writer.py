"""Write RGB images as tiled JPEG pyramid TIFFs that openslide reads (Aperio or generic)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import tifffile

from pipeline.io.files import atomic_write


def _halve(rgb: np.ndarray) -> np.ndarray:
    """2× area downsample (mean of 2×2 blocks, rounded; an odd last row/column is repeated):
    uint8 [ceil(H/2), ceil(W/2), 3]."""
    if rgb.shape[0] % 2 or rgb.shape[1] % 2:
        rgb = np.pad(rgb, ((0, rgb.shape[0] % 2), (0, rgb.shape[1] % 2), (0, 0)), mode="edge")
    acc = rgb[0::2, 0::2].astype(np.uint16)
    acc += rgb[1::2, 0::2]
    acc += rgb[0::2, 1::2]
    acc += rgb[1::2, 1::2]
    acc += 2
    acc >>= 2
    return acc.astype(np.uint8)


def pyramid(rgb: np.ndarray, min_level_size: int) -> list[np.ndarray]:
    """Level 0, then 2× reductions while the reduced smaller side is ≥ ``min_level_size``."""
    levels = [rgb]
    while min(-(-s // 2) for s in levels[-1].shape[:2]) >= min_level_size:
        levels.append(_halve(levels[-1]))
    return levels


def _aperio_description(
    index: int,
    full: tuple[int, int],
    size: tuple[int, int],
    tile: int,
    quality: int,
    mpp: float | None,
    app_mag: float | None,
) -> str:
    """ImageDescription as Aperio writes it; openslide parses the ``key = value`` fields."""
    head = f"Aperio Image Library v12.0.0\r\n{full[0]}x{full[1]}"
    if index > 0:
        return f"{head} -> {size[0]}x{size[1]}"
    desc = f"{head} ({tile}x{tile}) JPEG/RGB Q={quality}"
    if app_mag is not None:
        desc += f"|AppMag = {app_mag:g}"
    if mpp is not None:
        desc += f"|MPP = {mpp:.6g}"
    return desc


def write_pyramid_tiff(
    path: Path,
    rgb: np.ndarray,
    *,
    mpp: float | None,
    app_mag: float | None = None,
    vendor: Literal["aperio", "generic"] = "aperio",
    tile_size: int = 256,
    jpeg_quality: int = 90,
    min_level_size: int = 256,
) -> None:
    """Write uint8 [H, W, 3] as a tiled JPEG pyramid TIFF, levels as separate pages.

    ``aperio``: page 0's ImageDescription starts with "Aperio Image Library" and carries
    ``|MPP = …|AppMag = …`` (each omitted when None), so openslide reports vendor ``aperio``
    with ``openslide.mpp-x`` and ``openslide.objective-power``. ``generic``: MPP in the TIFF
    resolution tags (pixels per centimetre; none when ``mpp`` is None), vendor
    ``generic-tiff``. Written to a temporary file and renamed.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    levels = pyramid(rgb, min_level_size)
    height, width = rgb.shape[:2]

    def write(tmp: Path) -> None:
        with tifffile.TiffWriter(tmp, bigtiff=rgb.nbytes > 2**31) as tif:
            for i, level in enumerate(levels):
                kwargs: dict = {
                    "photometric": "rgb",
                    "compression": "jpeg",
                    "compressionargs": {"level": jpeg_quality},
                    "tile": (tile_size, tile_size),  # openslide needs every level tiled
                    "metadata": None,
                    "maxworkers": 1,  # one core per slide: callers parallelise over slides
                    "subfiletype": 0 if i == 0 else 1,
                }
                if vendor == "aperio":
                    kwargs["description"] = _aperio_description(
                        i,
                        (width, height),
                        level.shape[1::-1],
                        tile_size,
                        jpeg_quality,
                        mpp,
                        app_mag,
                    )
                elif mpp is not None:
                    ppcm = 1e4 / (mpp * width / level.shape[1])  # pixels per cm at this level
                    kwargs["resolution"] = (ppcm, ppcm)
                    kwargs["resolutionunit"] = "CENTIMETER"
                tif.write(level, **kwargs)

    atomic_write(Path(path), write)
