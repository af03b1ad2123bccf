"""The demo cohort's planted factors are really in the pixels (and deterministic)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import ndimage
from skimage.color import rgb2hed
from skimage.measure import label

from pipeline.synthetic import (
    CENTER_STAINS,
    NUCLEAR_RADIUS_UM,
    NUCLEI_PER_MM2,
    RUIFROK_E,
    RUIFROK_H,
    STAINS,
    center_stain,
    he,
    plan_cohort,
    render_slide,
    stain_concentrations,
)

SMALL = {"size_um": 512.0, "mpp": 0.5}  # 1024² px at level 0, ~0.1 s to render


def small_spec(label_: str, center: str, seed: int = 7) -> dict[str, Any]:
    plan = plan_cohort(8, seed, **SMALL)
    return plan[(plan.label == label_) & (plan.center == center)].iloc[0].to_dict()


def at_1um(rgb: np.ndarray) -> np.ndarray:
    """0.5 µm/px → 1 µm/px by 2×2 area averaging (what the tiler reads from level 1)."""
    h, w = rgb.shape[0] // 2, rgb.shape[1] // 2
    return rgb[: 2 * h, : 2 * w].reshape(h, 2, w, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)


def tissue_mm2(rgb_1um: np.ndarray) -> float:
    return float((rgb_1um.min(axis=2) < 230).sum()) * 1e-6


def nuclei_stats(hema: np.ndarray, threshold: float, tissue: float) -> tuple[float, float]:
    """(nuclei per mm² of tissue, mean nuclear area in µm²) of blobs in a 1 µm/px H map."""
    areas = np.bincount(label(hema > threshold).ravel())[1:]
    areas = areas[areas >= 6]  # drop specks
    return len(areas) / tissue, float(areas.mean())


def stats_hed(rgb: np.ndarray) -> tuple[float, float]:
    """Stain-agnostic measurement: skimage's standard H&E deconvolution (fits center A)."""
    small = at_1um(rgb)
    return nuclei_stats(rgb2hed(small)[..., 0], 0.05, tissue_mm2(small))


def stats_known_stain(rgb: np.ndarray, spec: dict[str, Any]) -> tuple[float, float]:
    """Measurement with the slide's own stain vectors (works for every center)."""
    small = at_1um(rgb)
    c_h = stain_concentrations(small, STAINS[spec["stain"]])[..., 0]
    return nuclei_stats(c_h, 0.4, tissue_mm2(small))


def mean_area_um2(radius_um: float) -> float:
    """Expected nuclear area: π r² · E[s²] with s the size bin's factor."""
    bins = (np.arange(he.SIZE_BINS) + 0.5) / he.SIZE_BINS
    s = he.SIZE_RANGE[0] + (he.SIZE_RANGE[1] - he.SIZE_RANGE[0]) * bins
    return float(np.pi * radius_um**2 * np.mean(s**2))


# ----------------------------------------------------------------------------- plan


def test_plan_is_deterministic_and_confounded() -> None:
    a, b = plan_cohort(16, 3), plan_cohort(16, 3)
    assert a.equals(b) and not a.equals(plan_cohort(16, 4))
    assert list(a.columns[:5]) == ["slide_id", "label", "center", "scanner", "patient"]
    assert a["slide_id"].is_unique and a["slide_seed"].is_unique
    assert list(a["slide_id"]) == [f"synth_{i:03d}" for i in range(16)]
    counts = a.groupby(["label", "center"]).size()
    assert counts[("tumor", "A")] == 6 and counts[("tumor", "B")] == 2
    assert counts[("normal", "B")] == 6 and counts[("normal", "A")] == 2
    assert (a["stain"] == a["center"].map(CENTER_STAINS)).all()
    assert (a["width_px"] == 4096).all() and (a["mpp"] == 0.5).all()
    tumor, normal = a[a.label == "tumor"], a[a.label == "normal"]
    assert tumor["nuclei_per_mm2"].min() > 1.5 * normal["nuclei_per_mm2"].max()
    assert tumor["nuclear_radius_um"].min() > 1.2 * normal["nuclear_radius_um"].max()


def test_plan_centers_and_confound_options() -> None:
    p = plan_cohort(12, 0, centers=3, confound=0.5)
    counts = p.groupby(["label", "center"]).size().to_dict()
    assert counts == {
        ("tumor", "A"): 3,
        ("tumor", "B"): 2,
        ("tumor", "C"): 1,
        ("normal", "B"): 3,
        ("normal", "A"): 2,
        ("normal", "C"): 1,
    }
    assert set(plan_cohort(5, 0, centers=1)["center"]) == {"A"}
    assert (plan_cohort(10, 0, tumor_fraction=0.3)["label"] == "tumor").sum() == 3
    for bad in ({"centers": 5}, {"confound": 1.5}, {"tumor_fraction": -0.1}, {"mpp": 0}):
        with pytest.raises(ValueError):
            plan_cohort(4, 0, **bad)


def test_stain_definitions() -> None:
    for stain in STAINS.values():
        for vec in (stain.h, stain.e):
            assert np.linalg.norm(vec) == pytest.approx(1.0)
        assert abs(np.linalg.det(stain.matrix())) > 0.1  # deconvolution is well posed
    a, b = center_stain("A"), center_stain("B")
    np.testing.assert_allclose(a.h, np.array(RUIFROK_H) / np.linalg.norm(RUIFROK_H))
    np.testing.assert_allclose(a.e, np.array(RUIFROK_E) / np.linalg.norm(RUIFROK_E))
    assert b.eosin / a.eosin == pytest.approx(1.45)
    assert b.e[0] > a.e[0] + 0.15  # B's eosin absorbs more red: toward purple


# ----------------------------------------------------------------------------- render


def test_render_is_byte_identical_for_a_seed() -> None:
    spec = small_spec("tumor", "A")
    first = render_slide(spec)
    assert first.dtype == np.uint8 and first.shape == (1024, 1024, 3)
    assert first.flags.c_contiguous
    assert np.array_equal(first, render_slide(dict(spec)))
    other = dict(spec, slide_seed=spec["slide_seed"] + 1)
    assert (first != render_slide(other)).any(axis=2).mean() > 0.3


def test_nuclei_are_discrete_and_match_the_plan() -> None:
    """At 1 µm/px, blobs of the standard H channel count the planted density and size."""
    for label_ in ("normal", "tumor"):
        spec = small_spec(label_, "A")
        density, area = stats_hed(render_slide(spec))
        assert density == pytest.approx(spec["nuclei_per_mm2"], rel=0.12), (label_, density)
        expected = mean_area_um2(spec["nuclear_radius_um"])
        assert area == pytest.approx(expected, rel=0.15), (label_, area, expected)


def test_tumor_has_denser_and_larger_nuclei() -> None:
    """Fails if either planted label factor is removed from plan.py."""
    stats = {lab: stats_hed(render_slide(small_spec(lab, "A"))) for lab in ("tumor", "normal")}
    (dens_t, area_t), (dens_n, area_n) = stats["tumor"], stats["normal"]
    assert dens_t > 1.6 * dens_n, stats
    assert area_t > 1.6 * area_n, stats


def test_density_and_size_are_independent_factors() -> None:
    base = small_spec("normal", "B")
    d0, a0 = stats_known_stain(render_slide(base), base)
    dense = dict(base, nuclei_per_mm2=base["nuclei_per_mm2"] * 2.3)
    d1, a1 = stats_known_stain(render_slide(dense), dense)
    big = dict(base, nuclear_radius_um=base["nuclear_radius_um"] * 1.5)
    d2, a2 = stats_known_stain(render_slide(big), big)
    assert d1 / d0 == pytest.approx(2.3, rel=0.12) and a1 / a0 == pytest.approx(1.0, abs=0.12)
    assert d2 / d0 == pytest.approx(1.0, abs=0.12) and a2 / a0 == pytest.approx(2.25, rel=0.12)


def _tissue_px(rgb: np.ndarray) -> np.ndarray:
    px = rgb.reshape(-1, 3)
    return px[px.min(axis=1) < 230]


@pytest.mark.parametrize("label_", ["tumor", "normal"])
def test_centers_differ_in_stain_colour(label_: str) -> None:
    spec_a, spec_b = small_spec(label_, "A"), small_spec(label_, "B")
    px_a, px_b = _tissue_px(render_slide(spec_a)), _tissue_px(render_slide(spec_b))
    red_blue = [np.median(px[:, 0].astype(float) - px[:, 2]) for px in (px_a, px_b)]
    assert red_blue[0] > -6 and red_blue[1] < -12, red_blue
    # Eosin of stroma (nuclei excluded), each slide unmixed with its own stain: B ≈ 1.45 × A.
    eosin = []
    for px, spec in ((px_a, spec_a), (px_b, spec_b)):
        conc = stain_concentrations(px, STAINS[spec["stain"]])
        eosin.append(np.median(conc[conc[:, 0] < 0.2, 1]) / spec["stain_amount"])
    assert eosin[1] / eosin[0] == pytest.approx(1.45, rel=0.1), eosin


def test_tissue_covers_part_of_the_slide_with_holes() -> None:
    mask = he.tissue_mask(np.random.default_rng(3), (2048, 2048), 1.0)
    assert 0.5 < mask.mean() < 0.7
    border = np.r_[mask[:8].ravel(), mask[-8:].ravel(), mask[:, :8].ravel(), mask[:, -8:].ravel()]
    assert not border.any()  # glass all around
    filled = ndimage.binary_fill_holes(mask)
    assert filled.sum() > mask.sum() * 1.002  # some holes
    rgb = render_slide(small_spec("normal", "A"))
    assert 0.4 < (rgb.min(axis=2) < 230).mean() < 0.8
    assert rgb[:8, :8].min() > 235  # glass at the corners


def test_placement_reaches_dense_targets_without_overlap() -> None:
    tissue = np.ones((400, 400), dtype=bool)  # 0.16 mm² of 1 µm cells
    radius = NUCLEAR_RADIUS_UM["tumor"] * 1.1
    nuclei = he.place_nuclei(np.random.default_rng(0), tissue, 1.0, 3300.0, radius)
    assert nuclei.count >= 0.97 * 3300 * 0.16
    a, b, theta = nuclei.axes_um(radius)
    y, x = nuclei.y_um, nuclei.x_um
    i, j = np.triu_indices(nuclei.count, 1)
    dy, dx = y[j] - y[i], x[j] - x[i]
    phi = np.arctan2(dy, dx)
    reach = he.radius_toward(a[i], b[i], theta[i], phi)
    reach += he.radius_toward(a[j], b[j], theta[j], phi)
    assert (np.hypot(dy, dx) >= reach + he.MIN_GAP_UM - 1e-9).all()


def test_planted_numbers_match_the_docs() -> None:
    assert NUCLEI_PER_MM2 == {"normal": 1300.0, "tumor": 3000.0}
    assert NUCLEAR_RADIUS_UM == {"normal": 3.4, "tumor": 5.2}
