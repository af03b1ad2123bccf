from pathlib import Path

import numpy as np
import openslide
import pytest

from pipeline.io.slide_writer import write_pyramid_tiff

from conftest import tissue_pattern


@pytest.mark.parametrize(
    ("vendor", "mpp", "app_mag", "expect_vendor"),
    [
        ("aperio", 0.25, 40.0, "aperio"),
        ("aperio", None, None, "aperio"),
        ("generic", 0.5, None, "generic-tiff"),
        ("generic", None, None, "generic-tiff"),
    ],
)
def test_openslide_reads_what_was_written(
    tmp_path: Path, vendor: str, mpp: float | None, app_mag: float | None, expect_vendor: str
) -> None:
    rgb = tissue_pattern(1000, 1200, seed=1)
    path = tmp_path / "s.tif"
    write_pyramid_tiff(path, rgb, mpp=mpp, app_mag=app_mag, vendor=vendor, min_level_size=200)
    assert [p.name for p in tmp_path.iterdir()] == ["s.tif"]  # no temp file left
    slide = openslide.OpenSlide(path)
    props = slide.properties
    assert props["openslide.vendor"] == expect_vendor
    assert slide.dimensions == (1200, 1000)
    assert slide.level_count == 3
    np.testing.assert_allclose(slide.level_downsamples, (1.0, 2.0, 4.0), rtol=1e-3)
    if mpp is None:
        assert "openslide.mpp-x" not in props
    else:
        assert float(props["openslide.mpp-x"]) == pytest.approx(mpp, rel=1e-4)
    if app_mag is not None:
        assert float(props["openslide.objective-power"]) == app_mag
    back = np.asarray(slide.read_region((0, 0), 0, (1200, 1000)))[..., :3].astype(int)
    assert np.abs(back - rgb).mean() < 2.0
    level2 = np.asarray(slide.read_region((0, 0), 2, (300, 250)))[..., :3].astype(int)
    small = rgb.reshape(250, 4, 300, 4, 3).mean(axis=(1, 3))
    assert np.abs(level2 - small).mean() < 3.0


def test_rejects_non_rgb(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_pyramid_tiff(tmp_path / "x.tif", np.zeros((10, 10), np.uint8), mpp=0.5)


def test_odd_sizes_keep_every_pixel(tmp_path: Path) -> None:
    rgb = tissue_pattern(601, 803, seed=2)
    path = tmp_path / "odd.tif"
    write_pyramid_tiff(path, rgb, mpp=1.0, vendor="generic", tile_size=128, min_level_size=100)
    slide = openslide.OpenSlide(path)
    assert slide.level_dimensions == ((803, 601), (402, 301), (201, 151))
    np.testing.assert_allclose(slide.level_downsamples, (1.0, 2.0, 4.0), rtol=5e-3)


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError):  # tifffile: tiles must be multiples of 16
        write_pyramid_tiff(tmp_path / "bad.tif", tissue_pattern(64, 64), mpp=0.5, tile_size=100)
    assert list(tmp_path.iterdir()) == []


def test_synthetic_slide_round_trip(tmp_path: Path) -> None:
    from pipeline.synthetic import plan_cohort, render_slide

    spec = plan_cohort(2, 0, size_um=512.0, mpp=0.5).iloc[0].to_dict()
    rgb = render_slide(spec)
    path = tmp_path / f"{spec['slide_id']}.tif"
    write_pyramid_tiff(path, rgb, mpp=0.5, app_mag=20.0)
    slide = openslide.OpenSlide(path)
    assert slide.properties["openslide.vendor"] == "aperio"
    assert float(slide.properties["openslide.objective-power"]) == 20.0
    assert slide.level_count == 3  # 1024, 512, 256
    back = np.asarray(slide.read_region((256, 256), 0, (512, 512)))[..., :3].astype(float)
    assert np.abs(back - rgb[256:768, 256:768]).mean() < 5.0  # JPEG on per-pixel noise
    blocks = (back - rgb[256:768, 256:768]).reshape(64, 8, 64, 8, 3).mean(axis=(1, 3))
    assert np.abs(blocks).mean() < 1.0  # colours are kept
