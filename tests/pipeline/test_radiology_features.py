"""Radiology features on grey tiles with known properties, and the per-modality registry."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pipeline.config import RadiologyConfig
from pipeline.features import (
    HISTOLOGY_FEATURES,
    RADIOLOGY_FEATURES,
    REGISTRIES,
    compute_features,
    feature,
    feature_names,
)
from pipeline.radiology import image_tile, read_image

from conftest import SHARED_DATA


def disc(size: int = 64, radius: float = 14, inside: int = 200, outside: int = 60) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.full((size, size), outside, np.uint8)
    img[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= radius**2] = inside
    return img


def test_every_issue_feature_is_registered_per_modality() -> None:
    assert tuple(feature_names("radiology")) == RADIOLOGY_FEATURES
    assert tuple(feature_names()) == HISTOLOGY_FEATURES  # histology unchanged, the default
    assert all(
        REGISTRIES["radiology"][n].unit and REGISTRIES["radiology"][n].doc
        for n in RADIOLOGY_FEATURES
    )
    # Same names in both modalities are different functions (grey vs RGB input).
    assert REGISTRIES["radiology"]["sharpness"].fn is not REGISTRIES["histology"]["sharpness"].fn
    with pytest.raises(ValueError, match="unknown modality"):
        feature_names("ultrasound")


def test_known_images() -> None:
    flat = np.full((64, 64), 128, np.uint8)
    bright = np.full((64, 64), 200, np.uint8)
    d = disc()
    blurred = ndimage.gaussian_filter(d.astype(float), 2).round().astype(np.uint8)
    noisy = np.clip(flat + np.random.default_rng(0).normal(0, 20, flat.shape), 0, 255)
    tiles = np.stack([flat, bright, d, blurred, noisy.astype(np.uint8)])[..., None]
    df = compute_features(tiles, 500.0, modality="radiology")
    assert list(df.columns) == list(RADIOLOGY_FEATURES)
    assert df["intensity_mean"][0] == pytest.approx(128 / 255)
    assert df["intensity_mean"][1] == pytest.approx(200 / 255)
    assert df["intensity_std"][0] == 0 and df["edge_density"][0] == 0
    assert df["texture_homogeneity"][0] == pytest.approx(1.0) and df["local_contrast"][0] == 0
    # A sharp disc: its rim is an edge (≈ the circumference in pixels), blur keeps the edge
    # but loses sharpness and local contrast.
    assert df["edge_density"][2] * 64 * 64 == pytest.approx(2 * np.pi * 14, rel=0.25)
    assert df["sharpness"][2] > 3 * df["sharpness"][3]
    assert df["local_contrast"][2] > df["local_contrast"][3]
    # Noise: texture contrast up, homogeneity down, against the flat image.
    assert df["texture_contrast"][4] > df["texture_contrast"][0] + 1
    assert df["texture_homogeneity"][4] < 0.6


def test_per_tile_mpp_and_a_user_feature() -> None:
    seen: list[float] = []

    @feature("disc_area_test", unit="mm²", doc="area brighter than mid-grey", modality="radiology")
    def disc_area(grey: np.ndarray, ctx) -> float:
        seen.append(ctx.mpp)
        assert grey.ndim == 2 and grey.dtype == np.uint8
        return float((grey > 128).sum() * (ctx.mpp / 1000) ** 2)

    try:
        tiles = np.stack([disc(radius=10), disc(radius=20)])[..., None]
        df = compute_features(
            tiles, np.array([1000.0, 500.0]), ["disc_area_test"], modality="radiology"
        )
        assert seen == [1000.0, 500.0]
        assert df["disc_area_test"][0] == pytest.approx(np.pi * 10**2, rel=0.05)
        assert df["disc_area_test"][1] == pytest.approx(np.pi * 20**2 / 4, rel=0.05)
        with pytest.raises(KeyError, match="unknown features"):
            compute_features(tiles, 1.0, ["disc_area_test"])  # not a histology feature
        with pytest.raises(ValueError, match="already registered"):
            feature("intensity_mean", unit="x", doc="y", modality="radiology")(disc_area)
    finally:
        REGISTRIES["radiology"].pop("disc_area_test", None)


def test_features_of_the_shared_images() -> None:
    cfg = RadiologyConfig()
    tiles = [
        image_tile(read_image(SHARED_DATA / "radiology" / f, cfg), 64).tile
        for f in ("CT_small.dcm", "MR_small.dcm", "cxr_nih_00000001_000.png")
    ]
    df = compute_features(np.stack(tiles), np.nan, modality="radiology")
    assert df.notna().all().all() and (df["intensity_std"] > 0.05).all()
    assert ((df["edge_density"] > 0) & (df["edge_density"] < 0.5)).all()
