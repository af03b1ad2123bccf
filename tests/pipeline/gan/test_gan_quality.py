import colorsys

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from pipeline.features import HISTOLOGY_FEATURES, RADIOLOGY_FEATURES
from pipeline.features.nuclei import nuclei_table
from pipeline.gan.quality import (
    COLOUR_STATS,
    RAW_PREFIX,
    SHAPE_STATS,
    StatsTracker,
    bar_stats,
    best_net,
    latent_linearity,
    panel_indices,
    quality_report,
    snapshot_score,
    tile_stats,
)
from pipeline.synthetic import plan_cohort, render_slide


def demo_tiles(seed: int) -> np.ndarray:
    plan = plan_cohort(4, seed, size_um=512.0, mpp=0.5)
    tiles = []
    for spec in plan.to_dict(orient="records"):
        half = render_slide(spec).reshape(512, 2, 512, 2, 3).mean(axis=(1, 3)).astype(np.uint8)
        t = half.reshape(8, 64, 8, 64, 3).swapaxes(1, 2).reshape(64, 64, 64, 3)
        tiles.append(t[(t.min(axis=3) < 225).mean(axis=(1, 2)) > 0.8])
    return np.concatenate(tiles)


def test_real_tiles_pass_and_blobs_fail() -> None:
    """Soft or blocky copies of real tiles keep their nuclei countable (the counts pass), so
    it is sharpness that fails them, as it fails a generator drawing soft blobs."""
    reals, others = demo_tiles(1), demo_tiles(2)
    good = quality_report(reals, others, mpp=1.0)
    assert good["passed"], good["checks"]
    # The bar holds samples to every feature the analysis measures, and to nuclear shape.
    assert set(good["checks"]) == {*HISTOLOGY_FEATURES, *SHAPE_STATS, *COLOUR_STATS, "layout_corr"}
    blurred = others.reshape(len(others), 16, 4, 16, 4, 3).mean(axis=(2, 4))
    blocks = np.repeat(np.repeat(blurred, 4, axis=1), 4, axis=2).astype(np.uint8)
    soft = np.stack([ndimage.gaussian_filter(t.astype(np.float32), (1, 1, 0)) for t in others])
    for blobs in (blocks, soft.round().astype(np.uint8)):
        bad = quality_report(reals, blobs, mpp=1.0)
        assert not bad["passed"] and bad["swd"]["mean"] > good["swd"]["mean"]
        assert not bad["checks"]["sharpness"]["passed"], bad["checks"]["sharpness"]
        assert bad["checks"]["nuclei_density"]["passed"], bad["checks"]["nuclei_density"]


def test_the_bar_compares_hue_as_an_angle() -> None:
    """Reals at hue ~0.99 and samples a few of which lie just past 0: the same colours, so
    the hue check passes (as plain numbers the samples' SD would be ~100 times the reals')."""
    rng = np.random.default_rng(0)

    def tint(hues: np.ndarray) -> np.ndarray:
        colours = [np.array(colorsys.hsv_to_rgb(h % 1.0, 0.4, 0.9)) * 255 for h in hues]
        return np.stack([np.broadcast_to(c, (16, 16, 3)) for c in colours]).round().astype(np.uint8)

    reals = tint(0.992 + rng.normal(0, 0.0025, 64))  # none past 0
    fakes = tint(np.r_[0.992 + rng.normal(0, 0.0025, 58), 0.9995, 0.0, 0.001, 0.002, 0.003, 0.004])
    hue = quality_report(reals, fakes, mpp=1.0)["checks"]["hue_mean"]
    assert hue["passed"] and 0.5 < hue["sd_ratio"] < 2, hue
    tracked = StatsTracker(reals, mpp=1.0, features=["hue_mean"])(fakes)
    assert abs(tracked["hue_mean_z"]) < 3 and 0.5 < tracked["hue_mean_sd_ratio"] < 2


def test_the_reals_panel_shows_every_slide() -> None:
    """A slide with 2 of 512 drawn tiles still appears among 32 (an even spread of rows
    missed it); with fewer rows than places, all; no row twice."""
    slides = np.array(["a"] * 300 + ["b"] * 2 + ["c"] * 210)
    rows = panel_indices(slides, 32)
    assert len(rows) == 32 and len(set(rows)) == 32 and (np.diff(rows) > 0).all()
    assert set(slides[rows]) == {"a", "b", "c"} and (slides[rows] == "b").sum() == 2
    assert set(slides[np.linspace(0, 511, 32).astype(int)]) == {"a", "c"}  # the old pick
    assert panel_indices(["x", "y", "x"], 32).tolist() == [0, 1, 2]
    assert panel_indices([], 32).tolist() == []


def test_ragged_nuclei_fail_on_solidity() -> None:
    """Nuclei holed by stroma-coloured pixels (as speckle clusters are) keep a passing count
    but lose their compact shape."""
    reals, others = demo_tiles(1), demo_tiles(2)
    ragged = others.copy()
    holes = np.random.default_rng(0).random(ragged.shape[:3]) < 0.1
    ragged[holes] = np.array([225, 165, 230], np.uint8)
    checks = quality_report(reals, ragged, mpp=1.0)["checks"]
    assert checks["nuclei_density"]["passed"], checks["nuclei_density"]
    assert not checks["nuclear_solidity"]["passed"] and checks["nuclear_solidity"]["z"] < -3
    assert quality_report(reals, others, mpp=1.0)["checks"]["nuclear_solidity"]["passed"]


def test_one_layout_in_every_sample_fails() -> None:
    """Samples that recolour one tile (the tiny G's failure on the demo) fail on layout, in
    the report and in the training tracker's snapshot score."""
    reals, others = demo_tiles(1), demo_tiles(2)
    rng = np.random.default_rng(0)
    gain = rng.uniform(0.85, 1.0, (len(others), 1, 1, 3))
    same = np.clip(others[:1].astype(np.float32) * gain, 0, 255).astype(np.uint8)
    assert StatsTracker(reals, 1.0)(same)["layout_excess"] > 7  # (0.9 - 0 - 0.1) / 0.1
    rep = quality_report(reals, same, mpp=1.0)
    assert rep["checks"]["layout_corr"]["fake"] > 0.9
    assert not rep["checks"]["layout_corr"]["passed"] and not rep["passed"]
    assert abs(rep["checks"]["layout_corr"]["real"]) < 0.1


def test_tracker_gives_the_bars_z_and_sd_ratio() -> None:
    reals, others = demo_tiles(1), demo_tiles(2)
    tracker = StatsTracker(reals, mpp=1.0)
    unrelated = np.random.default_rng(0).standard_normal((len(reals), 16))
    same = tracker(reals, latents=(unrelated, reals))
    assert same["layout_excess"] == pytest.approx(-1.0)  # the reals' own layout: no excess
    assert {"layout_excess", "linearity_excess"} <= set(tracker.keys) <= set(same)
    assert same["w_linearity"] < 0.1 and same["linearity_excess"] > 0.8  # w says nothing
    assert "linearity_excess" not in tracker(reals)  # measured only with latents
    tracked = bar_stats(HISTOLOGY_FEATURES)
    assert all(same[f"{c}_z"] == pytest.approx(0.0, abs=1e-12) for c in tracked)
    assert all(same[f"{c}_sd_ratio"] == pytest.approx(1.0) for c in tracked)
    r, f = tile_stats(reals, 1.0), tile_stats(others, 1.0)
    # solidity comes from the features' own segmentation, tile by tile, in order
    np.testing.assert_allclose(f["nuclear_solidity"], nuclei_table(others, 1.0)["nuclear_solidity"])
    got = tracker(others)
    report = quality_report(reals, others, mpp=1.0)["checks"]
    for c in tracked:
        assert got[c] == pytest.approx(f[c].mean())
        assert got[f"{c}_z"] == pytest.approx((f[c].mean() - r[c].mean()) / r[c].std())
        assert got[f"{c}_sd_ratio"] == pytest.approx(f[c].std() / r[c].std())
        assert report[c]["z"] == pytest.approx(got[f"{c}_z"])  # one rule for both
    # Twice as many nuclei per tile (two tiles side by side, halved): density z is large.
    dense = np.concatenate([reals[:, :, ::2], reals[:, :, 1::2]], axis=2)
    assert tracker(dense)["nuclei_density_z"] > 1


def test_snapshot_score_prefers_the_bar_then_swd() -> None:
    z = {f"{c}_z": 0.5 for c in bar_stats()}
    assert snapshot_score({"d_loss": 1.0}) is None  # no SWD at this tick
    assert snapshot_score({"swd": float("nan")}) is None
    assert snapshot_score({"swd": 150.0}) == (0.0, 150.0)  # grey tiles: SWD only
    within = snapshot_score({**z, "swd": 200.0})
    outside = snapshot_score({**z, "nuclei_density_z": -1.6, "swd": 120.0})
    assert within == (0.0, 200.0) and outside == (pytest.approx(0.6), 120.0)
    assert within < outside < snapshot_score({**z, "nuclei_density_z": 2.0, "swd": 90.0})
    assert snapshot_score({**z, "swd": 180.0}) < within
    # An SD outside half to twice the reals' counts like a mean outside one SD.
    spread = snapshot_score({**z, "nuclei_density_sd_ratio": 3.0, "swd": 100.0})
    assert spread == (pytest.approx(np.log2(3.0) - 1.0), 100.0)
    assert snapshot_score({**z, "sharpness_sd_ratio": 0.6, "swd": 100.0}) == (0.0, 100.0)
    assert snapshot_score({**z, "not_a_bar_stat_z": 9.0, "swd": 100.0}) == (0.0, 100.0)
    assert snapshot_score({**z, "mean_R_z": float("nan"), "swd": 100.0}) is None
    # Samples sharing a layout 0.1 beyond the margin: one margin (0.1) of excess.
    shared = snapshot_score({**z, "layout_excess": 1.0, "swd": 100.0})
    assert shared == (1.0, 100.0)
    assert snapshot_score({**z, "layout_excess": -0.9, "swd": 1.0})[0] == 0
    # A tick measured before the bar had a statistic (a resumed run) does not compete.
    assert snapshot_score({**z, "swd": 100.0}, required=["sharpness_z"]) == (0.0, 100.0)
    assert snapshot_score({"nuclei_density_z": 0.0, "swd": 90.0}, required=["sharpness_z"]) is None


def test_best_net_keeps_the_generator_closer_to_the_bar() -> None:
    z = {f"{c}_z": 0.5 for c in bar_stats()}
    soft = {**z, "sharpness_z": -1.4, "swd": 170.0}  # G_ema: averaged fine detail away
    sharp = {f"{RAW_PREFIX}{k}": v for k, v in {**z, "swd": 110.0}.items()}
    assert snapshot_score(sharp, RAW_PREFIX) == (0.0, 110.0)
    assert best_net({**soft, **sharp}) == ((0.0, 110.0), "G")
    assert best_net(soft) == ((pytest.approx(0.4), 170.0), "G_ema")  # raw G not measured
    worse = {f"{RAW_PREFIX}{k}": v for k, v in soft.items()} | {f"{RAW_PREFIX}swd": 171.0}
    assert best_net({**soft, **worse})[1] == "G_ema"
    tie = {f"{RAW_PREFIX}{k}": v for k, v in soft.items()}
    assert best_net({**soft, **tie})[1] == "G_ema"
    assert best_net({"d_loss": 1.0}) is None


def test_grey_tiles_are_held_to_the_radiology_statistics() -> None:
    grey = demo_tiles(1).mean(axis=3, keepdims=True).astype(np.uint8)  # [N, 64, 64, 1]
    other = demo_tiles(2).mean(axis=3, keepdims=True).astype(np.uint8)
    good = quality_report(grey, other, mpp=1.0)
    assert set(good["checks"]) == {*RADIOLOGY_FEATURES, "layout_corr"} and good["passed"], good
    bright = np.clip(other.astype(np.int16) + 40, 0, 255).astype(np.uint8)
    bad = quality_report(grey, bright, mpp=1.0)["checks"]
    assert not bad["intensity_mean"]["passed"] and bad["intensity_mean"]["z"] > 1


def test_the_bar_follows_the_analysis_features() -> None:
    """``analysis.features`` narrows the bar as it narrows the analysis; nuclear shape and
    colour stay."""
    reals, others = demo_tiles(1), demo_tiles(2)
    checks = quality_report(reals, others, mpp=1.0, features=["sharpness", "hue_mean"])["checks"]
    assert set(checks) == {"sharpness", "hue_mean", *SHAPE_STATS, *COLOUR_STATS, "layout_corr"}
    assert set(StatsTracker(reals, 1.0, ["sharpness"])(others)) == {
        f"{c}{end}"
        for c in ("sharpness", *SHAPE_STATS, *COLOUR_STATS)
        for end in ("", "_z", "_sd_ratio")
    } | {"layout_excess"}


def test_latent_linearity_tells_linear_from_folded_features() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((400, 32))
    v = rng.standard_normal(32) / np.sqrt(32)
    stats = pd.DataFrame(
        {
            "linear": w @ v + 0.05 * rng.standard_normal(400),
            "folded": np.sin(8 * (w @ v)),  # changes sign many times along any direction
            "with_nan": np.where(np.arange(400) % 3 == 0, np.nan, w @ v),
            "constant": np.ones(400),
        }
    )
    r2 = latent_linearity(w, stats)
    assert r2["linear"] > 0.95 and r2["with_nan"] > 0.95
    assert r2["folded"] < 0.2
    assert np.isnan(r2["constant"])


def test_features_unrelated_to_w_fail_the_linearity_check() -> None:
    """Samples whose analysis features a linear map of w predicts pass; the same samples
    with latents unrelated to them fail (``quality_report(latents=...)``)."""
    from pipeline.features import compute_features

    tiles = demo_tiles(0)
    feats = compute_features(tiles, 1.0).fillna(0.0).to_numpy()
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-9)
    rng = np.random.default_rng(1)
    w_linear = feats @ rng.standard_normal((feats.shape[1], 64)) + 0.01 * rng.standard_normal(
        (len(tiles), 64)
    )
    good = quality_report(tiles, tiles, mpp=1.0, latents=(w_linear, tiles))
    bad = quality_report(
        tiles, tiles, mpp=1.0, latents=(rng.standard_normal((len(tiles), 64)), tiles)
    )
    assert good["checks"]["w_linearity"]["passed"] and good["passed"]
    assert good["checks"]["w_linearity"]["median_r2"] > 0.9
    assert not bad["checks"]["w_linearity"]["passed"] and not bad["passed"]
    assert bad["checks"]["w_linearity"]["median_r2"] < 0.1


def test_one_tile_at_constant_noise_fails_the_spread_check() -> None:
    """A generator whose constant-noise samples (the analysis's) are all alike fails
    ``w_spread`` even when its random-noise samples pass every per-tile check (the M1N
    fine-tune drew one tile at constant noise); samples as varied as the reals pass. The tracker
    scores it too (``spread_excess``)."""
    tiles = demo_tiles(0)
    w = np.random.default_rng(0).standard_normal((len(tiles), 16))
    varied = quality_report(tiles, tiles, mpp=1.0, latents=(w, tiles))["checks"]["w_spread"]
    assert varied["passed"] and varied["median_sd_ratio"] == pytest.approx(1.0)
    # one tile, slightly jittered in brightness so the features are not exactly constant
    jitter = np.random.default_rng(1).integers(-2, 3, size=(len(tiles), 1, 1, 1))
    alike = np.clip(tiles[:1].astype(int) + jitter, 0, 255).astype(np.uint8)
    rep = quality_report(tiles, tiles, mpp=1.0, latents=(w, alike))
    spread = rep["checks"]["w_spread"]
    assert not spread["passed"] and not rep["passed"]
    assert spread["median_sd_ratio"] < 0.2 and set(spread["sd_ratio"]) >= {"nuclei_density"}
    tracker = StatsTracker(tiles, mpp=1.0)
    assert "spread_excess" in tracker.keys
    assert tracker(tiles, latents=(w, tiles))["spread_excess"] == 0.0
    low = tracker(tiles, latents=(w, alike))
    assert low["w_spread"] == pytest.approx(spread["median_sd_ratio"])
    assert low["spread_excess"] > 1.0
    assert snapshot_score({**low, "swd": 100.0})[0] >= low["spread_excess"]
