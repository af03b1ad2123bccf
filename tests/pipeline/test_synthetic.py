"""The demo cohort's planted factors are really in the pixels (and deterministic)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import rgb2hed
from skimage.measure import label, regionprops

from pipeline.synthetic import plan_cohort, render_slide


def small_spec(label_: str, center: str, seed: int = 7) -> dict:
    plan = plan_cohort(8, seed, size_um=384.0, mpp=0.5)
    return plan[(plan.label == label_) & (plan.center == center)].iloc[0].to_dict()


def nuclei_stats(rgb: np.ndarray, mpp: float) -> tuple[float, float]:
    """(nuclei per mm² of tissue, mean nuclear area in µm²) from the hematoxylin channel."""
    hema = rgb2hed(rgb)[..., 0]
    blobs = label(hema > 0.08)
    areas = np.array([r.area for r in regionprops(blobs)]) * mpp * mpp
    areas = areas[areas > 8.0]  # drop specks
    tissue_mm2 = (rgb.min(axis=2) < 225).sum() * (mpp / 1000) ** 2
    return len(areas) / tissue_mm2, float(areas.mean())


def tissue_red_minus_blue(rgb: np.ndarray) -> float:
    px = rgb.reshape(-1, 3).astype(float)
    px = px[px.min(axis=1) < 225]
    return float(np.median(px[:, 0] - px[:, 2]))


def test_plan_is_deterministic_and_confounded() -> None:
    a, b = plan_cohort(16, 3), plan_cohort(16, 3)
    assert a.equals(b) and not a.equals(plan_cohort(16, 4))
    assert a["slide_id"].is_unique
    counts = a.groupby(["label", "center"]).size()
    assert counts[("tumor", "A")] == 6 and counts[("tumor", "B")] == 2
    assert counts[("normal", "B")] == 6 and counts[("normal", "A")] == 2
    tumor, normal = a[a.label == "tumor"], a[a.label == "normal"]
    assert tumor["nuclei_per_mm2"].min() > 1.5 * normal["nuclei_per_mm2"].max()
    assert tumor["nuclear_radius_um"].min() > 1.2 * normal["nuclear_radius_um"].max()


def test_render_is_byte_identical_for_a_seed() -> None:
    spec = small_spec("tumor", "A")
    first = render_slide(spec)
    assert first.dtype == np.uint8 and first.shape == (768, 768, 3)
    assert np.array_equal(first, render_slide(spec))
    other = dict(spec, slide_seed=spec["slide_seed"] + 1)
    assert not np.array_equal(first, render_slide(other))


def test_tumor_has_denser_and_larger_nuclei() -> None:
    stats = {
        lab: nuclei_stats(render_slide(small_spec(lab, "A")), 0.5) for lab in ("tumor", "normal")
    }
    (dens_t, area_t), (dens_n, area_n) = stats["tumor"], stats["normal"]
    assert dens_t > 1.6 * dens_n, stats
    assert area_t > 1.8 * area_n, stats
    assert 800 < dens_n < 2000, stats  # close to the planted 1300 / mm²


@pytest.mark.parametrize("label_", ["tumor", "normal"])
def test_centers_differ_in_stain_colour(label_: str) -> None:
    a = tissue_red_minus_blue(render_slide(small_spec(label_, "A")))
    b = tissue_red_minus_blue(render_slide(small_spec(label_, "B")))
    assert a > -5 and b < -12, (a, b)


def test_tissue_covers_part_of_the_slide() -> None:
    rgb = render_slide(dict(small_spec("normal", "B"), width_px=2048, height_px=2048))
    tissue = (rgb.min(axis=2) < 225).mean()
    assert 0.4 < tissue < 0.8
    assert rgb[:8, :8].min() > 225  # glass at the corners
