"""The generator's quality bar, measured: do samples look like the tiles in the numbers the
later stages rely on (nuclei, colour), and how far apart are they (SWD)?"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pipeline.features.nuclei import nuclei_table
from pipeline.gan.metrics import fine_detail, layout_correlation, swd

STATS = ("nuclei_density", "mean_nuclear_area_um2", "nuclear_area_fraction", "fine_detail")
GREY_STATS = ("intensity_mean", "intensity_std", "local_contrast", "edge_density")


def tile_stats(tiles: np.ndarray, mpp: float) -> pd.DataFrame:
    """Per RGB tile the ``STATS`` of the bar: nuclear statistics and fine detail."""
    table = nuclei_table(tiles, mpp)
    table["fine_detail"] = fine_detail(tiles)
    return table


def _layout_check(reals: np.ndarray, fakes: np.ndarray) -> dict[str, Any]:
    """Samples must not be more alike in layout than the reals (tiles cut at random from
    tissue share none; aligned radiographs share their anatomy)."""
    rl, fl = layout_correlation(reals), layout_correlation(fakes)
    return {"real": rl, "fake": fl, "passed": bool(fl <= rl + 0.1)}


def quality_report(reals: np.ndarray, fakes: np.ndarray, mpp: float, seed: int = 0
                   ) -> dict[str, Any]:  # fmt: skip
    """Compare uint8 [N, H, W, C] reals and samples.

    The bar: for each statistic the samples' mean lies within one SD of the reals' mean and
    the samples' SD within a factor 2 of the reals' SD. RGB (histology): ``STATS`` (nuclear
    statistics and fine detail) and the per-tile mean of each colour channel; grey
    (radiology, C = 1): the radiology features ``GREY_STATS``. Both: the samples' layout
    correlation at most 0.1 above the reals' (no shared arrangement, ``layout_correlation``).
    Returns the figures and ``passed``.
    """
    out: dict[str, Any] = {"n_real": len(reals), "n_fake": len(fakes), "checks": {}}
    if reals.shape[-1] != 3:
        from pipeline.features import compute_features

        r = compute_features(reals, mpp, GREY_STATS, modality="radiology")
        f = compute_features(fakes, mpp, GREY_STATS, modality="radiology")
        for col in GREY_STATS:
            rm, rs, fm, fs = r[col].mean(), r[col].std(), f[col].mean(), f[col].std()
            ok = abs(fm - rm) <= rs and 0.5 * rs <= fs <= 2 * rs
            out["checks"][col] = {"real_mean": float(rm), "real_sd": float(rs),
                                  "fake_mean": float(fm), "fake_sd": float(fs),
                                  "passed": bool(ok)}  # fmt: skip
        out["checks"]["layout_corr"] = _layout_check(reals, fakes)
        out["swd"] = swd(reals, fakes, seed=seed)
        out["passed"] = all(c["passed"] for c in out["checks"].values())
        return out
    r, f = tile_stats(reals, mpp), tile_stats(fakes, mpp)
    for col in STATS:
        rm, rs, fm, fs = r[col].mean(), r[col].std(), f[col].mean(), f[col].std()
        ok = abs(fm - rm) <= rs and 0.5 * rs <= fs <= 2 * rs
        out["checks"][col] = {"real_mean": rm, "real_sd": rs, "fake_mean": fm, "fake_sd": fs,
                              "passed": bool(ok)}  # fmt: skip
    rc = reals.reshape(len(reals), -1, 3).mean(axis=1)  # per-tile mean colour
    fc = fakes.reshape(len(fakes), -1, 3).mean(axis=1)
    for k, name in enumerate("RGB"):
        rs, fs = rc[:, k].std(), fc[:, k].std()
        ok = abs(fc[:, k].mean() - rc[:, k].mean()) <= rs and 0.5 * rs <= fs <= 2 * rs
        out["checks"][f"mean_{name}"] = {
            "real_mean": float(rc[:, k].mean()), "real_sd": float(rc[:, k].std()),
            "fake_mean": float(fc[:, k].mean()), "fake_sd": float(fc[:, k].std()),
            "passed": bool(ok),
        }  # fmt: skip
    out["checks"]["layout_corr"] = _layout_check(reals, fakes)
    out["swd"] = swd(reals, fakes, seed=seed)
    out["passed"] = all(c["passed"] for c in out["checks"].values())
    return out


class StatsTracker:
    """The ``STATS`` part of the bar, cheap enough for every metric tick of training: called
    with uint8 samples, returns per statistic the samples' mean and its distance from the
    reals' mean in reals' SDs (``<stat>_z``; the bar wants |z| ≤ 1)."""

    def __init__(self, reals: np.ndarray, mpp: float) -> None:
        table = tile_stats(reals, mpp)
        self.mpp = mpp
        self.real = {c: (float(table[c].mean()), float(table[c].std())) for c in STATS}

    def __call__(self, fakes: np.ndarray) -> dict[str, float]:
        table = tile_stats(fakes, self.mpp)
        out: dict[str, float] = {}
        for c, (mean, sd) in self.real.items():
            out[c] = float(table[c].mean())
            out[f"{c}_z"] = (out[c] - mean) / max(sd, 1e-9)
        return out


def snapshot_score(metrics: Mapping[str, float]) -> tuple[float, float] | None:
    """How good a training tick's G_ema is, lower is better; ``None`` without SWD.

    First how far the ``STATS`` lie outside the bar (the largest ``|<stat>_z|`` beyond 1, 0
    when all are within; always 0 without ``StatsTracker``), then SWD: the
    snapshot choice of the StyleGAN papers (best FID) with the bar the later stages need.
    """
    d = metrics.get("swd")
    if d is None or not math.isfinite(d):
        return None
    zs = [abs(float(metrics[f"{c}_z"])) for c in STATS if f"{c}_z" in metrics]
    if any(not math.isfinite(z) for z in zs):
        return None
    return (max([0.0, *(z - 1.0 for z in zs)]), float(d))
