import numpy as np

from pipeline.gan.quality import quality_report
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
    reals, others = demo_tiles(1), demo_tiles(2)
    good = quality_report(reals, others, mpp=1.0)
    assert good["passed"], good["checks"]
    blurred = others.reshape(len(others), 16, 4, 16, 4, 3).mean(axis=(2, 4))
    blobs = np.repeat(np.repeat(blurred, 4, axis=1), 4, axis=2).astype(np.uint8)
    bad = quality_report(reals, blobs, mpp=1.0)
    assert not bad["passed"] and bad["swd"]["mean"] > good["swd"]["mean"]


def test_one_layout_in_every_sample_fails() -> None:
    """Samples that recolour one tile (the tiny G's failure on the demo) fail on layout."""
    reals, others = demo_tiles(1), demo_tiles(2)
    rng = np.random.default_rng(0)
    gain = rng.uniform(0.85, 1.0, (len(others), 1, 1, 3))
    same = np.clip(others[:1].astype(np.float32) * gain, 0, 255).astype(np.uint8)
    rep = quality_report(reals, same, mpp=1.0)
    assert rep["checks"]["layout_corr"]["fake"] > 0.9
    assert not rep["checks"]["layout_corr"]["passed"] and not rep["passed"]
    assert abs(rep["checks"]["layout_corr"]["real"]) < 0.1
