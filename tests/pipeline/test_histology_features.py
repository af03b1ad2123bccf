"""Histology features on tiles with known nuclei, and the feature registry."""

from __future__ import annotations

import colorsys

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from pipeline.features import HISTOLOGY_FEATURES, REGISTRY, compute_features, feature
from pipeline.features.registry import circular_mean, feature_names, unwrap_circular

STROMA = (235, 175, 225)
NUCLEUS = (80, 70, 140)


def tile_with_nuclei(
    n: int, radius_um: float, mpp: float = 0.5, size: int = 128, seed: int = 0
) -> np.ndarray:
    """Pink stroma with ``n`` non-touching purple discs of ``radius_um``."""
    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = STROMA
    r = radius_um / mpp
    yy, xx = np.mgrid[0:size, 0:size]
    centres: list[tuple[float, float]] = []
    while len(centres) < n:
        c = rng.uniform(r + 1, size - r - 1, 2)
        if all(np.hypot(*(c - np.array(o))) > 2 * r + 3 for o in centres):
            centres.append((float(c[0]), float(c[1])))
    for cy, cx in centres:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = NUCLEUS
    return img


def test_every_issue_feature_is_registered_with_units() -> None:
    assert tuple(feature_names()) == HISTOLOGY_FEATURES
    assert all(REGISTRY[n].unit and REGISTRY[n].doc for n in HISTOLOGY_FEATURES)


def test_nuclei_counts_and_sizes_in_micrometres() -> None:
    mpp = 0.5
    few, many = tile_with_nuclei(6, 3.0, mpp), tile_with_nuclei(14, 3.0, mpp, seed=1)
    big = tile_with_nuclei(6, 4.5, mpp, seed=2)
    df = compute_features(np.stack([few, many, big]), mpp)
    tissue_um2 = (128 * mpp) ** 2  # stroma everywhere: all tissue
    assert df["tissue_fraction"].tolist() == pytest.approx([1, 1, 1])
    assert df["nuclei_density"].tolist() == pytest.approx(
        [6 / tissue_um2 * 1e4, 14 / tissue_um2 * 1e4, 6 / tissue_um2 * 1e4]
    )
    assert df["nuclear_area_mean"][0] == pytest.approx(np.pi * 3.0**2, rel=0.1)
    assert df["nuclear_area_mean"][2] == pytest.approx(np.pi * 4.5**2, rel=0.1)
    assert df["nuclear_eccentricity_mean"].max() < 0.4  # discs
    # More hematoxylin-stained area → more hematoxylin, a larger nuclear fraction.
    assert df["hematoxylin_mean"][1] > df["hematoxylin_mean"][0]
    assert df["nuclear_area_fraction"][1] > df["nuclear_area_fraction"][0]


def test_touching_nuclei_are_split_by_the_watershed() -> None:
    img = np.empty((64, 64, 3), np.uint8)
    img[:] = STROMA
    yy, xx = np.mgrid[0:64, 0:64]
    for cx in (24, 37):  # two discs of radius 7 px overlapping by 1 px
        img[(yy - 32) ** 2 + (xx - cx) ** 2 <= 49] = NUCLEUS
    df = compute_features(img[None], 1.0, ["nuclei_density"])
    assert df["nuclei_density"][0] == pytest.approx(2 / 64**2 * 1e4)


def test_glass_blur_and_colour() -> None:
    glass = np.full((64, 64, 3), 245, np.uint8)
    tissue = tile_with_nuclei(8, 3.0, 1.0, size=64)
    blurred = ndimage.uniform_filter(tissue.astype(float), size=(5, 5, 1)).astype(np.uint8)
    df = compute_features(np.stack([glass, tissue, blurred]), 1.0)
    assert df["tissue_fraction"][0] == 0 and np.isnan(df["nuclei_density"][0])
    assert df["sharpness"][1] > 3 * df["sharpness"][2]
    assert df["texture_homogeneity"][0] == pytest.approx(1.0)
    assert df["texture_contrast"][1] > df["texture_contrast"][0]
    assert 0 <= df["hue_mean"][1] < 1 and df["brightness"][0] > df["brightness"][1]
    assert df["saturation_mean"][1] > df["saturation_mean"][0]


def hue_tiles(hues: list[float]) -> np.ndarray:
    """Plain 16 px tiles of the given HSV hues (saturation 0.4, value 0.9)."""
    rgb = [np.array(colorsys.hsv_to_rgb(h % 1.0, 0.4, 0.9)) * 255 for h in hues]
    return np.stack([np.broadcast_to(c, (16, 16, 3)) for c in rgb]).round().astype(np.uint8)


def test_hue_is_an_angle_not_a_number_cut_at_one() -> None:
    """Pink tiles either side of hue 0 are close: unwrapped about their circular mean their
    SD is that of the angles, and a tile's shift across 0 is a small step, not a jump of a
    turn; other columns stay as they are."""
    hues = [0.97, 0.99, 0.01, 0.03]
    df = compute_features(hue_tiles(hues), 1.0, ["hue_mean", "saturation_mean"])
    assert df["hue_mean"].tolist() == pytest.approx([0.97, 0.99, 0.01, 0.03], abs=0.005)
    assert df["hue_mean"].std() > 0.4  # as plain numbers
    m = circular_mean(df["hue_mean"], 1.0)
    assert min(m, 1 - m) == pytest.approx(0.0, abs=0.005)
    flat = unwrap_circular(df)
    assert flat["hue_mean"].std() == pytest.approx(np.std([-3, -1, 1, 3], ddof=1) / 100, abs=0.003)
    assert flat["saturation_mean"].equals(df["saturation_mean"])
    # a shift about another set's mean (the analysis: shifted frames about the real tiles')
    frames = pd.DataFrame({"hue_mean": [0.98, 0.995, 0.01, 0.025]})
    moved = unwrap_circular(frames, ref=df)["hue_mean"].to_numpy()
    assert np.diff(moved) == pytest.approx([0.015, 0.015, 0.015], abs=1e-9)
    about_half = unwrap_circular(frames, ref=pd.DataFrame({"hue_mean": [0.5]}))["hue_mean"]
    assert about_half.to_numpy() == pytest.approx(frames["hue_mean"].to_numpy())  # [0, 1) fits
    assert np.isnan(circular_mean(np.array([np.nan]), 1.0))


def test_a_user_feature_joins_the_registry() -> None:
    @feature("red_mean_test", unit="[0, 255]", doc="mean red channel")
    def red_mean(rgb: np.ndarray, ctx: object) -> float:
        return float(rgb[..., 0].mean())

    try:
        img = np.full((8, 8, 3), 100, np.uint8)
        df = compute_features(img[None], 1.0, ["red_mean_test", "brightness"])
        assert df["red_mean_test"][0] == 100.0
        with pytest.raises(KeyError, match="unknown features"):
            compute_features(img[None], 1.0, ["no_such_feature"])
        with pytest.raises(ValueError, match="already registered"):
            feature("brightness", unit="x", doc="y")(red_mean)
    finally:
        REGISTRY.pop("red_mean_test", None)
