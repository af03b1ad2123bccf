"""Counterfactual renders change only the planted factor they name."""

import numpy as np

from pipeline.features.nuclei import nuclei_table
from pipeline.synthetic import counterfactual_renders, plan_cohort, tissue_tiles


def test_counterfactuals_change_density_and_size_one_at_a_time() -> None:
    spec = plan_cohort(4, 5, size_um=256.0, mpp=1.0).iloc[0].to_dict()
    renders = {(d, s): rgb for d, s, rgb in counterfactual_renders(spec, 384, 1.0)}
    assert sorted(renders) == [(d, s) for d in ("normal", "tumor") for s in ("normal", "tumor")]
    stats = {
        k: nuclei_table(tissue_tiles(rgb, 64, 0.9), mpp=1.0).mean() for k, rgb in renders.items()
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


def test_tissue_tiles_keeps_tiles_with_tissue() -> None:
    rgb = np.full((128, 192, 3), 240, np.uint8)  # glass
    rgb[:64, :64] = (200, 120, 180)  # one tile of tissue
    tiles = tissue_tiles(rgb, 64)
    assert tiles.shape == (1, 64, 64, 3) and (tiles[0] == (200, 120, 180)).all()
