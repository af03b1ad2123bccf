"""The tiling stage with ``modality: radiology`` on a real local Ray: the shared DICOM/PNG
files, written variants (multi-frame, MONOCHROME1) and bad files, into real zarr + parquet."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML, JPEGLSLossless

from pipeline.config import RadiologyConfig
from pipeline.io.dicom_writer import save_dicom, write_dicom
from pipeline.io.tile_store import TileStore
from pipeline.radiology import image_tile, read_image
from tasks.cli import EXIT_OK, EXIT_PARTIAL, main

from conftest import SHARED_DATA

RAD = SHARED_DATA / "radiology"


def _encapsulated(dst: Path, syntax) -> Path:
    ds = copy.deepcopy(pydicom.dcmread(RAD / "CT_small.dcm"))
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([b"\xff\xd8 not decodable here \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(dst, enforce_file_format=True)
    return dst


def test_radiology_cohort_tiles_one_grey_tile_per_image(tmp_path: Path, ray_local, capsys) -> None:
    d = tmp_path / "cohort"
    d.mkdir()
    frames = np.stack([np.full((40, 60), v, np.uint16) for v in (100, 900)])
    write_dicom(d / "multi.dcm", frames, window=(500, 1000), spacing_mm=(0.5, 0.5))
    mono1 = pydicom.dcmread(RAD / "MR_small.dcm")
    mono1.PhotometricInterpretation = "MONOCHROME1"
    save_dicom(d / "mono1.dcm", mono1)
    nopix = pydicom.dcmread(RAD / "CT_small.dcm")
    del nopix.PixelData
    save_dicom(d / "nopix.dcm", nopix)
    _encapsulated(d / "jpegls.dcm", JPEGLSLossless)
    _encapsulated(d / "mpeg.dcm", MPEG2MPML)
    rows = [
        {"slide_id": "ct", "path": str(RAD / "CT_small.dcm"), "label": "a", "site": "x"},
        {"slide_id": "mr", "path": str(RAD / "MR_small.dcm"), "label": "b", "site": "x"},
        {
            "slide_id": "cxr",
            "path": str(RAD / "cxr_nih_00000001_000.png"),
            "label": "a",
            "site": "y",
            "mpp": 140.0,
        },
        {"slide_id": "multi", "path": "multi.dcm", "label": "b", "site": "y", "frame": 1},
        {"slide_id": "mono1", "path": "mono1.dcm", "label": "a", "site": "y"},
        {"slide_id": "nopix", "path": "nopix.dcm", "label": "b", "site": "x"},
        {"slide_id": "jpegls", "path": "jpegls.dcm", "label": "a", "site": "x"},
        {"slide_id": "mpeg", "path": "mpeg.dcm", "label": "b", "site": "x"},
    ]
    pd.DataFrame(rows).to_csv(d / "cohort.csv", index=False)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(
        f"cohort: {d / 'cohort.csv'}\nworkdir: {tmp_path / 'work'}\n"
        "modality: radiology\ntiling:\n  size: 32\n"
        "radiology:\n  images_per_task: 3\n"
    )
    assert main(["tile", str(cfg_path)]) == EXIT_PARTIAL
    err = capsys.readouterr().err
    assert "failed nopix" in err and "failed mpeg" in err

    store = TileStore(tmp_path / "work" / "tiles")
    slides = store.read_slides().set_index("slide_id")
    tiles = store.read_manifest().set_index("slide_id")
    ok = ["ct", "mr", "cxr", "multi", "mono1"]
    assert slides.loc[ok, "status"].eq("ok").all() and slides.loc[ok, "n_tiles"].eq(1).all()
    assert sorted(tiles.index) == sorted(ok)  # one tile per image, failed ones absent
    assert "DICOM without pixel data" in slides.loc["nopix", "error"]
    assert "unsupported transfer syntax MPEG2" in slides.loc["mpeg", "error"]
    jls = slides.loc["jpegls", "error"]  # no JPEG-LS decoder here; with one, the bytes are junk
    assert "no decoder is installed" in jls or "cannot decode" in jls
    assert str(d / "nopix.dcm") in slides.loc["nopix", "error"]

    # Pixel spacing as MPP: from the file, from the cohort, recorded per image.
    assert slides.loc["ct", "mpp_source"] == "PixelSpacing"
    assert slides.loc["ct", "mpp"] == np.float64(0.661468 * 1000)
    assert tiles.loc["ct", "mpp"] == np.float64(0.661468 * 128 / 32 * 1000)
    assert slides.loc["cxr", "mpp_source"] == "cohort"
    assert tiles.loc["cxr", "mpp"] == 140.0 * 512 / 32
    assert slides.loc["ct", "vendor"] == "DICOM CT" and slides.loc["cxr", "vendor"] == "PNG"
    assert "frame 1 of 2" in slides.loc["multi", "note"]
    assert "MONOCHROME1 inverted" in slides.loc["mono1", "note"]
    assert tiles.loc["multi", "tissue_fraction"] == np.float32(32 * 21 / 32**2)  # 40x60 padded
    assert tiles.loc["multi", "tile_id"] == "multi_0_0" and "site" in tiles.columns
    assert "frame" not in tiles.columns and "path" not in tiles.columns

    arr = store.array("mr")
    assert arr.shape == (1, 32, 32, 1) and arr.dtype == np.uint8
    cfg = RadiologyConfig()
    expect = image_tile(read_image(RAD / "MR_small.dcm", cfg), 32).tile
    np.testing.assert_array_equal(store.read_tiles("mr")[0], expect)
    mono = store.read_tiles("mono1")[0].astype(int)
    assert np.abs(mono + store.read_tiles("mr")[0].astype(int) - 255).max() <= 1
    multi = store.read_tiles("multi")[0, 16, 16, 0]
    assert abs(int(multi) - round(255 * (900 - 499.5) / 999 + 127.5)) <= 1  # frame 1: 900

    # A re-run does nothing; fixing the cohort (dropping the bad rows) gives exit 0.
    before = {p: p.stat().st_mtime_ns for p in store.root.rglob("*") if p.is_file()}
    assert main(["tile", str(cfg_path)]) == EXIT_PARTIAL
    assert "0 read now" in capsys.readouterr().out
    after = {p: p.stat().st_mtime_ns for p in store.root.rglob("*") if p.is_file()}
    assert {p: t for p, t in after.items() if p.name != ".lock"} == {
        p: t for p, t in before.items() if p.name != ".lock"
    }
    good = [r for r in rows if r["slide_id"] in ok]
    pd.DataFrame(good).to_csv(d / "cohort.csv", index=False)
    assert main(["tile", str(cfg_path)]) == EXIT_OK

    # Another frame is another tile: the cohort's frame column is part of the fingerprint.
    pd.DataFrame([{**r, "frame": 0} if r["slide_id"] == "multi" else r for r in good]).to_csv(
        d / "cohort.csv", index=False
    )
    assert main(["tile", str(cfg_path)]) == EXIT_OK
    assert "1 read now" in capsys.readouterr().out
    assert store.read_tiles("multi")[0, 16, 16, 0] < 60  # frame 0: 100 in a 0..1000 window
