from pathlib import Path

import numpy as np
import pytest

from pipeline.config import TilingConfig, TissueConfig
from pipeline.slides import (
    SlideError,
    choose_level,
    open_slide,
    resolve_mpp,
    slide_info,
    tile_grid,
    tissue_mask,
)
from pipeline.tiling import plan_slide, read_tiles, tissue_thumbnail

from conftest import PYRAMID_TIF, SVS, TILES_DIR, tissue_pattern


def test_choose_level_never_coarser_than_target() -> None:
    ds = (1.0, 2.0003, 4.002, 8.0167)
    assert choose_level(ds, 1.0) == 0
    assert choose_level(ds, 1.99) == 0
    assert choose_level(ds, 2.0) == 1  # 2.0003 is within rounding of a 2x level
    assert choose_level(ds, 3.9) == 1
    assert choose_level(ds, 100.0) == 3
    assert choose_level((1.0,), 4.0) == 0


def test_grid_has_the_same_physical_size_at_any_mpp() -> None:
    # A 2 mm square slide scanned at 0.25 and at 0.5 µm/px; tiles of 64 px at 1 µm/px.
    fine = tile_grid(
        8000,
        8000,
        mpp_x=0.25,
        mpp_y=0.25,
        target_mpp=1.0,
        size=64,
        step=64,
        level_downsamples=(1.0, 2.0, 4.0),
    )
    coarse = tile_grid(
        4000,
        4000,
        mpp_x=0.5,
        mpp_y=0.5,
        target_mpp=1.0,
        size=64,
        step=64,
        level_downsamples=(1.0, 2.0),
    )
    assert len(fine) == len(coarse) == 31 * 31
    assert fine.footprint_w0 == 256 and coarse.footprint_w0 == 128
    np.testing.assert_array_equal(fine.xs * 0.25, coarse.xs * 0.5)  # same µm positions
    assert (fine.level, fine.read_w) == (2, 64) and (coarse.level, coarse.read_w) == (1, 64)


def test_grid_fractional_footprint_and_stride() -> None:
    g = tile_grid(
        1000,
        500,
        mpp_x=0.499,
        mpp_y=0.499,
        target_mpp=0.5,
        size=100,
        step=50,
        level_downsamples=(1.0,),
    )
    w0 = 100 * 0.5 / 0.499
    assert g.footprint_w0 == pytest.approx(w0)
    assert (g.xs + w0 <= 1000 + 1).all() and (g.ys + w0 <= 500 + 1).all()
    assert len(np.unique(g.xs)) == int((1000 - w0) // (50 * 0.5 / 0.499)) + 1
    assert g.read_w == 100  # level 0, 100.2 px rounded
    assert (
        len(
            tile_grid(
                50,
                50,
                mpp_x=0.5,
                mpp_y=0.5,
                target_mpp=0.5,
                size=64,
                step=64,
                level_downsamples=(1.0,),
            )
        )
        == 0
    )


def test_resolve_mpp_order() -> None:
    kw = dict(file_mpp_x=0.25, file_mpp_y=0.26, objective_power=20.0, default_mpp=1.0)
    assert resolve_mpp(cohort_mpp=0.5, **kw) == (0.5, 0.5, "cohort")
    assert resolve_mpp(cohort_mpp=None, **kw) == (0.25, 0.26, "file")
    kw.update(file_mpp_x=None, file_mpp_y=None)
    assert resolve_mpp(cohort_mpp=float("nan"), **kw) == (0.5, 0.5, "objective_power")
    kw.update(objective_power=None)
    assert resolve_mpp(cohort_mpp=None, **kw) == (1.0, 1.0, "config_default")
    kw.update(default_mpp=None)
    assert resolve_mpp(cohort_mpp=None, **kw) is None


def test_real_svs_and_pyramid_tif_metadata() -> None:
    svs = slide_info(open_slide(SVS))
    assert (svs.vendor, svs.width, svs.height, svs.mpp_x, svs.objective_power) == (
        "aperio",
        2220,
        2967,
        0.499,
        20.0,
    )
    tif = slide_info(open_slide(PYRAMID_TIF))
    assert tif.vendor == "generic-tiff" and len(tif.level_downsamples) == 4
    assert tif.mpp_x == pytest.approx(0.499)


def test_tissue_mask_on_real_svs() -> None:
    slide = open_slide(SVS)
    info = slide_info(slide)
    thumb, mpp, _, _ = tissue_thumbnail(slide, info, 0.499, 8.0)
    mask = tissue_mask(thumb, mpp, TissueConfig())
    assert mpp == pytest.approx(8.0, rel=0.05)
    frac = mask.mean()
    assert 0.3 < frac < 0.95  # this crop is mostly tissue with glass gaps
    # Glass (bright, unsaturated) is never tissue; dark stained pixels almost always are.
    bright = thumb.min(axis=2) > 235
    assert mask[bright].mean() < 0.1
    dark = thumb.mean(axis=2) < 150
    assert mask[dark].mean() > 0.95


def test_tissue_mask_blank_and_all_tissue() -> None:
    cfg = TissueConfig()
    rng = np.random.default_rng(0)
    glass = (240 + rng.integers(-3, 4, size=(64, 64, 3))).astype(np.uint8)
    assert not tissue_mask(glass, 8.0, cfg).any()
    tissue = tissue_pattern(64, 64)[16:48, 16:48]  # no glass at all: pink + purple
    assert tissue_mask(np.ascontiguousarray(tissue), 8.0, cfg).mean() > 0.95


def test_same_physical_tiles_from_two_resolutions(make_slide) -> None:
    """A slide at 0.25 µm/px and its 0.5 µm/px copy give (nearly) the same tiles at 1 µm/px."""
    rgb = tissue_pattern(2048, 2048, seed=3)
    half = rgb.reshape(1024, 2, 1024, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    cfg = TilingConfig(mpp=1.0, size=64, min_tissue=0.5)
    tiles = {}
    for name, img, mpp in (("fine", rgb, 0.25), ("coarse", half, 0.5)):
        path = make_slide(name, img, mpp=mpp)
        slide = open_slide(path)
        plan = plan_slide(slide, name, str(path), None, cfg)
        assert plan.mpp_source == "file" and plan.n_tiles > 16
        tiles[name] = (plan, read_tiles(slide, plan, 0, plan.n_tiles))
    (pf, tf), (pc, tc) = tiles["fine"], tiles["coarse"]
    np.testing.assert_array_equal(pf.grid.xs * 0.25, pc.grid.xs * 0.5)
    assert pf.grid.level == 2 and pc.grid.level == 1  # read from the matching pyramid level
    assert np.abs(tf.astype(int) - tc.astype(int)).mean() < 6  # JPEG noise only


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"not a slide at all\n", "unsupported or corrupt"),
        (b"", "empty file"),
    ],
)
def test_open_rejects_bad_files(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.svs"
    path.write_bytes(content)
    with pytest.raises(SlideError, match=reason) as info:
        open_slide(path)
    assert str(path) in str(info.value)


def test_open_missing_and_truncated(tmp_path: Path) -> None:
    with pytest.raises(SlideError, match="file not found"):
        open_slide(tmp_path / "nope.svs")
    cut = tmp_path / "cut.svs"
    cut.write_bytes(SVS.read_bytes()[: SVS.stat().st_size // 3])
    with pytest.raises(SlideError):
        slide = open_slide(cut)
        plan = plan_slide(slide, "cut", str(cut), None, TilingConfig(mpp=1.0, size=64))
        read_tiles(slide, plan, 0, plan.n_tiles)


@pytest.mark.parametrize(
    ("keep", "reason"),
    [(60_000, "unsupported or corrupt file"), (1_900_000, "truncated or corrupt Aperio SVS")],
)
def test_truncated_svs_is_named_truncated(tmp_path: Path, keep: int, reason: str) -> None:
    """Cut early, PIL cannot read the file either; cut late (1.9 of 1.94 MB), PIL opens its
    first directory as a plain image with no MPP. Both are named a damaged file."""
    cut = tmp_path / "cut.svs"
    cut.write_bytes(SVS.read_bytes()[:keep])
    with pytest.raises(SlideError, match=reason):
        open_slide(cut)


def test_png_through_image_slide_needs_mpp() -> None:
    path = TILES_DIR / "tiatoolbox_target_image.png"
    slide = open_slide(path)
    cfg = TilingConfig(mpp=0.5, size=128, min_tissue=0.5)
    with pytest.raises(SlideError, match="no MPP"):
        plan_slide(slide, "png", str(path), None, cfg)
    plan = plan_slide(slide, "png", str(path), 0.5, cfg)
    assert plan.info.vendor == "image" and plan.mpp_source == "cohort"
    assert plan.n_tiles == 49  # 1000 px at 0.5 µm/px → 7 × 7 tiles of 128 px, all tissue
    assert read_tiles(slide, plan, 0, 2).shape == (2, 128, 128, 3)
