"""Counterfactual renders change only the planted factor they name."""

import numpy as np

from pipeline.config import TilingConfig
from pipeline.features.nuclei import nuclei_table
from pipeline.synthetic import (
    CENTER_STAINS,
    counterfactual_logits,
    counterfactual_renders,
    plan_cohort,
    render_slide,
    stain_counterfactual_logits,
    tissue_tiles,
)

TILING = TilingConfig(mpp=1.0, size=64, min_tissue=0.9)


def test_counterfactuals_change_density_and_size_one_at_a_time() -> None:
    spec = plan_cohort(4, 5, size_um=256.0, mpp=1.0).iloc[0].to_dict()
    renders = {(d, s): rgb for d, s, rgb in counterfactual_renders(spec, 384, 1.0)}
    assert sorted(renders) == [(d, s) for d in ("normal", "tumor") for s in ("normal", "tumor")]
    stats = {
        k: nuclei_table(tissue_tiles(rgb, TILING), mpp=1.0).mean() for k, rgb in renders.items()
    }
    for size in ("normal", "tumor"):  # more nuclei at the tumor density, same size
        lo, hi = stats["normal", size], stats["tumor", size]
        assert hi["nuclei_density"] > 1.5 * lo["nuclei_density"], (lo, hi)
        assert 0.75 < hi["mean_nuclear_area_um2"] / lo["mean_nuclear_area_um2"] < 1.33
    for density in ("normal", "tumor"):  # larger nuclei at the tumor size
        lo, hi = stats[density, "normal"], stats[density, "tumor"]
        assert hi["mean_nuclear_area_um2"] > 1.5 * lo["mean_nuclear_area_um2"], (lo, hi)
    a, b = renders["normal", "normal"], renders["normal", "tumor"]
    assert a.shape == (384, 384, 3) and a.dtype == np.uint8 and not np.array_equal(a, b)


def test_tissue_tiles_follow_the_tiling_rule() -> None:
    """Glass with a block of stain two tiles wide: the tiling's own tissue mask and
    ``min_tissue`` keep those two tiles, in grid order."""
    rgb = np.full((128, 256, 3), 240, np.uint8)  # glass
    rgb[:64, 64:192] = (200, 120, 180)  # stained: two tiles of 64 µm
    tiles = tissue_tiles(rgb, TILING)
    assert tiles.shape == (2, 64, 64, 3) and (tiles == (200, 120, 180)).all()
    assert tissue_tiles(np.full((128, 128, 3), 240, np.uint8), TILING).shape == (0, 64, 64, 3)


def test_counterfactual_logits_scores_every_combination() -> None:
    """One row per slide × density × size, the mean of the score over the kept tiles."""
    specs = plan_cohort(4, 5, size_um=256.0, mpp=1.0).iloc[:2].to_dict("records")
    table = counterfactual_logits(specs, lambda t: t.mean(axis=(1, 2, 3)), TILING, 256.0)
    assert len(table) == 8 and (table["n_tiles"] > 0).all()
    assert table.groupby(["density", "size"]).size().tolist() == [2, 2, 2, 2]
    assert table["logit"].between(0, 255).all()


def test_stain_counterfactuals_change_the_stain_only() -> None:
    """Each slide rendered in each center's stain: the colour moves with the stain, the
    planted nuclei stay (same count and size), one row per slide × stain center."""
    specs = plan_cohort(4, 5, size_um=256.0, mpp=1.0).iloc[:2].to_dict("records")

    def mean_red(t: np.ndarray) -> np.ndarray:
        return t[..., 0].mean(axis=(1, 2))

    table = stain_counterfactual_logits(specs, mean_red, TILING, ["A", "B"], 256.0)
    assert len(table) == 4 and (table["n_tiles"] > 0).all()
    red = table.pivot_table("logit", "slide_id", "stain_center")
    assert ((red["A"] - red["B"]).abs() > 2).all(), red  # standard vs purple: other colours
    spec = {**specs[0], "width_px": 256, "height_px": 256, "mpp": 1.0}
    counts = [
        nuclei_table(
            tissue_tiles(render_slide({**spec, "stain": CENTER_STAINS[c]}), TILING), mpp=1.0
        ).mean()
        for c in ("A", "B")
    ]
    assert abs(counts[0]["nuclei_density"] / counts[1]["nuclei_density"] - 1) < 0.15, counts
