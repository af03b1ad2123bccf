import numpy as np

from pipeline.features.nuclei import nuclei_mask, nuclei_table
from pipeline.synthetic import plan_cohort, render_slide


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
    assert nuclei_table(pink, 1.0)["nuclei_count"].iloc[0] == 0
