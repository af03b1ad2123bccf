import numpy as np

from pipeline.features.nuclei import MIN_NUCLEUS_UM2, nuclei_mask, nuclei_table
from pipeline.synthetic import plan_cohort, planted_counts, render_slide


def test_nuclei_counts_follow_the_planted_density_and_size() -> None:
    plan = plan_cohort(8, 11, size_um=512.0, mpp=0.5)
    stats = {}
    for label in ("tumor", "normal"):
        spec = plan[(plan.label == label) & (plan.center == "A")].iloc[0].to_dict()
        rgb = render_slide(spec)
        half = rgb.reshape(512, 2, 512, 2, 3).mean(axis=(1, 3)).astype(np.uint8)  # 1 µm/px
        tiles = half.reshape(8, 64, 8, 64, 3).swapaxes(1, 2).reshape(64, 64, 64, 3)
        tissue = (tiles.min(axis=3) < 225).mean(axis=(1, 2)) > 0.9
        stats[label] = nuclei_table(tiles[tissue], mpp=1.0).mean()
    t, n = stats["tumor"], stats["normal"]
    assert t["nuclei_density"] > 1.5 * n["nuclei_density"], (t, n)
    assert t["mean_nuclear_area_um2"] > 1.5 * n["mean_nuclear_area_um2"], (t, n)
    assert 500 < n["nuclei_density"] < 2500  # planted 1300 / mm² of tissue


def test_glass_and_pink_stroma_have_no_nuclei() -> None:
    glass = np.full((1, 32, 32, 3), 240, np.uint8)
    pink = np.zeros((1, 32, 32, 3), np.uint8) + np.array([230, 150, 200], np.uint8)
    assert not nuclei_mask(glass).any() and not nuclei_mask(pink).any()
    row = nuclei_table(pink, 1.0).iloc[0]
    assert row["nuclei_count"] == 0 and np.isnan(row["mean_nuclear_area_um2"])  # no size
    assert np.isnan(row["nuclear_solidity"])


def test_nuclei_counts_match_the_planted_nuclei_tile_by_tile() -> None:
    """Against the renderer's own nuclei, tile by tile. Here the watershed gives MAE 0.27,
    bias +0.18, r 0.996; the distance-peak counter it replaced (which split elongated nuclei)
    gave MAE 0.73, bias +0.45, r 0.985 and fails (on the demo cohort: 0.57 vs 1.55)."""
    plan = plan_cohort(8, 11, size_um=512.0, mpp=0.5)
    counted, truth = [], []
    for label in ("tumor", "normal"):
        spec = plan[(plan.label == label) & (plan.center == "A")].iloc[0].to_dict()
        half = render_slide(spec).reshape(512, 2, 512, 2, 3).mean(axis=(1, 3)).astype(np.uint8)
        tiles = half.reshape(8, 64, 8, 64, 3).swapaxes(1, 2).reshape(64, 64, 64, 3)
        row, col = np.divmod(np.arange(64), 8)
        truth.append(planted_counts(spec, col * 64.0, row * 64.0, 64.0, MIN_NUCLEUS_UM2))
        counted.append(nuclei_table(tiles, mpp=1.0)["nuclei_count"].to_numpy())
    c, t = np.concatenate(counted), np.concatenate(truth)
    assert t.sum() > 100, t  # dense enough for the comparison to mean something
    err = c - t
    assert np.abs(err).mean() < 0.5 and abs(err.mean()) < 0.35, (c, t)
    assert np.corrcoef(c, t)[0, 1] > 0.99, (c, t)
