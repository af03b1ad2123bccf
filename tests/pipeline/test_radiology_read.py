"""Radiology images: the real DICOM/PNG files in ../shared/data/radiology, and DICOM variants
written with pydicom from them (MONOCHROME1, multi-frame, VOI LUT, functional groups, bad files)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import MPEG2MPML, JPEGLSLossless

from pipeline.config import RadiologyConfig, TilingConfig
from pipeline.io.dicom_writer import dicom_dataset, save_dicom, write_dicom
from pipeline.radiology import ImageError, image_tile, read_image
from pipeline.tiling import image_rows, plan_image

from conftest import SHARED_DATA

RAD = SHARED_DATA / "radiology"
CT, MR, CXR = RAD / "CT_small.dcm", RAD / "MR_small.dcm", RAD / "cxr_nih_00000001_000.png"
AUTO = RadiologyConfig()


def linear_window(v: np.ndarray, c: float, w: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 (LINEAR) onto [0, 1], written out independently."""
    return np.clip((v - (c - 0.5)) / (w - 1) + 0.5, 0, 1)


def test_ct_modality_lut_gives_hounsfield_units() -> None:
    ds = pydicom.dcmread(CT)
    stored = ds.pixel_array.astype(np.float64)
    hu = stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept)  # slope 1, intercept -1024
    img = read_image(CT, RadiologyConfig(window="fixed", window_center=40, window_width=400))
    np.testing.assert_allclose(img.grey, np.clip((hu + 160) / 400, 0, 1), atol=1e-6)
    assert img.kind == "DICOM CT" and img.spacing_mm == pytest.approx((0.661468, 0.661468))
    assert img.spacing_source == "PixelSpacing"
    # No window in CT_small: auto falls back to percentiles of the HU values.
    auto = read_image(CT, AUTO)
    assert auto.window.startswith("percentiles") and auto.grey.min() == 0 and auto.grey.max() == 1
    lo, hi = np.percentile(hu, (0.5, 99.5))
    np.testing.assert_allclose(auto.grey, np.clip((hu - lo) / (hi - lo), 0, 1), atol=1e-6)


def test_mr_uses_the_files_window() -> None:
    ds = pydicom.dcmread(MR)
    img = read_image(MR, AUTO)
    assert "C 600 W 1600" in img.window
    expected = linear_window(ds.pixel_array.astype(np.float64), 600, 1600)
    np.testing.assert_allclose(img.grey, expected, atol=1e-6)
    minmax = read_image(MR, RadiologyConfig(window="minmax"))
    assert minmax.grey.min() == 0 and minmax.grey.max() == 1


def test_rescale_slope_and_intercept(tmp_path: Path) -> None:
    stored = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 1000
    write_dicom(tmp_path / "r.dcm", stored, rescale=(2.0, -100.0), window=(300, 1000))
    img = read_image(tmp_path / "r.dcm", AUTO)
    np.testing.assert_allclose(img.grey, linear_window(stored * 2.0 - 100, 300, 1000), atol=1e-6)


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    ds = pydicom.dcmread(MR)
    ds.PhotometricInterpretation = "MONOCHROME1"
    save_dicom(tmp_path / "m1.dcm", ds)
    mono2, mono1 = read_image(MR, AUTO), read_image(tmp_path / "m1.dcm", AUTO)
    np.testing.assert_allclose(mono1.grey, 1.0 - mono2.grey, atol=1e-6)
    assert "MONOCHROME1 inverted" in mono1.notes


def test_multiframe_first_or_chosen_frame(tmp_path: Path) -> None:
    frames = np.stack([np.full((16, 24), v, np.uint16) for v in (100, 200, 300)])
    frames[:, 0, 0] = 0  # a reference dark pixel per frame
    write_dicom(tmp_path / "mf.dcm", frames, window=(200, 400))
    first = read_image(tmp_path / "mf.dcm", AUTO)
    chosen = read_image(tmp_path / "mf.dcm", AUTO, frame=2)
    by_cfg = read_image(tmp_path / "mf.dcm", RadiologyConfig(frame=1))
    assert (first.n_frames, first.frame, chosen.frame, by_cfg.frame) == (3, 0, 2, 1)
    assert first.grey[5, 5] == pytest.approx(linear_window(np.float64(100), 200, 400))
    assert chosen.grey[5, 5] == pytest.approx(linear_window(np.float64(300), 200, 400))
    assert by_cfg.grey[5, 5] == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ImageError, match="frame 3 requested but the file has 3"):
        read_image(tmp_path / "mf.dcm", AUTO, frame=3)


def test_voi_lut_sequence_wins_over_the_window(tmp_path: Path) -> None:
    stored = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 4) % 1024
    lut = Dataset()
    lut.LUTDescriptor = [1024, 0, 8]
    table = (np.sqrt(np.arange(1024) / 1023) * 255).round().astype(np.uint16)
    lut.add_new(0x00283006, "US", table.tolist())  # LUT Data (ambiguous VR: US here)
    ds = dicom_dataset(stored, window=(10, 20), bits_stored=10)
    ds.VOILUTSequence = [lut]
    save_dicom(tmp_path / "lut.dcm", ds)
    img = read_image(tmp_path / "lut.dcm", AUTO)
    assert img.window == "VOI LUT 0 of the file"
    np.testing.assert_allclose(img.grey, table[stored] / 255.0, atol=1e-6)


def test_enhanced_multiframe_functional_groups(tmp_path: Path) -> None:
    frames = np.stack([np.full((8, 8), 500, np.uint16)] * 2)
    ds = dicom_dataset(frames)

    def group(intercept: float, center: float, spacing: float) -> Dataset:
        pvt, voi, meas, g = Dataset(), Dataset(), Dataset(), Dataset()
        pvt.RescaleSlope, pvt.RescaleIntercept = "1", str(intercept)
        voi.WindowCenter, voi.WindowWidth = str(center), "201"
        meas.PixelSpacing = [str(spacing), str(spacing)]
        g.PixelValueTransformationSequence = [pvt]
        g.FrameVOILUTSequence = [voi]
        g.PixelMeasuresSequence = [meas]
        return g

    ds.SharedFunctionalGroupsSequence = [group(0, 500, 0.5)]
    ds.PerFrameFunctionalGroupsSequence = [Dataset(), group(-100, 500, 0.25)]
    save_dicom(tmp_path / "enh.dcm", ds)
    f0, f1 = (read_image(tmp_path / "enh.dcm", AUTO, frame=k) for k in (0, 1))
    assert f0.grey[0, 0] == pytest.approx(linear_window(np.float64(500), 500, 201))
    assert f1.grey[0, 0] == pytest.approx(linear_window(np.float64(400), 500, 201))  # -100
    assert f0.spacing_mm == (0.5, 0.5) and f1.spacing_mm == (0.25, 0.25)


def test_png_chest_xray_and_tile_geometry(tmp_path: Path) -> None:
    img = read_image(CXR, AUTO)
    raw = np.asarray(Image.open(CXR), dtype=np.float64) / 255.0
    np.testing.assert_allclose(img.grey, raw, atol=1e-6)
    assert img.kind == "PNG" and img.spacing_mm is None and img.window == "8-bit as stored"
    t = image_tile(img, 64)
    assert t.tile.shape == (64, 64, 1) and t.tile.dtype == np.uint8
    assert t.content_fraction == 1.0 and np.isnan(t.tile_mpp)
    assert abs(t.tile.mean() / 255 - raw.mean()) < 0.01
    # A wide image keeps its aspect: 60 x 120 px → 16 x 32 px of image, padding above/below.
    wide = np.full((60, 120), 200, np.uint8)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    t = image_tile(read_image(tmp_path / "wide.png", AUTO), 32, pad_value=0.0)
    assert (t.content_h, t.content_w, t.content_fraction) == (16, 32, 0.5)
    assert (t.tile[:8] == 0).all() and (t.tile[8:24] == 200).all() and (t.tile[24:] == 0).all()


def test_pixel_spacing_is_the_mpp_equivalent(tmp_path: Path) -> None:
    t = image_tile(read_image(CT, AUTO), 64)
    assert t.tile_mpp == pytest.approx(0.661468 * 128 / 64 * 1000)  # µm per tile pixel
    # Non-square pixels: 64 x 64 px of 1.0 x 0.5 mm is 64 x 32 mm, so 32 x 16 px in the tile.
    write_dicom(
        tmp_path / "ns.dcm",
        np.full((64, 64), 1000, np.uint16),
        spacing_mm=(1.0, 0.5),
        window=(1000, 100),
    )
    t = image_tile(read_image(tmp_path / "ns.dcm", AUTO), 32)
    assert (t.content_h, t.content_w) == (32, 16) and t.tile_mpp == pytest.approx(2000.0)
    plan = plan_image("ns", str(tmp_path / "ns.dcm"), None, None, TilingConfig(size=32), AUTO)
    assert plan.mpp == 500.0 and plan.mpp_source == "PixelSpacing"
    assert "non-square pixels" in plan.note
    rows = image_rows(plan)
    assert rows["tile_id"].tolist() == ["ns_0_0"] and rows["tissue_fraction"][0] == 0.5
    over = plan_image("ns", str(tmp_path / "ns.dcm"), 250.0, None, TilingConfig(size=32), AUTO)
    assert over.mpp_source == "cohort" and over.tile_mpp == pytest.approx(500.0)


def _with_syntax(src: Path, syntax, dst: Path) -> Path:
    ds = pydicom.dcmread(src)
    ds = copy.deepcopy(ds)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([b"\xff\xd8 not really compressed \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(dst, enforce_file_format=True)
    return dst


def test_bad_dicoms_fail_with_the_reason(tmp_path: Path) -> None:
    ds = pydicom.dcmread(CT)
    del ds.PixelData
    save_dicom(tmp_path / "nopix.dcm", ds)
    with pytest.raises(ImageError, match="DICOM without pixel data"):
        read_image(tmp_path / "nopix.dcm", AUTO)
    mpeg = _with_syntax(CT, MPEG2MPML, tmp_path / "mpeg.dcm")
    with pytest.raises(ImageError, match="unsupported transfer syntax MPEG2"):
        read_image(mpeg, AUTO)
    (tmp_path / "text.dcm").write_text("not a dicom\n" * 20)
    with pytest.raises(ImageError, match="not a DICOM file"):
        read_image(tmp_path / "text.dcm", AUTO)
    (tmp_path / "broken.png").write_bytes(CXR.read_bytes()[:300])
    with pytest.raises(ImageError, match="corrupt image"):
        read_image(tmp_path / "broken.png", AUTO)
    with pytest.raises(ImageError, match="file not found"):
        read_image(tmp_path / "gone.dcm", AUTO)


def test_compressed_dicom_without_its_decoder(tmp_path: Path) -> None:
    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    jls = _with_syntax(CT, JPEGLSLossless, tmp_path / "jls.dcm")
    with pytest.raises(ImageError, match="JPEG-LS Lossless.*no decoder is installed") as exc:
        read_image(jls, AUTO)
    assert "pyjpegls" in str(exc.value) and str(jls) in str(exc.value)


def test_radiology_config_and_cohort_frame_column(tmp_path: Path) -> None:
    from pipeline.cohort import CohortError, metadata_columns, read_cohort
    from pipeline.config import ConfigError, config_from_dict

    base = {"cohort": "c.csv", "workdir": "w", "modality": "radiology"}
    assert config_from_dict(base).radiology.window == "auto"
    with pytest.raises(ConfigError, match="window: fixed needs window_center"):
        config_from_dict({**base, "radiology": {"window": "fixed"}})
    with pytest.raises(ConfigError, match="percentiles"):
        config_from_dict({**base, "radiology": {"percentiles": [99, 1]}})
    with pytest.raises(ConfigError, match="modality"):
        config_from_dict({**base, "modality": "ultrasound"})
    (tmp_path / "c.csv").write_text("slide_id,path,frame,site\na,x.dcm,2,s1\nb,y.png,,s2\n")
    cohort = read_cohort(tmp_path / "c.csv")
    assert cohort["frame"].tolist()[0] == 2 and pd.isna(cohort["frame"].tolist()[1])
    assert metadata_columns(cohort) == ["slide_id", "site"]
    (tmp_path / "bad.csv").write_text("slide_id,path,frame\na,x.dcm,1.5\n")
    with pytest.raises(CohortError, match="frame must be an integer"):
        read_cohort(tmp_path / "bad.csv")
