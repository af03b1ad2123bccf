from pathlib import Path

import numpy as np
import openslide
import pytest

from pipeline.io.slide_writer import write_pyramid_tiff

from conftest import tissue_pattern


@pytest.mark.parametrize(
    ("vendor", "mpp", "app_mag", "expect_vendor"),
    [("aperio", 0.25, 40.0, "aperio"), ("aperio", None, None, "aperio"),
     ("generic", 0.5, None, "generic-tiff"), ("generic", None, None, "generic-tiff")],
)  # fmt: skip
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
