"""Shared fixtures: the real data in ../shared/data, small slides written on the fly, local Ray."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("STYLEPATH_SHARED_DATA", REPO.parent / "shared" / "data"))
SVS = SHARED_DATA / "wsi" / "CMU-1-Small-Region.svs"
PYRAMID_TIF = SHARED_DATA / "wsi" / "CMU-1-Small-Region.pyramid.tif"
TILES_DIR = SHARED_DATA / "tiles"


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if not SVS.is_file():
        raise pytest.UsageError(f"shared test data not found at {SHARED_DATA}")


def tissue_pattern(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Glass with a pink/purple tissue disc and a coarse texture: uint8 [H, W, 3]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    disc = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (0.35 * min(height, width)) ** 2
    img = np.full((height, width, 3), 242, dtype=np.uint8)
    coarse = rng.integers(0, 2, size=(height // 16 + 1, width // 16 + 1))
    texture = np.repeat(np.repeat(coarse, 16, 0), 16, 1)[:height, :width].astype(bool)
    img[disc & texture] = (150, 60, 140)
    img[disc & ~texture] = (220, 120, 170)
    return img


@pytest.fixture()
def make_slide(tmp_path: Path):
    """Write a small pyramid TIFF: make_slide(name, rgb=None, mpp=0.5, vendor='aperio')."""

    def _make(
        name: str,
        rgb: np.ndarray | None = None,
        *,
        mpp: float | None = 0.5,
        app_mag: float | None = None,
        vendor: str = "aperio",
        size: int = 1024,
    ) -> Path:
        from pipeline.io.slide_writer import write_pyramid_tiff

        if rgb is None:
            rgb = tissue_pattern(size, size)
        path = tmp_path / "slides" / f"{name}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_pyramid_tiff(path, rgb, mpp=mpp, app_mag=app_mag, vendor=vendor, min_level_size=128)
        return path

    return _make


@pytest.fixture(scope="session")
def ray_local():
    """One embedded Ray for the whole session (start-up costs seconds)."""
    import ray

    from pipeline.config import RayConfig
    from tasks.runtime import ensure_ray

    ensure_ray(RayConfig(num_cpus=2))
    yield ray
    ray.shutdown()


@pytest.fixture()
def one_thread():
    """Tiny models: one torch thread is faster and immune to a busy shared CPU."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
