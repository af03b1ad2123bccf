"""Whole-slide images: open, resolve MPP, detect tissue, lay out the tile grid, read tiles."""

from pipeline.slides.grid import TileGrid, choose_level, tile_grid, tissue_fractions
from pipeline.slides.mpp import resolve_mpp
from pipeline.slides.open import SlideError, SlideInfo, open_slide, slide_info
from pipeline.slides.read import read_region_rgb, read_tile
from pipeline.slides.tissue import tissue_mask

__all__ = [
    "SlideError",
    "SlideInfo",
    "TileGrid",
    "choose_level",
    "open_slide",
    "read_region_rgb",
    "read_tile",
    "resolve_mpp",
    "slide_info",
    "tile_grid",
    "tissue_fractions",
    "tissue_mask",
]
